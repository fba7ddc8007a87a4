"""The layers hold: `features/` imports nothing of the project but itself, `models/` imports
`features/` and itself only (docs/ARCHITECTURE.md, "Layers"). The imports are read from the
source (every `import` and `from ... import`, at any depth), not run."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("features", "models", "pipeline", "notebooks", "tests")
ALLOWED = {"features": {"features"}, "models": {"features", "models"}}


def project_imports(path: Path) -> set[tuple[str, int]]:
    """(top-level project package, line) of every import of `path`."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        out |= {(n.split(".")[0], node.lineno) for n in names if n.split(".")[0] in PROJECT}
    return out


def forbidden(layer: str) -> list[str]:
    """`file:line imports package` for every arrow out of `layer` that its rule forbids."""
    return [f"{p.relative_to(ROOT)}:{line} imports {pkg}" for p in sorted((ROOT / layer).rglob("*.py"))
            for pkg, line in sorted(project_imports(p)) if pkg not in ALLOWED[layer]]


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_no_forbidden_import_arrow(layer: str) -> None:
    assert forbidden(layer) == []


def test_the_check_sees_an_arrow_at_any_depth(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("import numpy\nfrom features.layout import x\n\ndef g():\n    from pipeline.core import cli\n    import models.metrics\n")
    assert project_imports(f) == {("features", 2), ("pipeline", 5), ("models", 6)}
