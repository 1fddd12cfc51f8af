"""Labels of annotated images: readable text, inside the image, never piled on one spot."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import ImageDraw

from scaledet.plots.draw import draw_detections, label_text, place_labels


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _inside(r, w: int, h: int) -> bool:
    return 0 <= r[0] < r[2] <= w and 0 <= r[1] < r[3] <= h


def test_digit_class_names_stay_apart_from_the_score():
    assert label_text("1", 0.95) == "1 95%"  # never "1 0.95", read as "10.95"
    assert label_text("circle", 0.504) == "circle 50%"
    assert label_text("7", None) == "7"


@pytest.mark.parametrize("box", [(10, 0, 40, 30),  # top edge: no room above
                                 (100, 40, 128, 70),  # right edge: label wider than the room
                                 (5, 118, 30, 128),  # bottom edge
                                 (-5, -5, 140, 140)])  # larger than the image
def test_labels_stay_inside_the_image(box):
    (rect,) = place_labels([box], [(40, 10)], 128, 128)
    assert rect is not None and _inside(rect, 128, 128)
    assert (rect[2] - rect[0], rect[3] - rect[1]) == (40, 10)


def test_labels_of_identical_and_overlapping_boxes_do_not_pile_up():
    boxes = [(20, 30, 80, 90)] * 2 + [(22, 32, 82, 92), (0, 0, 60, 8)]
    rects = place_labels(boxes, [(40, 10)] * 4, 128, 128)
    placed = [r for r in rects if r is not None]
    assert len(placed) == 4
    assert all(_inside(r, 128, 128) for r in placed)
    assert not any(_overlap(a, b) for i, a in enumerate(placed) for b in placed[i + 1:])


def test_a_label_with_no_free_place_is_left_out():
    # a 20 px image: two labels fill it, every place for the third overlaps one of them
    rects = place_labels([(0, 0, 20, 20)] * 3, [(20, 10)] * 3, 20, 20, max_cover=1.0)
    assert rects[:2] == [(0, 0, 20, 10), (0, 10, 20, 20)]  # above (shifted in), below
    assert rects[2] is None


def test_labels_cover_at_most_a_share_of_the_image():
    boxes = [(x, y, x + 10, y + 10) for y in range(0, 100, 12) for x in range(0, 100, 12)]
    rects = place_labels(boxes, [(30, 10)] * len(boxes), 100, 100, max_cover=0.3)
    placed = [r for r in rects if r is not None]
    assert 5 <= len(placed) <= 10  # 10 labels of 300 px are 30% of the image
    assert rects[0] is not None  # the first (most confident) box keeps its label
    assert not any(_overlap(a, b) for i, a in enumerate(placed) for b in placed[i + 1:])
    assert place_labels([(0, 0, 5, 5)], [(30, 10)], 20, 20)[0] is not None  # always one


@pytest.fixture
def calls(monkeypatch) -> list[tuple[str, tuple]]:
    """``(text, bounding box)`` of every ``ImageDraw.text`` call."""
    calls = []
    real_text = ImageDraw.ImageDraw.text

    def spy(self, xy, text, *args, **kwargs):
        calls.append((text, self.textbbox(xy, text, font=kwargs.get("font"))))
        return real_text(self, xy, text, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", spy)
    return calls


def test_draw_detections_writes_separated_labels_inside_the_image(calls):
    image = np.full((64, 96, 3), 128, np.uint8)
    det = {"boxes": torch.tensor([[10.0, 0.0, 50.0, 30.0], [10.0, 0.0, 50.0, 30.0],
                                  [70.0, 40.0, 96.0, 64.0]]),
           "scores": torch.tensor([0.5, 0.95, 0.8]), "labels": torch.tensor([1, 0, 2])}
    im = draw_detections(image, det, ["0", "1", "2"])
    assert im.size == (96, 64)
    assert [t for t, _ in calls] == ["0 95%", "2 80%", "1 50%"]  # most confident first
    boxes = [b for _, b in calls]
    assert all(_inside(b, 96, 64) for b in boxes)
    assert not any(_overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_a_label_wider_than_the_image_shortens_the_name_and_keeps_the_score(calls):
    det = {"boxes": torch.tensor([[2.0, 2.0, 30.0, 30.0]]), "scores": torch.tensor([0.9]),
           "labels": torch.tensor([0])}
    draw_detections(np.zeros((32, 40, 3), np.uint8), det, ["hexagonal prism"])
    ((text, box),) = calls
    assert text.endswith(" 90%") and "hexagonal prism".startswith(text[:-4])
    assert _inside(box, 40, 32)
