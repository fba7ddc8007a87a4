"""Score a submission-format CSV on a split with measured runtimes (the competition metric).

    python -m pipeline.evaluate submission=<csv> data=<npz root> split=valid report=<json>

Reads the CSV and the `split` files under `data` (runtimes; tile normalizers); writes the JSON
report `report` atomically: `{"collections": {"tile:xla": ..., ...}, "score": ...,
"split": ..., "submission": ..., "graphs": {collection: n}, "per_graph": {ID: score},
"undefined_tau": [ID, ...]}`, and prints a table of the collection scores and the overall one.
Invariant: only a CSV that `pipeline.validate` would accept for this split is scored (else
the problems are printed and the exit status is 1); the test split, whose runtimes are all
zero, is refused. Metric and conventions: `models.metrics`.

The scoring itself lives in `pipeline.io.runtimes` (also used by the ensemble and the report).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from omegaconf import DictConfig

from models import metrics
from pipeline.core.cli import stage
from pipeline.core.errors import DataError
from pipeline.core.fsutil import write_text_atomic
from pipeline.io.catalog import discover
from pipeline.io.runtimes import load_runtimes, score_rows
from pipeline.io.submission_csv import validate_submission

log = logging.getLogger(__name__)


def format_table(result: dict) -> str:
    """The collection scores and the overall one, as a small text table."""
    lines = [f"{'collection':<20} {'graphs':>6} {'score':>8}"]
    for c, s in result["collections"].items():
        lines.append(f"{c:<20} {result['graphs'][c]:>6} {s:>8.4f}")
    n = len(result["collections"])
    lines.append(f"{f'overall (mean of {n})':<20} {sum(result['graphs'].values()):>6} {result['score']:>8.4f}")
    return "\n".join(lines)


def run(submission: str | Path, data: str | Path, split: str, report: str | Path | None) -> dict:
    """Validate and score `submission` on `split` under `data`; write `report` if given."""
    submission = Path(submission)
    if split == "test":
        raise DataError(None, "the test split has no measured runtimes (all zero): evaluate split=valid or split=train")
    if not submission.is_file():
        raise DataError(submission, "submission CSV not found")
    files = discover(data, splits=[split], announce=True)
    if not files:
        raise DataError(data, f"no .npz files in the '{split}' split to score against")
    log.info("scoring %s against %d %s files under %s", submission, len(files), split, data)
    runtimes = load_runtimes(files)
    rep = validate_submission(submission, files, num_configs={k: v.shape[0] for k, v in runtimes.items()})
    for line in rep.lines():
        print(line, file=sys.stderr)
    if not rep.ok:
        raise DataError(submission, f"{len(rep.errors)} errors (listed above); not scored")
    result = score_rows(rep.rows, runtimes)
    if result["undefined_tau"]:
        log.warning("%d layout graphs have constant runtimes (tau undefined), counted as %s: %s",
                    len(result["undefined_tau"]), metrics.UNDEFINED_TAU_SCORE, ", ".join(result["undefined_tau"]))
    out = {"collections": result["collections"], "score": result["score"], "split": split,
           "submission": str(submission), "graphs": result["graphs"], "per_graph": result["per_graph"],
           "undefined_tau": result["undefined_tau"]}
    if report is not None:
        write_text_atomic(report, json.dumps(out, indent=2) + "\n")
        log.info("report written to %s", report)
    return out


@stage("evaluate")
def main(cfg: DictConfig) -> float:
    out = run(cfg.submission, cfg.data, cfg.split, cfg.report)
    print(format_table(out), flush=True)
    return out["score"]


if __name__ == "__main__":
    main()
