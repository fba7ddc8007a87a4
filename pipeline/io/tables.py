"""Where the GBDT feature tables live: `<tables>/<collection dir>/<split>.parquet` (written by
`pipeline.extract`, read by `pipeline.train_gbdt`)."""

from __future__ import annotations

from pathlib import Path

from pipeline.io.catalog import collection_dir


def table_path(tables: str | Path, collection: str, split: str) -> Path:
    """Where the GBDT table of a collection and split lives under `<out>/tables`."""
    return Path(tables) / collection_dir(collection) / f"{split}.parquet"
