"""``scaledet demo`` run twice keeps the first run: the second writes to numbered folders."""

import scaledet.cli.train as train_cli
from scaledet.cli import main


def test_second_demo_keeps_the_first(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_cli, "DEMO_TRAIN", 16)
    monkeypatch.setattr(train_cli, "DEMO_VAL", 4)
    monkeypatch.setattr(train_cli, "DEMO_IMGSZ", 64)
    argv = ["demo", "--minutes", "0.03", "--out", str(tmp_path), "--nproc", "1"]
    assert main(argv) == 0
    first = tmp_path / "train" / "weights" / "best.safetensors"
    before = first.read_bytes()
    metrics = (tmp_path / "train" / "metrics.csv").read_text()
    assert main(argv) == 0
    assert first.read_bytes() == before and (tmp_path / "train" / "metrics.csv").read_text() == metrics
    assert (tmp_path / "train2" / "weights" / "best.safetensors").is_file()
    assert any((tmp_path / "predictions").iterdir()) and any((tmp_path / "predictions2").iterdir())
    assert "holds an earlier demo run (kept)" in capsys.readouterr().out
    assert train_cli.next_run_suffix(tmp_path) == "3"
