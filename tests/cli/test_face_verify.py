"""``scaledet data synth --task face-identities --scenes`` (unaligned verify photos) and
``scaledet face verify --detector`` end to end, with rigged face-n detectors and an untrained
embedder: the run finishes, writes verification.json with per-stage latency, and counts and
names the photos without a face instead of crashing."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from scaledet.cli import main
from scaledet.faces import read_pairs
from tests.faces.face_models import rigged_face_detector, tiny_embedder

SYNTH = ["--task", "face-identities", "--identities", "2", "--per-identity", "2",
         "--verify-identities", "3", "--verify-per-identity", "2", "--pairs-per-fold", "1",
         "--imgsz", "32"]


ONE_THREAD = True  # tiny models (tests/conftest.py)


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_synth_scenes_are_deterministic_and_named_as_the_crops(tmp_path, capsys):
    a, b, c, plain = (tmp_path / n for n in ("a", "b", "c", "plain"))
    assert main(["data", "synth", str(a), *SYNTH, "--scenes", "96"]) == 0
    assert "unaligned 96 px photos" in capsys.readouterr().out
    assert main(["data", "synth", str(b), *SYNTH, "--scenes", "96"]) == 0
    assert _files(a) == _files(b)  # byte-identical for one seed
    assert main(["data", "synth", str(plain), *SYNTH]) == 0
    assert not (plain / "verify_scenes").exists()
    # the crops do not depend on --scenes
    assert {k: v for k, v in _files(a).items() if k.parts[0] != "verify_scenes"} == _files(plain)
    pf = read_pairs(a / "pairs.txt")
    scenes = pf.image_paths(a / "verify_scenes")  # every pair's photos exist, as .jpg
    crops = pf.image_paths(a / "verify")
    assert all(p.suffix == ".jpg" and p.parent.parent.name == "verify_scenes"
               for pair in scenes for p in pair)
    assert [(x.stem, y.stem) for x, y in scenes] == [(x.stem, y.stem) for x, y in crops]
    with Image.open(scenes[0][0]) as im:
        assert im.size == (96, 96)
    truth = json.loads((a / "verify_scenes" / "faces.json").read_text())
    assert sorted(truth) == sorted(str(p.relative_to(a / "verify_scenes"))
                                   for p in (a / "verify_scenes").rglob("*.jpg"))
    assert main(["data", "synth", str(c), *SYNTH, "--scenes", "96", "--seed", "1"]) == 0
    rel = scenes[0][0].relative_to(a)
    assert (c / rel).read_bytes() != (a / rel).read_bytes()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("verify")
    assert main(["data", "synth", str(d / "ids"), *SYNTH, "--scenes", "96"]) == 0
    return {"ids": d / "ids", "emb": tiny_embedder(d / "emb.safetensors"),
            "on": rigged_face_detector(d / "on.safetensors", 6.0),
            "off": rigged_face_detector(d / "off.safetensors", -30.0)}


def _verify(s, out, detector=None, root="verify_scenes"):
    args = ["face", "verify", "--weights", str(s["emb"]), "--pairs", str(s["ids"] / "pairs.txt"),
            "--root", str(s["ids"] / root), "--out", str(out)]
    if detector is not None:
        args += ["--detector", str(s[detector])]
    assert main(args) == 0
    return json.loads((out / "verification.json").read_text())


def test_verify_with_detector_reports_latency_per_stage(tmp_path, setup, capsys):
    report = _verify(setup, tmp_path / "v", "on")
    out = capsys.readouterr().out
    assert "a face in every one of the 6 photos" in out
    assert "latency per face (median ms, batch 1, cpu): detect " in out
    lat = report["latency_ms"]
    assert all(lat[k] > 0 for k in ("detect", "align", "embed"))
    assert lat["total"] == pytest.approx(lat["detect"] + lat["align"] + lat["embed"])
    assert (report["images"], report["failed_images"], report["failed_pairs"]) == (6, 0, 0)
    assert report["pick"] == "score" and report["failures"] == {}
    assert report["num_same"] == report["num_different"] == 10
    assert (tmp_path / "v" / "roc.png").stat().st_size > 0
    aligned = _verify(setup, tmp_path / "a", root="verify")  # the aligned-crop path as before
    assert "latency_ms" not in aligned and aligned["num_same"] == 10
    assert main(["face", "verify", "--weights", str(setup["emb"]), "--pairs",
                 str(setup["ids"] / "pairs.txt"), "--root", str(setup["ids"] / "verify"),
                 "--pick", "largest"]) == 2
    assert "--pick and --conf choose the face a detector finds" in capsys.readouterr().err


def test_verify_counts_and_names_photos_without_a_face(tmp_path, setup, capsys, monkeypatch):
    import scaledet.inference.faces as faces

    # one photo black; the rigged detector (a face everywhere) made to see none there
    root = tmp_path / "scenes"
    for src in (setup["ids"] / "verify_scenes").rglob("*.jpg"):
        dst = root / src.relative_to(setup["ids"] / "verify_scenes")
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())
    blank = root / "v00001" / "v00001_0001.jpg"
    Image.new("RGB", (96, 96), (0, 0, 0)).save(blank)
    wrap = faces._predictor_detector

    def blind_on_black(predictor):
        detect = wrap(predictor)

        def run(image):
            det = detect(image)
            return {k: v[:0] for k, v in det.items()} if image.max() < 10 else det
        return run

    monkeypatch.setattr(faces, "_predictor_detector", blind_on_black)
    args = ["face", "verify", "--weights", str(setup["emb"]), "--pairs",
            str(setup["ids"] / "pairs.txt"), "--root", str(root), "--out", str(tmp_path / "v"),
            "--detector", str(setup["on"])]
    assert main(args) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "v" / "verification.json").read_text())
    pairs = read_pairs(setup["ids"] / "pairs.txt").image_paths(root)
    with_blank = sum(blank in pair for pair in pairs)
    assert with_blank > 0
    assert report["failures"] == {str(blank): "no face detected"}
    assert (report["failed_images"], report["failed_pairs"]) == (1, with_blank)
    assert report["failed_pair_score"] == -1.0
    assert f"no face in 1 of 6 photos; their {with_blank} pairs score -1:" in out
    assert f"  {blank}: no face detected" in out


def test_verify_survives_when_no_photo_has_a_face(tmp_path, setup, capsys):
    report = _verify(setup, tmp_path / "v", "off")
    assert (report["failed_images"], report["failed_pairs"]) == (6, 20)
    assert report["accuracy"] == pytest.approx(0.5)  # every pair "different": half right
    assert report["latency_ms"]["align"] is None and report["latency_ms"]["detect"] > 0
    assert "align -, embed -, total -" in capsys.readouterr().out


def test_verify_refuses_a_detector_without_landmarks(tmp_path, setup, capsys):
    from tests.faces.face_models import plain_detector

    det = plain_detector(tmp_path / "fcos.safetensors")
    assert main(["face", "verify", "--weights", str(setup["emb"]), "--pairs",
                 str(setup["ids"] / "pairs.txt"), "--root", str(setup["ids"] / "verify_scenes"),
                 "--detector", str(det), "--out", str(tmp_path / "v")]) == 2
    assert "fcos.safetensors: a detector without five face landmarks" in capsys.readouterr().err
