"""Loading the extract stage's GNN tensors: config codes round-trip to the raw node_config_feat
of the varying nodes, unique rows map back to every original config, and bad files fail with
one sentence naming them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import extract, pad, prune
from pipeline.catalog import discover
from pipeline.cli import compose
from pipeline.errors import DataError
from pipeline.gnn_data import feature_dims, load_graph, load_graphs, sample_rows
from pipeline.npz import read_graph, write_npz
from pipeline.runner import rel_path
from pipeline.sample_data import generate

TINY = ["graphs.train=2", "graphs.valid=1", "graphs.test=1", "tile_scale=1"]


def build_tiny_tree(root: Path) -> dict[str, Path]:
    """The embedded sample at its smallest, through prune, pad and extract (about a second)."""
    d = {"raw": root / "raw", "pruned": root / "pruned", "padded": root / "padded", "processed": root / "processed"}
    generate(compose("sample_data", [f"out={d['raw']}", *TINY]))
    prune.run(compose("prune", [f"data={d['raw']}", f"out={d['pruned']}", "jobs=1"]))
    pad.run(compose("pad", [f"data={d['pruned']}", f"out={d['padded']}", "jobs=1"]))
    extract.run(compose("extract", [f"data={d['padded']}", f"out={d['processed']}", "jobs=1", "tables=false", "chunk_configs=64"]))
    d["gnn"] = d["processed"] / "gnn"
    return d


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
        batch = g.select(np.arange(g.num_configs))
        assert batch.config_layout.dtype == torch.long
        back = batch.config_layout.numpy()[g.config_map]  # (C, NV, 18)
        assert np.array_equal(back, raw.node_config_feat[:, varying].astype(np.int64))
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
