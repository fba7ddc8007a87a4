"""Hydra entry points for the stages, with one-line errors for bad input.

Each stage module does `@stage("<config name>")` on its `main(cfg)`. A `DataError` raised
anywhere below prints `error: <file>: <problem>` on stderr (no traceback) and exits 1.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Callable

import hydra
from omegaconf import DictConfig

from pipeline.errors import DataError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
log = logging.getLogger("pipeline")


def run_guarded(fn: Callable[[DictConfig], object], cfg: DictConfig) -> object:
    try:
        return fn(cfg)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted; finished outputs are kept, partial ones were removed", file=sys.stderr)
        sys.exit(130)


def stage(config_name: str) -> Callable[[Callable[[DictConfig], object]], Callable[[], object]]:
    """Turn `main(cfg)` into a hydra command-line entry point composed from `conf/<config_name>.yaml`."""

    def deco(fn: Callable[[DictConfig], object]) -> Callable[[], object]:
        @functools.wraps(fn)
        def task(cfg: DictConfig) -> object:
            return run_guarded(fn, cfg)

        return hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")(task)

    return deco


def compose(config_name: str, overrides: list[str] | None = None) -> DictConfig:
    """The same config a stage gets, composed without running it (tests, notebooks)."""
    from hydra import compose as _compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return _compose(config_name=config_name, overrides=overrides or [])
