"""The stage graph and the model families (pipeline/graph.py): consistent with the code and the
configs, in an order make can follow, and the dataset-name rule."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import graph

ROOT = Path(__file__).resolve().parents[1]


def test_every_stage_has_its_module_and_config_and_reads_known_stages() -> None:
    targets = {s.target for s in graph.STAGES}
    for s in graph.STAGES:
        module = importlib.import_module(f"pipeline.{s.module}")
        assert callable(module.main) and callable(module.run), s  # run(cfg): how run_stage calls it
        assert (ROOT / "conf" / f"{s.module}.yaml").is_file(), s
        assert set(s.after) <= targets | {graph.RAW}, s
        assert s.stamp.split("}")[0].lstrip("{") in graph.path_templates(), s


def test_the_order_puts_every_stage_after_what_it_reads() -> None:
    seen = {graph.RAW}
    for s in graph.order():
        assert set(s.after) <= seen, s.target
        seen.add(s.target)
    assert [s.target for s in graph.feature_stages()] == ["prune", "pad", "extract"]
    assert [s.folder for s in graph.feature_stages()] == ["pruned", "padded", "processed"]


def test_a_cycle_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(graph, "STAGES", (graph.Stage("a", "a", ("b",), "{models}/a", help=""),
                                          graph.Stage("b", "b", ("a",), "{models}/b", help="")))
    with pytest.raises(ValueError, match="cycle"):
        graph.order()


def test_every_family_is_trained_by_a_stage_and_says_what_trained_means() -> None:
    for f in graph.FAMILIES:
        s = graph.stage_named(f.stage)
        assert graph.family_of_stage(s.target) == f
        assert f.is_trained([]) is False
    assert graph.family("gnn").is_trained(["last.pt", "best.pt"])
    assert graph.family("gbdt").is_trained(["model_seed0.txt"]) and not graph.family("gbdt").is_trained(["meta.json"])
    assert not graph.family("baseline").needs_features and graph.family("analytical").kinds == ("layout",)
    with pytest.raises(KeyError, match="families: gnn"):
        graph.family("nope")


def test_the_ensemble_members_default_to_the_families_in_order() -> None:
    from pipeline import ensemble
    from pipeline.core.cli import compose

    cfg = compose("ensemble", ["paths.predictions=/nonexistent"])
    assert cfg.members is None  # filled from the families
    with pytest.raises(Exception, match="no member of gnn, gbdt, analytical, baseline has predictions"):
        ensemble.run(cfg)


def test_make_rules_and_paths_follow_the_paths_config() -> None:
    assert graph.make_path("{interim}/pruned/.complete") == "$(DATA_DIR)/interim/$(DATASET)/pruned/.complete"
    rules = graph.make_rules()
    for s in graph.STAGES:
        assert f"\n{s.target}: $(STAMP_{s.var})" in rules
        assert f"-m pipeline.{s.module} $(COMMON)" in rules
    assert "$(STAMP_GNN): $(INSTALLED) $(STAMP_EXTRACT)" in rules


@pytest.mark.parametrize("data, name", [("data/raw/sample", "sample"), ("/x/Kaggle Data/npz_all/npz", "kaggle-data"),
                                        ("/x/sample", "sample-ext"), ("/x/blind-synth", "blind-synth"), ("/", "data")])
def test_the_dataset_name_of_a_root(data: str, name: str) -> None:
    assert graph.dataset_name(data, "data/raw/sample") == name


def test_the_command_line_needs_only_the_standard_library() -> None:
    code = ("import sys; sys.modules['numpy'] = None; sys.modules['omegaconf'] = None; import runpy; "
            "sys.argv = ['graph', 'show']; runpy.run_module('pipeline.graph', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "train-gnn" in proc.stdout and "model.json" in proc.stdout


def test_make_paths_come_from_the_paths_config() -> None:
    text = graph.make_paths()
    assert "PATH_interim = $(DATA_DIR)/interim/$(DATASET)" in text
    assert "PATH_reports = $(REPORTS)/$(DATASET)" in text and "RAW_OF = $(DATA_DIR)/raw/$(1)" in text
    assert "PATH_raw" not in text  # make's DATA stands for it


def test_every_stage_reads_its_input_from_a_stage_it_runs_after() -> None:
    """Each stage's `data=` (its input) lies in the output of a stage of its `after` (or is the
    raw root, where `after` names it); the ensemble runs after every family's stage."""
    from pipeline.core.cli import compose

    for s in graph.STAGES:
        cfg = compose(s.module)
        paths = {k: cfg.paths[k] for k in cfg.paths}
        outs = {str(Path(cfg.paths.raw))} if graph.RAW in s.after else set()
        outs |= {str(Path(graph.stage_named(a).stamp.format(**paths)).parent) for a in s.after if a != graph.RAW}
        data = str(Path(cfg.data))
        assert any(data == o or data.startswith(o + "/") for o in outs), (s.target, data, outs)
    assert set(graph.stage_named(graph.ENSEMBLE).after) == {graph.RAW} | {f.stage for f in graph.FAMILIES}
