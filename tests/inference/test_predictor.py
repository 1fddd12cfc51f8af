import json

import numpy as np
import pytest
import torch
from PIL import Image

import scaledet
from scaledet.inference import Predictor, Result
from tests.inference.conftest import CLASS_NAMES, ColourBoxDetector, draw, tiny_model


def _images(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            for h, w in [(96, 96), (50, 130), (140, 60), (33, 47)]]


def _assert_same(a: dict, b: dict, atol: float = 1e-4) -> None:
    assert torch.equal(a["labels"], b["labels"])
    torch.testing.assert_close(a["boxes"], b["boxes"], atol=atol, rtol=0)
    torch.testing.assert_close(a["scores"], b["scores"], atol=atol, rtol=0)


def test_batch_equals_single():
    predictor = Predictor.from_model(tiny_model(), CLASS_NAMES, imgsz=96, conf=0.25,
                                     batch_size=3)
    images = _images()
    batched = predictor.predict(images)  # batches of 3 then 1
    assert [len(d["scores"]) for d in batched] != [0] * 4
    for image, det in zip(images, batched):
        _assert_same(predictor.predict(image)[0], det)


def test_every_input_form_gives_the_same_result(tmp_path):
    predictor = Predictor.from_model(tiny_model(), CLASS_NAMES, imgsz=96, conf=0.25)
    hwc = _images()[1]
    path = tmp_path / "im.png"
    Image.fromarray(hwc).save(path)
    chw = torch.from_numpy(hwc).permute(2, 0, 1)
    forms = [hwc, path, str(path), Image.fromarray(hwc), chw, chw.float() / 255, chw[None],
             hwc[None], [hwc]]
    ref = predictor(hwc)[0]
    for form in forms:
        (r,) = predictor(form)
        _assert_same(r.as_dict_of_tensors(), ref.as_dict_of_tensors())
        assert r.image_size == (50, 130)
    assert predictor(str(path))[0].path == str(path)
    assert len(predictor([hwc, path, chw.float() / 255])) == 3
    assert predictor([]) == []


def test_letterbox_maps_back_to_original_pixels_for_non_square_images():
    predictor = Predictor.from_model(ColourBoxDetector(), CLASS_NAMES, imgsz=64, conf=0.1)
    wide = draw(90, 300, [(0, (20, 10, 80, 70)), (1, (200, 30, 290, 85))])
    tall = draw(250, 70, [(2, (5, 150, 60, 240))])
    wide_r, tall_r = predictor([wide, tall])
    # letterbox scales 64/300 and 64/250: one input pixel is ~4.7 / ~3.9 original pixels
    torch.testing.assert_close(wide_r.boxes, torch.tensor([[20.0, 10, 80, 70],
                                                           [200, 30, 290, 85]]), atol=5, rtol=0)
    torch.testing.assert_close(tall_r.boxes, torch.tensor([[5.0, 150, 60, 240]]), atol=4, rtol=0)
    assert wide_r.class_names == ["circle", "square"] and tall_r.class_names == ["star"]
    # Boxes never leave the image, also near its far edges (letterbox padding).
    edge = predictor(draw(40, 200, [(0, (150, 0, 200, 40))]))[0]
    assert float(edge.boxes[:, 2].max()) <= 200 and float(edge.boxes[:, 3].max()) <= 40


def test_result_helpers(tmp_path):
    predictor = Predictor.from_model(ColourBoxDetector(), CLASS_NAMES, imgsz=64, conf=0.1,
                                     category_ids=[7, 8, 9])
    (r,) = predictor(draw(64, 64, [(1, (8, 16, 40, 48))]))
    assert isinstance(r, Result) and len(r) == 1
    (entry,) = r.to_coco(image_id=5)
    assert entry["image_id"] == 5 and entry["category_id"] == 8
    assert entry["bbox"] == pytest.approx([8, 16, 32, 32], abs=1.5)
    assert entry["score"] == pytest.approx(0.8)
    d = r.to_dict()
    json.dumps(d)
    assert d["class_names"] == ["square"] and d["image_size"] == [64, 64]
    im = r.plot(tmp_path / "sub" / "plot.png")
    assert im.size == (64, 64) and (tmp_path / "sub" / "plot.png").is_file()
    assert np.asarray(im).std() > 0


def test_load_from_checkpoint(weights):
    predictor = scaledet.load(weights, conf=0.3, nms="diou", max_det=5)
    assert predictor.imgsz == 96 and predictor.class_names == CLASS_NAMES
    assert predictor.model.nms == "diou" and predictor.max_det == 5
    (r,) = predictor(_images()[0])
    assert 0 < len(r) <= 5 and float(r.scores.min()) >= 0.3
    assert r.scores.tolist() == sorted(r.scores.tolist(), reverse=True)
    # the old call sites: predict() on numpy lists, preprocess, to_coco_results
    (det,) = predictor.predict([_images()[0]])
    assert predictor.to_coco_results(det, 3)[0]["image_id"] == 3
    x, scale = predictor.preprocess(_images()[1])
    assert x.shape == (3, 96, 96) and scale == pytest.approx(96 / 130)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((3, 20, 20), np.uint8), "HWC"),
    (torch.zeros(20, 20, 3, dtype=torch.uint8), "CHW"),
    (torch.full((3, 8, 8), 2.0), r"\[0, 1\]"),
    (np.zeros((5, 5, 3), np.int32), "uint8"),
    (42, "cannot use a int"),
    ("/no/such/image.jpg", "no/such/image.jpg"),
])
def test_bad_inputs_raise_clear_errors(bad, message):
    predictor = Predictor.from_model(ColourBoxDetector(), CLASS_NAMES, imgsz=64)
    with pytest.raises(ValueError, match=message):
        predictor(bad)


def test_bad_settings():
    with pytest.raises(ValueError, match="conf"):
        Predictor.from_model(ColourBoxDetector(), CLASS_NAMES, conf=1.5)
    with pytest.raises(ValueError, match="nms"):
        Predictor.from_model(tiny_model(), CLASS_NAMES, nms="fast")


def test_folders_and_glob_patterns_as_input(weights, tmp_path, monkeypatch):
    folder = tmp_path / "shots"
    (folder / "sub").mkdir(parents=True)
    images = _images()
    for i, hwc in enumerate(images):
        Image.fromarray(hwc).save(folder / f"a{i}.png")
    Image.fromarray(images[0]).save(folder / "sub" / "b.png")
    (folder / "notes.txt").write_text("not an image")
    predictor = scaledet.load(weights, batch_size=3)
    results = predictor(folder)  # its images, sorted, not recursive
    assert [r.path for r in results] == [str(folder / f"a{i}.png") for i in range(4)]
    for r, hwc in zip(results, images):
        _assert_same(r.as_dict_of_tensors(), predictor(hwc)[0].as_dict_of_tensors())
    assert [r.path for r in predictor(str(folder / "a[13].png"))] == [
        str(folder / "a1.png"), str(folder / "a3.png")]
    assert len(predictor(str(tmp_path / "**" / "*.png"))) == 5
    assert [r.path for r in predictor([str(folder), images[1]])][-2:] == [
        str(folder / "a3.png"), None]
    with pytest.raises(ValueError, match="no image file matches"):
        predictor(str(folder / "*.jpg"))

    # stream: lazy, a batch at a time, the same results.
    from scaledet import data

    reads = []
    read_image = data.read_image
    monkeypatch.setattr(data, "read_image", lambda p, *a, **k: reads.append(p) or read_image(p))
    stream = predictor.stream(str(folder))
    assert reads == []
    first = next(stream)
    assert len(reads) == 3  # one batch read
    rest = list(stream)
    assert len(reads) == 4 and [r.path for r in [first, *rest]] == [r.path for r in results]
    for a, b in zip([first, *rest], results):
        _assert_same(a.as_dict_of_tensors(), b.as_dict_of_tensors())
    assert [r.path for r in predictor.stream(iter([folder / "a2.png", images[0]]))] == [
        str(folder / "a2.png"), None]
