"""Loading the extract stage's GNN tensors: config codes round-trip to the raw node_config_feat
of the varying nodes, batches carry config groups completed from the right default layout,
unique rows map back to every original config, and bad files fail with one sentence naming
them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from builders import build_tiny_tree
from features.completion import CompletionTable, GroupCompleter, complete_layout, group_defaults
from features.configs import pack_layout, unpack_layout
from features.cost_terms import NUM_TERMS, TERM_NAMES, TOTAL_NAMES, layout_terms
from features.operands import BY_SHAPE, RESOLVED, Operands, infer_operands
from models.gnn import GNNRanker
from pipeline.core.errors import DataError
from pipeline.gnn.dataset import feature_dims, graph_data, load_graph, load_graphs, sample_rows
from pipeline.io.catalog import discover, rel_path
from pipeline.io.npz import read_graph, write_npz


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    return build_tiny_tree(tmp_path_factory.mktemp("tiny"))


def test_config_codes_round_trip_to_the_raw_configs_of_the_varying_nodes(tiny) -> None:
    checked = 0
    for f in discover(tiny["raw"], collections=["layout:xla:default", "layout:nlp:random"]):
        raw = read_graph(f.path, config_feat=True)
        g = load_graph(tiny["gnn"] / rel_path(f.collection, f.split, f.stem), f.collection, f.split)
        z = np.load(tiny["gnn"] / rel_path(f.collection, f.split, f.stem))
        varying = z["varying"]
        assert varying.any()
        # the configurable nodes of the batch are the raw varying ones, in pruned ids
        assert np.array_equal(z["node_ids"][g.graph.config_nodes.numpy()], raw.node_config_ids[varying])
        # every ORIGINAL config, through config_map, unpacks to its raw values on the varying nodes
        raw_groups = raw.node_config_feat[:, varying].astype(np.int8)  # (C, NV, 18)
        assert np.array_equal(unpack_layout(g.codes)[g.config_map], raw_groups)
        # and a batch carries them completed from each group's default layout
        batch = g.select(np.arange(g.num_configs))
        assert batch.config_layout.dtype == torch.long
        defaults = z["config_defaults"]
        assert defaults.shape == (g.codes.shape[1], 3, 6)
        want = complete_layout(raw_groups.reshape(-1, g.codes.shape[1], 3, 6), defaults[None])
        done = batch.config_layout.numpy()[g.config_map]
        assert np.array_equal(done, want.reshape(raw_groups.shape))
        assert ((done >= 0).sum(-1) >= (raw_groups >= 0).sum(-1)).all() and (done != raw_groups).any()
        # with the cost terms of those completed groups (features.cost_terms), node by node
        terms = batch.config_terms.numpy()
        assert terms.shape == (g.num_configs, g.codes.shape[1], NUM_TERMS) and np.isfinite(terms).all()
        want_terms = layout_terms(g.terms.facts, g.terms.defaults, g.terms.pairs, batch.config_layout.numpy())
        np.testing.assert_array_equal(terms, want_terms)
        assert terms[:, :, TERM_NAMES.index("out_present")].all(), "every varying node has an output tensor"
        totals = g.cost_totals(np.arange(g.num_configs))
        assert totals.shape == (g.num_configs, len(TOTAL_NAMES)) and (totals >= 0).all()
        # the other configurable nodes never change, so they carry nothing to rank by
        assert (raw.node_config_feat[:, ~varying] == raw.node_config_feat[:1, ~varying]).all()
        # a selection comes back in the order asked for
        rows = np.array([g.num_configs - 1, 0])
        assert np.array_equal(g.select(rows).config_layout.numpy(), batch.config_layout.numpy()[rows])
        # runtimes: the fastest duplicate per row, the raw ones per original config
        assert np.array_equal(g.original_runtime, raw.config_runtime.astype(np.float64))
        for u in range(g.num_configs):
            assert g.runtime[u] == raw.config_runtime[g.config_map == u].min()
        checked += 1
    assert checked >= 6


def hand_graph(groups: list[list[list[int]]]) -> dict[str, np.ndarray]:
    """Arrays of an extracted layout file: a rank-5 convolution (node 2) reading an input (0) and
    a kernel (1), and a rank-2 reshape (3) reading the convolution; 2 and 3 configurable.
    `groups` (U, 2, 18) configs; the operands as the extract stage tells them apart."""
    lay = -np.ones((4, 6), dtype=np.int8)
    lay[0, :5] = [3, 4, 2, 1, 0]  # the input's own layout, not the convolution's
    lay[1, :5] = [0, 1, 2, 3, 4]
    lay[2, :5] = [4, 3, 2, 1, 0]
    lay[3, :2] = [1, 0]
    u = len(groups)
    return {"node_feat": np.zeros((4, 3), np.float32), "node_layout": lay, "node_opcode": np.array([63, 63, 26, 75], np.uint8),
            "edge_index": np.array([[2, 0], [2, 1], [3, 2]]), "config_map": np.arange(u), "runtime": np.arange(1.0, u + 1),
            "config_runtime": np.arange(1.0, u + 1), "config_node_ids": np.array([2, 3]),
            "config_codes": pack_layout(np.array(groups, dtype=np.float32)),
            "config_defaults": group_defaults(lay, Operands(np.array([[2, 0, 1], [3, 2, -1]]), np.array([BY_SHAPE, RESOLVED], np.int8)))}


def _g(*parts: list[int]) -> list[int]:
    """Three groups of 6, each padded with -1."""
    return [v for p in parts for v in p + [-1] * (6 - len(p))]


def test_config_groups_are_completed_from_their_default_layouts() -> None:
    g = graph_data(hand_graph([
        [_g([4, 0], [], [1]), _g([], [0], [])],
        [_g([], [2, 0], []), _g([0, 1], [], [])],
        [_g([0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [4, 3, 2, 1, 0]), _g([1], [1], [])],
    ]), "layout:xla:default", "train")
    got = g.select(np.arange(3)).config_layout.numpy()
    want = [
        # a rank-5 prefix [4, 0] goes on with the own dims not yet placed, in their order
        # (filled position by position it would read [4, 0, 2, 1, 0], not a layout);
        # input: the producer's layout; kernel: operand 1's
        [_g([4, 0, 3, 2, 1], [3, 4, 2, 1, 0], [1, 0, 2, 3, 4]), _g([1, 0], [0, 4, 3, 2, 1], [])],
        [_g([4, 3, 2, 1, 0], [2, 0, 3, 4, 1], [0, 1, 2, 3, 4]), _g([0, 1], [4, 3, 2, 1, 0], [])],
        # full layouts stand; a reshape has no kernel, so its kernel group stays unset
        [_g([0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [4, 3, 2, 1, 0]), _g([1, 0], [1, 4, 3, 2, 0], [])],
    ]
    assert got.tolist() == want


def test_a_set_group_and_the_default_it_completes_to_read_alike() -> None:
    groups = [
        [_g([4, 3, 2, 1, 0], [], []), _g([1, 0], [1], [])],  # the convolution's own layout, set
        [_g([], [], []), _g([1], [1, 0], [])],  # nothing set: completes to the same output layout
    ]
    b = graph_data(hand_graph(groups), "layout:xla:default", "train").select(np.array([1, 0]))
    b.check()
    lay = b.config_layout
    assert lay[0, :, :6].tolist() == lay[1, :, :6].tolist(), "both output groups complete alike"
    torch.manual_seed(0)
    m = GNNRanker(node_feat_dim=3, hidden=8, layers=1, cross="none").eval()
    with torch.no_grad():
        x, _ = m.encode_inputs(b)
    # the convolution's set group and the default it completes to are the same input to the model
    torch.testing.assert_close(x[0, 2], x[1, 2], rtol=0, atol=0)


def test_completion_tables_agree_with_complete_layout() -> None:
    rng = np.random.default_rng(0)
    defaults = -np.ones((40, 3, 6), dtype=np.int8)
    groups = -np.ones((50, 40, 3, 6), dtype=np.int8)
    for idx in np.ndindex(40, 3):
        r = rng.integers(0, 7)
        defaults[idx][:r] = rng.permutation(6)[:r]
    for idx in np.ndindex(50, 40, 3):
        r = rng.integers(0, 7)
        groups[idx][:r] = rng.permutation(6)[:r]
    codes = pack_layout(groups.reshape(50, 40, 18))
    got = unpack_layout(GroupCompleter(defaults)(codes)).reshape(groups.shape)
    assert np.array_equal(got, complete_layout(groups, defaults[None]))
    # any other group (a repeated dim) is completed directly, from the default it is paired with
    odd = np.array([[1, 1, -1, -1, -1, -1], [0, -1, -1, -1, -1, -1]], dtype=np.int8)
    table = CompletionTable(defaults[:2, 0])
    got = unpack_layout(table(pack_layout(odd)[:, 0], np.array([1, 0]))[:, None])
    assert np.array_equal(got, complete_layout(odd, defaults[[1, 0], 0]))
    # a node without a producer in the graph completes its input group from its own layout
    alone = infer_operands(np.zeros((2, 140)), np.array([26, 26]), np.zeros((0, 2)), np.array([0, 1]))
    d = group_defaults(np.array([[1, 0, -1, -1, -1, -1]] * 2), alone)
    assert d[:, 1].tolist() == [[1, 0, -1, -1, -1, -1]] * 2 and (d[:, 2] == -1).all()


def test_tile_targets_are_normalized_and_scores_map_back_to_every_original_config(tiny) -> None:
    f = discover(tiny["raw"], collections=["tile:xla"], splits=["train"])[0]
    raw = read_graph(f.path)
    g = load_graph(tiny["gnn"] / rel_path(f.collection, f.split, f.stem), f.collection, f.split)
    assert g.kind == "tile" and g.graph.config_feat.shape[0] == 0
    np.testing.assert_allclose(g.original_runtime, raw.config_runtime / raw.config_runtime_normalizers)
    b = g.select(torch.tensor([1, 0]))
    assert b.config_feat.shape == (2, g.config_feat.shape[1])
    b.check()
    unique = np.arange(g.num_configs, dtype=np.float64)
    s = g.to_original(unique)
    assert s.shape == (raw.num_configs,) and np.array_equal(s, g.config_map.astype(np.float64))
    with pytest.raises(ValueError, match="unique configs"):
        g.to_original(unique[:-1])


def test_subset_keeps_the_originals_of_the_chosen_rows(tiny) -> None:
    g = load_graphs(tiny["gnn"], "layout:nlp:default", "valid")[0]
    rows = np.array([3, 0, 5])
    s = g.subset(rows)
    assert s.num_configs == 3
    keep = np.isin(g.config_map, rows)
    assert s.num_original == keep.sum()
    assert np.array_equal(s.original_runtime, g.original_runtime[keep])
    assert np.array_equal(s.select(np.arange(3)).config_layout, g.select(np.sort(rows)).config_layout)


def test_sample_rows_are_distinct() -> None:
    rng = np.random.default_rng(0)
    r = sample_rows(100, 10, rng)
    assert r.size == 10 and np.unique(r).size == 10 and r.max() < 100
    assert sorted(sample_rows(5, 10, rng)) == [0, 1, 2, 3, 4]


def test_feature_dims_agree_within_a_collection(tiny) -> None:
    gs = load_graphs(tiny["gnn"], "tile:xla", "train") + load_graphs(tiny["gnn"], "tile:xla", "test")
    dims = feature_dims(gs)
    assert dims["node_feat_dim"] == gs[0].graph.node_feat.shape[1] and dims["config_feat_dim"] > 0
    lay = load_graphs(tiny["gnn"], "layout:xla:random", "train")
    assert set(feature_dims(lay)) == {"node_feat_dim"}


def test_bad_files_fail_with_one_sentence_naming_them(tiny, tmp_path: Path) -> None:
    src = next((tiny["gnn"] / "layout/xla/default/train").glob("*.npz"))
    z = dict(np.load(src))
    missing = tmp_path / "missing.npz"
    write_npz(missing, {k: v for k, v in z.items() if k != "config_codes"})
    with pytest.raises(DataError, match="missing.npz.*config_codes"):
        load_graph(missing, "layout:xla:default", "train")
    bad = tmp_path / "badmap.npz"
    write_npz(bad, {**z, "config_map": z["config_map"] + 10_000})
    with pytest.raises(DataError, match="badmap.npz.*config_map"):
        load_graph(bad, "layout:xla:default", "train")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="junk.npz"):
        load_graph(junk, "layout:xla:default", "train")
