"""The layering of scaledet, checked on the syntax tree of every module (imports inside
functions and under TYPE_CHECKING included): a module imports only from its own layer and the
layers below it, ``inference`` and ``engine`` never import each other, and no two modules
import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "scaledet"
LAYERS = {"ops": 0, "nn": 1, "losses": 1, "models": 2, "faces": 2, "data": 3,
          "evaluation": 4, "plots": 4, "inference": 5, "engine": 5, "api": 6, "cli": 6,
          "integrations": 6, "__init__": 6}
APART = {("inference", "engine"), ("engine", "inference")}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    """``(line, imported scaledet module)`` of every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found += [(node.lineno, f"{base}.{a.name}" if base == "scaledet" else base)
                      for a in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] == "scaledet"]


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_package_has_a_layer():
    unknown = {_layer(m) for m in _modules()} - set(LAYERS)
    assert not unknown, f"packages without a layer in tests/test_layers.py: {unknown}"


@pytest.mark.parametrize("module", sorted(_modules()))
def test_imports_only_from_its_layer_and_below(module):
    path = _modules()[module]
    mine = _layer(module)
    bad = []
    for line, name in _imports(path, module):
        theirs = _layer(name)
        if theirs == "__version__":
            continue
        if LAYERS.get(theirs, 99) > LAYERS[mine] or (mine, theirs) in APART:
            bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name} "
                       f"({mine} may not import {theirs})")
    assert not bad, "\n".join(bad)


def test_no_two_modules_import_each_other():
    modules = _modules()
    graph = {m: {n for _, n in _imports(p, m)} for m, p in modules.items()}

    def targets(m: str) -> set[str]:  # `from scaledet.data import x` names the package
        return {n for n in graph[m] if n in modules and n != m}

    pairs = sorted({tuple(sorted((a, b))) for a in graph for b in targets(a)
                    if a in targets(b) and not (a.startswith(b) or b.startswith(a))})
    assert not pairs, f"modules importing each other: {pairs}"


def test_the_check_sees_a_bad_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from scaledet.engine.trainer import Trainer\n")
    assert _imports(bad, "scaledet.inference.bad") == [(2, "scaledet.engine.trainer")]
