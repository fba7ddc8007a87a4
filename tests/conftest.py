"""Shared fixtures. Real dataset files are read from ../shared/tpugraphs-samples (or the folder
named by TPUGRAPHS_SAMPLES), the real HLO module from ../shared/tpugraphs-hlo (or
TPUGRAPHS_HLO); tests that need them skip with the reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = Path(os.environ.get("TPUGRAPHS_SAMPLES", ROOT.parent / "shared" / "tpugraphs-samples"))
SHARED_HLO = Path(os.environ.get("TPUGRAPHS_HLO", ROOT.parent / "shared" / "tpugraphs-hlo"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: end-to-end and multi-process tests (deselect with -m 'not slow')")


@pytest.fixture(scope="session")
def samples() -> Path:
    """The real TpuGraphs sample tree (npz root plus kaggle/sample_submission.csv)."""
    if not (SAMPLES / "layout").is_dir():
        pytest.skip(f"real TpuGraphs samples not found at {SAMPLES} (set TPUGRAPHS_SAMPLES to their folder)")
    return SAMPLES


@pytest.fixture(scope="session")
def real_files(samples: Path) -> list[Path]:
    return sorted(samples.rglob("*.npz"))


@pytest.fixture(scope="session")
def shared_hlo() -> Path:
    """The dataset's unet3d layout module as HLO text and the configs its autotuner tried."""
    if not (SHARED_HLO / "unet3d_layout_module.hlo.txt").is_file():
        pytest.skip(f"the dataset's HLO module not found at {SHARED_HLO} (set TPUGRAPHS_HLO to its folder)")
    return SHARED_HLO
