"""Candidate layout configs of a program: node_config_feat rows to rank, from its own layouts.

A layout file's node_config_feat (C, NC, 18) gives, per config and configurable node, three
groups of 6: the output's, the input's (operand 0) and the kernel's (operand 1 of a convolution
or dot) minor-to-major dimension order, padded with -1; a group all -1 is the compiler's
default (docs/FORMAT.md, "Config columns"). The real files (tpugraphs-samples, checked when
this was written) encode only the minor-most dims of a tensor, which are the ones a TPU tiles:
rank <= 2 in full, rank >= 3 as its two minor-most dims, except reshapes, which list all dims
up to rank 3; rank 0 and absent tensors are all -1. The kernel group of a reshape is always -1.
Here each group is encoded the same way (`encoded_dims`).

`search="default"` perturbs the module's own layouts (config 0) a little: each further config
changes one to three groups, by swapping two dims of that tensor's order or by leaving it to the
compiler (-1), as the default-search files vary few nodes per config. `search="random"` draws
each group's order at random (a uniform permutation; the compiler's default with probability
`p_default`), as the random-search files do. numpy only; a pure function of its arguments.
"""

from __future__ import annotations

import numpy as np

from features.layout import LAYOUT_CONFIG_DIM

GROUPS = 3  # output, input, kernel
P_DEFAULT = 0.15  # random search: share of groups left to the compiler (-1); the random files show 15-45 %
MAX_ROUNDS = 50  # draws of fresh configs before accepting fewer than asked (a small config space)


def encoded_dims(rank: int, reshape: bool = False) -> int:
    """How many minor-most dims a group lists: the whole order up to rank 2 (3 for a reshape),
    else the two minor-most."""
    return rank if rank <= (3 if reshape else 2) else 2


def own_orders(ranks: np.ndarray, layouts: list[list[tuple[int, ...] | None]]) -> list[list[np.ndarray | None]]:
    """Each group's full minor-to-major order: its layout, or row-major (rank-1 .. 0) when the
    layout is not given; None for an absent tensor (rank < 0) or a scalar."""
    out = []
    for k in range(ranks.shape[0]):
        row = []
        for g in range(GROUPS):
            r = int(ranks[k, g])
            lay = layouts[k][g] if k < len(layouts) and g < len(layouts[k]) else None
            if r <= 0:
                row.append(None)
            elif lay is not None and sorted(lay) == list(range(r)):
                row.append(np.asarray(lay, dtype=np.int64))
            else:
                row.append(np.arange(r - 1, -1, -1, dtype=np.int64))
        out.append(row)
    return out


def _encode(order: np.ndarray | None, depth: int) -> np.ndarray:
    """A group's 6 values: the first `depth` entries of `order`, then -1."""
    g = np.full(6, -1, dtype=np.float32)
    if order is not None:
        g[:depth] = order[:depth]
    return g


def candidate_configs(ranks: np.ndarray, layouts: list[list[tuple[int, ...] | None]], n: int = 1000,
                      search: str = "random", seed: int = 0, reshape: np.ndarray | None = None,
                      p_default: float = P_DEFAULT) -> np.ndarray:
    """node_config_feat of up to `n` distinct configs; config 0 is the module's own layout.

    Args:
        ranks: (NC, 3) int, each configurable node's output, input and kernel rank; -1 where
            the tensor is absent (no operand, no kernel).
        layouts: NC lists of 3 minor-to-major orders (a tuple, or None: row-major).
        n: configs wanted (default 1000); fewer come back when fewer distinct ones exist.
        search: "default" (small perturbations of config 0) or "random" (random orders).
        seed: the numpy Generator's seed; the same arguments give the same configs.
        reshape: (NC,) bool, which nodes are reshapes (their orders are listed up to rank 3,
            their kernel group is -1); None: none are.
        p_default: random search only, the chance a group is left to the compiler (-1).

    Shapes:
        returns (C, NC, 18) float32, C <= n, groups padded with -1.
    """
    if search not in ("default", "random"):
        raise ValueError(f"search must be 'default' or 'random', not {search!r}")
    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    ranks = np.asarray(ranks, dtype=np.int64).reshape(-1, GROUPS)
    nc = ranks.shape[0]
    reshape = np.zeros(nc, dtype=bool) if reshape is None else np.asarray(reshape, dtype=bool)
    ranks = ranks.copy()
    ranks[reshape, 2] = -1  # a reshape has no kernel
    rng = np.random.default_rng(seed)
    own = own_orders(ranks, layouts)
    depth = np.array([[encoded_dims(max(int(r), 0), bool(reshape[k])) for r in ranks[k]] for k in range(nc)],
                     dtype=np.int64).reshape(nc, GROUPS)
    base = np.stack([np.concatenate([_encode(own[k][g], depth[k, g]) for g in range(GROUPS)]) for k in range(nc)]
                    ) if nc else np.zeros((0, LAYOUT_CONFIG_DIM), dtype=np.float32)
    draw = _draw_random if search == "random" else _draw_default
    kept, seen = [base], {base.tobytes()}
    for _ in range(MAX_ROUNDS):
        if len(kept) >= n:
            break
        for cfg in draw(rng, n - len(kept), ranks, own, depth, base, p_default):
            key = cfg.tobytes()
            if key not in seen and len(kept) < n:
                seen.add(key)
                kept.append(cfg)
    return np.stack(kept).astype(np.float32)


def _draw_random(rng, count, ranks, own, depth, base, p_default) -> np.ndarray:
    """`count` configs with every group a uniform random order (or -1 with `p_default`)."""
    out = np.full((count, *base.shape), -1, dtype=np.float32)
    for k, g in zip(*np.nonzero(ranks > 0)):
        r, d = int(ranks[k, g]), int(depth[k, g])
        perms = np.argsort(rng.random((count, r)), axis=1)[:, :d]
        keep = rng.random(count) >= p_default
        out[keep, k, 6 * g : 6 * g + d] = perms[keep]
    return out


def _draw_default(rng, count, ranks, own, depth, base, p_default) -> np.ndarray:
    """`count` configs, each config 0 with one to three groups changed: two dims of the order
    swapped (a rank >= 2 tensor) or the group left to the compiler (-1)."""
    slots = np.argwhere(ranks > 0)
    out = np.repeat(base[None], count, axis=0)
    if not len(slots):
        return out
    for c in range(count):
        for k, g in slots[rng.choice(len(slots), size=min(len(slots), int(rng.integers(1, 4))), replace=False)]:
            r, d = int(ranks[k, g]), int(depth[k, g])
            if r >= 2 and rng.random() >= p_default:
                order = own[k][g].copy()
                a, b = rng.choice(r, size=2, replace=False)
                if rng.random() < 0.5:  # the swaps that change the encoded minor dims, half the time
                    a, b = int(rng.integers(min(d, r))), int(rng.integers(r))
                order[[a, b]] = order[[b, a]]
                out[c, k, 6 * g : 6 * g + 6] = _encode(order, d)
            else:
                out[c, k, 6 * g : 6 * g + 6] = -1
    return out
