import math

import pytest
import torch

from scaledet.inference import TTA, Predictor
from scaledet.inference.tta import input_size, snip_ranges
from tests.inference.conftest import CLASS_NAMES, ColourBoxDetector, draw, tiny_model


class SizeScoredDetector(ColourBoxDetector):
    """ColourBoxDetector whose score tells which pass found the box: input height / 1000."""

    def forward(self, images):
        out = super().forward(images)
        for d in out:
            d["scores"] = torch.full_like(d["scores"], images.shape[-2] / 1000)
        return out


def test_every_pass_maps_back_to_the_original_box():
    predictor = Predictor.from_model(ColourBoxDetector(), CLASS_NAMES, imgsz=64, conf=0.1)
    image = draw(120, 200, [(1, (30, 20, 110, 90))])
    truth = torch.tensor([[30.0, 20, 110, 90]])
    for scale in (0.5, 1, 2):
        for flip in (False, True):
            size = input_size(64, scale)
            (d,) = predictor.detect([image], size, flip)
            # one input pixel is 200 / size original pixels
            torch.testing.assert_close(d["boxes"], truth, atol=200 / size + 0.5, rtol=0)
    predictor.tta = TTA(scales=(0.5, 1, 2), flip=True)
    (r,) = predictor(image)
    assert len(r) == 1 and r.labels.tolist() == [1]
    assert float(r.scores[0]) == pytest.approx(0.8)  # all 6 passes agree: mean 0.8 * 6 / 6
    torch.testing.assert_close(r.boxes, truth, atol=3, rtol=0)


def test_flip_is_undone():
    predictor = Predictor.from_model(ColourBoxDetector(), CLASS_NAMES, imgsz=64, conf=0.1)
    image = draw(64, 64, [(0, (5, 10, 20, 30)), (2, (40, 0, 64, 12))])
    plain, flipped = predictor.detect([image])[0], predictor.detect([image], flip=True)[0]
    torch.testing.assert_close(flipped["boxes"], plain["boxes"])
    torch.testing.assert_close(plain["boxes"], torch.tensor([[5.0, 10, 20, 30], [40, 0, 64, 12]]))


@pytest.mark.parametrize("merge, plain_score, snip_score", [
    # NMS keeps the best pass: scale 2 (input 128: 0.128) unless its range excludes the object.
    ("nms", 0.128, 0.064),
    # WBF averages the passes: all three (0.032, 0.064, 0.128) / 3, or, with the scale-2 pass
    # excluded, (0.032 + 0.064) / 2 with T = 2 passes able to see an object of this size.
    ("wbf", (0.032 + 0.064 + 0.128) / 3, (0.032 + 0.064) / 2),
])
def test_snip_ranges_drop_passes_outside_their_range(merge, plain_score, snip_score):
    predictor = Predictor.from_model(SizeScoredDetector(), CLASS_NAMES, imgsz=64, conf=0.01)
    image = draw(64, 64, [(0, (5, 5, 55, 55))])  # size 50 px at scale 1 (imgsz = image side)
    scales = (0.5, 1.0, 2.0)
    ranges = ((32, math.inf), (0, math.inf), (0, 40))  # scale 2 keeps objects below 40 px
    predictor.tta = TTA(scales, merge=merge)
    assert predictor(image)[0].scores.tolist() == pytest.approx([plain_score], abs=1e-6)
    predictor.tta = TTA(scales, ranges=ranges, merge=merge)
    assert predictor(image)[0].scores.tolist() == pytest.approx([snip_score], abs=1e-6)
    # A small object (10 px) is outside the 0.5 pass's range and inside the others.
    small = draw(64, 64, [(0, (20, 20, 30, 30))])
    expected = 0.128 if merge == "nms" else (0.064 + 0.128) / 2
    assert predictor(small)[0].scores.tolist() == pytest.approx([expected], abs=1e-6)


def test_tta_on_a_real_model_is_well_formed():
    predictor = Predictor.from_model(tiny_model(), CLASS_NAMES, imgsz=64, conf=0.1,
                                     tta=TTA.parse("scales=0.5,1,1.5,flip,snip"))
    image = torch.randint(0, 256, (3, 50, 90), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0))
    (r,) = predictor(image)
    assert 0 < len(r) <= predictor.max_det
    assert float(r.scores.min()) >= 0.1
    assert r.scores.tolist() == sorted(r.scores.tolist(), reverse=True)
    assert float(r.boxes[:, 2].max()) <= 90 and float(r.boxes[:, 3].max()) <= 50
    predictor.tta = TTA((1.0,), merge="nms")  # one pass + NMS again = the plain result
    torch.testing.assert_close(predictor(image)[0].boxes, predictor.detect([image])[0]["boxes"])


def test_parse_and_validation():
    t = TTA.parse("scales=0.75,1,1.5,flip,snip", merge="nms")
    assert t.scales == (0.75, 1.0, 1.5) and t.flip and t.merge == "nms"
    assert t.ranges == ((32.0, math.inf), (0.0, math.inf), (0.0, 96.0)) == snip_ranges(t.scales)
    assert TTA.parse("scales=1,2").ranges is None and not TTA.parse("scales=1,2").flip
    assert [input_size(320, s) for s in (0.75, 1, 1.5, 0.01)] == [256, 320, 480, 32]
    for spec in ("sizes=1,2", "scales=", "scales=1,x"):
        with pytest.raises(ValueError, match="--tta"):
            TTA.parse(spec)
    with pytest.raises(ValueError, match="scales"):
        TTA(scales=(1.0, -2.0))
    with pytest.raises(ValueError, match="ranges"):
        TTA(scales=(1.0, 2.0), ranges=((0, 10),))
    with pytest.raises(ValueError, match="merge"):
        TTA(merge="nmm")
