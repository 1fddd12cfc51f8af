"""``scaledet eval`` through scaledet.cli.main."""

from __future__ import annotations

import json

import pytest

from scaledet.cli import main
from scaledet.evaluation import evaluate_coco
from tests.evaluation.coco_cases import make_case


@pytest.fixture
def files(tmp_path):
    gt, dets = make_case(4)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    return tmp_path, gt, dets


def test_eval_prints_stats_and_writes_json(files, capsys):
    tmp, gt, dets = files
    out = tmp / "out" / "stats.json"
    code = main(["eval", "--gt", str(tmp / "gt.json"), "--dt", str(tmp / "dt.json"),
                 "--json", str(out)])
    assert code == 0
    expected = evaluate_coco(gt, dets)
    printed = capsys.readouterr().out.splitlines()
    assert printed[:12] == expected.summary().splitlines()
    written = json.loads(out.read_text())
    assert written["stats"] == pytest.approx(expected.stats.tolist(), abs=1e-15)
    assert written["per_category"] == pytest.approx(expected.per_category)
    assert set(written["per_category"]) == {c["name"] for c in gt["categories"]}


def test_eval_writes_plots(files, capsys):
    tmp, _, _ = files
    code = main(["eval", "--gt", str(tmp / "gt.json"), "--dt", str(tmp / "dt.json"),
                 "--plots", str(tmp / "plots")])
    assert code == 0
    pngs = sorted(p.name for p in (tmp / "plots").glob("*.png"))
    assert "pr_all_iou.png" in pngs and "pr_iou0.50.png" in pngs and len(pngs) == 11
    assert (tmp / "plots" / "pr_iou0.50.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d[0].pop("bbox"), "detection 0 has no 'bbox'"),
    (lambda d: d[0].__setitem__("bbox", [0, 0, 1]), "bbox must be 4 numbers"),
    (lambda d: d[0].__setitem__("bbox", [0, 0, -1, 1]), "negative width"),
    (lambda d: d[0].__setitem__("image_id", 31337), "image_id 31337 is not in"),
    (lambda d: d[0].__setitem__("category_id", 31337), "category_id 31337 is not in"),
])
def test_eval_malformed_detections_exit_2_with_one_line(files, capsys, mutate, message):
    tmp, _, dets = files
    mutate(dets)
    (tmp / "dt.json").write_text(json.dumps(dets))
    code = main(["eval", "--gt", str(tmp / "gt.json"), "--dt", str(tmp / "dt.json")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "dt.json" in err and message in err


def test_eval_missing_gt_file(tmp_path, capsys):
    code = main(["eval", "--gt", str(tmp_path / "none.json"), "--dt", str(tmp_path / "x.json")])
    assert code == 2
    assert "none.json" in capsys.readouterr().err
