"""Brute-force pure-Python references for the NMS family (lists of floats, no torch).

Written straight from the papers' pseudo-code, as slowly and plainly as possible:
greedy NMS, Soft-NMS (Bodla et al. 2017, Algorithm 1) and DIoU-NMS (Zheng et al. 2020).
Tie rule: equal scores -> lower index first. Boxes are (x1, y1, x2, y2) tuples.
"""

from __future__ import annotations

import math


def iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def area(a) -> float:
    return max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])


def center_penalty(a, b) -> float:
    """rho^2 / c^2 of DIoU."""
    dx = (a[0] + a[2]) / 2 - (b[0] + b[2]) / 2
    dy = (a[1] + a[3]) / 2 - (b[1] + b[3]) / 2
    cw = max(a[2], b[2]) - min(a[0], b[0])
    ch = max(a[3], b[3]) - min(a[1], b[1])
    c2 = cw * cw + ch * ch
    return (dx * dx + dy * dy) / c2 if c2 > 0 else 0.0


def greedy_nms(boxes, scores, threshold, classes=None, criterion=iou) -> list[int]:
    """Keep the best box, drop every same-class box with criterion > threshold, repeat."""
    order = sorted(range(len(boxes)), key=lambda i: (-scores[i], i))
    keep, suppressed = [], set()
    for pos, i in enumerate(order):
        if i in suppressed:
            continue
        keep.append(i)
        for j in order[pos + 1:]:
            if classes is not None and classes[i] != classes[j]:
                continue
            if criterion(boxes[i], boxes[j]) > threshold:
                suppressed.add(j)
    return keep


def diou_nms(boxes, scores, threshold, beta=1.0, classes=None) -> list[int]:
    def criterion(a, b):
        return iou(a, b) - center_penalty(a, b) ** beta

    return greedy_nms(boxes, scores, threshold, classes, criterion)


def soft_nms(boxes, scores, method="gaussian", sigma=0.5, iou_threshold=0.3,
             score_threshold=0.001, classes=None) -> tuple[list[int], list[float]]:
    """Bodla et al. Algorithm 1; boxes whose score drops below score_threshold are removed."""
    s = list(scores)
    remaining = [i for i in range(len(boxes)) if s[i] >= score_threshold]
    keep, kept_scores = [], []
    while remaining:
        m = max(remaining, key=lambda i: (s[i], -i))
        keep.append(m)
        kept_scores.append(s[m])
        remaining.remove(m)
        for i in remaining:
            if classes is not None and classes[i] != classes[m]:
                continue
            o = iou(boxes[m], boxes[i])
            if method == "linear":
                weight = 1 - o if o > iou_threshold else 1.0
            else:
                weight = math.exp(-(o * o) / sigma)
            s[i] *= weight
        remaining = [i for i in remaining if s[i] >= score_threshold]
    return keep, kept_scores
