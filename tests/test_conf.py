"""Every stage config composes, every stage module has its entry point, config groups and
`_target_` nodes instantiate, and every defaults-list line says how to override it
(lightning-hydra-template style)."""

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
    tool = (CONF_DIR.parent / "pipeline" / "tools" / f"{name}.py").is_file()  # tools live apart from the stages
    module = importlib.import_module(f"pipeline.{'tools.' if tool else ''}{name}")
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
    assert changed <= {"epochs", "samples_per_graph", "valid_permutations", "infer_permutations", "labelled_permutations",
                       "model", "device", "threads", "amp", "amp_dtype", "logger", "prefetch", "prefetch_workers",
                       "time_budget"}, changed
    instantiate(exp["model"], node_feat_dim=5)  # the experiment's model builds


def _build(name: str, key: str, overrides: list[str] | None = None):
    """The object of a stage config's `key` node, built as the stage builds it."""
    from pipeline.core.cli import instantiate as build

    return build(compose(name, overrides or [])[key], key)


def test_gbdt_model_group_instantiates_with_the_files_knobs() -> None:
    from models.gbdt import GBDTRanker

    model = _build("train_gbdt", "model", ["model.objective=regression", "model.params.num_leaves=31", "+model.params.max_depth=6"])
    assert isinstance(model, GBDTRanker) and model.objective == "regression" and model.num_labels == 32
    assert type(model.params) is dict and model.params["num_leaves"] == 31 and model.params["max_depth"] == 6
    params = model.lgb_params(seed=3, num_threads=1)
    assert params["objective"] == "regression" and params["seed"] == 3 and "label_gain" not in params
    assert "lambdarank_truncation_level" not in params  # a lambdarank knob, dropped for regression
    assert len(_build("train_gbdt", "model").lgb_params(0, 1)["label_gain"]) == 32


def test_blender_instantiates_with_the_files_knobs() -> None:
    from models.ensemble import Blender

    blender = _build("ensemble", "blender", ["blender.methods=[equal,best]", "blender.grid_steps=4"])
    assert blender == Blender(method="auto", methods=("equal", "best"), shrink=0.5, normalize="rank", grid_steps=4, refine=2)


def test_optimizer_and_scheduler_build_around_the_model_with_the_files_knobs() -> None:
    import torch

    from pipeline.gnn import training

    cfg = compose("train_gnn", ["lr=1e-2", "warmup=0.1", "min_lr_ratio=0.2"])
    model = torch.nn.Linear(3, 1)
    opt = training.make_optimizer(model, cfg.optimizer)
    sched = training.make_scheduler(opt, cfg.scheduler, 50)
    assert isinstance(opt, torch.optim.AdamW) and isinstance(sched, torch.optim.lr_scheduler.LambdaLR)
    lrs = []
    for _ in range(50):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-2 / 5) and lrs[4] == pytest.approx(1e-2)  # 5 warmup steps: 10% of 50
    assert lrs[-1] > 1e-2 * 0.2 and opt.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.2)  # the cosine ends at 20%
    # the scheduler's own knobs override the top-level ones it follows
    again = training.make_scheduler(torch.optim.SGD(model.parameters(), lr=1.0), compose("train_gnn", ["scheduler.warmup=0.5"]).scheduler, 10)
    assert again.get_last_lr() == [pytest.approx(1 / 5)]


def _targets(node, path=""):
    if isinstance(node, dict):
        if "_target_" in node:
            yield path, node["_target_"]
        for k, v in node.items():
            yield from _targets(v, f"{path}.{k}" if path else k)


@pytest.mark.parametrize("name", STAGES)
def test_every_target_of_a_stage_config_names_something_callable(name: str) -> None:
    from hydra._internal.utils import _locate

    for path, target in _targets(OmegaConf.to_container(compose(name))):
        assert callable(_locate(target)), (name, path, target)


def test_model_stays_free_for_the_stages_that_name_a_trained_model() -> None:
    """The model groups live under arch/ (filling `model`): a `conf/model/` group would turn
    `model=gbdt` into a group choice and break `make rank MODEL=gbdt`."""
    assert not (CONF_DIR / "model").exists()
    assert compose("rank", ["model=gbdt"]).model == "gbdt"
    assert compose("train_gbdt").model._target_ == "models.gbdt.GBDTRanker"
    assert compose("train_gnn").model._target_ == "models.gnn.GNNRanker"


SEARCHES = sorted(p.stem for p in (CONF_DIR / "hparams_search").glob("*.yaml"))


@pytest.mark.parametrize("name", SEARCHES)
def test_every_swept_knob_exists_in_its_stage_config(name: str) -> None:
    import yaml

    params = yaml.safe_load((CONF_DIR / "hparams_search" / f"{name}.yaml").read_text())["hydra"]["sweeper"]["params"]
    cfg = compose("train_gbdt" if name.startswith("gbdt") else "train_gnn")
    missing = [k for k in params if OmegaConf.select(cfg, k, default="<missing>") == "<missing>"]
    assert params and not missing, missing


def _defaults_lines(path):
    lines, inside = [], False
    for line in path.read_text().splitlines():
        if line.startswith("defaults:"):
            inside = True
        elif inside and line.startswith("  - "):
            lines.append(line)
        else:
            inside = False
    return lines


CONFIG_FILES = sorted(str(p.relative_to(CONF_DIR)) for p in CONF_DIR.rglob("*.yaml"))


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_every_defaults_line_says_how_to_override_it(name: str) -> None:
    bare = [line for line in _defaults_lines(CONF_DIR / name) if "#" not in line or not line.split("#", 1)[1].strip()]
    assert not bare, bare
