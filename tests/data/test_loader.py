"""The loader contract: shapes, letterbox mapping, determinism, bad images skipped / strict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import scaledet.data.loader as loader_module
from scaledet.data.images import ImageReadError, read_image
from scaledet.data.loader import DetectionTorchDataset, Skipped, build_dataloader, collate
from scaledet.data.records import DetectionDataset, DetectionRecord
from scaledet.data.sampling import box_size
from scaledet.data.transforms import PAD_VALUE, AugmentConfig, Sample, letterbox, train_transform

SIZES = [(60, 80), (90, 50), (64, 64), (40, 120), (75, 75), (100, 70)]  # (h, w)


def make_dataset(root: Path, sizes=SIZES, suffix: str = ".png") -> DetectionDataset:
    """Images of one flat colour each (image k has red = 40 * k) with two boxes drawn."""
    records = []
    for k, (h, w) in enumerate(sizes):
        array = np.full((h, w, 3), (40 * k, 100, 100), dtype=np.uint8)
        boxes = np.array([[2, 3, w // 2, h // 2], [w // 3, h // 3, w - 1, h - 2]], float)
        for x0, y0, x1, y1 in boxes.astype(int):
            array[y0:y1, x0:x1, 1] = 250
        Image.fromarray(array).save(root / f"img{k}{suffix}")
        records.append(DetectionRecord(k + 1, f"img{k}{suffix}", w, h, boxes, [k % 2, 1]))
    return DetectionDataset(records, ["a", "b"], image_root=root)


def check_contract(images, targets, imgsz: int, batch: int) -> None:
    assert images.shape == (batch, 3, imgsz, imgsz) and images.dtype == torch.float32
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    assert len(targets) == batch
    for t in targets:
        assert set(t) - {"ignore"} == {"boxes", "labels", "image_id", "orig_size", "scale"}
        assert t.get("ignore", torch.zeros(0, 4)).shape[1:] == (4,)
        assert t["boxes"].dtype == torch.float32 and t["boxes"].shape == (len(t["labels"]), 4)
        assert t["labels"].dtype == torch.int64
        assert isinstance(t["image_id"], int) and isinstance(t["scale"], float)
        assert len(t["orig_size"]) == 2
        b = t["boxes"]
        assert bool(((b >= 0) & (b <= imgsz)).all()) and bool((b[:, 2:] > b[:, :2]).all())


@pytest.mark.parametrize("cache", [True, False])
def test_val_loader_letterboxes_and_maps_back(tmp_path, cache):
    ds = make_dataset(tmp_path)
    loader = build_dataloader(ds, imgsz=64, batch_size=4, train=False, workers=0, cache=cache)
    assert len(loader) == 2  # 6 images, last partial batch kept in eval
    seen = []
    for images, targets in loader:
        check_contract(images, targets, 64, len(targets))
        for image, t in zip(images, targets):
            rec = ds.records[t["image_id"] - 1]
            h, w = t["orig_size"]
            assert (h, w) == (rec.height, rec.width)
            assert t["scale"] == pytest.approx(64 / max(h, w))
            torch.testing.assert_close(t["boxes"] / t["scale"],
                                       torch.tensor(rec.boxes, dtype=torch.float32))
            nh, nw = round(h * t["scale"]), round(w * t["scale"])
            pad = image[:, nh:, :].flatten().tolist() + image[:, :, nw:].flatten().tolist()
            assert all(v == pytest.approx(PAD_VALUE / 255) for v in pad)
            red = (t["image_id"] - 1) * 40 / 255
            assert float(image[0, :nh, :nw].mean()) == pytest.approx(red, abs=2 / 255)
            seen.append(t["image_id"])
    assert seen == [1, 2, 3, 4, 5, 6]  # no shuffle in eval


def test_cached_and_uncached_give_the_same_samples(tmp_path):
    """Both decode for imgsz, so evaluation items and augmented mosaics are identical."""
    ds = make_dataset(tmp_path, sizes=[*SIZES, (600, 800)], suffix=".jpg")
    for train in (False, True):
        a = DetectionTorchDataset(ds, 48, train=train, cache=True)
        b = DetectionTorchDataset(ds, 48, train=train, cache=False)
        for i in range(len(ds)):
            key = (i, 2, 1.0) if train else i
            torch.testing.assert_close(a[key]["image"], b[key]["image"], atol=0, rtol=0)
            torch.testing.assert_close(a[key]["boxes"], b[key]["boxes"])


def test_auto_cache_follows_the_memory_limit(tmp_path, monkeypatch):
    ds = make_dataset(tmp_path)
    need = len(ds) * 3 * 32 * 32
    assert DetectionTorchDataset(ds, 32, cache="auto", cache_max_bytes=need)._cache is not None
    assert DetectionTorchDataset(ds, 32, cache="auto", cache_max_bytes=need - 1)._cache is None
    monkeypatch.setattr(loader_module, "default_cache_bytes", lambda: need - 1)
    assert DetectionTorchDataset(ds, 32, cache="auto")._cache is None
    assert 0 < loader_module.default_cache_bytes() < 1 << 50


def test_big_jpegs_match_full_decode_and_letterbox(tmp_path):
    """Big JPEGs are decoded at reduced scale: same size and boxes as decoding the full image
    and letterboxing it, nearly the same pixels."""
    sizes = [(600, 800), (900, 500)]
    ds = make_dataset(tmp_path, sizes=sizes, suffix=".jpg")
    for cache in (True, False):
        loaded = DetectionTorchDataset(ds, 64, train=False, cache=cache)
        for i, record in enumerate(ds.records):
            full = torch.from_numpy(read_image(ds.image_path(record))).permute(2, 0, 1)
            boxes = torch.as_tensor(record.boxes, dtype=torch.float32)
            ref, _ = letterbox(Sample(full, boxes, torch.as_tensor(record.labels)), 64)
            assert tuple(loaded[i]["orig_size"]) == sizes[i]
            torch.testing.assert_close(loaded[i]["boxes"], ref.boxes)
            assert loaded[i]["image"].shape == ref.image.shape == (3, 64, 64)
            diff = (loaded[i]["image"].float() - ref.image.float()).abs()
            assert diff.mean() < 1 and (diff > 16).float().mean() < 0.03  # only at sharp edges


def test_train_loader_contract_and_boxes_on_drawn_pixels(tmp_path):
    ds = make_dataset(tmp_path)
    cfg = AugmentConfig(mosaic=0.0, brightness=0, contrast=0, saturation=0, hue=0)
    loader = build_dataloader(ds, imgsz=64, batch_size=4, workers=0, augment=cfg, seed=1)
    assert len(loader) == 1  # drop_last in training
    for _ in range(3):
        images, targets = next(iter(loader))
        check_contract(images, targets, 64, 4)
        for image, t in zip(images, targets):
            for x0, y0, x1, y1 in t["boxes"].round().int().tolist():
                if min(x1 - x0, y1 - y0) >= 6:  # drawn boxes are bright green inside
                    assert float(image[1, y0 + 2:y1 - 2, x0 + 2:x1 - 2].min()) > 0.95
    assert loader.epoch == 2


def test_training_is_reproducible_and_epochs_differ(tmp_path):
    ds = make_dataset(tmp_path)

    def run(epoch: int | None, seed: int = 0):
        loader = build_dataloader(ds, imgsz=48, batch_size=3, workers=0, seed=seed,
                                  augment=AugmentConfig(mosaic=0.5))
        if epoch is not None:
            loader.set_epoch(epoch)
        return [(im, [t["boxes"] for t in ts]) for im, ts in loader]

    a, b = run(None), run(None)
    assert all(torch.equal(x[0], y[0]) for x, y in zip(a, b))
    assert not torch.equal(run(1)[0][0], a[0][0])      # another epoch, another sample
    assert not torch.equal(run(None, 7)[0][0], a[0][0])  # another seed
    loader = build_dataloader(ds, imgsz=48, batch_size=3, workers=0,
                              augment=AugmentConfig(mosaic=0.5))
    passes = [next(iter(loader))[0] for _ in range(2)]
    assert torch.equal(passes[1], run(1)[0][0])          # the 2nd pass is epoch 1


def test_workers_give_the_same_batches_as_the_main_process(tmp_path):
    ds = make_dataset(tmp_path, suffix=".jpg")
    batches = {}
    for workers in (0, 2):
        loader = build_dataloader(ds, imgsz=48, batch_size=2, workers=workers, seed=3)
        loader.set_epoch(5)
        batches[workers] = list(loader)
        batches[workers] += list(loader)  # persistent workers: a second pass, epoch 6
    assert len(batches[0]) == len(batches[2]) == 6
    for (ia, ta), (ib, tb) in zip(batches[0], batches[2]):
        assert torch.equal(ia, ib)
        assert [t["image_id"] for t in ta] == [t["image_id"] for t in tb]
        assert all(torch.equal(x["boxes"], y["boxes"]) for x, y in zip(ta, tb))


def test_set_mosaic_zero_closes_mosaic(tmp_path):
    ds = make_dataset(tmp_path)
    cfg = AugmentConfig(mosaic=1.0, scale_range=(1, 1), hflip=0, brightness=0, contrast=0,
                        saturation=0, hue=0)
    loader = build_dataloader(ds, imgsz=48, batch_size=6, workers=0, augment=cfg)

    def reds(images):  # distinct red levels (one per source image) in each sample
        return [len({round(v * 255 / 40) for v in im[0].flatten().tolist()
                     if abs(v - PAD_VALUE / 255) > 1e-6}) for im in images]

    images, _ = next(iter(loader))
    assert max(reds(images)) >= 3  # mosaics mix several images
    loader.set_mosaic(0.0)
    images, _ = next(iter(loader))
    assert max(reds(images)) == 1
    with pytest.raises(ValueError, match="mosaic"):
        loader.set_mosaic(2.0)


@pytest.mark.parametrize("workers", [0, 1])
def test_set_imgsz_changes_the_training_size(tmp_path, workers):
    ds = make_dataset(tmp_path)
    loader = build_dataloader(ds, imgsz=64, batch_size=3, workers=workers, seed=0)
    images, targets = next(iter(loader))
    check_contract(images, targets, 64, 3)
    loader.set_imgsz(40)
    for images, targets in loader:
        check_contract(images, targets, 40, 3)
    loader.set_imgsz(None)
    images, targets = next(iter(loader))
    check_contract(images, targets, 64, 3)
    with pytest.raises(ValueError, match="imgsz"):
        loader.set_imgsz(4)


def broken_dataset(root: Path) -> DetectionDataset:
    ds = make_dataset(root)
    (root / "img2.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    ds.records[4].file_name = "missing.png"
    return ds


@pytest.mark.parametrize("cache", [True, False])
def test_bad_images_are_skipped_and_counted(tmp_path, cache):
    ds = broken_dataset(tmp_path)
    loader = build_dataloader(ds, imgsz=32, batch_size=3, train=False, workers=0, cache=cache)
    ids = [t["image_id"] for _, targets in loader for t in targets]
    assert ids == [1, 2, 4, 6]
    assert loader.num_skipped == 2
    assert {Path(s.path).name for s in loader.skipped} == {"img2.png", "missing.png"}
    summary = loader.summary()
    assert "img2.png" in summary and "missing.png" in summary and "skipped 2" in summary


def test_batch_with_only_bad_images_is_not_yielded(tmp_path):
    ds = broken_dataset(tmp_path)
    ds.records = [ds.records[2], ds.records[4], ds.records[0]]
    loader = build_dataloader(ds, imgsz=32, batch_size=2, train=False, workers=0, cache=False)
    batches = list(loader)
    assert len(batches) == 1 and batches[0][1][0]["image_id"] == 1
    assert loader.num_skipped == 2


def test_sharded_batch_with_only_bad_images_raises_naming_them(tmp_path):
    """A data-parallel rank cannot drop a batch: the others would wait for it at the all-reduce."""
    ds = broken_dataset(tmp_path)
    ds.records = [ds.records[2], ds.records[0], ds.records[4], ds.records[1]]
    shards = [build_dataloader(ds, imgsz=32, batch_size=4, train=False, workers=0, cache=False,
                               shard=(rank, 2)) for rank in (0, 1)]
    assert [t["image_id"] for _, targets in shards[1] for t in targets] == [1, 2]
    with pytest.raises(ImageReadError, match="rank 0.*img2.png.*missing.png"):
        list(shards[0])
    with pytest.raises(ValueError, match="shard"):
        build_dataloader(ds, batch_size=1, shard=(0, 2))


def test_mosaic_partner_that_fails_is_replaced(tmp_path):
    ds = broken_dataset(tmp_path)
    loader = build_dataloader(ds, imgsz=32, batch_size=2, workers=0, cache=False,
                              augment=AugmentConfig(mosaic=1.0))
    for _ in range(2):
        for images, targets in loader:
            check_contract(images, targets, 32, len(targets))


@pytest.mark.parametrize("cache", [True, False])
def test_strict_stops_at_the_first_bad_image_naming_it(tmp_path, cache):
    ds = broken_dataset(tmp_path)
    with pytest.raises(ImageReadError, match="img2.png"):
        loader = build_dataloader(ds, imgsz=32, batch_size=3, train=False, workers=0,
                                  strict=True, cache=cache)
        list(loader)


def test_collate_drops_skipped_and_handles_all_skipped():
    item = {"image": torch.zeros(3, 8, 8, dtype=torch.uint8), "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64), "image_id": 3, "orig_size": (8, 8),
            "scale": 1.0}
    bad = Skipped(1, "x.jpg", "corrupt")
    images, targets, skipped = collate([item, bad, item])
    assert images.shape == (2, 3, 8, 8) and len(targets) == 2 and skipped == [bad]
    assert "image" not in targets[0]
    images, targets, skipped = collate([bad])
    assert len(images) == 0 and targets == [] and skipped == [bad]


def test_bad_arguments_are_rejected(tmp_path):
    ds = make_dataset(tmp_path, sizes=SIZES[:1])
    with pytest.raises(ValueError, match="batch_size"):
        build_dataloader(ds, batch_size=0)
    with pytest.raises(ValueError, match="workers"):
        build_dataloader(ds, workers=-1)
    with pytest.raises(ValueError, match="imgsz"):
        build_dataloader(ds, imgsz=4)
    with pytest.raises(ValueError, match="cache"):
        build_dataloader(ds, cache="disk")


def test_small_dataset_still_gives_a_training_batch(tmp_path):
    ds = make_dataset(tmp_path, sizes=SIZES[:3])
    loader = build_dataloader(ds, imgsz=32, batch_size=16, workers=0)
    assert len(loader) == 1
    images, targets = next(iter(loader))
    assert images.shape[0] == 3


def test_crowd_regions_are_ignore_boxes_in_training_only(tmp_path):
    """A COCO crowd box follows the image through the training transforms into ``ignore``
    and is no training target; evaluation items keep every box."""
    ds = make_dataset(tmp_path, sizes=[(64, 64)])
    ds.records[0].iscrowd = np.array([False, True])
    cfg = AugmentConfig(mosaic=0.0, scale_range=(1.0, 1.0), hflip=1.0, brightness=0,
                        contrast=0, saturation=0, hue=0)
    item = DetectionTorchDataset(ds, 64, train=True, augment=cfg, cache=False)[(0, 0, 0.0)]
    x0, y0, x1, y1 = ds.records[0].boxes[1]
    flipped = torch.tensor([[64 - x1, y0, 64 - x0, y1]], dtype=torch.float32)
    torch.testing.assert_close(item["ignore"], flipped)
    assert item["labels"].tolist() == [0] and item["boxes"].shape == (1, 4)
    mosaic = DetectionTorchDataset(ds, 64, train=True, cache=False)[(0, 3, 1.0)]
    assert (mosaic["labels"] >= 0).all() and mosaic["ignore"].shape[1] == 4
    evaluation = DetectionTorchDataset(ds, 64, train=False, cache=False)[0]
    assert "ignore" not in evaluation and evaluation["labels"].tolist() == [0, 1]


# ---- SNIPER chips --------------------------------------------------------------------------

CHIP_RANGES = ((3.0, 0, 12), (1.5, 8, 24), (0.5, 20, None))  # scales of the 64 px loaded image


def chip_dataset(root: Path) -> DetectionDataset:
    """JPEGs larger than the 64 px the tests load them at, with objects of assorted sizes."""
    rng = np.random.default_rng(0)
    records = []
    for k, (h, w) in enumerate([(120, 160), (160, 120), (200, 200), (90, 150)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / f"c{k}.jpg")
        size = np.exp(rng.uniform(np.log(8), np.log(150), 8))
        side = np.minimum(np.stack([size, size * rng.uniform(0.6, 1.4, 8)], 1), [w, h])
        x0, y0 = rng.uniform(0, w - side[:, 0]), rng.uniform(0, h - side[:, 1])
        boxes = np.stack([x0, y0, x0 + side[:, 0], y0 + side[:, 1]], 1)
        records.append(DetectionRecord(k + 1, f"c{k}.jpg", w, h, boxes, rng.integers(0, 2, 8)))
    records[0].iscrowd = np.arange(8) == 3
    return DetectionDataset(records, ["a", "b"], image_root=root)


def test_chips_are_samples_of_the_chip_size_with_targets_in_their_valid_range(tmp_path):
    ds = chip_dataset(tmp_path)
    cfg = AugmentConfig(chips=1.0, chip_size=32, chip_ranges=CHIP_RANGES)
    data = DetectionTorchDataset(ds, 64, augment=cfg, cache=False)
    ranges = {r[0]: r for r in cfg.chip_ranges}
    zooms, ignored = set(), 0
    for epoch in range(4):
        for i, record in enumerate(ds.records):
            item = data[(i, epoch, 1.0)]
            assert item["image"].shape == (3, 32, 32)
            zoom = item["scale"] * max(record.height, record.width) / 64  # of the loaded image
            scale, lo, hi = ranges[min(ranges, key=lambda s: abs(s - zoom))]
            assert zoom == pytest.approx(scale)
            zooms.add(scale)
            b = item["boxes"]
            assert bool(((b >= 0) & (b <= 32)).all()) and bool((b[:, 2:] > b[:, :2]).all())
            size = box_size(b) / scale
            assert bool(((size >= lo - 1e-3) & (size <= hi + 1e-3)).all())
            assert item["ignore"].shape[1:] == (4,) and item["labels"].ge(0).all()
            ignored += len(item["ignore"])
    assert zooms == {3.0, 1.5, 0.5} and ignored > 0
    loader = build_dataloader(ds, imgsz=64, batch_size=4, workers=0, augment=cfg)
    images, targets = next(iter(loader))
    check_contract(images, targets, 32, 4)


def test_objects_out_of_range_or_cut_by_the_chip_are_ignore_boxes(tmp_path):
    """One range at 2x for sizes up to 16 px: the 6 px object is the chip's target, the
    object covering the whole image is out of range and comes back as an ignore box."""
    ds = make_dataset(tmp_path, sizes=[(64, 64)])
    ds.records[0].boxes = np.array([[28.0, 28, 34, 34], [0, 0, 64, 64]])
    ds.records[0].labels = np.array([1, 0])
    cfg = AugmentConfig(chips=1.0, chip_size=32, chip_ranges=((2.0, 0, 16),), chip_stride=4,
                        hflip=0.0)
    item = DetectionTorchDataset(ds, 64, augment=cfg, cache=False)[(0, 0, 1.0)]
    torch.testing.assert_close(item["boxes"], torch.tensor([[20.0, 20, 32, 32]]))
    assert item["labels"].tolist() == [1] and item["scale"] == 2.0
    torch.testing.assert_close(item["ignore"], torch.tensor([[0.0, 0, 32, 32]]))


def test_chips_are_deterministic_cached_or_not_and_follow_the_seed(tmp_path):
    ds = chip_dataset(tmp_path)
    cfg = AugmentConfig(chips=1.0, chip_size=32, chip_ranges=CHIP_RANGES)
    a = DetectionTorchDataset(ds, 64, augment=cfg, cache=True)
    b = DetectionTorchDataset(ds, 64, augment=cfg, cache=False)
    c = DetectionTorchDataset(ds, 64, augment=cfg, cache=False, seed=1)
    differ = False
    for epoch in range(2):
        for i in range(len(ds)):
            x, y, z = a[(i, epoch, 1.0)], b[(i, epoch, 1.0)], c[(i, epoch, 1.0)]
            assert torch.equal(x["image"], y["image"]) and torch.equal(x["boxes"], y["boxes"])
            assert torch.equal(x["ignore"], y["ignore"])
            differ |= not torch.equal(x["image"], z["image"])
    assert differ


def test_zoomed_chips_are_cut_from_a_finer_decode(tmp_path):
    ds = chip_dataset(tmp_path)
    data = DetectionTorchDataset(ds, 64, cache=False)
    sample, size, scale = data.load(2)  # 200 x 200 file, loaded at 64 x 64
    source, finer = data._chip_source(2, sample, size, scale, 3.0)
    assert source.image.shape == (3, 192, 192) and finer == pytest.approx(3.0)
    torch.testing.assert_close(source.boxes / finer, sample.boxes)
    source, finer = data._chip_source(2, sample, size, scale, 5.0)  # at most the file's own
    assert source.image.shape == (3, 200, 200) and finer == pytest.approx(200 / 64)
    assert data._chip_source(2, sample, size, scale, 0.5) == (sample, 1.0)


def test_batches_mixing_chips_and_whole_images_are_padded_to_the_largest(tmp_path):
    ds = chip_dataset(tmp_path)
    cfg = AugmentConfig(chips=0.5, chip_size=32)
    loader = build_dataloader(ds, imgsz=48, batch_size=4, workers=0, augment=cfg, seed=0)
    sides = set()
    for _ in range(3):
        for images, targets in loader:
            check_contract(images, targets, 48, 4)
    for epoch in range(3):
        for i in range(len(ds)):
            sides.add(loader.dataset[(i, epoch, 1.0)]["image"].shape[-1])
    assert sides == {32, 48}


def test_chips_off_draws_nothing_more_from_the_sample_generator(tmp_path):
    """With ``chips=0`` a training sample is exactly the whole-image pipeline's."""
    ds = make_dataset(tmp_path)
    data = DetectionTorchDataset(ds, 48, augment=AugmentConfig(chips=0.0), cache=False)
    for i in range(2):
        sample, _, _ = data.load(i)
        rng = np.random.default_rng((0, 1, i))
        use_mosaic = rng.random() < 0.0
        expected = train_transform([sample], 48, rng, data.augment, use_mosaic)
        item = data[(i, 1, 0.0)]
        assert torch.equal(item["image"], expected.image)
        assert torch.equal(item["boxes"], expected.boxes)


def test_chip_settings_are_validated():
    cfg = AugmentConfig(chip_ranges=[[2, 0, 16], (1, 8, None)])
    assert cfg.chip_ranges == ((2.0, 0.0, 16.0), (1.0, 8.0, float("inf")))
    assert AugmentConfig().chips == 0.0
    for kwargs, match in [({"chips": 1.5}, "chips"), ({"chip_size": 4}, "chip_size"),
                          ({"chip_size": 40.5}, "chip_size"), ({"chip_stride": 0}, "chip_stride"),
                          ({"chip_negatives": -0.1}, "chip_negatives"),
                          ({"chip_ranges": ((2, 16, 8),)}, "chip_ranges"),
                          ({"chip_ranges": ((0, 0, 8),)}, "chip_ranges"),
                          ({"chip_ranges": ((2, 8),)}, "chip_ranges")]:
        with pytest.raises(ValueError, match=match):
            AugmentConfig(**kwargs)
