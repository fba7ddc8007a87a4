"""`pipeline.rank`: the collection of a file, clear refusals, readable configs, and the order of
the training-free baseline (the trained models' order is checked against `make submission` in
test_end_to_end)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from builders import COL_MAJOR, DEFAULT, ROW_MAJOR, layout_configs, tile_configs, write_chain_graph
from conftest import ROOT
from pipeline.baseline import baseline_scores
from pipeline.core.errors import DataError
from pipeline.io.catalog import GraphFile
from pipeline.rank import collection_of, describe_configs, describe_layout, describe_tile, rank_arrays, rank_file


def layout_file(path: Path) -> Path:
    configs = layout_configs((ROW_MAJOR, DEFAULT), (COL_MAJOR, ROW_MAJOR), (DEFAULT, COL_MAJOR), (COL_MAJOR, COL_MAJOR))
    return write_chain_graph(path, "layout", configs, [40, 10, 30, 20])


def test_collection_from_the_tree_or_given(tmp_path: Path) -> None:
    placed = layout_file(tmp_path / "npz/layout/nlp/random/test/g.npz")
    assert collection_of(placed, None) == "layout:nlp:random"
    assert collection_of(placed, "layout:nlp:random") == "layout:nlp:random"
    with pytest.raises(DataError, match="lies under layout/nlp/random"):
        collection_of(placed, "layout:xla:random")
    loose = layout_file(tmp_path / "mine/g.npz")
    with pytest.raises(DataError, match="give collection="):
        collection_of(loose, None)
    assert collection_of(loose, "layout:xla:default") == "layout:xla:default"
    with pytest.raises(DataError, match="unknown collection"):
        collection_of(loose, "layout:xla")


def test_readable_configs() -> None:
    assert describe_tile(tile_configs(16)[0]) == "output 16x128"
    cfg = np.full((2, 18), -1, np.float32)
    assert describe_layout(cfg, np.array([1, 3]), np.array([63, 26, 2, 34, 75]), 4) == "compiler default everywhere"
    cfg[1, :2], cfg[1, 12:14] = [0, 1], [1, 0]
    assert describe_layout(cfg, np.array([1, 3]), np.array([63, 26, 2, 34, 75]), 4) == "node 3 dot out {0,1} in - ker {1,0}"
    cfg[0, 6:8] = [1, 0]
    text = describe_layout(cfg, np.array([1, 3]), np.array([63, 26, 2, 34, 75]), 1)
    assert text == "node 1 convolution out - in {1,0}; +1 more nodes"


def test_describe_streams_only_the_configs_asked(tmp_path: Path) -> None:
    f = layout_file(tmp_path / "g.npz")
    text = describe_configs(f, np.array([3, 0]), max_nodes=4, chunk_configs=1)
    assert text == {3: "node 1 convolution out {0,1} in -; node 3 dot out {0,1} in -",
                    0: "node 1 convolution out {1,0} in -"}


def _rank_cfg(tmp_path: Path) -> dict:
    return {"paths.data_dir": str(tmp_path / "data"), "hydra.run.dir": str(tmp_path / "h")}


def test_baseline_order_needs_no_training(tmp_path: Path) -> None:
    f = layout_file(tmp_path / "npz/layout/xla/random/test/g.npz")
    r = rank_file(f, model="baseline", **{"paths.data_dir": str(tmp_path / "data")})
    want = baseline_scores(GraphFile("layout:xla:random", "test", f), 1024)
    assert np.array_equal(r.scores, want)
    assert sorted(r.order.tolist()) == [0, 1, 2, 3]
    assert all(want[a] <= want[b] for a, b in zip(r.order[:-1], r.order[1:]))
    assert not (tmp_path / "data").exists()  # nothing written under data/
    # the same graph handed over as arrays, for an autotuner loop
    from pipeline.io.npz import read_graph

    g = read_graph(f, split="test", config_feat=True)
    again = rank_arrays(g.arrays(), "layout:xla:random", "baseline", **{"paths.data_dir": str(tmp_path / "data")})
    assert np.array_equal(again.order, r.order)


def test_refusals_are_one_clear_line(tmp_path: Path) -> None:
    tile = write_chain_graph(tmp_path / "t.npz", "tile", tile_configs(8, 16), [2, 1])
    with pytest.raises(DataError, match="a tile graph, but layout:xla:random is a layout collection"):
        rank_file(tile, "layout:xla:random", "baseline", **_rank_cfg(tmp_path))
    empty = write_chain_graph(tmp_path / "e.npz", "tile", np.zeros((0, 24), np.float32), [])
    with pytest.raises(DataError, match="no configs"):
        rank_file(empty, "tile:xla", "baseline", **_rank_cfg(tmp_path))
    f = layout_file(tmp_path / "g.npz")
    with pytest.raises(DataError, match="no trained gnn for layout:xla:random"):
        rank_file(f, "layout:xla:random", "gnn", **_rank_cfg(tmp_path))
    with pytest.raises(DataError, match="no trained ensemble for layout:xla:random"):
        rank_file(f, "layout:xla:random", "ensemble", **_rank_cfg(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "pipeline.rank", f"file={f}", "model=gbdt",
                           f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={tmp_path / 'h'}"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "give collection=" in lines[0], proc.stderr


def test_command_prints_the_top_and_writes_the_full_order(tmp_path: Path) -> None:
    f = layout_file(tmp_path / "npz/layout/xla/default/test/g.npz")
    out = tmp_path / "order.json"
    proc = subprocess.run([sys.executable, "-m", "pipeline.rank", f"file={f}", "model=baseline", "top=2", f"out={out}",
                           f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={tmp_path / 'h'}"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["collection"] == "layout:xla:default" and sorted(doc["order"]) == [0, 1, 2, 3]
    table = [ln for ln in proc.stdout.splitlines() if ln[:4].strip().isdigit()]
    assert [int(ln.split()[1]) for ln in table] == doc["order"][:2]
    assert float(table[0].split()[2]) == 0.0  # the predicted fastest scores 0


EXAMPLE = ROOT / "docs" / "examples" / "jax_blocks.hlo.txt"


def test_make_rank_hlo_gives_a_full_permutation_named_by_instruction(tmp_path: Path) -> None:
    out = tmp_path / "order.json"
    proc = subprocess.run(["make", "--no-print-directory", "rank", f"HLO={EXAMPLE}", "MODEL=baseline", "CONFIGS=300", "TOP=3",
                           f"OUT={out}", f"DATA_DIR={tmp_path / 'data'}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["collection"] == "layout:xla:random" and doc["num_configs"] == 300
    assert sorted(doc["order"]) == list(range(300))
    assert "conv_general_dilated.1" in doc["configurable_nodes"] and len(doc["configurable_nodes"]) == 14
    table = [ln for ln in proc.stdout.splitlines() if ln[:4].strip().isdigit()]
    assert [int(ln.split()[1]) for ln in table] == doc["order"][:3]
    assert "%conv_general_dilated.1 convolution" in table[0]  # tensors named by their HLO instruction
    assert not (tmp_path / "data").exists()


def test_rank_hlo_from_python_matches_the_baseline_of_its_arrays(tmp_path: Path) -> None:
    from pipeline.rank import rank_hlo

    r = rank_hlo(EXAMPLE.read_text(), model="baseline", configs=50, search="default", seed=3,
                 **{"paths.data_dir": str(tmp_path / "data")})
    assert r.collection == "layout:xla:default" and r.order.size == 50 == r.arrays["node_config_feat"].shape[0]
    direct = rank_arrays(r.arrays, "layout:xla:default", "baseline", **{"paths.data_dir": str(tmp_path / "data")})
    assert np.array_equal(direct.scores, r.scores)
    with pytest.raises(DataError, match="pick a layout collection"):
        rank_hlo(EXAMPLE.read_text(), "tile:xla", "baseline", configs=5)


@pytest.mark.parametrize("content, says", [(b"", "is empty"), (b"\x00\x01binary", "binary"),
                                           (b"HloModule m\n\nENTRY %main (p: f32[4]) -> f32[4] {\n  %p = f32[4]{0} parameter(0)\n"
                                            b"  ROOT %n = f32[4]{0} negate(%p)\n}\n", "no layout-configurable instruction")])
def test_bad_hlo_input_is_one_line(tmp_path: Path, content: bytes, says: str) -> None:
    f = tmp_path / "prog.hlo.txt"
    f.write_bytes(content)
    proc = subprocess.run([sys.executable, "-m", "pipeline.rank", f"hlo={f}", "model=baseline",
                           f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={tmp_path / 'h'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and says in lines[0] and str(f) in lines[0], proc.stderr
