"""Base-7 packing and streaming config deduplication on hand-made configs."""

from __future__ import annotations

import numpy as np
import pytest

from features.configs import ConfigDeduper, dedup_configs, pack_layout, unpack_layout


def test_packing_round_trips_every_digit():
    rng = np.random.default_rng(0)
    x = rng.integers(-1, 6, size=(50, 4, 18)).astype(np.float32)
    x[0, 0] = -1
    codes = pack_layout(x)
    assert codes.shape == (50, 4, 3) and codes.dtype == np.int32
    assert codes[0, 0].tolist() == [0, 0, 0]  # all -1: the default layout packs to 0
    assert np.array_equal(unpack_layout(codes), x.astype(np.int8))
    assert unpack_layout(np.zeros((2, 0, 3), np.int32)).shape == (2, 0, 18)  # no varying node


def test_packing_is_base_seven_most_significant_first():
    g = np.array([[0, 1, -1, -1, -1, -1]], dtype=np.float32)
    assert pack_layout(g).tolist() == [[1 * 7**5 + 2 * 7**4]]
    assert pack_layout(np.full((1, 6), 5.0)).item() == 7**6 - 1


@pytest.mark.parametrize("bad", [6.0, -2.0, 0.5])
def test_packing_rejects_out_of_vocabulary(bad):
    x = np.zeros((1, 6), dtype=np.float32)
    x[0, 3] = bad
    with pytest.raises(ValueError, match="integers in -1..5"):
        pack_layout(x)


def _configs():
    # 5 configs over 2 nodes (one 3-code row each); configs 0, 2, 4 identical; node 1 never varies
    rows = np.array([[[1, 0, 0], [9, 9, 9]],
                     [[2, 0, 0], [9, 9, 9]],
                     [[1, 0, 0], [9, 9, 9]],
                     [[3, 0, 0], [9, 9, 9]],
                     [[1, 0, 0], [9, 9, 9]]], dtype=np.int32)
    runtime = np.array([50, 10, 30, 20, 40], dtype=np.int64)
    return rows, runtime


def test_dedup_min_keeps_fastest_and_maps_every_index():
    rows, rt = _configs()
    d, uniq = dedup_configs(rows, rt, "min")
    assert d.config_map.tolist() == [0, 1, 0, 2, 0]
    assert d.runtime.tolist() == [30, 10, 20]
    assert d.first.tolist() == [0, 1, 3]
    assert np.array_equal(uniq, rows[[0, 1, 3]])
    assert np.array_equal(uniq[d.config_map], rows)  # every original config recoverable
    assert d.varying.tolist() == [True, False]


def test_dedup_mean_and_none():
    rows, rt = _configs()
    assert dedup_configs(rows, rt, "mean")[0].runtime.tolist() == [40.0, 10.0, 20.0]
    d, uniq = dedup_configs(rows, rt, "none")
    assert d.config_map.tolist() == [0, 1, 2, 3, 4] and d.runtime.tolist() == rt.tolist()
    assert uniq.shape == rows.shape


def test_dedup_streamed_in_chunks_matches_whole():
    rng = np.random.default_rng(1)
    rows = rng.integers(0, 3, size=(200, 3, 2)).astype(np.int32)
    rt = rng.integers(1, 100, 200)
    whole, wu = dedup_configs(rows, rt)
    s = ConfigDeduper("min")
    parts = [s.add(rows[i : i + 7], rt[i : i + 7]) for i in range(0, 200, 7)]
    streamed = s.finish()
    assert np.array_equal(np.concatenate(parts), wu)
    assert np.array_equal(streamed.config_map, whole.config_map)
    assert np.array_equal(streamed.runtime, whole.runtime)


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.float32])
def test_dedup_matches_exact_grouping(dtype):
    # odd byte widths (3 int8 per row) and duplicates both inside and across chunks
    rng = np.random.default_rng(2)
    rows = rng.integers(0, 2, size=(300, 3)).astype(dtype)
    rt = rng.integers(1, 1000, 300)
    s = ConfigDeduper("mean")
    uniq = np.concatenate([s.add(rows[i : i + 16], rt[i : i + 16]) for i in range(0, 300, 16)])
    d = s.finish()
    _, first, inv = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))  # exact groups numbered by first occurrence
    assert np.array_equal(d.config_map, rank[inv.reshape(-1)])
    assert np.array_equal(d.first, np.sort(first)) and np.array_equal(uniq, rows[np.sort(first)])
    want = np.bincount(d.config_map, weights=rt) / np.bincount(d.config_map)
    assert np.allclose(d.runtime, want)


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="unknown dedup policy"):
        ConfigDeduper("max")
