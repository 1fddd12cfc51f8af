import pytest
import torch

from scaledet.inference.merge import (
    concat,
    greedy_nmm,
    nms_merge,
    wbf_clusters,
    weighted_boxes_fusion,
)


def dets(rows: list[tuple[list[float], float, int]]) -> dict[str, torch.Tensor]:
    """``[(box xyxy, score, label), ...]`` -> detections dict."""
    return {"boxes": torch.tensor([r[0] for r in rows], dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor([r[1] for r in rows], dtype=torch.float32),
            "labels": torch.tensor([r[2] for r in rows], dtype=torch.int64)}


def test_wbf_hand_worked_case():
    # Two passes. Class 0, visited by score: A 0.9, D 0.8, C 0.7, B 0.6.
    #  A [0,0,10,10]           -> cluster 1
    #  D [50,50,60,60]         -> cluster 2 (no overlap)
    #  C [1,1,11,11]           IoU(C, A) = 81/119 = 0.68 > 0.55 -> cluster 1,
    #                          fused = (0.9 A + 0.7 C) / 1.6 = [0.4375, .., 10.4375]
    #  B [1.5,1.5,11.5,11.5]   IoU(B, fused) = 8.9375^2 / (200 - 8.9375^2) = 0.665 -> cluster 1,
    #                          fused = (0.7 + 0.9 + 0.6 * 1.5) / 2.2 = 0.72727 (x1), +10 (x2)
    # Class 1: E alone. Scores: mean * min(n, T) / T with T = 2.
    det = dets([([0, 0, 10, 10], 0.9, 0),         # A
                ([50, 50, 60, 60], 0.8, 0),       # D
                ([1, 1, 11, 11], 0.7, 0),         # C
                ([1.5, 1.5, 11.5, 11.5], 0.6, 0),  # B
                ([0, 0, 10, 10], 0.5, 1)])        # E
    out = weighted_boxes_fusion(det, num_sources=2, iou=0.55)
    a = 1.6 / 2.2
    torch.testing.assert_close(out["boxes"], torch.tensor([[a, a, a + 10, a + 10],
                                                           [50, 50, 60, 60],
                                                           [0, 0, 10, 10]]))
    torch.testing.assert_close(out["scores"], torch.tensor([2.2 / 3, 0.8 / 2, 0.5 / 2]))
    assert out["labels"].tolist() == [0, 0, 1]
    _, counts = wbf_clusters(det, 0.55)
    assert sorted(counts.tolist()) == [1, 1, 3]


def test_wbf_per_box_source_count_and_threshold():
    det = dets([([0, 0, 10, 10], 0.9, 0), ([1, 1, 11, 11], 0.7, 0)])
    # Above the IoU (0.68) the two fuse; at a higher threshold they stay apart.
    assert len(weighted_boxes_fusion(det, 2, iou=0.6)["scores"]) == 1
    apart = weighted_boxes_fusion(det, 2, iou=0.7)
    torch.testing.assert_close(apart["scores"], torch.tensor([0.45, 0.35]))
    # T = 1 for a box only one pass could see: its score is not halved.
    fused, counts = wbf_clusters(dets([([0, 0, 10, 10], 0.6, 0)]), 0.55)
    from scaledet.inference.merge import wbf_rescale

    assert wbf_rescale(fused, counts, torch.tensor([1]))["scores"].tolist() == [
        pytest.approx(0.6)]
    with pytest.raises(ValueError, match="iou"):
        weighted_boxes_fusion(det, 2, iou=0.0)


def test_wbf_identity_cases():
    det = dets([([0, 0, 10, 10], 0.9, 0), ([20, 20, 30, 30], 0.5, 0), ([0, 0, 10, 10], 0.4, 2)])
    out = weighted_boxes_fusion(det, 1)
    for k in ("boxes", "scores", "labels"):
        torch.testing.assert_close(out[k], det[k])
    same = concat([dets([([3, 4, 9, 12], s, 1)]) for s in (0.8, 0.6, 0.4)])
    out = weighted_boxes_fusion(same, 3)
    torch.testing.assert_close(out["boxes"], torch.tensor([[3.0, 4, 9, 12]]))
    torch.testing.assert_close(out["scores"], torch.tensor([0.6]))
    assert len(weighted_boxes_fusion(dets([]), 2)["scores"]) == 0


def test_greedy_nmm_joins_a_cut_box_with_the_whole_one():
    det = dets([([100, 10, 128, 50], 0.6, 0),   # cut by a tile edge at x = 128
                ([100, 10, 140, 50], 0.8, 0),   # the whole object, seen by the next tile
                ([100, 10, 128, 50], 0.7, 1),   # another class: untouched
                ([300, 300, 310, 310], 0.5, 0)])
    out = greedy_nmm(det, 0.5)
    torch.testing.assert_close(out["boxes"], torch.tensor([[100.0, 10, 140, 50],
                                                           [100, 10, 128, 50],
                                                           [300, 300, 310, 310]]))
    assert out["scores"].tolist() == pytest.approx([0.8, 0.7, 0.5])
    assert out["labels"].tolist() == [0, 1, 0]


def test_greedy_nmm_takes_the_union():
    keeper, piece, far = [0, 0, 10, 10], [5, 0, 14, 10], [12, 0, 30, 10]
    # IoS(keeper, piece) = 50 / 90 > 0.5: merged into [0, 0, 14, 10] with the keeper's score.
    # IoS([0, 0, 14, 10], far) = 20 / 140 < 0.5: kept on its own.
    out = greedy_nmm(dets([(keeper, 0.9, 0), (piece, 0.5, 0), (far, 0.4, 0)]), 0.5)
    torch.testing.assert_close(out["boxes"], torch.tensor([[0.0, 0, 14, 10], [12, 0, 30, 10]]))
    assert out["scores"].tolist() == pytest.approx([0.9, 0.4])
    # IoU instead of IoS: 50 / 140 < 0.5, nothing merges.
    assert len(greedy_nmm(dets([(keeper, 0.9, 0), (piece, 0.5, 0)]), 0.5, "iou")["scores"]) == 2
    with pytest.raises(ValueError, match="metric"):
        greedy_nmm(dets([]), 0.5, "giou")


def test_greedy_nmm_pieces_join_through_the_whole_box():
    # Four pieces of one object cut by a vertical and a horizontal tile edge, each overlapping
    # its neighbours by a third, plus the whole object from the full-image pass. The top
    # piece scores highest: it absorbs the whole box (inside which it lies), and the grown box
    # then absorbs the other pieces.
    pieces = [([0, 0, 60, 60], 0.9), ([40, 0, 100, 60], 0.8), ([0, 40, 60, 100], 0.7),
              ([40, 40, 100, 100], 0.6)]
    det = dets([(b, s, 0) for b, s in pieces] + [([0, 0, 100, 100], 0.5, 0)])
    out = greedy_nmm(det, 0.5)
    torch.testing.assert_close(out["boxes"], torch.tensor([[0.0, 0, 100, 100]]))
    assert out["scores"].tolist() == pytest.approx([0.9])
    # Without the whole box, neighbouring pieces share 20 / 60 of their area: four boxes.
    assert len(greedy_nmm(dets([(b, s, 0) for b, s in pieces]), 0.5)["scores"]) == 4


@pytest.mark.parametrize("method", ["hard", "none", "diou", "soft-linear", "soft-gaussian"])
def test_nms_merge_variants(method):
    det = dets([([0, 0, 10, 10], 0.9, 0), ([1, 0, 11, 10], 0.8, 0), ([1, 0, 11, 10], 0.7, 1)])
    out = nms_merge(det, method, iou=0.5, min_score=0.01)
    assert out["scores"][0] == pytest.approx(0.9)
    if method in ("hard", "none", "diou"):  # "none" (NMS-free heads) merges passes by hard NMS
        assert out["scores"].tolist() == pytest.approx([0.9, 0.7])
    else:  # the overlapping box of class 0 is decayed, not removed
        assert len(out["scores"]) == 3 and float(out["scores"][1:].min()) < 0.7
    with pytest.raises(ValueError, match="nms"):
        nms_merge(det, "fast")
