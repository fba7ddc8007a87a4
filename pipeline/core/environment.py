"""What the machine offers a run: the checkout's git commit, and whether Kaggle credentials are set."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def git_commit() -> str:
    """The short hash of the checked-out commit, or "nogit" outside a git checkout (Kaggle)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "nogit"
    except (OSError, subprocess.SubprocessError):
        return "nogit"


def credentials_present() -> bool:
    """KAGGLE_USERNAME and KAGGLE_KEY, or a kaggle.json in KAGGLE_CONFIG_DIR (default ~/.kaggle)."""
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return True
    cfg_dir = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle"))
    return (cfg_dir / "kaggle.json").is_file()
