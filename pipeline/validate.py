"""Check a submission CSV before it is uploaded.

    python -m pipeline.validate submission=submissions/submission.csv data=<npz root> split=test

Reads the CSV and the `split` files under `data` (only each file's `config_runtime`, for its
number of configs); writes nothing. Prints every problem as `<csv>:<line>: <ID>: <severity>:
<problem>` (warnings too), then a one-line summary, and exits 1 if there is any error.
Invariant: a CSV this stage accepts has one row per file of the split, each listing distinct
in-range config indices, 5 per tile row (C if C < 5) and every config per layout row (a
layout row of at least min(C, 1000) is accepted with a warning). `data=null` checks the
format alone.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from omegaconf import DictConfig

from pipeline.core.cli import stage
from pipeline.core.errors import DataError
from pipeline.io.catalog import discover
from pipeline.io.submission_csv import Report, validate_submission

log = logging.getLogger(__name__)


def run(submission: str | Path, data: str | Path | None, split: str) -> Report:
    """Validate `submission` against the `split` files under `data` (None: format only)."""
    submission = Path(submission)
    if not submission.is_file():
        raise DataError(submission, "submission CSV not found")
    files = None
    if data is not None:
        files = discover(data, splits=[split], announce=True)
        if not files:
            raise DataError(data, f"no .npz files in the '{split}' split to check the submission against")
        log.info("checking %s against %d %s files under %s", submission, len(files), split, data)
    return validate_submission(submission, files)


@stage("validate")
def main(cfg: DictConfig) -> None:
    rep = run(cfg.submission, cfg.data, cfg.split)
    for line in rep.lines():
        print(line)
    print(rep.summary(), flush=True)
    if not rep.ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
