"""The audit's JSON (`make audit`, `pipeline.audit`) as the training stages read it: which graphs
were flagged and why, and which to leave out of training (`exclude=audit`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from models.audit import FLAGS
from pipeline.core.errors import DataError


def flagged_graphs(audit_json: str | Path, flags: Iterable[str] = FLAGS) -> dict[str, str]:
    """Kaggle graph ID -> reason, for every graph of an audit carrying any of `flags`.

    The reason joins each matching flag with its one-line explanation, e.g.
    `degenerate: one unique config (all 2 configs identical); inconsistent: ...`. Graphs not
    audited (test files, or absent from the audit) are never returned.
    """
    flags = tuple(flags)
    unknown = [f for f in flags if f not in FLAGS]
    if unknown:
        raise DataError(None, f"unknown audit flag '{unknown[0]}' (known: {', '.join(FLAGS)})")
    path = Path(audit_json)
    try:
        audit = json.loads(path.read_text())
        graphs = audit["graphs"]
    except FileNotFoundError:
        raise DataError(path, "audit not found (run `make audit DATA=<npz root>` first)") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(path, f"not an audit JSON written by pipeline.audit ({type(e).__name__}: {e})") from None
    out: dict[str, str] = {}
    for gid, g in graphs.items():
        hit = [f"{f}: {g['flags'][f]}" for f in flags if f in g["flags"]]
        if hit:
            out[gid] = "; ".join(hit)
    return out


def exclusions(exclude: str | None, audit_json: str | Path) -> dict[str, str]:
    """The graphs a training stage leaves out, by ID with the reason: none for `exclude=null`,
    the audit's flagged graphs for `exclude=audit` (run `make audit` first)."""
    if exclude in (None, "", "none"):
        return {}
    if exclude != "audit":
        raise DataError(None, f"exclude must be null or audit, got '{exclude}'")
    return {gid: f"flagged by the audit ({why})" for gid, why in flagged_graphs(audit_json).items()}
