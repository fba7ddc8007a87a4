"""Every stage config composes, every stage module has its entry point, and config groups
instantiate (lightning-hydra-template style)."""

from __future__ import annotations

import importlib

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from pipeline.core.cli import CONF_DIR, compose

STAGES = sorted(p.stem for p in CONF_DIR.glob("*.yaml") if p.stem != "common")


def test_every_stage_has_a_config_and_a_module() -> None:
    assert {"sample_data", "prune", "pad", "extract", "train_gnn", "train_gbdt", "ensemble", "submission",
            "evaluate", "validate", "report", "kaggle"} <= set(STAGES)


@pytest.mark.parametrize("name", STAGES)
def test_stage_config_composes_and_resolves(name: str) -> None:
    cfg = compose(name, ["paths.dataset=unit"])
    assert cfg.paths.raw == "data/raw/unit"
    resolved = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert resolved["paths"]["predictions"] == "data/predictions/unit"
    module = importlib.import_module(f"pipeline.{name}")
    assert callable(module.main)


@pytest.mark.parametrize("overrides", [["model.cross=softmax"], ["model.cross=mha"], ["model.kind=tile", "model.config_feat_dim=12"]])
def test_model_group_instantiates(overrides: list[str]) -> None:
    cfg = compose("train_gnn", overrides)
    model = instantiate(cfg.model, node_feat_dim=7)
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("logger", ["none", "wandb"])
def test_logger_group_composes(logger: str) -> None:
    cfg = compose("train_gnn", [f"logger={logger}"])
    assert "_target_" in cfg.logger


EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_is_a_diff_that_changes_the_gnn_config(name: str) -> None:
    base = OmegaConf.to_container(compose("train_gnn"), resolve=True)
    exp = OmegaConf.to_container(compose("train_gnn", [f"experiment={name}"]), resolve=True)
    assert exp != base
    changed = {k for k in base if base[k] != exp[k]}
    assert changed <= {"epochs", "samples_per_graph", "valid_permutations", "infer_permutations", "model",
                       "device", "threads", "amp", "amp_dtype", "logger"}, changed
    instantiate(exp["model"], node_feat_dim=5)  # the experiment's model builds
