"""Collections, Kaggle IDs and discovery of the files under a DATA root.

A collection is named one way everywhere, as in the Kaggle ID: `tile:xla`, `layout:xla:default`,
`layout:xla:random`, `layout:nlp:default`, `layout:nlp:random`. `collection_dir` is the one
place that maps such a name to its directory under an npz root.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import DataError

log = logging.getLogger(__name__)

COLLECTIONS: tuple[str, ...] = (
    "tile:xla",
    "layout:xla:default",
    "layout:xla:random",
    "layout:nlp:default",
    "layout:nlp:random",
)
SPLITS: tuple[str, ...] = ("train", "valid", "test")
# the short label of each collection in tables and plots
SHORT: dict[str, str] = {"tile:xla": "tile:xla", "layout:xla:default": "xla:default", "layout:xla:random": "xla:random",
                         "layout:nlp:default": "nlp:default", "layout:nlp:random": "nlp:random"}


def collection_kind(collection: str) -> str:
    """`tile` or `layout`."""
    check_collection(collection)
    return collection.split(":")[0]


def check_collection(collection: str) -> str:
    if collection not in COLLECTIONS:
        raise DataError(None, f"unknown collection '{collection}' (known: {', '.join(COLLECTIONS)})")
    return collection


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise DataError(None, f"unknown split '{split}' (known: {', '.join(SPLITS)})")
    return split


def collection_dir(collection: str) -> Path:
    """`layout:xla:default` -> `layout/xla/default` (relative to an npz root)."""
    return Path(*check_collection(collection).split(":"))


def graph_id(collection: str, stem: str) -> str:
    """The Kaggle submission ID of a file: `tile:xla:<stem>` or `layout:<src>:<search>:<stem>`."""
    return f"{check_collection(collection)}:{stem}"


def split_id(graph_id_: str) -> tuple[str, str]:
    """Inverse of `graph_id`: `layout:xla:default:abc` -> (`layout:xla:default`, `abc`)."""
    parts = graph_id_.split(":")
    n = 2 if parts[0] == "tile" else 3
    collection, stem = ":".join(parts[:n]), ":".join(parts[n:])
    if collection not in COLLECTIONS or not stem:
        raise ValueError(f"not a TpuGraphs ID: '{graph_id_}'")
    return collection, stem


@dataclass(frozen=True)
class GraphFile:
    """One raw `.npz` file of the dataset."""

    collection: str
    split: str
    path: Path

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def id(self) -> str:
        return graph_id(self.collection, self.stem)

    @property
    def kind(self) -> str:
        return collection_kind(self.collection)


def resolve_root(root: str | Path) -> Path:
    """Accept the npz root itself, or a folder holding `npz/` or the Kaggle archive's `npz_all/npz/`."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "data root does not exist or is not a directory")
    for cand in (root, root / "npz", root / "npz_all" / "npz"):
        if (cand / "tile").is_dir() or (cand / "layout").is_dir():
            return cand
    raise DataError(root, "no 'tile/' or 'layout/' folder found (nor under npz/ or npz_all/npz/)")


def discover(
    root: str | Path,
    collections: list[str] | tuple[str, ...] | None = None,
    splits: list[str] | tuple[str, ...] | None = None,
    announce: bool = False,
) -> list[GraphFile]:
    """List the `.npz` files under `root`, sorted by collection, split and name.

    Any subset of collections and splits may be present; with `announce`, the ones asked for
    but absent are logged as skipped, so a stage says what it did not do.
    """
    base = resolve_root(root)
    want_c = tuple(COLLECTIONS if collections is None else [check_collection(c) for c in collections])
    want_s = tuple(SPLITS if splits is None else [check_split(s) for s in splits])
    found: list[GraphFile] = []
    skipped: list[str] = []
    for c in want_c:
        for s in want_s:
            d = base / collection_dir(c) / s
            files = sorted(d.glob("*.npz")) if d.is_dir() else []
            if not files:
                skipped.append(f"{c}/{s}")
            found.extend(GraphFile(c, s, p) for p in files)
    if announce and skipped:
        log.info("not present under %s, skipped: %s", base, ", ".join(skipped))
    return found


TRUTH = ".truth"  # noiseless costs of a generated root (pipeline.sample_data); a hidden folder no stage discovers


def truth_path(root: str | Path, collection: str, split: str, stem: str) -> Path:
    """Where the noiseless cost of the graph `<root>/<collection dir>/<split>/<stem>.npz` lives
    (float64 (C,) by original config index; written only by the sample generator, read only by
    the report's noise ceiling, never by a model)."""
    return Path(root) / TRUTH / collection_dir(collection) / split / f"{stem}.npy"


def rel_path(collection: str, split: str, stem: str) -> Path:
    """Where a graph lives under any stage's output folder: the raw layout, no stage suffix."""
    return collection_dir(collection) / split / f"{stem}.npz"


def wanted_collections(collections) -> list[str]:
    """The collections a stage's `collections` setting asks for, the one meaning every stage
    gives it: null = every collection; a list = exactly those (an empty list: none)."""
    return list(COLLECTIONS) if collections is None else [check_collection(str(c)) for c in collections]


def collection_of_path(path: str | Path, given: str | None = None) -> str:
    """The file's collection: from its place in a TpuGraphs tree, else `given`; both must agree."""
    path = Path(path)
    parts = path.resolve().parent.parts
    placed = None
    if len(parts) >= 2 and parts[-1] in SPLITS:
        for c in COLLECTIONS:
            d = collection_dir(c).parts
            if tuple(parts[-1 - len(d):-1]) == d:
                placed = c
    if given:
        check_collection(given)
        if placed and placed != given:
            raise DataError(path, f"lies under {collection_dir(placed)} ({placed}) but collection={given} was given")
        return given
    if placed is None:
        raise DataError(path, "not under <kind>/<source>/<search>/<split>/ of a TpuGraphs tree, so its collection "
                              f"is unknown: give collection=<one of {', '.join(COLLECTIONS)}>")
    return placed
