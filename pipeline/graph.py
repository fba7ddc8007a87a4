"""The stage graph and the model families: which stages exist, in what order, what each reads and
writes, and which models there are. Everything that runs stages follows this file: the
Makefile (its stage rules are generated from it: `python3 -m pipeline.graph make`), `make rank`
and `pipeline.rank`, `pipeline.transductive`, the rehearsal, the Kaggle bundle and notebook, the
ensemble's members and the report's model order.

The only list of stages and model families: nothing else in pipeline/ or conf/ names them again.
Adding a stage: one `Stage` line in `STAGES`, its module `pipeline/<module>.py` and its
`conf/<conf>.yaml`. Adding a model family: docs/ARCHITECTURE.md's checklist (its trainer stage
and conf, its model and arch conf, one `Stage` and one `Family` line here).

This module uses the standard library only (make runs it before any install), and reads the
artifact paths from `conf/paths/default.yaml`, their one home.

    python3 -m pipeline.graph show               # the stage graph and the families, as a newcomer reads them
    python3 -m pipeline.graph make               # the Makefile's stage rules
    python3 -m pipeline.graph make-paths         # the artifact paths as make variables
    python3 -m pipeline.graph dataset <DATA>     # the dataset name make gives the npz root DATA
"""

from __future__ import annotations

import fnmatch
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

ROOT = Path(__file__).resolve().parents[1]
PATHS_CONF = ROOT / "conf" / "paths" / "default.yaml"
SAMPLE_ROOT = "data/raw/sample"  # where the embedded sample is generated (make sample-data)
RAW = "raw"  # the pseudo-stage the raw npz root stands for in `Stage.after`


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline."""

    target: str  # the make target (and the name other stages list in `after`)
    module: str  # python -m pipeline.<module>; its config is conf/<module>.yaml
    after: tuple[str, ...]  # the stages whose outputs it reads (RAW: the npz root)
    stamp: str  # its completion stamp, `{<paths key>}/...` (conf/paths/default.yaml)
    help: str
    trains: bool = False  # takes the fold settings (FOLDS, FINAL, FOLD_SPLITS)
    features: bool = False  # prepares features: run on a new file before any model that reads them
    confs: tuple[str, ...] = ()  # further config files it depends on (globs under conf/)
    make_args: str = ""  # make-variable arguments besides <VAR>_ARGS, e.g. the GNN's EXPERIMENT

    @property
    def folder(self) -> str:
        """The name of its output folder, from its stamp: pruned, padded, processed, ..."""
        return Path(self.stamp).parent.name.strip("{}")

    @property
    def var(self) -> str:
        """The make variable prefix: STAMP_<var>, <var>_ARGS."""
        return self.target.removeprefix("train-").replace("-", "_").upper()


@dataclass(frozen=True)
class Family:
    """One kind of model: how it is trained, where its artifacts lie, how it predicts. Its stage
    reads `data=` (the view `reads` of the extract output, or the raw root) and writes `models=`
    and `predictions=<predictions>/<name>/`, the config keys every trainer shares
    (pipeline/train/trainer.py)."""

    name: str  # its folder under models/ and predictions/ (a second run may take another `name=`)
    stage: str  # the target of the stage that trains it
    trained: tuple[str, ...]  # file patterns under models/<name>/<collection dir>/ that mean it is trained; () = needs no training
    reads: str | None = "gnn"  # which view of the extract output its `data=` is: gnn or tables (None: the raw root)
    kinds: tuple[str, ...] = ("tile", "layout")  # the collection kinds it serves
    predict_values: tuple[tuple[str, object], ...] = ()  # more config values in predict mode ("{device}": where rank runs it)

    @property
    def module(self) -> str:
        return stage_named(self.stage).module

    @property
    def needs_features(self) -> bool:
        return self.reads is not None

    def is_trained(self, files: list[str]) -> bool:
        """Whether `files` (names in a collection's model folder) hold a trained model of it."""
        return any(fnmatch.fnmatch(f, p) for f in files for p in self.trained)


# The model families, in the ensemble's order (ties and the fallback follow it): the ensemble's
# members, the report's model order, rank's and the Kaggle bundle's models all follow this list.
FAMILIES: tuple[Family, ...] = (
    Family("gnn", "train-gnn", ("best.pt",), predict_values=(("progress", False), ("device", "{device}"))),
    Family("gbdt", "train-gbdt", ("model*.txt",), reads="tables"),
    Family("analytical", "train-analytical", ("model.json",), kinds=("layout",)),
    Family("baseline", "baseline", (), reads=None),
)
ENSEMBLE = "ensemble"


STAGES: tuple[Stage, ...] = (
    Stage("prune", "prune", (RAW,), "{interim}/pruned/.complete", features=True,
          help="keep configurable nodes and their k-hop neighbourhood -> data/interim/<dataset>/pruned"),
    Stage("pad", "pad", ("prune",), "{interim}/padded/.complete", features=True,
          help="unambiguous -1 layout padding, train-fitted normalization -> data/interim/<dataset>/padded"),
    Stage("extract", "extract", ("pad",), "{processed}/.complete", features=True,
          help="dedup and pack configs; GNN tensors and GBDT tables -> data/processed/<dataset>"),
    Stage("baseline", "baseline", (RAW,), "{predictions}/baseline/.complete", trains=True,
          help="score valid and test configs with the training-free baseline ranker -> predictions baseline/{valid,test}"),
    Stage("train-gbdt", "train_gbdt", ("extract",), "{models}/gbdt/.complete", trains=True, confs=("arch/gbdt.yaml",),
          help="LightGBM lambdarank per collection -> data/models/<dataset>/gbdt, predictions gbdt/{valid,test}"),
    Stage("train-analytical", "train_analytical", ("extract",), "{models}/analytical/.complete", trains=True,
          confs=("arch/analytical.yaml",),
          help="analytical layout cost terms, non-negative weights per collection -> data/models/<dataset>/analytical, "
               "predictions analytical/{valid,test}"),
    Stage("train-gnn", "train_gnn", ("extract",), "{models}/gnn/.complete", trains=True,
          confs=("arch/gnn.yaml", "experiment/*.yaml"), make_args="$(if $(EXPERIMENT),experiment=$(EXPERIMENT))",
          help="the cross-config-attention GNN per collection -> data/models/<dataset>/gnn, predictions gnn/{valid,test}"),
    Stage(ENSEMBLE, "ensemble", (RAW, *dict.fromkeys(f.stage for f in FAMILIES)), "{models}/ensemble/.complete",
          trains=True, help="blend the members per collection with weights fitted on valid -> predictions ensemble/{valid,test}"),
)

@dataclass(frozen=True)
class Command:
    """A make target that runs one module with no file of its own to keep up to date."""

    target: str
    module: str  # python -m <module>
    args: str  # its make-level arguments
    help: str


# The commands beside the stages (pipeline/tools/ and the stage modules run on demand).
COMMANDS: tuple[Command, ...] = (
    Command("sample-data", "pipeline.sample_data", "$(COMMON) $(SAMPLE_ARGS) $(ARGS)",
            "generate the embedded sample dataset under data/raw/sample"),
    Command("inspect", "pipeline.inspect", "$(COMMON) $(ARGS)", "check every file under DATA against the format and summarize it"),
    Command("validate", "pipeline.validate", "$(COMMON) split=$(SPLIT) submission=$(SUBMISSION) $(ARGS)",
            "check SUBMISSION against the files of SPLIT under DATA"),
    Command("transductive", "pipeline.transductive", "$(COMMON) $(if $(FILE),file='$(FILE)',data='$(DATA)') $(ARGS)",
            "every model on unseen configs of every labelled graph of DATA (or FILE=<npz>): held-out tau per graph and seed "
            "-> reports/<dataset>/transductive.{md,json,png}"),
    Command("download", "pipeline.download", "$(COMMON) $(ARGS)", "fetch the real competition data into data/raw/kaggle with the Kaggle CLI"),
    Command("kaggle-push", "pipeline.kaggle", "$(COMMON) mode=push out=$(KAGGLE_OUT) $(ARGS)",
            "rebuild the Kaggle bundles and upload them (ARGS=\"owner=<kaggle user>\"; says what to set without CLI or credentials)"),
    Command("bench-gnn", "pipeline.tools.bench_gnn", "$(ARGS)",
            "only the GNN training and inference throughput (configs/s) on a generated full-size layout graph (JSON lines)"),
    Command("rehearsal", "pipeline.tools.rehearsal", "$(FOLD_ARGS) $(ARGS)",
            "every stage on a generated dataset at real per-graph sizes (cached): wall time and peak RSS per stage and collection, "
            "projected to the real dataset (reports/rehearsal/rehearsal.md)"),
    Command("gpu-check", "pipeline.tools.gpu_check", "$(if $(ARGS),--bench-args $(ARGS))",
            "on a CUDA machine: the GPU tests and bench-gnn on cuda, one summary; elsewhere says there is no GPU (exit 0)"),
)

def stage_named(target: str) -> Stage:
    """The stage of a make target."""
    for s in STAGES:
        if s.target == target:
            return s
    raise KeyError(f"no stage {target!r} (stages: {', '.join(s.target for s in STAGES)})")


def family(name: str) -> Family:
    """The family named `name`."""
    for f in FAMILIES:
        if f.name == name:
            return f
    raise KeyError(f"no model family {name!r} (families: {', '.join(f.name for f in FAMILIES)})")


def feature_stages() -> list[Stage]:
    """The stages that prepare a new file's features, in order (prune, pad, extract)."""
    return [s for s in STAGES if s.features]


def family_of_stage(target: str) -> Family | None:
    return next((f for f in FAMILIES if f.stage == target), None)


def model_order() -> list[str]:
    """Every model name in pipeline order (the families as their stages run, then the ensemble)."""
    return [f.name for s in order() if (f := family_of_stage(s.target))] + [ENSEMBLE]


def order() -> list[Stage]:
    """The stages in their declared order, each moved after every stage it reads (`after`)."""
    done: list[Stage] = []
    names: set[str] = {RAW}
    todo = list(STAGES)
    while todo:
        ready = next((s for s in todo if set(s.after) <= names), None)
        if ready is None:
            raise ValueError(f"the stage graph has a cycle or an unknown input among {[s.target for s in todo]}")
        done.append(ready)
        names.add(ready.target)
        todo.remove(ready)
    return done


@dataclass(frozen=True)
class StageConfig:
    """A stage's own config (`conf/<module>.yaml`) with typed values set on it: the one way rank,
    transductive and the tests describe an in-process stage run, no `key=value` strings. Values
    go by dotted key (`paths.dataset`, `model.hidden`); a key the stage's config lacks is refused
    as hydra refuses it. Paths may be `Path`s; lists and dicts are plain Python."""

    module: str
    values: tuple[tuple[str, object], ...] = ()

    @classmethod
    def of(cls, module: str, *parts: Mapping[str, object], **values: object) -> StageConfig:
        """`module`'s config with the mappings `parts` then `values` set, later ones winning."""
        merged: dict[str, object] = {}
        for part in (*parts, values):
            merged.update(part)
        return cls(module, tuple(merged.items()))

    def compose(self) -> object:
        """The composed config (an omegaconf DictConfig) with every value set."""
        from omegaconf import OmegaConf

        from pipeline.core.cli import compose

        cfg = compose(self.module)
        for key, value in self.values:
            value = str(value) if isinstance(value, Path) else value
            OmegaConf.update(cfg, key, value, merge=isinstance(value, dict))
        return cfg


def flat(values: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    """{"epochs": 40, "model": {"hidden": 32}} -> {"epochs": 40, "model.hidden": 32}."""
    out: dict[str, object] = {}
    for k, v in values.items():
        if isinstance(v, Mapping):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def run_stage(stage: StageConfig) -> object:
    """Run the stage `pipeline.<stage.module>` in this process, as make runs it: its own config
    with `stage`'s values set (paths of a temporary root, `mode=predict`, ...); a trainer goes
    through `Trainer.fit` (its fold/seed runs where its models were trained in them). The one
    in-process way rank, transductive and the tests run a stage. Returns the stage's result."""
    import importlib

    from pipeline.train.trainer import registered

    stage_module = importlib.import_module(f"pipeline.{stage.module}")
    cfg = stage.compose()
    trainer = registered(stage.module)
    return stage_module.run(cfg) if trainer is None else trainer.fit(cfg)


def run_feature_stages(data: Path, work: Path, values: Mapping[str, object] | None = None,
                       extra: dict[str, Mapping[str, object]] | None = None) -> Path:
    """The feature stages (prune, pad, extract) in this process on the npz root `data`, each
    writing `work/<its folder>` (pruned, padded, processed) and reading the one before, with
    `values` and `extra[<target>]` set; returns the extract output (its `gnn/` and `tables/`)."""
    for step in feature_stages():
        out = Path(work) / step.folder
        run_stage(StageConfig.of(step.module, values or {}, {"data": data, "out": out}, (extra or {}).get(step.target, {})))
        data = out
    return Path(data)


# ------------------------------------------------------------------------------------ paths

def path_templates() -> dict[str, str]:
    """conf/paths/default.yaml as {key: value}, `${paths.<key>}` written `{<key>}`."""
    out = {}
    for line in PATHS_CONF.read_text().splitlines():
        m = re.match(r"^([a-z_]+):\s*(\S+)", line)
        if m:
            out[m.group(1)] = re.sub(r"\$\{paths\.([a-z_]+)\}", r"{\1}", m.group(2))
    return out


# the paths make sets from its variables; every other path follows from them
MAKE_PATHS = {"dataset": "$(DATASET)", "data_dir": "$(DATA_DIR)", "raw": "$(DATA)", "reports": "$(REPORTS)/$(DATASET)",
              "submissions": "$(SUBMISSIONS)"}


def make_path(template: str) -> str:
    """A `{key}/...` path in make variables."""
    paths = path_templates()

    def expand(t: str) -> str:
        return re.sub(r"\{([a-z_]+)\}", lambda m: MAKE_PATHS.get(m.group(1)) or expand(paths[m.group(1)]), t)

    return expand(template)


def make_paths() -> str:
    """The artifact paths of conf/paths/default.yaml as make variables, for the Makefile to
    include before anything uses them: PATH_<key> (with make's DATA, REPORTS, SUBMISSIONS) and
    `$(call RAW_OF,<name>)`, the npz root `DATASET=<name>` alone reads."""
    lines = ["# Generated from conf/paths/default.yaml by `python3 -m pipeline.graph make-paths`: edit that file, not this one."]
    lines += [f"PATH_{k} = {make_path('{' + k + '}')}" for k in path_templates() if k not in MAKE_PATHS or k == "reports"]
    own = re.sub(r"\{([a-z_]+)\}", lambda m: {"dataset": "$(1)", "data_dir": "$(DATA_DIR)"}[m.group(1)], path_templates()["raw"])
    lines.append(f"RAW_OF = {own}")
    return "\n".join(lines) + "\n"


def dataset_name(data: str, sample_root: str = SAMPLE_ROOT) -> str:
    """The dataset name of the npz root `data`, which keys every artifact path: `sample` for the
    embedded sample's root; else the folder's name, lower-cased, characters other than a-z 0-9 .
    _ - made `-` (an `npz` or `npz_all` folder is named after its parent), and a folder called
    `sample` becomes `sample-ext`, so no other root writes over the sample's artifacts."""
    r = Path(os.path.realpath(data))
    if r == Path(os.path.realpath(sample_root)):
        return "sample"
    while r.name in ("npz", "npz_all") and r != r.parent:
        r = r.parent
    n = re.sub(r"[^a-z0-9._-]", "-", r.name.lower())
    if n in ("", ".", "..", "-"):
        return "data"
    return "sample-ext" if n == "sample" else n


# ------------------------------------------------------------------------------------- make

def make_rules() -> str:
    """The Makefile's stage rules: per stage its stamp variable, its arguments file (a stage
    reruns when its arguments change), its target and its rule."""
    lines = ["# Generated from pipeline/graph.py by `python3 -m pipeline.graph make`: edit that file, not this one.", ""]
    for s in order():
        lines.append(f"STAMP_{s.var} := {make_path(s.stamp)}")
    lines.append("")
    for s in order():
        deps = " ".join("$(RAW)" if a == RAW else f"$(STAMP_{stage_named(a).var})" for a in s.after)
        confs = " ".join([f"conf/{s.module}.yaml"] + [f"$(wildcard conf/{c})" if "*" in c else f"conf/{c}" for c in s.confs])
        args = " ".join(filter(None, ["$(COMMON)", "$(FOLD_ARGS)" if s.trains else "", s.make_args, f"$({s.var}_ARGS)",
                                      f"$(call goal_args,{s.target})"]))
        lines += [f"{s.var}_ARGS ?=",
                  f"$(eval $(call args_file,$(STATE)/{s.module}.args,{args}))",
                  f".PHONY: {s.target}",
                  f"{s.target}: $(STAMP_{s.var}) ## {s.help}",
                  f"$(STAMP_{s.var}): $(INSTALLED) {deps} {confs} $(STATE)/{s.module}.args",
                  f"\t$(PY) -m pipeline.{s.module} {args}", ""]
    for c in COMMANDS:
        lines += [f".PHONY: {c.target}", f"{c.target}: $(INSTALLED) ## {c.help}", f"\t$(PY) -m {c.module} {c.args}", ""]
    lines.append(f"MODEL_STAGES := {' '.join(s.target for s in order() if family_of_stage(s.target))}")
    lines += [f"STAMP_{f.name} := $(STAMP_{stage_named(f.stage).var})" for f in FAMILIES]
    lines.append(f"STAMP_{ENSEMBLE} := $(STAMP_{stage_named(ENSEMBLE).var})")
    return "\n".join(lines) + "\n"


def show() -> str:
    """The stage graph and the families, one line each."""
    lines = ["stages (make target: module; reads -> writes):"]
    for s in order():
        lines.append(f"  {s.target:<17} pipeline.{s.module:<17} {', '.join(s.after) or '-'} -> {s.stamp.rsplit('/', 1)[0]}")
    lines.append("model families (name: trained by; trained when its collection folder holds; reads):")
    for f in FAMILIES:
        reads = f"extract's {f.reads}" if f.needs_features else "the raw files"
        lines.append(f"  {f.name:<11} {f.stage:<17} {', '.join(f.trained) or '(no training)':<14} {reads}; "
                     f"{'/'.join(f.kinds)}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv[:1] == ["make"]:
        sys.stdout.write(make_rules())
    elif argv[:1] == ["make-paths"]:
        sys.stdout.write(make_paths())
    elif argv[:1] == ["show"]:
        print(show())
    elif argv[:1] == ["dataset"] and len(argv) in (2, 3):
        print(dataset_name(*argv[1:]))
    else:
        print(__doc__.strip().splitlines()[-3:][0].strip(), file=sys.stderr)
        print("usage: python3 -m pipeline.graph show | make | make-paths | dataset <DATA> [<sample root>]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
