"""Hydra entry points for the stages, with one-line errors for every failure.

Each stage module does `@stage("<config name>")` on its `main(cfg)`, and builds the objects its
config describes (`_target_` nodes) with `instantiate`. A `DataError` raised
anywhere below prints `error: <file>: <problem>` on stderr and exits 1; any other exception
(LightGBM, torch, numpy, ...) prints `error: <stage>: <collection or graph, where known>:
<type>: <message>` and exits 1. `debug=true` (or HYDRA_FULL_ERROR=1) shows the traceback
instead.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

import hydra
import hydra.utils
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from pipeline.core.errors import DEBUG_ENV, DataError, debug_enabled, describe

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
log = logging.getLogger("pipeline")


def run_guarded(fn: Callable[[DictConfig], object], cfg: DictConfig, name: str = "stage") -> object:
    """`fn(cfg)`, with every failure reported as one line on stderr and exit status 1."""
    if cfg.get("debug"):
        os.environ[DEBUG_ENV] = "1"  # worker processes inherit it
    try:
        return fn(cfg)
    except DataError as e:
        if debug_enabled():
            raise
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted; finished outputs are kept, partial ones were removed", file=sys.stderr)
        sys.exit(130)
    except Exception as e:
        if debug_enabled():
            raise
        print(f"error: {name}: {describe(e)} (debug=true shows the traceback)", file=sys.stderr, flush=True)
        sys.exit(1)


def stage(config_name: str) -> Callable[[Callable[[DictConfig], object]], Callable[[], object]]:
    """Turn `main(cfg)` into a hydra command-line entry point composed from `conf/<config_name>.yaml`."""

    def deco(fn: Callable[[DictConfig], object]) -> Callable[[], object]:
        @functools.wraps(fn)
        def task(cfg: DictConfig) -> object:
            return run_guarded(fn, cfg, config_name.replace("_", "-"))

        return hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")(task)

    return deco


def instantiate(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """The object of the config node `key` (a `_target_` with its arguments, plain Python values:
    lists and dicts, not OmegaConf nodes), logged as built. A constructor's ValueError (a bad
    knob) becomes a one-sentence `DataError` naming the key."""
    try:
        obj = hydra.utils.instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as e:
        if isinstance(e.__cause__, ValueError):
            raise DataError(None, str(e.__cause__), key=key) from None
        raise
    log.info("%s: %r", key, obj)
    return obj


def compose(config_name: str, overrides: list[str] | None = None) -> DictConfig:
    """The same config a stage gets, composed without running it (tests, notebooks)."""
    from hydra import compose as _compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # inside a running stage (e.g. rank runs other stages)
        return _compose(config_name=config_name, overrides=overrides or [])
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return _compose(config_name=config_name, overrides=overrides or [])
