"""Pruning on tiny hand-made graphs whose right answer is known by hand."""

from __future__ import annotations

import numpy as np
import pytest

from features.operands import EITHER, INPUT, KERNEL, infer_operands
from features.prune import config_node_pairs, khop_mask, nearest_kept_producers, prune

# A chain 0 <- 1 <- 2 <- 3 <- 4 <- 5 (u consumes v: rows [1,0], [2,1], ...), plus 6 consuming 3.
#   0 - 1 - 2 - 3 - 4 - 5
#               |
#               6
CHAIN = np.array([[1, 0], [2, 1], [3, 2], [4, 3], [5, 4], [6, 3]], dtype=np.int64)


@pytest.mark.parametrize(
    "seeds, hops, expected",
    [
        ([3], 0, {3}),
        ([3], 1, {2, 3, 4, 6}),
        ([3], 2, {1, 2, 3, 4, 5, 6}),
        ([0, 5], 1, {0, 1, 4, 5}),
        ([0], 10, {0, 1, 2, 3, 4, 5, 6}),
        ([0], -1, {0, 1, 2, 3, 4, 5, 6}),
    ],
)
def test_khop_sets_are_exact(seeds, hops, expected):
    keep = khop_mask(CHAIN, 7, np.array(seeds), hops)
    assert set(np.flatnonzero(keep).tolist()) == expected


def test_every_configurable_node_survives_and_ids_remap():
    p = prune(7, CHAIN, np.array([0, 5]), np.array([[0, 3]]), hops=1)
    assert p.node_ids.tolist() == [0, 1, 4, 5]
    # configurable nodes kept, in order, and they point at the same original nodes
    assert p.node_ids[p.node_config_ids].tolist() == [0, 5]
    # edges 1->0 and 5->4 survive, renumbered; nothing else
    assert sorted(map(tuple, p.edge_index.tolist())) == [(1, 0), (3, 2)]
    # computation starting at original node 3 now starts at the first kept node >= 3 (4 -> new 2)
    assert p.node_splits.tolist() == [[0, 2]]
    assert p.num_bridges == 0


def test_bridging_connects_kept_nodes_through_removed_chains():
    p = prune(7, CHAIN, np.array([0, 5]), hops=1, bridge=True)
    orig = {tuple(p.node_ids[e].tolist()) for e in p.edge_index}
    # 4 reached 1 through removed 3 and 2: one bridge, from the consumer to its nearest kept producer
    assert orig == {(1, 0), (5, 4), (4, 1)}
    assert p.num_bridges == 1


def test_bridging_stops_at_the_nearest_kept_producer():
    keep = np.zeros(7, dtype=bool)
    keep[[0, 2, 5]] = True
    pairs = {tuple(x) for x in nearest_kept_producers(CHAIN, 7, keep).tolist()}
    assert pairs == {(2, 0), (5, 2)}  # not (5, 0): 2 is nearer on the path
    direct = {tuple(x) for x in nearest_kept_producers(CHAIN, 7, keep, direct=True).tolist()}
    assert direct == pairs  # no kept-kept direct edge here
    keep[1] = True
    assert {tuple(x) for x in nearest_kept_producers(CHAIN, 7, keep, direct=True).tolist()} == {(1, 0), (2, 1), (5, 2)}


def test_depth_limited_walk_matches_unbounded_within_reach():
    keep = np.zeros(7, dtype=bool)
    keep[[0, 5]] = True
    # 5 reaches 0 through 4, 3, 2, 1: four removed nodes
    assert nearest_kept_producers(CHAIN, 7, keep, max_depth=4).tolist() == [[5, 0]]
    assert nearest_kept_producers(CHAIN, 7, keep, max_depth=3).shape == (0, 2)
    rng = np.random.default_rng(0)
    for _ in range(20):  # random DAGs: a large enough depth gives the unbounded answer
        n = 30
        u = rng.integers(1, n, 60)
        e = np.unique(np.stack([u, (rng.random(60) * u).astype(np.int64)], 1), axis=0)
        k = rng.random(n) < 0.3
        for direct in (False, True):
            a = nearest_kept_producers(e, n, k, direct=direct)
            b = nearest_kept_producers(e, n, k, direct=direct, max_depth=n)
            assert np.array_equal(a, b)


def test_bridging_merges_branches():
    # 3 consumes 1 and 2, both removed; 1 and 2 consume 0 (kept)
    e = np.array([[1, 0], [2, 0], [3, 1], [3, 2]])
    keep = np.array([True, False, False, True])
    assert nearest_kept_producers(e, 4, keep).tolist() == [[3, 0]]


def test_unordered_edges_are_handled():
    # same chain with the node numbering reversed (producers have larger ids)
    e = np.array([[0, 1], [1, 2], [2, 3]])
    keep = np.array([True, False, False, True])
    assert nearest_kept_producers(e, 4, keep).tolist() == [[0, 3]]
    with pytest.raises(ValueError, match="cycle"):
        nearest_kept_producers(np.array([[0, 1], [1, 0], [2, 1]]), 3, np.array([True, False, True]))


def test_config_node_pairs_are_positions():
    ids = np.array([6, 0, 3])
    pairs = config_node_pairs(CHAIN, 7, infer_operands(np.zeros((7, 140)), np.zeros(7), CHAIN, ids))
    # 3 consumes 0 through 2, 1; 6 consumes 3 directly. Positions: 6->0, 0->1, 3->2; read as input
    assert sorted(map(tuple, pairs.tolist())) == [(0, 2, INPUT), (2, 1, INPUT)]


def test_config_node_pairs_know_the_operand_they_reach():
    """A dot (4) reads configurable 0 through 2 as its kernel and configurable 1 through 3 as its
    input: the kernel numbered first, edge rows sorted; a second dot (7) reads two tensors of
    one shape (5, 6) and cannot tell them apart; 8 reads 0 through both of a dot's operands."""
    shapes = {0: (16, 4), 1: (8, 16), 2: (16, 4), 3: (8, 16), 4: (8, 4), 5: (5, 5), 6: (5, 5), 7: (5, 5),
              8: (4, 4), 9: (4, 16), 10: (16, 4)}
    nf = np.zeros((11, 140), np.float32)
    for n, sh in shapes.items():
        nf[n, 21 : 21 + len(sh)] = sh
    op = np.array([63, 63, 2, 2, 34, 63, 63, 34, 34, 98, 2])
    edges = np.array([[2, 0], [3, 1], [4, 2], [4, 3], [7, 5], [7, 6], [8, 9], [8, 10], [9, 0], [10, 0]], np.int64)
    ids = np.array([0, 1, 4, 5, 6, 7, 8])
    pairs = config_node_pairs(edges, 11, infer_operands(nf, op, edges, ids), max_depth=2)
    assert sorted(map(tuple, pairs.tolist())) == [(2, 0, KERNEL), (2, 1, INPUT), (5, 3, EITHER), (5, 4, EITHER),
                                                  (6, 0, EITHER)]


def test_tile_graph_passes_through():
    p = prune(2, np.array([[1, 0]]), None, hops=0)
    assert p.node_ids.tolist() == [0, 1] and p.edge_index.tolist() == [[1, 0]]


def test_empty_computations_merge_in_splits():
    # splits at 0, 2, 4; only nodes 0 and 5 kept -> computation 2..3 is empty
    p = prune(7, CHAIN, np.array([0, 5]), np.array([[0, 2, 4]]), hops=0)
    assert p.node_ids.tolist() == [0, 5]
    assert p.node_splits.tolist() == [[0, 1]]
    # an end marker (N) stays the end marker (N')
    assert prune(7, CHAIN, np.array([0, 5]), np.array([[0, 7]]), hops=0).node_splits.tolist() == [[0, 2]]
