"""The layers hold (docs/ARCHITECTURE.md, "Layers"). The imports are read from the source (every
`import` and `from ... import`, at any depth, so a lazy import inside a function counts too), not
run, and each is mapped to the layer it lands in."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("features", "models", "pipeline", "notebooks", "tests")
STAGES = "pipeline"  # the stage entry points, pipeline/<stage>.py
SUBLAYERS = ("core", "io", "gnn", "train", "tools", "sample", "graph", "reporting")  # pipeline/<sublayer>/ (graph: pipeline/graph.py)
EVERY = {"features", "models", STAGES, *(f"pipeline.{s}" for s in SUBLAYERS)}
# layer -> the layers it may import (itself included)
ALLOWED = {
    "features": {"features"},
    "models": {"features", "models"},
    "pipeline.core": {"pipeline.core"},
    "pipeline.io": {"pipeline.core", "pipeline.io", "features", "models"},
    "pipeline.sample": {"pipeline.core", "pipeline.io", "pipeline.sample", "features"},
    "pipeline.gnn": {"pipeline.core", "pipeline.io", "pipeline.gnn", "features", "models"},
    "pipeline.train": {"pipeline.core", "pipeline.io", "pipeline.train", "features", "models"},
    "pipeline.reporting": {"pipeline.core", "pipeline.io", "pipeline.reporting", "features", "models"},
    "pipeline.graph": {"pipeline.core", "pipeline.train", "pipeline.graph"},  # run_stage: lazily, inside the function
    STAGES: EVERY - {"pipeline.tools"},
    "pipeline.tools": EVERY,
}


def layer_of_module(module: str) -> str | None:
    """The layer an imported module belongs to (None: not the project's, or tests/notebooks)."""
    parts = module.split(".")
    if parts[0] in ("features", "models"):
        return parts[0]
    if parts[0] != "pipeline":
        return None
    if len(parts) > 1 and parts[1] in SUBLAYERS:
        return f"pipeline.{parts[1]}"
    return STAGES


def project_imports(path: Path) -> set[tuple[str, int]]:
    """(layer, line) of every import of `path` that lands in the project."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from pipeline import extract` imports the module pipeline.extract
            modules = [f"{node.module}.{a.name}" for a in node.names] if node.module == "pipeline" else [node.module]
        else:
            continue
        out |= {(layer, node.lineno) for m in modules if (layer := layer_of_module(m))}
    return out


def layer_of_file(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    return layer_of_module(".".join(rel.parts)) or rel.parts[0]


def forbidden(layer: str) -> list[str]:
    """`file:line imports layer` for every arrow out of `layer` that its rule forbids."""
    files = [p for d in ("features", "models", "pipeline") for p in sorted((ROOT / d).rglob("*.py"))
             if layer_of_file(p) == layer]
    assert files, f"no file of layer {layer}"
    return [f"{p.relative_to(ROOT)}:{line} imports {to}" for p in files
            for to, line in sorted(project_imports(p)) if to not in ALLOWED[layer]]


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_no_forbidden_import_arrow(layer: str) -> None:
    assert forbidden(layer) == []


def test_every_file_has_a_layer_with_a_rule() -> None:
    for d in ("features", "models", "pipeline"):
        for p in (ROOT / d).rglob("*.py"):
            assert layer_of_file(p) in ALLOWED, p


def test_the_check_sees_an_arrow_at_any_depth(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("import numpy\nfrom features.layout import x\n\ndef g():\n    from pipeline.core import cli\n"
                 "    import models.metrics\n    from pipeline import extract, graph\n    from pipeline.tools.bench import y\n")
    assert project_imports(f) == {("features", 2), ("pipeline.core", 5), ("models", 6), (STAGES, 7), ("pipeline.graph", 7),
                                  ("pipeline.tools", 8)}


def test_a_forbidden_arrow_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "repo"
    (root / "pipeline" / "core").mkdir(parents=True)
    (root / "pipeline" / "core" / "x.py").write_text("from pipeline.io.npz import read_graph\n")
    monkeypatch.setitem(globals(), "ROOT", root)
    assert forbidden("pipeline.core") == ["pipeline/core/x.py:1 imports pipeline.io"]
