"""The transductive check (pipeline.transductive): every model on unseen configs of a labelled graph."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from builders import TINY
from pipeline import transductive
from pipeline.core.cli import compose
from pipeline.core.errors import DataError

QUICK = ["progress=false", "lightgbm.num_iterations=20", "gnn.epochs=2", "gnn.samples_per_graph=2", "+gnn.model.hidden=16",
         "+gnn.model.layers=2", "gnn.infer_permutations=2", "+gbdt.model.num_boost_round=20"]


@pytest.mark.slow  # runs stages end to end
def test_a_real_root_reports_every_model_on_held_out_configs(samples: Path, tmp_path: Path) -> None:
    rep = transductive.run(compose("transductive", [
        f"data={samples}", f"out={tmp_path / 'work'}", f"report={tmp_path / 'rep'}", "seeds=[0,1]", "gnn_seeds=2", *QUICK]))
    # unet3d is the one labelled graph with >= 100 distinct configs: the 20 identical configs of
    # openai_v0_rnn_optimized and the 2-config tile graph are skipped
    assert list(rep["graphs"]) == ["layout:xla:default:unet3d"]
    g = rep["graphs"]["layout:xla:default:unet3d"]
    assert g["configs"] == 1159 and g["distinct"] == 681 and 0.5 < g["ceiling"] <= 1.0
    assert [r["seed"] for r in g["runs"]] == [0, 1]
    for r in g["runs"]:
        assert set(r["scores"]) == {"baseline", "gbdt", "analytical", "gnn", "lightgbm", "ensemble"}
        assert all(-1.0 <= v <= 1.0 for v in r["scores"].values())
        assert r["train"] + r["held_out"] == g["distinct"] and abs(r["train"] - r["held_out"]) <= 1
        assert len(r["gnn_seed_scores"]) == 2
        weights = r["blends"]["ensemble"]["weights"]
        assert set(weights) == {"baseline", "gbdt", "analytical", "gnn"} and abs(sum(weights.values()) - 1) < 1e-6
        assert set(r["fold_scores"]) == set(r["scores"]) - {"ensemble"}
    assert g["mean"]["gnn"] == pytest.approx(np.mean([r["scores"]["gnn"] for r in g["runs"]]), abs=1e-4)
    # dedup first: the halves partition the distinct configs, none on both sides
    proc = tmp_path / "work/layout/unet3d/s0/outer/processed/gnn/layout/xla/default"
    tr, te = np.load(proc / "train/unet3d.npz"), np.load(proc / "test/unet3d.npz")
    seen = {r.tobytes() for r in tr["config_codes"]}
    assert not any(r.tobytes() in seen for r in te["config_codes"])
    saved = json.loads((tmp_path / "rep/transductive.json").read_text())
    assert saved["graphs"]["layout:xla:default:unet3d"]["mean"] == g["mean"]
    md = (tmp_path / "rep/transductive.md").read_text()
    assert "| layout:xla:default:unet3d | 1159 | 681 |" in md and (tmp_path / "rep/transductive.png").stat().st_size > 0


def test_tile_graphs_are_checked_with_the_tile_metric(tmp_path: Path) -> None:
    from pipeline.sample_data import generate

    generate(compose("sample_data", [f"out={tmp_path / 'raw'}", *TINY, "collections=[tile:xla]", "splits=[train]"]))
    rep = transductive.run(compose("transductive", [
        f"data={tmp_path / 'raw'}", f"out={tmp_path / 'work'}", f"report={tmp_path / 'rep'}", "seeds=[0]", "gnn_seeds=1",
        "min_configs=10", "max_graphs=1", *QUICK]))
    (gid, g), = rep["graphs"].items()
    assert gid.startswith("tile:xla:") and g["kind"] == "tile"
    scores = g["runs"][0]["scores"]
    assert "analytical" not in scores and {"baseline", "gbdt", "gnn", "lightgbm", "ensemble"} <= set(scores)
    assert all(0.0 <= v <= 1.0 for v in scores.values())  # top-5 score: 2 - best of top 5 / best, in [0, 1] here


def test_a_file_without_enough_distinct_configs_or_of_the_wrong_kind_is_refused(samples: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no labelled graph with at least min_configs=100"):
        transductive.run(compose("transductive", [f"file={samples / 'layout/xla/random/train/openai_v0_rnn_optimized.npz'}",
                                                  f"out={tmp_path / 'o'}", f"report={tmp_path / 'r'}"]))
    with pytest.raises(DataError, match="is a tile file; collection layout:xla:random holds layout files"):
        transductive.run(compose("transductive", [f"file={next(samples.glob('tile/xla/train/*.npz'))}",
                                                  f"out={tmp_path / 't'}", f"report={tmp_path / 'r'}", "collection=layout:xla:random"]))
    with pytest.raises(DataError, match="give data=<npz root>"):
        transductive.run(compose("transductive", [f"out={tmp_path / 'n'}", f"report={tmp_path / 'r'}"]))


def test_members_picks_the_models_trained(samples: Path, tmp_path: Path) -> None:
    src = samples / "layout/xla/default/train/unet3d.npz"
    rep = transductive.run(compose("transductive", [
        f"file={src}", f"out={tmp_path / 'w'}", f"report={tmp_path / 'r'}", "seeds=[3]", "members=[analytical,lightgbm]",
        "blend_folds=0", *QUICK]))
    (run,) = rep["graphs"]["layout:xla:default:unet3d"]["runs"]
    assert set(run["scores"]) == {"analytical", "lightgbm"} and "blends" not in run
    with pytest.raises(DataError, match=r"members: unknown model\(s\) \['xgb'\]"):
        transductive.run(compose("transductive", [f"file={src}", f"out={tmp_path / 'x'}", f"report={tmp_path / 'r'}",
                                                  "seeds=[0]", "members=[xgb]"]))


def test_the_ceiling_is_the_audits_distinct_one_or_its_reason(samples: Path) -> None:
    """The check scores distinct configs against their fastest copy; so does its ceiling."""
    from pipeline import audit

    params = audit.per_graph_params(compose("audit", ["seed=0"]))
    u = transductive.read_unique(samples / "layout/xla/default/train/unet3d.npz", "train", 1024, params, 0.5)
    assert u.audit["ceiling"] < u.audit["ceiling_distinct"] <= 1.0 and u.audit["ceiling_why"] is None
    rep = {"source": "x", "seeds": [0], "graphs": {
        "layout:xla:random:a": {"configs": 20, "distinct": 12, "ceiling": None, "ceiling_why": "one unique config",
                                "mean": {"gnn": 0.5}, "std": {"gnn": 0.0}, "runs": []}}}
    md = transductive.markdown(rep)
    assert "| layout:xla:random:a | 20 | 12 | **0.5000 ± 0.0000** | — |" in md
    assert "- layout:xla:random:a: no ceiling: one unique config." in md
