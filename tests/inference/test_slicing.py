import pytest
import torch

from scaledet.inference import Predictor, Slicing
from scaledet.inference.merge import greedy_nmm
from scaledet.inference.slicing import cut_by_tile_edge, tile_detections
from tests.inference.conftest import CLASS_NAMES, ColourBoxDetector, draw, tiny_model

# 200 x 300 image, 128 px tiles, overlap 0.25 (stride 96):
# x windows [0, 128], [96, 224], [172, 300]; y windows [0, 128], [72, 200].


def _predictor(**slicing) -> Predictor:
    return Predictor.from_model(ColourBoxDetector(), CLASS_NAMES, imgsz=64, conf=0.1,
                                slicing=Slicing(tile=128, overlap=0.25, **slicing))


def test_an_object_cut_by_tile_edges_yields_one_box():
    # Cut by the tile edges x = 128 and y = 128, whole in the tile [96, 224] x [72, 200].
    image = draw(200, 300, [(1, (110, 100, 150, 140))])
    predictor = _predictor()
    parts = tile_detections(predictor, image, predictor.slicing)
    pieces = torch.cat([d["boxes"] for _, d in parts])
    assert len(pieces) == 4  # (x tiles 0, 1) x (y tiles 0, 1) see it, two of them cut
    assert sorted(pieces[:, 2].tolist()) == [128, 128, 150, 150]
    cut = torch.cat([cut_by_tile_edge(d["boxes"], win, (200, 300)) for win, d in parts])
    assert cut.sum() == 3  # all but the piece of the tile that holds the whole object
    (r,) = predictor(image)
    assert r.labels.tolist() == [1]
    torch.testing.assert_close(r.boxes, torch.tensor([[110.0, 100, 150, 140]]))
    # NMS (IoU) keeps the cut pieces: the reason for merging.
    assert len(_predictor(merge="nms")(image)[0]) > 1


def test_an_object_larger_than_a_tile_is_joined_by_the_full_image_pass():
    image = draw(200, 300, [(0, (20, 30, 280, 170)), (2, (250, 180, 262, 192))])
    with_full = _predictor(full_image=True)(image)[0]
    assert with_full.labels.tolist() == [0, 2]
    # The tiles see the large object exactly (native resolution), in pieces that the
    # full-image pass joins into their union; that pass is letterboxed to 64 px (one input
    # pixel = 300 / 64 image pixels) and its coarse box is part of the union.
    torch.testing.assert_close(with_full.boxes, torch.tensor([[20.0, 30, 280, 170],
                                                              [250, 180, 262, 192]]),
                               atol=300 / 64, rtol=0)
    without = _predictor()(image)[0]
    assert (without.labels == 0).sum() > 1


def test_tile_coordinates_and_a_small_image():
    predictor = _predictor()
    image = draw(200, 300, [(2, (180, 180, 190, 190)), (0, (2, 2, 6, 6))])
    r = predictor(image)[0]
    torch.testing.assert_close(r.boxes, torch.tensor([[2.0, 2, 6, 6], [180, 180, 190, 190]]))
    small = draw(50, 80, [(1, (10, 10, 30, 20))])  # one window covers it: no extra pass
    assert len(tile_detections(predictor, small, Slicing(tile=128))) == 1
    torch.testing.assert_close(predictor(small)[0].boxes, torch.tensor([[10.0, 10, 30, 20]]))


def test_cut_by_tile_edge():
    boxes = torch.tensor([[100.0, 10, 128, 50],   # reaches the tile's right edge x = 128
                          [0, 0, 20, 20],         # at the image's left/top edges: not cut
                          [40, 40, 60, 60],       # inside
                          [40, 98, 60, 126]])     # within 3 px of the bottom edge y = 128
    flags = cut_by_tile_edge(boxes, (0, 0, 128, 128), (200, 300))
    assert flags.tolist() == [True, False, False, True]
    assert cut_by_tile_edge(boxes, None, (200, 300)).tolist() == [False] * 4
    # The last tile of a row ends at the image edge: not a cut.
    assert not cut_by_tile_edge(torch.tensor([[280.0, 10, 300, 20]]), (172, 0, 300, 128),
                                (200, 300)).any()


def test_tile_aware_merge_keeps_whole_boxes_apart():
    from tests.inference.test_merge import dets

    # A confident large box and a small whole box of the same class inside it, from two tiles:
    # plain IoS merging swallows the small one; the tile-aware rule keeps both (neither is cut).
    det = dets([([0, 0, 100, 100], 0.9, 0), ([10, 10, 30, 30], 0.4, 0)])
    assert len(greedy_nmm(det, 0.5)["scores"]) == 1
    kw = {"sources": torch.tensor([0, 1]), "duplicate_iou": 0.6}
    assert len(greedy_nmm(det, 0.5, cut=torch.tensor([False, False]), **kw)["scores"]) == 2
    # ... but merges it when the small box is a piece cut by its tile's edge.
    assert len(greedy_nmm(det, 0.5, cut=torch.tensor([False, True]), **kw)["scores"]) == 1
    # Two whole views of one object from two tiles are duplicates (IoU 0.82): one box, the
    # keeper's, not their union.
    dup = dets([([0, 0, 50, 50], 0.9, 0), ([0, 0, 50, 55], 0.5, 0)])
    out = greedy_nmm(dup, 0.5, cut=torch.tensor([False, False]), **kw)
    torch.testing.assert_close(out["boxes"], torch.tensor([[0.0, 0, 50, 50]]))
    # Boxes of the same tile never merge, whatever their overlap.
    same = greedy_nmm(dup, 0.5, cut=torch.tensor([True, True]), sources=torch.tensor([3, 3]))
    assert len(same["scores"]) == 2


def test_slicing_on_a_real_model():
    predictor = Predictor.from_model(tiny_model(), CLASS_NAMES, imgsz=64, conf=0.3,
                                     slicing=Slicing(tile=64, overlap=0.2, tile_imgsz=64))
    (r,) = predictor(torch.randint(0, 256, (3, 100, 150), dtype=torch.uint8))
    assert 0 < len(r) <= predictor.max_det and float(r.scores.min()) >= 0.3
    assert float(r.boxes[:, 2].max()) <= 150 and float(r.boxes[:, 3].max()) <= 100


@pytest.mark.parametrize("kwargs, message", [
    ({"tile": 8}, "tile"), ({"overlap": 1.0}, "overlap"), ({"merge": "wbf"}, "merge"),
    ({"match": 0}, "match"), ({"tile_imgsz": 4}, "tile_imgsz"),
])
def test_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Slicing(**kwargs)
    with pytest.raises(ValueError, match="cannot be combined"):
        from scaledet.inference import TTA

        Predictor.from_model(ColourBoxDetector(), CLASS_NAMES, tta=TTA(), slicing=Slicing())
