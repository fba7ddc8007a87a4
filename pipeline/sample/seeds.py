"""The sample generator's seeding: every draw is keyed by what it belongs to, never by order.

A graph's draws come from `seed_seq(seed, SOURCE_ID[source], SPLIT_ID[split], index)`, a
layout search's configs and noise from the same words plus `SEARCH_ID[search]`; further
streams and hash keys are derived from those sequences by a salt. So the bytes of one file do
not depend on which other collections, splits or graphs are generated, nor on the chunking.
"""

from __future__ import annotations

import numpy as np

from pipeline.io.catalog import SPLITS

SOURCE_ID = {"tile:xla": 0, "xla": 1, "nlp": 2}
SPLIT_ID = {s: i for i, s in enumerate(SPLITS)}
SEARCH_ID = {"tile": 0, "default": 1, "random": 2}


def seed_seq(*words: int) -> np.random.SeedSequence:
    """The seed sequence of the integer words `words` (a graph, a search, a derived stream)."""
    return np.random.SeedSequence([int(w) for w in words])


def derived_key(seq: np.random.SeedSequence, salt: int) -> int:
    """A 64-bit hash key of `seq` and `salt` (for `costmodel.hash_u01` and `costmodel.measure`)."""
    return int(np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, salt)).generate_state(1, np.uint64)[0])


def hex_digest(seq: np.random.SeedSequence, salt: int, nbytes: int) -> str:
    """2 * `nbytes` lowercase hex digits drawn from `seq` and `salt` (file names)."""
    words = np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, salt)).generate_state(nbytes // 4)
    return "".join(f"{int(w):08x}" for w in words)
