"""Fold views of the extract output: what one fold model (or the final fit) reads.

Invariant: a view holds the other folds as `train`, the held-out fold as `valid` and every
graph outside the labelled splits as `test`, under the same `<collection dir>/<split>/` layout
the trainers read (GNN tensors symlinked, GBDT tables filtered by graph); it is built once
(its `.complete` last) and never changes after.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import polars as pl

from pipeline.core.errors import DataError
from pipeline.io.catalog import COLLECTIONS, SPLITS, collection_dir
from pipeline.train.fold_plan import Plan

VIEW_DONE = ".complete"


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(src.resolve(), dst)
    except OSError:
        shutil.copyfile(src, dst)


def _roles(plan: Plan, collection: str, fold: int | None) -> dict[str, str]:
    """{graph id: role} of a collection's graphs in the view of `fold` (left-out graphs absent)."""
    out = {}
    for gid in plan.split:
        if gid.startswith(collection + ":") and (role := plan.role(gid, collection, fold)) is not None:
            out[gid] = role
    return out


def _gnn_view(plan: Plan, fold: int | None, dst: Path) -> None:
    src = plan.processed / "gnn"
    for c in COLLECTIONS:
        cdir = src / collection_dir(c)
        for gid, role in _roles(plan, c, fold).items():
            name = f"{plan.files[gid]}.npz"
            _link(cdir / plan.split[gid] / name, dst / collection_dir(c) / role / name)


def _tables_view(plan: Plan, fold: int | None, dst: Path) -> None:
    src = plan.processed / "tables"
    for c in COLLECTIONS:
        cdir = src / collection_dir(c)
        tables = {s: cdir / f"{s}.parquet" for s in SPLITS if (cdir / f"{s}.parquet").is_file()}
        if not tables:
            continue
        out = dst / collection_dir(c)
        out.mkdir(parents=True, exist_ok=True)
        roles = _roles(plan, c, fold)
        if "test" in tables and {g for g, r in roles.items() if r == "test"} == {g for g in roles if plan.split[g] == "test"}:
            _link(tables["test"], out / "test.parquet")  # the test table as it is
            wanted = ("train", "valid")
        else:
            wanted = SPLITS
        scan = pl.concat([pl.scan_parquet(p) for p in tables.values()], how="vertical_relaxed")
        try:
            for role in wanted:
                ids = sorted(g for g, r in roles.items() if r == role)
                if ids:
                    scan.filter(pl.col("id").is_in(ids)).sink_parquet(out / f"{role}.parquet")
        except Exception as e:  # polars raises several types for unreadable tables
            raise DataError(cdir, f"cannot split the GBDT tables into folds ({type(e).__name__}: {e})") from None


VIEWS: dict[str, Callable[[Plan, int | None, Path], None]] = {"gnn": _gnn_view, "tables": _tables_view}


def view(plan: Plan, fold: int | None, what: str) -> Path:
    """The extract output as fold `fold` sees it (None: the final fit's view, every labelled
    graph as train), built once: `what` is gnn or tables."""
    if what not in VIEWS:
        raise ValueError(f"no fold view of '{what}' (gnn or tables)")
    dst = plan.root / ("all" if fold is None else f"fold{fold}") / what
    if (dst / VIEW_DONE).is_file():
        return dst
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    VIEWS[what](plan, fold, tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / VIEW_DONE).write_text("")
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    return dst
