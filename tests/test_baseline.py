"""Baseline rankers on hand-made graphs whose costs are known by hand; predictions round-trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from features.layout import node_layout, node_rank, tensor_bytes
from models.baseline import LayoutCopyCost, tile_padding_cost
from models.metrics import ranking
from pipeline.core.errors import DataError
from pipeline.io.predictions import read_predictions, write_predictions


def _node(shape: tuple[int, ...], layout: tuple[int, ...], f32: bool = True) -> np.ndarray:
    f = np.zeros(140, np.float32)
    f[13 if f32 else 15] = 1  # f32 or bf16
    f[21 : 21 + len(shape)] = shape
    f[28] = np.prod(shape)
    f[134 : 134 + len(layout)] = layout
    return f


OPCODES = np.array([63, 63, 34, 75, 2], np.uint8)  # parameter, parameter, dot, reshape, add


def five_node_graph() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """param0 [8, 16], param1 [16, 4] -> dot(2, configurable) [8, 4] -> reshape(3, configurable) -> add(4)."""
    feat = np.stack([
        _node((8, 16), (1, 0)),
        _node((16, 4), (1, 0)),
        _node((8, 4), (1, 0)),          # 32 f32 = 128 bytes
        _node((4, 8), (1, 0)),
        _node((4, 8), (1, 0), f32=False),
    ])
    edges = np.array([[2, 0], [2, 1], [3, 2], [4, 3]], np.int64)
    return feat, edges, np.array([2, 3], np.int64)


def _config(conv_out=(-1, -1), reshape_in=(-1, -1), dot_lhs=(-1, -1), dot_rhs=(-1, -1)) -> np.ndarray:
    c = np.full((2, 18), -1, np.float32)
    c[0, 0:2] = conv_out
    c[0, 6:8] = dot_lhs
    c[0, 12:14] = dot_rhs
    c[1, 6:8] = reshape_in
    return c


def test_node_tensor_facts() -> None:
    feat, _, _ = five_node_graph()
    assert node_rank(feat).tolist() == [2, 2, 2, 2, 2]
    assert node_layout(feat)[0].tolist() == [1, 0, -1, -1, -1, -1]
    assert tensor_bytes(feat).tolist() == [512, 256, 128, 128, 64]


def test_layout_copy_cost_by_hand() -> None:
    feat, edges, ids = five_node_graph()
    chunk = np.stack([
        _config(),                                  # all defaults: nothing copied
        _config(conv_out=(0, 1)),                   # dot output transposed, reshape expects default
        _config(conv_out=(0, 1), reshape_in=(0, 1)),  # both agree on the transposed layout
        _config(reshape_in=(0, 1)),                 # reshape wants transposed, dot gives default
        _config(conv_out=(1, 0)),                   # explicitly the default: nothing copied
        _config(dot_lhs=(0, 1)),                    # the dot reads param0 [8, 16] transposed: 512 bytes
        _config(dot_rhs=(0, 1)),                    # ... param1 [16, 4] transposed: 256 bytes
    ])
    want = [0, 128, 0, 128, 0, 512, 256]
    assert LayoutCopyCost(feat, OPCODES, edges, ids)(chunk).tolist() == want
    # the same program with the kernel numbered before the input and edge rows sorted, as the
    # real files write them: operands are told apart by shape, not by edge order
    perm = np.array([1, 0, 2, 3, 4])  # new id of each old node
    feat2, edges2 = feat[np.argsort(perm)], perm[edges]
    edges2 = edges2[np.lexsort((edges2[:, 1], edges2[:, 0]))]
    assert LayoutCopyCost(feat2, OPCODES[np.argsort(perm)], edges2, ids)(chunk).tolist() == want


def _reference_copy_cost(feat: np.ndarray, edges: np.ndarray, ids: np.ndarray, chunk: np.ndarray) -> np.ndarray:
    """The module docstring's rule, spelled out edge by edge with `complete_layout`."""
    from features.completion import complete_layout

    slot = {int(n): i for i, n in enumerate(ids)}
    own, nbytes = node_layout(feat), tensor_bytes(feat)
    out = np.zeros(chunk.shape[0])
    for u, v in edges:
        if u not in slot and v not in slot:
            continue
        for c in range(chunk.shape[0]):
            produced = complete_layout(chunk[c, slot[v], 0:6], own[v]) if v in slot else own[v]
            wanted = complete_layout(chunk[c, slot[u], 6:12], own[v]) if u in slot else own[v]
            out[c] += nbytes[v] * (produced[:2] != wanted[:2]).any()
    return out


def test_layout_copy_cost_matches_the_rule_on_random_prefix_configs() -> None:
    rng = np.random.default_rng(0)
    n = 12
    feat = np.stack([_node(tuple(int(d) for d in rng.integers(1, 9, size=r)), tuple(int(d) for d in rng.permutation(r)))
                     for r in rng.integers(1, 5, size=n)])
    edges = np.array([[u, v] for u in range(1, n) for v in rng.choice(u, size=min(u, 2), replace=False)], np.int64)
    ids = np.sort(rng.choice(n, size=6, replace=False)).astype(np.int64)
    rank = np.asarray([int((f[21:27] > 0).sum()) for f in feat])
    chunk = np.full((40, ids.size, 18), -1, np.float32)
    for c in range(40):
        for i, node in enumerate(ids):
            for g in range(3):  # a random prefix of a permutation of the node's dims (the data's form)
                k = rng.integers(0, rank[node] + 1)
                chunk[c, i, 6 * g : 6 * g + k] = rng.permutation(rank[node])[:k]
    got = LayoutCopyCost(feat, np.full(n, 75, np.uint8), edges, ids)(chunk)  # reshapes: every producer read under the input group
    assert np.array_equal(got, _reference_copy_cost(feat, edges, ids, chunk)) and got.any()


def test_tile_padding_cost_by_hand() -> None:
    feat = np.stack([_node((100, 128), (1, 0)), _node((100, 128), (1, 0))])
    feat[1, 0] = 1  # root
    cfg = np.zeros((3, 24), np.float32)
    cfg[0, 8:10] = (128, 128)  # pads 100 -> 128: waste 1.28, one tile
    cfg[1, 8:10] = (100, 128)  # exact, one tile
    cfg[2, 8:10] = (50, 64)    # exact, four tiles
    cost = tile_padding_cost(feat, cfg)
    assert cost[0] == pytest.approx(1.28)
    assert ranking(cost).tolist() == [1, 2, 0]


def test_predictions_round_trip_and_checks(tmp_path: Path) -> None:
    scores = {"tile:xla:a": np.array([3.0, 1.0, 2.0]), "layout:xla:random:b": np.array([0.5, 0.25])}
    path = tmp_path / "m" / "valid.parquet"
    write_predictions(path, scores)
    back = read_predictions(path)
    assert set(back) == set(scores)
    for k in scores:
        np.testing.assert_array_equal(back[k], scores[k])
    import polars as pl

    pl.read_parquet(path).filter(pl.col("config") != 1).write_parquet(path)
    with pytest.raises(DataError, match="configs are not exactly"):
        read_predictions(path)
    with pytest.raises(DataError, match="predictions not found"):
        read_predictions(tmp_path / "none.parquet")
