"""The Makefile's guards and dependencies, read from make itself."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def test_rank_without_a_file_says_what_to_give() -> None:
    proc = subprocess.run(["make", "--no-print-directory", "rank"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "give the program to rank: make rank FILE=<npz>" in proc.stderr


def test_the_kaggle_bundle_depends_on_every_package_file() -> None:
    """A change anywhere in the code the bundle carries rebuilds it (not only pipeline/*.py)."""
    db = subprocess.run(["make", "-pn", "kaggle"], cwd=ROOT, capture_output=True, text=True, timeout=120).stdout
    rule = next(line for line in db.splitlines() if line.startswith("build/kaggle/.complete:"))
    prereqs = set(rule.split(":", 1)[1].split())
    code = {str(p.relative_to(ROOT)) for d in ("pipeline", "features", "models") for p in (ROOT / d).rglob("*.py")}
    assert code - prereqs == set()


def test_lint_and_test_fast_are_listed_and_install_the_venv_first() -> None:
    """`make help` lists both, and on a fresh clone each installs the pinned requirements (ruff, pytest) before it runs."""
    listed = subprocess.run(["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True, timeout=120).stdout
    assert {"lint", "test-fast"} <= {line.split()[0] for line in listed.splitlines() if line.strip()}
    db = subprocess.run(["make", "-pn", "lint", "test-fast"], cwd=ROOT, capture_output=True, text=True, timeout=120).stdout
    for target in ("lint", "test-fast"):
        rule = next(line for line in db.splitlines() if line.startswith(f"{target}:"))
        assert ".venv/.installed" in rule.split(":", 1)[1].split(), rule
