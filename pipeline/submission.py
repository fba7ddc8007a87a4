"""Turn a model's predictions into a submission CSV, validated before it is written.

    python -m pipeline.submission predictor=baseline split=test [submission=<csv>]
    make submission [MODEL=baseline] [SPLIT=test|valid] [SUBMISSION=<csv>]

Reads `${paths.predictions}/<model>/<split>.parquet` and the split's raw files (to know every
ID and config count); writes `submission` and, when its content is new, a timestamped copy named
with the git commit.
Tile rows list the `tile_top` fastest configs, layout rows the full permutation, all in
ORIGINAL config indices. An invalid submission (a graph without predictions, a wrong count) is
refused: nothing is written and the problems are listed.
"""

from __future__ import annotations

import filecmp
import logging
import shutil
import time
from pathlib import Path

from omegaconf import DictConfig

from pipeline.core.cli import stage
from pipeline.core.environment import git_commit
from pipeline.core.errors import DataError
from pipeline.core.fsutil import atomic_path
from pipeline.io.catalog import discover
from pipeline.io.predictions import read_predictions
from pipeline.io.submission_csv import rows_from_predictions, write_submission

log = logging.getLogger(__name__)


@stage("submission")
def main(cfg: DictConfig) -> Path:
    files = discover(cfg.data, splits=[cfg.split], announce=True)
    if not files:
        raise DataError(cfg.data, f"no {cfg.split} files found")
    predictions = read_predictions(cfg.predictions)
    rows = rows_from_predictions(predictions, files, cfg.tile_top, str(cfg.tile_copies))
    out = Path(cfg.submission)
    write_submission(out, rows, files)
    log.info("wrote %s: %d rows from %s predictions on %s", out, len(rows), cfg.predictor, cfg.split)
    if cfg.keep_copy:
        keep_copy(out, f"{cfg.paths.dataset}_{cfg.predictor}_{cfg.split}")
    return out


def keep_copy(out: Path, prefix: str) -> Path:
    """Keep `<prefix>_<time>_<commit>.csv` beside `out`, unless the latest such copy already
    has the same content (a rerun that changed nothing keeps no new copy). Returns the copy."""
    copies = sorted(out.parent.glob(f"{prefix}_*.csv"), key=lambda p: p.stat().st_mtime_ns)
    if copies and filecmp.cmp(copies[-1], out, shallow=False):
        log.info("content unchanged since %s; no new copy kept", copies[-1])
        return copies[-1]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    copy = out.with_name(f"{prefix}_{stamp}_{git_commit()}.csv")
    with atomic_path(copy) as tmp:
        shutil.copyfile(out, tmp)
    log.info("kept a copy as %s", copy)
    return copy


if __name__ == "__main__":
    main()
