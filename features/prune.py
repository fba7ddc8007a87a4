"""Graph pruning: keep the configurable nodes and their k-hop neighbourhood (pure functions).

Edges are rows `[u, v]`: u consumes v's output. Neighbourhoods are undirected (producers and
consumers both count as one hop). Node ids kept are returned in their original order, so a
topological order stays topological and configurable nodes keep their relative order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from features.operands import Operands, pair_group


def khop_mask(edge_index: np.ndarray, num_nodes: int, seeds: np.ndarray, hops: int) -> np.ndarray:
    """Nodes within `hops` undirected hops of `seeds`; `hops < 0` keeps every node.

    Shapes: edge_index (E, 2); seeds (S,) node ids; returns (num_nodes,) bool.
    """
    if hops < 0:
        return np.ones(num_nodes, dtype=bool)
    keep = np.zeros(num_nodes, dtype=bool)
    keep[seeds] = True
    frontier = keep.copy()
    u, v = edge_index[:, 0], edge_index[:, 1]
    for _ in range(hops):
        reached = np.zeros(num_nodes, dtype=bool)
        reached[v[frontier[u]]] = True  # producers of the frontier
        reached[u[frontier[v]]] = True  # consumers of the frontier
        frontier = reached & ~keep
        if not frontier.any():
            break
        keep |= frontier
    return keep


def _producer_order(edge_index: np.ndarray, num_nodes: int) -> np.ndarray:
    """Node ids ordered so that every producer precedes its consumers (Kahn's algorithm)."""
    u, v = edge_index[:, 0], edge_index[:, 1]
    if u.size == 0 or (u > v).all():  # real files: already topological
        return np.arange(num_nodes)
    indeg = np.bincount(u, minlength=num_nodes)  # producers still to place per consumer
    order = np.argsort(v, kind="stable")
    starts = np.searchsorted(v[order], np.arange(num_nodes + 1))
    ready = list(np.flatnonzero(indeg == 0))
    out: list[int] = []
    while ready:
        n = ready.pop()
        out.append(n)
        for e in order[starts[n] : starts[n + 1]]:
            c = u[e]
            indeg[c] -= 1
            if indeg[c] == 0:
                ready.append(c)
    if len(out) != num_nodes:
        raise ValueError("edge_index has a cycle; nodes cannot be ordered producer-first")
    return np.asarray(out)


def _producer_lookup(edge_index: np.ndarray, num_nodes: int) -> Callable[[int], np.ndarray]:
    """A function giving a node's producers (original ids, in edge order) in O(its degree)."""
    consumer, producer = edge_index[:, 0], edge_index[:, 1]
    by_consumer = np.argsort(consumer, kind="stable")
    starts = np.searchsorted(consumer[by_consumer], np.arange(num_nodes + 1))

    def producers(node: int) -> np.ndarray:
        return producer[by_consumer[starts[node] : starts[node + 1]]]

    return producers


def _bounded_producer_pairs(producers: Callable[[int], np.ndarray], keep: np.ndarray, direct: bool,
                            max_depth: int) -> list[tuple[int, int, int]]:
    """`nearest_kept_producers` triples through at most `max_depth` removed nodes.

    Per kept consumer and direct producer, a breadth-first walk down through the removed nodes.
    """
    triples: list[tuple[int, int, int]] = []
    for node in np.flatnonzero(keep):
        node = int(node)
        for d in producers(node).tolist():
            if keep[d]:
                if direct:
                    triples.append((node, d, d))
                continue
            frontier, seen = {d}, set()
            for _ in range(max_depth):
                if not frontier:
                    break
                seen |= frontier
                next_frontier: set[int] = set()
                for removed in frontier:
                    below = producers(removed)
                    triples.extend((node, d, int(p)) for p in below[keep[below]])
                    next_frontier.update(below[~keep[below]].tolist())
                frontier = next_frontier - seen
    return triples


def _kept_below_removed(edge_index: np.ndarray, num_nodes: int, keep: np.ndarray,
                        producers: Callable[[int], np.ndarray]) -> dict[int, frozenset[int]]:
    """Per removed node, the kept nodes reachable below it through removed nodes only."""
    reach: dict[int, frozenset[int]] = {}
    empty: frozenset[int] = frozenset()
    for node in _producer_order(edge_index, num_nodes):
        node = int(node)
        if keep[node]:
            continue
        sets = [frozenset((int(p),)) if keep[p] else reach[int(p)] for p in producers(node)]
        if not sets:
            reach[node] = empty
        elif len(sets) == 1:
            reach[node] = sets[0]  # shared, not copied: chains cost nothing
        else:
            reach[node] = frozenset().union(*sets)
    return reach


def _unbounded_producer_pairs(edge_index: np.ndarray, num_nodes: int, keep: np.ndarray, direct: bool,
                              producers: Callable[[int], np.ndarray]) -> list[tuple[int, int, int]]:
    """`nearest_kept_producers` triples through removed chains of any length."""
    reach = _kept_below_removed(edge_index, num_nodes, keep, producers)
    triples: list[tuple[int, int, int]] = []
    for node in np.flatnonzero(keep):
        node = int(node)
        for p in producers(node):
            p = int(p)
            if keep[p]:
                if direct:
                    triples.append((node, p, p))
            else:
                triples.extend((node, p, w) for w in reach[p])
    return triples


def nearest_kept_producers(edge_index: np.ndarray, num_nodes: int, keep: np.ndarray, direct: bool = False,
                           max_depth: int | None = None, via: bool = False) -> np.ndarray:
    """Pairs `[u, w]` of kept nodes where w is a nearest kept producer of u through removed nodes.

    "Nearest" means the path from u down to w passes through removed nodes only. With
    `direct=False` only paths with at least one removed node are returned (the bridges that
    pruning would otherwise cut); with `direct=True` direct kept-kept edges are included too.
    `max_depth` bounds the removed nodes on a path (None: unbounded).
    Returns (B, 2) int64, unique rows, original ids; with `via`, (B, 3) rows `[u, d, w]` where
    d is u's direct producer the path leaves through (w itself on a direct edge).
    """
    producers = _producer_lookup(edge_index, num_nodes)
    if max_depth is not None:
        triples = _bounded_producer_pairs(producers, keep, direct, max_depth)
    else:
        triples = _unbounded_producer_pairs(edge_index, num_nodes, keep, direct, producers)
    if not triples:
        return np.zeros((0, 3 if via else 2), dtype=np.int64)
    rows = np.asarray(triples, dtype=np.int64)
    return np.unique(rows if via else rows[:, [0, 2]], axis=0)


@dataclass
class Pruned:
    """A pruned graph. `node_ids` (N',) are the original ids of the kept nodes (ascending);
    `edge_index` (E', 2), `node_config_ids` (NC,) and `node_splits` (1, S') use new ids;
    `num_bridges` of the edges were added by bridging."""

    node_ids: np.ndarray
    edge_index: np.ndarray
    node_config_ids: np.ndarray | None
    node_splits: np.ndarray | None
    num_bridges: int = 0


def remap_splits(node_splits: np.ndarray, node_ids: np.ndarray) -> np.ndarray:
    """Computation boundaries in new ids; computations left empty are merged away.

    Real files list start nodes and often the end (N) too; each boundary maps to the first kept
    node at or after it (N' past the last one), so an end marker stays an end marker.
    Shapes: node_splits (1, S); node_ids (N',) ascending original ids; returns (1, S') int64.
    """
    new = np.searchsorted(node_ids, node_splits[0])
    new = np.unique(np.concatenate([[0], new]))
    return new.astype(np.int64)[None, :]


def _add_bridges(edges: np.ndarray, edge_index: np.ndarray, num_nodes: int,
                 keep: np.ndarray) -> tuple[np.ndarray, int]:
    """The kept edges plus a bridge per kept consumer and nearest kept producer through removed
    nodes; returns them (original ids) and the number of bridges added."""
    extra = nearest_kept_producers(edge_index, num_nodes, keep, direct=False)
    if not extra.size:
        return edges, 0
    # a bridge may duplicate a direct edge when both paths exist; keep one copy
    seen = set(map(tuple, edges.tolist()))
    extra = np.asarray([e for e in extra.tolist() if tuple(e) not in seen], dtype=np.int64).reshape(-1, 2)
    return np.concatenate([edges, extra]), int(extra.shape[0])


def prune(
    num_nodes: int,
    edge_index: np.ndarray,
    node_config_ids: np.ndarray | None,
    node_splits: np.ndarray | None = None,
    hops: int = 1,
    bridge: bool = False,
) -> Pruned:
    """Keep every configurable node and its `hops`-hop neighbourhood, remapping ids.

    Args:
        num_nodes: N of the original graph.
        edge_index: (E, 2) int64, `[consumer, producer]`.
        node_config_ids: (NC,) configurable nodes (None for tile graphs: nothing is pruned).
        node_splits: (1, S) computation starts, remapped when given.
        hops: neighbourhood radius; 0 keeps configurable nodes only; < 0 keeps everything.
        bridge: add an edge from each kept consumer to its nearest kept producers through
            removed chains, so message passing still sees the path.
    """
    if node_config_ids is None:
        keep = np.ones(num_nodes, dtype=bool)
    else:
        keep = khop_mask(edge_index, num_nodes, node_config_ids, hops)
    node_ids = np.flatnonzero(keep).astype(np.int64)
    new_id = np.full(num_nodes, -1, dtype=np.int64)
    new_id[node_ids] = np.arange(node_ids.size)
    both = keep[edge_index[:, 0]] & keep[edge_index[:, 1]]
    edges = edge_index[both]
    n_bridges = 0
    if bridge and not keep.all():
        edges, n_bridges = _add_bridges(edges, edge_index, num_nodes, keep)
    return Pruned(
        node_ids=node_ids,
        edge_index=new_id[edges].astype(np.int64).reshape(-1, 2),
        node_config_ids=None if node_config_ids is None else new_id[node_config_ids].astype(np.int64),
        node_splits=None if node_splits is None else remap_splits(node_splits, node_ids),
        num_bridges=n_bridges,
    )


def config_node_pairs(edge_index: np.ndarray, num_nodes: int, operands: Operands,
                      max_depth: int | None = None) -> np.ndarray:
    """Producer-consumer pairs among configurable nodes (`operands.slots[:, 0]`), through chains
    of at most `max_depth` other nodes (None: any chain), with the consumer's group the
    producer's tensor is read under (`features.operands.pair_group`: input, kernel or either).

    Returns (P, 3) int64 rows `[consumer_pos, producer_pos, group]`, positions into the
    configurable nodes (the second axis of node_config_feat), so they survive any later pruning.
    """
    config_nodes = operands.slots[:, 0]
    keep = np.zeros(num_nodes, dtype=bool)
    keep[config_nodes] = True
    triples = nearest_kept_producers(edge_index, num_nodes, keep, direct=True, max_depth=max_depth, via=True)
    pos = np.full(num_nodes, -1, dtype=np.int64)
    pos[config_nodes] = np.arange(config_nodes.size)
    if not triples.size:
        return np.zeros((0, 3), dtype=np.int64)
    cons = pos[triples[:, 0]]
    group = pair_group(operands, cons, triples[:, 1])
    rows = np.stack([cons, pos[triples[:, 2]], group], axis=1)
    # a producer reached through both operands is read under either group
    uniq, inv = np.unique(rows[:, :2], axis=0, return_inverse=True)
    merged = np.zeros(len(uniq), dtype=np.int64)
    np.bitwise_or.at(merged, inv.reshape(-1), rows[:, 2])
    return np.concatenate([uniq, merged[:, None]], axis=1)
