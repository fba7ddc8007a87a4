"""Run loggers: a no-op one when logging is off, wandb (offline by default) when asked for.

    logger = hydra.utils.instantiate(cfg.logger, run_config=resolved_dict)   # conf/logger/*.yaml
    logger.log({"train/loss": 0.3}, step=120); logger.finish()

The stages call `log` / `finish` unconditionally, so nothing else knows whether a logger is
on. wandb is imported only when `logger=wandb` is chosen: the project runs and tests without it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)


class NullLogger:
    """Logging off: every call does nothing."""

    def __init__(self, run_config: Mapping[str, Any] | None = None, **_: Any):
        pass

    def log(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbLogger:
    """Weights & Biases run. `mode=offline` (default) writes under `dir` and never touches the
    network (`wandb sync <dir>` uploads it later); `mode=online` is the user's opt-in.

    Args:
        project, name, group, tags: the run's labels.
        mode: offline | online | disabled.
        dir: where wandb writes its files.
        run_config: the resolved stage config, stored with the run.
    """

    def __init__(self, project: str = "tpugraphs", name: str | None = None, group: str | None = None,
                 tags: list[str] | None = None, mode: str = "offline", dir: str = "logs/wandb",
                 run_config: Mapping[str, Any] | None = None):
        try:
            import wandb
        except ImportError:
            raise RuntimeError("logger=wandb needs the wandb package (pip install wandb), or use logger=none") from None
        Path(dir).mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(project=project, name=name, group=group, tags=list(tags or []), mode=mode,
                               dir=str(dir), config=dict(run_config or {}), reinit=True)
        log.info("wandb run %s (%s) in %s", self._run.name, mode, dir)

    def log(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self._run.log(dict(metrics), step=step)

    def finish(self) -> None:
        self._run.finish()
