"""The embedded sample generator: real format, determinism, and runtimes that need the graph."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import kendalltau

from builders import TINY
from pipeline.core.cli import compose
from pipeline.core.errors import DataError
from pipeline.io.catalog import COLLECTIONS, SPLITS, TRUTH, collection_dir, discover, truth_path
from pipeline.io.npz import SCHEMA, read_graph
from pipeline.sample.costmodel import LayoutContext, TileContext, layout_cost, layout_terms, tile_cost
from pipeline.sample_data import generate

ROOT = Path(__file__).resolve().parent.parent
TREE = ["graphs.train=8", "graphs.valid=4", "graphs.test=2", "tile_scale=2"]


def _generate(out: Path, overrides: list[str]) -> dict:
    return generate(compose("sample_data", [f"out={out}", *overrides]))


@pytest.fixture(scope="session")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample") / "raw"
    _generate(out, TREE)
    return out


@pytest.fixture(scope="session")
def graphs(tree: Path) -> dict[tuple[str, str], list]:
    """Every generated file, read whole (read_graph validates), by (collection, split)."""
    return {(c, s): [read_graph(p, config_feat=True) for p in sorted((tree / collection_dir(c) / s).glob("*.npz"))]
            for c in COLLECTIONS for s in SPLITS}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.npz"))}


def test_tree_has_every_collection_split_and_the_stamp(tree: Path, graphs) -> None:
    assert (tree / ".complete").is_file()
    for (c, s), gs in graphs.items():
        assert len(gs) == {"train": 8, "valid": 4, "test": 2}[s] * (2 if c == "tile:xla" else 1), (c, s)
        for g in gs:
            stem = g.path.stem
            if s == "test":
                assert re.fullmatch(r"[0-9a-f]{32}", stem), stem
            elif c == "tile:xla":
                assert re.fullmatch(r".+_-?[0-9a-f]{16}", stem), stem
            else:
                assert not re.fullmatch(r"[0-9a-f]+", stem) and re.match(r"[a-z]", stem), stem
    # the two searches of a source share graphs and names, as in the real data
    for src in ("xla", "nlp"):
        for s in SPLITS:
            a, b = graphs[(f"layout:{src}:default", s)], graphs[(f"layout:{src}:random", s)]
            assert [g.path.name for g in a] == [g.path.name for g in b]
            assert all(np.array_equal(x.node_feat, y.node_feat) for x, y in zip(a, b))


def test_noiseless_cost_is_written_beside_train_and_valid_graphs(tree: Path, graphs) -> None:
    """`.truth/` holds the cost model's noiseless cost of every train / valid config, on the
    target's scale; test graphs get none, and no stage's discovery sees the folder."""
    assert {f.path for f in discover(tree)} == {g.path for gs in graphs.values() for g in gs}
    assert not list((tree / TRUTH).rglob("*.npz")) and not (tree / TRUTH / "tile/xla/test").exists()
    assert not any((tree / TRUTH / collection_dir(c) / "test").exists() for c in COLLECTIONS)
    written = sorted((tree / TRUTH).rglob("*.npy"))
    assert len(written) == sum(len(gs) for (c, s), gs in graphs.items() if s != "test")
    for (c, s), gs in graphs.items():
        if s == "test":
            continue
        for k, g in enumerate(gs):
            t = np.load(truth_path(tree, c, s, g.path.stem), allow_pickle=False)
            assert t.dtype == np.float64 and t.shape == (g.num_configs,), g.path
            target = g.config_runtime / (g.config_runtime_normalizers if g.kind == "tile" else 1)
            # measured = noiseless x exp(0.01 z), rounded to whole ns
            assert np.abs(np.log(target / t)).max() < 0.06, g.path
            assert 0.003 < np.log(target / t).std() < 0.02, g.path
            if k == 0:  # exactly the cost model's value
                if g.kind == "tile":
                    ctx = TileContext.from_arrays(g.node_feat, g.node_opcode, g.edge_index)
                    want = tile_cost(ctx, g.config_feat) / g.config_runtime_normalizers[0]
                else:
                    ctx = LayoutContext.from_arrays(g.node_feat, g.node_opcode, g.edge_index, g.node_config_ids)
                    want = layout_cost(ctx, g.node_config_feat)
                assert np.allclose(t, want, rtol=1e-12, atol=0), g.path


def test_files_match_real_keys_dtypes_and_ndim(tree: Path, samples: Path) -> None:
    real = {"tile": samples / "tile/xla/train/retinanet.2x2.fp32_-342c949e14733d96.npz",
            "layout": samples / "layout/xla/default/train/unet3d.npz"}

    def schema(path: Path) -> dict[str, tuple[str, int]]:
        with np.load(path) as z:
            return {k: (str(z[k].dtype), z[k].ndim) for k in z.files}

    want = {kind: schema(p) for kind, p in real.items()}
    assert set(want["tile"]) == set(SCHEMA["tile"]) and set(want["layout"]) == set(SCHEMA["layout"])
    for p in sorted(tree.rglob("*.npz")):
        kind = "tile" if "tile" in p.parts else "layout"
        assert schema(p) == want[kind], p
        with zipfile.ZipFile(p) as zf:  # DEFLATE members, like the real files
            assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_DEFLATED}


def test_graphs_look_like_xla_programs(graphs) -> None:
    for (c, s), gs in graphs.items():
        for g in gs:
            nf, n = g.node_feat, g.num_nodes
            u, v = g.edge_index[:, 0], g.edge_index[:, 1]
            assert (u > v).all(), g.path  # topological order, u consumes v
            assert g.node_opcode.min() >= 1 and g.node_opcode.max() <= 120
            assert (nf[:, 2:21].sum(1) == 1).all()  # one element type each
            shape = nf[:, 21:27]
            rank = (shape > 0).sum(1)
            assert np.array_equal(nf[:, 27], shape.sum(1))
            assert np.allclose(nf[:, 28], np.where(shape > 0, shape, 1).prod(1), rtol=1e-6)
            assert nf[:, 0].sum() >= 1  # a root
            for i in range(n):
                lay = nf[i, 134:140].astype(int)
                assert sorted(lay[: rank[i]]) == list(range(rank[i])) and not lay[rank[i]:].any(), (g.path, i)
            if g.kind == "layout":
                sp = g.node_splits[0]
                assert sp[0] == 0 and sp[-1] == n and (np.diff(sp) > 0).all()
                ops = g.node_opcode[g.node_config_ids]
                assert np.isin(ops, (26, 34, 75)).all()
                if "nlp" in c:  # transformers: dots, bf16, reshapes and transposes
                    assert (ops == 34).sum() >= 2 and (g.node_opcode == 98).any() and not (ops == 26).any()
                else:
                    assert (ops == 26).any()
            else:
                assert 5 <= n <= 60 and nf[-1, 0] == 1  # a small fusion, its root last


def test_config_groups_are_layouts_of_their_tensors(graphs) -> None:
    """Each group: all -1, or a minor-to-major prefix of distinct dims of its tensor padded with
    -1, full length for reshapes, two dims for convolutions and dots of rank >= 3."""
    checked = 0
    for (c, s), gs in graphs.items():
        for g in (g for g in gs if g.kind == "layout"):
            rank = (g.node_feat[:, 21:27] > 0).sum(1)
            for j, i in enumerate(g.node_config_ids.tolist()):
                operands = g.edge_index[g.edge_index[:, 0] == i, 1]
                slots = [i, *operands[:2]]
                groups = np.unique(g.node_config_feat[:, j, :].reshape(-1, 3, 6), axis=0).astype(int)
                for k in range(3):
                    for grp in np.unique(groups[:, k], axis=0):
                        used = grp[grp >= 0]
                        if used.size == 0:
                            assert (grp == -1).all()
                            continue
                        r = rank[slots[k]]
                        assert (grp[: used.size] >= 0).all() and (grp[used.size :] == -1).all(), grp
                        assert len(set(used)) == used.size and used.max() < r, (grp, r)
                        expect = r if g.node_opcode[i] == 75 else min(r, 2)
                        assert used.size == expect, (g.path, i, grp, r)
                        checked += 1
    assert checked > 1000


def test_runtimes_normalizers_and_duplicates(graphs) -> None:
    for (c, s), gs in graphs.items():
        dup_with_spread = 0
        for g in gs:
            rt = g.config_runtime
            if s == "test":
                assert (rt == 0).all()
                if g.kind == "tile":
                    assert (g.config_runtime_normalizers == 1).all()
                continue
            assert (rt > 0).all()
            if g.kind == "tile":
                norm = g.config_runtime_normalizers
                assert (norm == norm[0]).all() and norm[0] in rt  # the default config's runtime
                rows = g.config_feat
            else:
                rows = g.node_config_feat.reshape(g.num_configs, -1)
            _, first, inv = np.unique(rows, axis=0, return_index=True, return_inverse=True)
            twins = np.flatnonzero(first[inv.reshape(-1)] != np.arange(len(rt)))
            dup_with_spread += int((rt[twins] != rt[first[inv.reshape(-1)][twins]]).any())
            if g.kind == "layout":
                assert len(first) < g.num_configs  # duplicated configs are common
        if s != "test":
            assert dup_with_spread >= len(gs) // 2, (c, s)


def test_default_search_has_a_smaller_spread_than_random(graphs) -> None:
    for src in ("xla", "nlp"):
        spread = {search: np.median([g.config_runtime.max() / g.config_runtime.min()
                                     for s in ("train", "valid") for g in graphs[(f"layout:{src}:{search}", s)]])
                  for search in ("default", "random")}
        assert spread["default"] < 2.0 < spread["random"], (src, spread)


def _group_tokens(g, vocab: dict, grow: bool) -> np.ndarray:
    """(C, NC*3) ids of each (slot, 6-value group) of each config; -1 for unseen ones."""
    c, nc, _ = g.node_config_feat.shape
    out = np.empty((c, nc, 3), dtype=np.int64)
    for s in range(3):
        u, inv = np.unique(g.node_config_feat[:, :, 6 * s : 6 * s + 6].reshape(-1, 6), axis=0, return_inverse=True)
        ids = []
        for row in u:
            key = (s, row.tobytes())
            if key not in vocab and grow:
                vocab[key] = len(vocab)
            ids.append(vocab.get(key, -1))
        out[:, :, s] = np.asarray(ids)[inv.reshape(-1)].reshape(c, nc)
    return out.reshape(c, -1)


def _config_only_tau(train, valid, y_train, y_valid) -> float:
    """A bag-of-config-groups ridge ranker: the same group costs the same in every graph."""
    vocab: dict = {}
    toks = [_group_tokens(g, vocab, True) for g in train]

    def counts(t: np.ndarray) -> np.ndarray:
        x = np.zeros((t.shape[0], len(vocab)))
        rows = np.repeat(np.arange(t.shape[0]), t.shape[1])
        keep = t.reshape(-1) >= 0
        np.add.at(x, (rows[keep], t.reshape(-1)[keep]), 1.0)
        return x

    x = np.concatenate([(m := counts(t)) - m.mean(0) for t in toks])
    y = np.concatenate([np.log(v) - np.log(v).mean() for v in y_train])
    w = np.linalg.solve(x.T @ x + np.eye(x.shape[1]), x.T @ y)
    return float(np.mean([kendalltau(counts(_group_tokens(g, vocab, False)) @ w, v).statistic
                          for g, v in zip(valid, y_valid)]))


def _graph_aware_tau(train, valid) -> float:
    """A linear ranker over the cost model's terms, computed from each file's graph and configs."""
    def feats(g) -> tuple[np.ndarray, float]:
        ctx = LayoutContext.from_arrays(g.node_feat, g.node_opcode, g.edge_index, g.node_config_ids)
        t = layout_terms(ctx, g.node_config_feat)
        return np.stack([t[k] for k in sorted(t)], axis=1) / ctx.base_ns, ctx.base_ns

    x, y = [], []
    for g in train:
        f, base = feats(g)
        x.append(f)
        y.append(g.config_runtime / base - 1.0)
    w = np.linalg.lstsq(np.concatenate(x), np.concatenate(y), rcond=None)[0]
    return float(np.mean([kendalltau(feats(g)[0] @ w, g.config_runtime).statistic for g in valid]))


@pytest.mark.parametrize("src", ["xla", "nlp"])
def test_ranking_needs_the_graph(graphs, src: str) -> None:
    """On held-out graphs, a config-only ranker loses to one that sees graph and config, although
    the same config-only ranker does well when runtimes depend on the configs alone."""
    train, valid = graphs[(f"layout:{src}:random", "train")], graphs[(f"layout:{src}:random", "valid")]
    config_only = _config_only_tau(train, valid, [g.config_runtime for g in train], [g.config_runtime for g in valid])
    graph_aware = _graph_aware_tau(train, valid)

    # control: runtimes made additive in the config groups, one fixed random cost per group
    rng = np.random.default_rng(0)
    groups: dict = {}
    weight = rng.exponential(size=100_000)

    def config_only_runtime(g) -> np.ndarray:
        cost = weight[_group_tokens(g, groups, True)].sum(1)
        return cost * np.exp(0.01 * rng.standard_normal(cost.size))

    control = _config_only_tau(train, valid, [config_only_runtime(g) for g in train],
                               [config_only_runtime(g) for g in valid])
    assert control > 0.7, control
    assert graph_aware > 0.8, graph_aware
    assert graph_aware - config_only > 0.3, (config_only, graph_aware)


def test_deterministic_and_independent_of_chunk_and_subset(tmp_path: Path) -> None:
    _generate(tmp_path / "a", TINY)
    _generate(tmp_path / "b", TINY)
    _generate(tmp_path / "c", [*TINY, "seed=1"])
    _generate(tmp_path / "d", [*TINY, "chunk=7", "collections=[layout:nlp:random,tile:xla]", "splits=[train]"])
    _generate(tmp_path / "e", [*TINY, "truth=false"])
    a, b, c, d, e = (_files(tmp_path / k) for k in "abcde")
    assert a == b
    assert e == a and not (tmp_path / "e" / TRUTH).exists()  # writing the noiseless cost draws nothing
    truth = {str(p.relative_to(tmp_path / "a")): p.read_bytes() for p in (tmp_path / "a" / TRUTH).rglob("*.npy")}
    chunked = {str(p.relative_to(tmp_path / "d")): p.read_bytes() for p in (tmp_path / "d" / TRUTH).rglob("*.npy")}
    assert len(truth) == 5 * 3 and chunked and all(truth[k] == v for k, v in chunked.items())
    assert len(a) == len(c) == 5 * 4 and not set(a.items()) & set(c.items())
    assert d and all(a[k] == v for k, v in d.items())


def test_refuses_a_folder_it_did_not_write_and_removes_stale_files(tmp_path: Path) -> None:
    foreign = tmp_path / "real"
    (foreign / "tile/xla/train").mkdir(parents=True)
    (foreign / "tile/xla/train/x.npz").write_bytes(b"")
    with pytest.raises(DataError, match="refusing"):
        _generate(foreign, TINY)
    out = tmp_path / "gen"
    _generate(out, [*TINY, "collections=[tile:xla]"])
    stale = out / "tile/xla/train/old_0000000000000000.npz"
    stale.write_bytes(b"")
    stale_truth = truth_path(out, "tile:xla", "train", "old_0000000000000000")
    stale_truth.write_bytes(b"")
    _generate(out, [*TINY, "collections=[tile:xla]", "graphs.train=1"])
    assert not stale.exists() and len(list((out / "tile/xla/train").glob("*.npz"))) == 1
    kept = (out / "tile/xla/train").glob("*.npz")
    assert [p.stem for p in (out / TRUTH / "tile/xla/train").glob("*.npy")] == [p.stem for p in kept]


def test_command_line_writes_the_stamp_last(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    out.mkdir()
    (out / ".complete").write_text("stale\n")
    r = subprocess.run([sys.executable, "-m", "pipeline.sample_data", f"out={out}", "graphs.train=1",
                        "graphs.valid=1", "graphs.test=1", "tile_scale=1", "collections=[tile:xla,layout:nlp:default]",
                        "nodes=600", "config_nodes=12", "configs=50", "hydra.run.dir=" + str(tmp_path / "logs")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "wrote 6 files" in r.stderr
    stamp = (out / ".complete").stat().st_mtime_ns
    files = list(out.rglob("*.npz"))
    assert len(files) == 6 and all(p.stat().st_mtime_ns <= stamp for p in files)
    g = read_graph(next((out / "layout/nlp/default/train").glob("*.npz")), config_feat=True)
    assert g.node_config_feat.shape == (50, 12, 18) and abs(g.num_nodes - 600) <= 5


def test_split_configs_fix_one_splits_config_count_and_leave_the_others_drawn(tmp_path: Path) -> None:
    base = ["collections=[layout:xla:random]", "graphs.train=2", "graphs.valid=1", "graphs.test=1"]
    _generate(tmp_path / "a", base)
    _generate(tmp_path / "b", [*base, "split_configs.test=37"])
    for split in ("train", "valid", "test"):
        a = [read_graph(p) for p in sorted((tmp_path / "a/layout/xla/random" / split).glob("*.npz"))]
        b = [read_graph(p) for p in sorted((tmp_path / "b/layout/xla/random" / split).glob("*.npz"))]
        assert len(a) == len(b) > 0
        for ga, gb in zip(a, b):
            if split == "test":
                assert gb.num_configs == 37 and ga.num_configs != 37
            else:
                assert gb.num_configs == ga.num_configs
                np.testing.assert_array_equal(ga.config_runtime, gb.config_runtime)
