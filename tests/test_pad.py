"""-1 layout padding and normalization statistics on tiny hand-made node features."""

from __future__ import annotations

import numpy as np

from features.completion import complete_layout, effective_output_layout
from features.pad import Moments, Normalizer, fit_normalizer, node_layout, pad_layout, tensor_rank


def _node(dims, layout):
    f = np.zeros(140, dtype=np.float32)
    f[21 : 21 + len(dims)] = dims
    f[134 : 134 + len(layout)] = layout
    return f


def test_minus_one_beyond_rank_only():
    nf = np.stack([
        _node([8, 128], [1, 0]),        # rank 2, dims 1 then 0; the 0 at position 1 is a real dim
        _node([4, 2, 3], [0, 2, 1]),    # rank 3
        _node([], []),                  # scalar / tuple: rank 0
        _node([5, 1, 1, 7, 2, 3], [5, 4, 3, 2, 1, 0]),  # rank 6: nothing to pad
    ])
    assert tensor_rank(nf).tolist() == [2, 3, 0, 6]
    out = pad_layout(nf)
    assert out[:, 134:140].tolist() == [
        [1, 0, -1, -1, -1, -1],
        [0, 2, 1, -1, -1, -1],
        [-1] * 6,
        [5, 4, 3, 2, 1, 0],
    ]
    assert np.array_equal(node_layout(out), out[:, 134:140].astype(np.int8))
    assert np.array_equal(out[:, :134], nf[:, :134])  # other columns untouched
    assert nf[0, 136] == 0  # input not modified


def test_config_output_layout_stands_in_unless_default():
    own = np.array([[1, 0, -1, -1, -1, -1], [0, -1, -1, -1, -1, -1], [2, 1, 0, -1, -1, -1]], dtype=np.int8)
    cfg = -np.ones((2, 2, 18), dtype=np.float32)  # 2 configs over configurable nodes [0, 2]
    cfg[0, 0, :6] = [0, 1, -1, -1, -1, -1]  # config 0 changes node 0; node 2 default
    eff = effective_output_layout(own, np.array([0, 2]), cfg)
    assert eff.shape == (2, 2, 6)
    assert eff[0, 0].tolist() == [0, 1, -1, -1, -1, -1]
    assert eff[0, 1].tolist() == own[2].tolist()
    assert eff[1, 0].tolist() == own[0].tolist()


def test_complete_layout_fills_a_prefix_from_the_own_layout():
    own = np.array([4, 3, 2, 1, 0, -1], dtype=np.int8)  # rank 5
    cases = {
        (4, 0, -1, -1, -1, -1): [4, 0, 3, 2, 1, -1],   # real files set the two minor-most dims
        (-1, -1, -1, -1, -1, -1): [4, 3, 2, 1, 0, -1],  # compiler default
        (1, -1, -1, -1, -1, -1): [1, 4, 3, 2, 0, -1],
        (0, 1, 2, 3, 4, -1): [0, 1, 2, 3, 4, -1],       # a full permutation stands as it is
    }
    got = complete_layout(np.array(list(cases), dtype=np.int8), own[None])
    assert got.tolist() == list(cases.values())


def test_normalizer_drops_constants_logs_wide_and_standardizes():
    rng = np.random.default_rng(0)
    x = np.stack([np.full(100, 3.0), rng.normal(size=100), rng.integers(1, 10**6, 100).astype(float)], 1)
    m = Moments(3)
    m.add(x[:40]).merge(Moments(3).add(x[40:]))  # streaming in pieces gives the same fit
    n = fit_normalizer(m, log_min_abs=1000)
    assert n.keep.tolist() == [1, 2]
    assert n.log.tolist() == [False, True]
    y = n.apply(x)
    assert y.shape == (100, 2)
    assert np.allclose(y.mean(0), 0, atol=1e-5) and np.allclose(y.std(0), 1, atol=1e-4)
    assert np.allclose(Normalizer.from_dict(n.to_dict()).apply(x), y)


def test_excluded_columns_are_never_kept():
    x = np.arange(12, dtype=float).reshape(4, 3)
    n = fit_normalizer(Moments(3).add(x), exclude=np.array([0]))
    assert n.keep.tolist() == [1, 2]
