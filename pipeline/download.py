"""Fetch the real competition data with the Kaggle CLI.

    python -m pipeline.download [out=data/raw/kaggle]
    make download

Writes the archive's `npz_all/npz/...` tree under `out` (any DATA root accepts that layout),
then `make all DATASET=kaggle` runs every stage on it. Without the Kaggle CLI or credentials
it says in one message what to do and exits 1; nothing is written.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import zipfile
from pathlib import Path

from omegaconf import DictConfig

from pipeline.core.cli import stage
from pipeline.core.environment import credentials_present
from pipeline.core.errors import DataError

log = logging.getLogger(__name__)


@stage("download")
def main(cfg: DictConfig) -> None:
    out = Path(cfg.out)
    if not shutil.which("kaggle") or not credentials_present():
        raise DataError(None, (
            "the Kaggle CLI with credentials is needed to download the data: `pip install kaggle`, put your API "
            "token in ~/.kaggle/kaggle.json (or set KAGGLE_USERNAME and KAGGLE_KEY), accept the rules of "
            f"https://www.kaggle.com/competitions/{cfg.competition}, then run `make download` again"))
    out.mkdir(parents=True, exist_ok=True)
    archive = out / f"{cfg.competition}.zip"
    if not archive.is_file():
        # the CLI writes <slug>.zip into -p; a private folder keeps a partial download out of sight
        part = out / ".download"
        shutil.rmtree(part, ignore_errors=True)
        subprocess.run(["kaggle", "competitions", "download", "-c", cfg.competition, "-p", str(part)], check=True)
        (part / archive.name).replace(archive)
        part.rmdir()
    log.info("unpacking %s", archive)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(out)
    log.info("data ready under %s; next: make all DATASET=kaggle", out)


if __name__ == "__main__":
    main()
