"""Odd but valid graphs are data: the rules that set them aside, and every piece that must not
crash on them (zero varying configurable nodes, constant feature columns, one config). The
end-to-end runs over such graphs are in test_real_roots.py."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from builders import COL_MAJOR, DEFAULT, ROW_MAJOR, cfg, layout_configs, tile_configs, write_chain_graph
from conftest import ROOT
from features.completion import GroupCompleter
from features.configs import unlearnable_reason
from features.pad import Moments, fit_normalizer
from models.gnn import predict_scores
from pipeline import extract, pad, prune, train_gbdt, train_gnn
from pipeline.core.cli import run_guarded
from pipeline.core.errors import describe, where
from pipeline.core.progress import LineFile, tqdm
from pipeline.gnn import steps as gnn_steps
from pipeline.gnn.dataset import load_graph


def test_unlearnable_graphs_are_named_with_their_reason() -> None:
    assert unlearnable_reason(np.array([5.0])) == "one unique config"
    assert unlearnable_reason(np.array([3.0, 3.0, 3.0])) == "all 3 unique configs have the same runtime"
    assert unlearnable_reason(np.array([3.0, 2.0])) is None  # two configs: an order to learn


def test_padding_keeps_every_column_when_all_are_constant() -> None:
    m = Moments(4).add(np.tile([[0.0, 128.0, 5.0, 2.0]], (2, 1)))  # a 2-config split: every column constant
    n = fit_normalizer(m, exclude=np.array([3]))
    assert n.keep.tolist() == [0, 1, 2]  # never zero inputs; the excluded column stays out
    assert np.allclose(n.apply(np.array([[0.0, 128.0, 5.0, 2.0]])), 0.0)
    assert not np.allclose(n.apply(np.array([[1.0, 256.0, 5.0, 2.0]])), 0.0)  # other values still reach a model
    varied = Moments(2).add(np.array([[0.0, 1.0], [0.0, 2.0]]))
    assert fit_normalizer(varied).keep.tolist() == [1]  # some column varies: constant ones are dropped


def test_group_completer_with_no_varying_node() -> None:
    c = GroupCompleter(np.zeros((0, 3, 6), np.int8))
    assert c(np.zeros((4, 0, 3), np.int32)).shape == (4, 0, 3)


@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> Path:
    """A layout collection whose valid graph has no varying configurable node and a tile
    collection whose only train graph has two configs with identical features."""
    root = tmp_path_factory.mktemp("odd")
    raw = root / "raw"
    varied = layout_configs((DEFAULT, DEFAULT), (ROW_MAJOR, DEFAULT), (COL_MAJOR, ROW_MAJOR), (COL_MAJOR, COL_MAJOR))
    write_chain_graph(raw / "layout/xla/default/train/ok.npz", "layout", varied, [9, 7, 5, 3])
    write_chain_graph(raw / "layout/xla/default/valid/fixed.npz", "layout", layout_configs(*[(ROW_MAJOR, DEFAULT)] * 6),
                      [4, 5, 4, 6, 4, 4])
    write_chain_graph(raw / "tile/xla/train/twins.npz", "tile", tile_configs(8, 8), [6788, 5578])
    write_chain_graph(raw / "tile/xla/test/t.npz", "tile", tile_configs(8, 16, 32), [0, 0, 0])
    prune.run(cfg("prune", data=raw, out=root / "pruned", jobs=1))
    pad.run(cfg("pad", data=root / "pruned", out=root / "padded", jobs=1))
    extract.run(cfg("extract", data=root / "padded", out=root / "processed", jobs=1))
    return root


def test_extract_writes_graphs_without_varying_nodes_and_the_gnn_scores_them(extracted: Path) -> None:
    g = load_graph(extracted / "processed/gnn/layout/xla/default/valid/fixed.npz", "layout:xla:default", "valid")
    assert g.codes.shape == (1, 0, 3) and g.num_original == 6
    model = gnn_steps.build_model(gnn_steps.model_config(
        cfg("train_gnn", "model.hidden=8", "model.layers=1"), {"node_feat_dim": int(g.graph.node_feat.shape[1])}, "layout"))
    scores = g.to_original(predict_scores(model, g, k=4, permutations=2, generator=torch.Generator().manual_seed(0)))
    assert scores.shape == (6,) and np.isfinite(scores).all()


def test_a_two_config_tile_split_keeps_model_inputs_and_is_set_aside(extracted: Path, tmp_path: Path) -> None:
    g = load_graph(extracted / "processed/gnn/tile/xla/test/t.npz", "tile:xla", "test")
    assert g.config_feat.shape[0] == 3 and g.config_feat.shape[1] > 0  # padding left the model inputs
    gbdt = train_gbdt.run(cfg("train_gbdt", data=extracted / "processed/tables", models=tmp_path / "gbdt",
                              predictions=tmp_path / "pred", collections="[tile:xla]"))
    assert gbdt == {}  # nothing learnable: not trained, no traceback
    gnn = train_gnn.run(cfg("train_gnn", "experiment=gnn_quick", data=extracted / "processed/gnn", out=tmp_path / "gnn",
                            predictions=tmp_path / "pred", collections="[tile:xla]"))
    assert gnn == {}


def test_any_failure_is_one_line_naming_the_stage_and_the_place(capsys) -> None:
    def boom(_cfg):
        with where("layout:xla:random"), where("layout:xla:random:g1"):
            np.zeros(3).reshape(2, 2)

    with pytest.raises(SystemExit) as e:
        run_guarded(boom, cfg("prune"), "train-gnn")
    assert e.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error: train-gnn: layout:xla:random: layout:xla:random:g1: ValueError: cannot reshape")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "gnn"
    bad.mkdir()
    (bad / "x").write_text("")
    code = ("import sys; from pipeline.core.cli import run_guarded, compose\n"
            "def f(c): raise RuntimeError('deep inside a library')\n"
            "run_guarded(f, compose('prune', sys.argv[1:]), 'prune')\n")
    quiet = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    loud = subprocess.run([sys.executable, "-c", code, "debug=true"], cwd=ROOT, capture_output=True, text=True)
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr
    assert "error: prune: RuntimeError: deep inside a library" in quiet.stderr
    assert loud.returncode != 0 and "Traceback" in loud.stderr and "deep inside a library" in loud.stderr
    assert describe(KeyError("k")) == "KeyError: 'k'"


def test_progress_in_a_log_is_plain_throttled_lines(monkeypatch) -> None:
    out = io.StringIO()  # not a terminal
    monkeypatch.setenv("PROGRESS_INTERVAL", "3600")
    bar = tqdm(range(500), desc="steps", file=out)
    for i in bar:
        bar.set_postfix(loss=i)
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert 1 <= len(lines) <= 3 and lines[-1].startswith("steps: 100%")
    w = io.StringIO()
    LineFile(w).write("\r  \r\x1b[A\rbar 1/2\r")
    assert w.getvalue() == "bar 1/2\n"
