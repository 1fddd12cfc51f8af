"""What ``pyproject.toml`` promises: an SPDX license string with a setuptools that reads it (no
deprecation warning on install), and the ``[test]`` extra's packages imported by the tests
plainly, so that a missing one fails the run instead of skipping tests."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = (ROOT / "pyproject.toml").read_text(encoding="utf-8")


def _names(array: str) -> list[str]:
    """Distribution names of a TOML array of requirement strings."""
    return [re.split(r"[<>=!~\[; ]", s, maxsplit=1)[0] for s in re.findall(r'"([^"]+)"', array)]


def test_license_is_an_spdx_string_and_setuptools_reads_it():
    assert re.search(r'^license = "Apache-2.0"$', PYPROJECT, re.M)
    (minimum,) = re.findall(r'"setuptools>=(\d+)', PYPROJECT)
    assert int(minimum) >= 77  # PEP 639 license expressions


def test_test_extra_packages_are_not_skipped_when_missing():
    extra = re.search(r"^test = \[(.*?)\]$", PYPROJECT, re.M | re.S)
    modules = {n.lower().replace("-", "_") for n in _names(extra.group(1))}
    assert {"onnx", "onnxruntime", "pycocotools", "pyarrow"} <= modules
    guards = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for module in re.findall(r"importorskip\(\s*[\"']([\w.]+)", text):
            if module.split(".")[0] in modules:
                guards.append(f"{path.relative_to(ROOT)}: importorskip({module!r})")
    assert not guards, guards
