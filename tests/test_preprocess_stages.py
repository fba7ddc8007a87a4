"""prune -> pad -> extract over the real sample files: invariants, rerun skipping, atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from builders import cfg as stage_cfg
from features.completion import complete_layout
from features.configs import pack_layout, unpack_layout
from features.pad import tensor_rank
from features.tabular import layout_context, layout_features
from pipeline import extract, pad, prune
from pipeline.core.errors import DataError
from pipeline.core.runner import Task, run_tasks
from pipeline.io.catalog import discover, rel_path
from pipeline.io.npz import Stream, read_graph, write_npz


@pytest.fixture(scope="module")
def stages(samples: Path, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pre")
    d = {"raw": samples, "pruned": root / "pruned", "padded": root / "padded", "processed": root / "processed"}
    prune.run(stage_cfg("prune", data=samples, out=d["pruned"], jobs=1))
    pad.run(stage_cfg("pad", data=d["pruned"], out=d["padded"], jobs=1, fit_fallback="true"))  # no train split in some collections
    extract.run(stage_cfg("extract", data=d["padded"], out=d["processed"], jobs=1, chunk_configs=64))
    return d


def _pairs(d: dict[str, Path]):
    for f in discover(d["raw"]):
        rel = rel_path(f.collection, f.split, f.stem)
        yield f, rel


def test_prune_keeps_config_nodes_runtimes_and_configs(stages):
    for f, rel in _pairs(stages):
        raw = read_graph(f.path, config_feat=True)
        p = read_graph(stages["pruned"] / rel, config_feat=True)  # validates the pruned file too
        node_ids = np.load(stages["pruned"] / rel)["node_ids"]
        assert np.array_equal(p.config_runtime, raw.config_runtime)
        assert np.array_equal(p.node_feat, raw.node_feat[node_ids])
        assert np.array_equal(p.node_opcode, raw.node_opcode[node_ids])
        if raw.kind == "layout":
            assert np.array_equal(node_ids[p.node_config_ids], raw.node_config_ids)
            assert np.array_equal(p.node_config_feat, raw.node_config_feat)
            assert p.num_nodes < raw.num_nodes
            # every kept edge is an original edge
            orig = set(map(tuple, raw.edge_index.tolist()))
            assert all(tuple(e) in orig for e in node_ids[p.edge_index].tolist())
        else:
            assert p.num_nodes == raw.num_nodes and np.array_equal(p.config_feat, raw.config_feat)
    assert (stages["pruned"] / ".complete").is_file()


def test_pad_rewrites_layout_beyond_rank_and_fits_on_train(stages):
    stats = json.loads((stages["padded"] / "stats.json").read_text())["collections"]
    assert stats["layout:xla:default"]["fitted_on"] == ["train"]
    assert stats["layout:nlp:random"]["fitted_on"] == ["test"]  # no train split in the samples: fallback
    for f, rel in _pairs(stages):
        z = np.load(stages["padded"] / rel)
        nf, raw_nf = z["node_feat"], np.load(stages["pruned"] / rel)["node_feat"]
        rank = tensor_rank(raw_nf)
        lay = z["node_layout"]
        beyond = np.arange(6)[None] >= rank[:, None]
        assert (lay[beyond] == -1).all() and np.array_equal(lay[~beyond], raw_nf[:, 134:140][~beyond])
        assert np.array_equal(nf[:, 134:140], lay)  # the file's own node_feat carries the -1 padding
        assert np.array_equal(nf[:, :134], raw_nf[:, :134])
        norm = z["node_feat_norm"]
        assert norm.shape[0] == nf.shape[0] and np.isfinite(norm).all()
        assert norm.shape[1] == len(stats[f.collection]["node_feat"]["keep"])


def test_extract_maps_every_original_config(stages):
    for f, rel in _pairs(stages):
        raw = read_graph(f.path, config_feat=True)
        z = np.load(stages["processed"] / "gnn" / rel)
        cmap, rt = z["config_map"], z["runtime"]
        assert cmap.shape == (raw.num_configs,)
        assert np.array_equal(z["config_runtime"], raw.config_runtime)
        assert np.array_equal(np.unique(cmap), np.arange(rt.shape[0]))
        # the unique row of each config carries the minimum runtime of its duplicates
        mins = np.full(rt.shape[0], np.iinfo(np.int64).max)
        np.minimum.at(mins, cmap, raw.config_runtime)
        assert np.array_equal(rt, mins)
        if raw.kind == "layout":
            v = z["varying"]
            back = unpack_layout(z["config_codes"])[cmap]  # (C, NV, 18)
            assert np.array_equal(back, raw.node_config_feat[:, v].astype(np.int8))
            # the set-aside nodes really never vary
            assert (raw.node_config_feat[:, ~v] == raw.node_config_feat[:1, ~v]).all()
        else:
            assert np.array_equal(z["config_feat"][cmap], raw.config_feat)


def test_never_varying_nodes_carry_their_fixed_output_layout(stages):
    changed = 0
    for f, rel in _pairs(stages):
        if f.kind != "layout":
            continue
        raw = read_graph(f.path, config_feat=True)
        z = np.load(stages["processed"] / "gnn" / rel)
        own = np.load(stages["padded"] / rel)["node_layout"]
        fixed = z["node_config_ids"][~z["varying"]]
        want = complete_layout(raw.node_config_feat[0, ~z["varying"], :6], own[fixed])
        assert np.array_equal(z["node_layout"][fixed], want), f.id
        rest = np.setdiff1d(np.arange(own.shape[0]), fixed)
        assert np.array_equal(z["node_layout"][rest], own[rest])
        changed += int((want != own[fixed]).any(1).sum())
    assert changed > 0  # the samples do fix some nodes to a layout other than their own


def test_tables_cover_every_config_once(stages):
    for f, rel in _pairs(stages):
        t = pl.read_parquet(stages["processed"] / "tables" / rel.parent.with_suffix(".parquet"))
        rows = t.filter(pl.col("id") == f.id)
        raw = read_graph(f.path)
        idx = np.sort(rows["configs"].explode().to_numpy())
        assert np.array_equal(idx, np.arange(raw.num_configs)), f.id
        if f.split == "test":
            assert (rows["runtime"] == 0).all()
        else:
            first = np.array([c[0] for c in rows["configs"].to_list()])
            assert (rows["runtime"].to_numpy() <= raw.config_runtime[first]).all()
        assert rows.select(pl.exclude("id", "configs")).null_count().sum_horizontal().item() == 0


@pytest.mark.parametrize("max_bytes", [0, 64 << 20])
def test_table_features_are_those_of_each_unique_config(stages, tmp_path, monkeypatch, max_bytes):
    # the features are computed in the reader's waits, inline (max_bytes=0: every row at once)
    # or after the streaming; whichever, row u holds the features of unique config u
    real = extract._TableFeatures
    monkeypatch.setattr(extract, "_TableFeatures", lambda ctx, batch: real(ctx, 7, max_bytes=max_bytes))
    src = stages["padded"] / "layout/nlp/default/test/3a0c5517a87df8d82fd637b83298a3ba.npz"
    gnn, part = tmp_path / "u.npz", tmp_path / "u.parquet"
    extract.extract_layout(str(src), str(gnn), str(part), "x", "test", "min", 64, 7)
    g = read_graph(src, config_feat=True)
    padded = np.load(src)
    ctx = layout_context(g.node_feat, g.node_opcode, g.node_config_ids, padded["config_pairs"], {}, g.edge_index)
    table = pl.read_parquet(part)
    first = np.load(gnn)["config_first"]
    want = layout_features(ctx, pack_layout(g.node_config_feat[first]))
    assert table.height == first.size > 64  # more unique rows than one chunk
    for name, values in want.items():
        assert np.allclose(table[name].to_numpy(), values), name


def test_dedup_none_keeps_every_config(stages, tmp_path):
    extract.run(stage_cfg("extract", data=stages["padded"], out=tmp_path, jobs=1, dedup="none",
                     collections="[layout:xla:default]", splits="[train]"))
    z = np.load(tmp_path / "gnn/layout/xla/default/train/unet3d.npz")
    assert np.array_equal(z["config_map"], np.arange(1159)) and np.array_equal(z["runtime"], z["config_runtime"])


def test_rerun_skips_and_config_change_redoes(stages, tmp_path):
    cfg = stage_cfg("prune", data=stages["raw"], out=tmp_path, jobs=1, collections="[layout:xla:random]")
    prune.run(cfg)
    out = tmp_path / "layout/xla/random/train/openai_v0_rnn_optimized.npz"
    t0 = out.stat().st_mtime_ns
    prune.run(cfg)
    assert out.stat().st_mtime_ns == t0  # skipped
    assert (tmp_path / ".complete").is_file()
    prune.run(stage_cfg("prune", data=stages["raw"], out=tmp_path, jobs=1, collections="[layout:xla:random]", hops=0))
    assert out.stat().st_mtime_ns > t0  # redone: the config changed


def _double(src: str, dst: str) -> dict:
    Path(dst).write_text(str(2 * int(Path(src).read_text())))
    return {"n": 1}


def test_run_tasks_skips_only_up_to_date_outputs(tmp_path):
    src, dst = tmp_path / "a.txt", tmp_path / "out" / "a.txt"
    src.write_text("21")
    dst.parent.mkdir()
    task = Task("a", [src], [dst], {"src": str(src), "dst": str(dst)})
    assert run_tasks(_double, [task], dst.parent, "h1", jobs=1) == {"a": {"n": 1}}
    assert dst.read_text() == "42"
    dst.write_text("stale")  # a skipped task is not rerun ...
    run_tasks(_double, [task], dst.parent, "h1", jobs=1)
    assert dst.read_text() == "stale"
    os.utime(src, ns=(dst.stat().st_mtime_ns + 10**9,) * 2)  # ... unless its input is newer
    run_tasks(_double, [task], dst.parent, "h1", jobs=1)
    assert dst.read_text() == "42"
    dst.write_text("stale")
    run_tasks(_double, [task], dst.parent, "h2", jobs=1)  # ... or the stage config changed
    assert dst.read_text() == "42"


def test_interrupted_write_leaves_no_file(tmp_path):
    def chunks():
        yield np.zeros((2, 3), np.float32)
        raise KeyboardInterrupt

    dst = tmp_path / "x.npz"
    with pytest.raises(KeyboardInterrupt):
        write_npz(dst, {"a": np.arange(3)}, {"b": Stream((4, 3), np.float32, chunks())})
    assert list(tmp_path.iterdir()) == []


def test_interrupted_extract_leaves_nothing(stages, tmp_path, monkeypatch):
    real = extract.iter_node_config_feat

    def broken(g, chunk, **kwargs):
        it = real(g, chunk, **kwargs)
        yield next(it)
        raise KeyboardInterrupt

    monkeypatch.setattr(extract, "iter_node_config_feat", broken)
    src = stages["padded"] / "layout/xla/default/train/unet3d.npz"
    gnn, part = tmp_path / "g" / "u.npz", tmp_path / "p" / "u.parquet"
    with pytest.raises(KeyboardInterrupt):
        extract.extract_layout(str(src), str(gnn), str(part), "layout:xla:default:unet3d", "train", "min", 64, 64)
    assert not gnn.exists() and not part.exists()
    assert list(gnn.parent.iterdir()) == []  # the spool of unique configs is gone too


def test_extract_refuses_unpadded_input(samples, tmp_path):
    src = samples / "layout/xla/default/train/unet3d.npz"
    with pytest.raises(DataError, match="not a padded file"):
        extract.extract_layout(str(src), str(tmp_path / "g.npz"), None, "x", "train", "min", 64, 64)


@pytest.mark.slow
def test_parallel_run_matches_serial_and_reports_bad_files(stages, tmp_path):
    prune.run(stage_cfg("prune", data=stages["raw"], out=tmp_path / "p", jobs=2))
    for f, rel in _pairs(stages):
        assert (tmp_path / "p" / rel).read_bytes() == (stages["pruned"] / rel).read_bytes()
    bad = tmp_path / "bad" / "layout/xla/random/train"
    bad.mkdir(parents=True)
    (bad / "broken.npz").write_bytes(b"not a zip")
    (bad / "ok.npz").write_bytes((stages["raw"] / "layout/xla/random/train/openai_v0_rnn_optimized.npz").read_bytes())
    with pytest.raises(DataError, match="broken.npz.*not a readable"):
        prune.run(stage_cfg("prune", data=tmp_path / "bad", out=tmp_path / "bo", jobs=2))
    assert not (tmp_path / "bo" / ".complete").exists()


def test_bench_pieces(tmp_path):
    from pipeline.tools import bench

    path = tmp_path / "g.npz"
    bench._synthetic(path, nodes=300, config_nodes=20, configs=50, seed=0)
    g = read_graph(path, split="train", config_feat=True)
    assert g.node_config_feat.shape == (50, 20, 18)
    assert bench.inflate_floor(path) == pytest.approx(50 * 20 * 18 * 4 / 1e6, abs=1e-3)  # + the npy header
    line = bench.measure("noop", "x = bytearray(50 << 20)\n", 7.0)
    assert line["stage"] == "noop" and line["inflated_mb"] == 7.0
    assert line["peak_rss_mb"] >= 50  # the child's own peak, not the parent's


def _square_or_fail(n: int) -> int:
    if n < 0:
        raise DataError(None, f"negative input {n}")
    return n * n


def test_parallel_map_keeps_order_and_names_the_failing_item():
    from pipeline.core.runner import parallel_map

    items = [{"n": n} for n in (3, 1, 2, 5)]
    wheres = [f"g{i}.npz" for i in range(len(items))]
    assert parallel_map(_square_or_fail, items, wheres, jobs=2) == parallel_map(_square_or_fail, items, wheres, jobs=1) == [9, 1, 4, 25]
    for jobs in (1, 2):
        with pytest.raises(DataError) as e:
            parallel_map(_square_or_fail, [{"n": 1}, {"n": -4}], ["ok.npz", "bad.npz"], jobs=jobs)
        assert "bad.npz" in str(e.value) and "negative input -4" in str(e.value)
