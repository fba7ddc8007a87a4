"""Kaggle packaging: a dataset bundle and a notebook that turns trained models into a submission.

    python -m pipeline.kaggle [owner=<kaggle user>] [wheels.download=false]     (make kaggle)
    python -m pipeline.kaggle mode=push [owner=<kaggle user>]                  (make kaggle-push)

Build (`mode=build`) reads the project's code and conf (`code`), the trained artifacts under
`models_dir` of the models in `include` that exist, the pad stage's statistics `stats`, and the
notebook source `template`. It writes under `out`:
- `dataset/`: `code/` (the project, no tests or data), `artifacts/models/<model>/...`,
  `artifacts/stats.json`, `wheels/*.whl` (the `wheels.packages` the Kaggle image lacks; cached
  in `out/.wheels`), `manifest.json` (what is inside and how the notebook runs each model) and
  `dataset-metadata.json`;
- `kernel/`: the notebook (`kernel.code_file`, generated with nbformat from the `# %%` cells of
  the template, its first code cell tagged `parameters` and set from this config) and
  `kernel-metadata.json` (competition and dataset sources, GPU on, internet off);
- `out/.complete` last (make's stamp).
Each bundle is built in a temporary folder and swapped in whole, so a failed build leaves the
previous bundle as it was. Push (`mode=push`) checks for the Kaggle CLI, credentials and an
owner first (without them it says what to set, in one sentence, and exits 1), builds, then
uploads with the CLI: `kaggle datasets version` (`create` the first time), waits for the
dataset to be processed, then `kaggle kernels push`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from omegaconf import DictConfig

from pipeline.core.cli import stage
from pipeline.core.environment import credentials_present, git_commit
from pipeline.core.errors import DataError
from pipeline.core.fsutil import write_text_atomic
from pipeline.core.runner import finish_stage
from pipeline.graph import ENSEMBLE, FAMILIES, family, stage_named

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDER_OWNER = "your-kaggle-username"
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,48}[a-z0-9]$")
CELL = re.compile(r"^# %%(?P<md> \[markdown\])?(?P<tags> tags=\[(?P<taglist>[^\]]*)\])?\s*$")
PARAM = re.compile(r"^(?P<name>[A-Z_][A-Z0-9_]*) = (?P<value>.+?)(?P<comment>\s+#.*)?$")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".*")
MODEL_IGNORE = shutil.ignore_patterns(".*", "predictions")  # fold/seed runs keep their own predictions beside their models


def slugify(title: str) -> str:
    """Kaggle's kernel slug of a title: lowercased, runs of other characters as one dash."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def dataset_metadata(cfg: DictConfig) -> dict:
    d = cfg.dataset
    return {"title": d.title, "id": f"{cfg.owner}/{d.slug}", "licenses": [{"name": d.license}]}


def kernel_metadata(cfg: DictConfig) -> dict:
    k = cfg.kernel
    return {
        "id": f"{cfg.owner}/{k.slug}", "title": k.title, "code_file": k.code_file, "language": "python",
        "kernel_type": "notebook", "is_private": bool(k.is_private), "enable_gpu": bool(k.enable_gpu),
        "enable_internet": bool(k.enable_internet), "dataset_sources": [f"{cfg.owner}/{cfg.dataset.slug}"],
        "competition_sources": [cfg.competition], "kernel_sources": [], "model_sources": [],
    }


def check_names(cfg: DictConfig) -> None:
    """The slug and title rules the Kaggle CLI enforces, checked before anything is uploaded."""
    for what, slug in (("dataset.slug", cfg.dataset.slug), ("kernel.slug", cfg.kernel.slug), ("owner", cfg.owner)):
        if not SLUG.match(str(slug)):
            raise DataError(None, f"{what}='{slug}' is not a Kaggle slug (3-50 lowercase letters, digits and dashes)")
    if not 6 <= len(cfg.dataset.title) <= 50:
        raise DataError(None, f"dataset.title='{cfg.dataset.title}' must have 6 to 50 characters")
    if slugify(cfg.kernel.title) != cfg.kernel.slug:
        raise DataError(None, f"kernel.slug='{cfg.kernel.slug}' does not match kernel.title='{cfg.kernel.title}' "
                              f"(Kaggle derives the slug '{slugify(cfg.kernel.title)}' from the title): set both")
    if not str(cfg.kernel.code_file).endswith(".ipynb"):
        raise DataError(None, f"kernel.code_file='{cfg.kernel.code_file}' must be a .ipynb notebook")


def read_cells(template: str | Path) -> list[nbformat.NotebookNode]:
    """Notebook cells from a `# %%` (percent-format) Python file; `tags=[...]` become cell tags."""
    template = Path(template)
    if not template.is_file():
        raise DataError(template, "notebook template not found")
    cells: list[nbformat.NotebookNode] = []
    kind, tags, lines = None, [], []

    def close() -> None:
        text = "\n".join(lines).strip("\n")
        if kind == "markdown":
            text = "\n".join(re.sub(r"^# ?", "", ln) for ln in text.splitlines())
            cells.append(nbformat.v4.new_markdown_cell(text))
        elif kind == "code":
            cells.append(nbformat.v4.new_code_cell(text, metadata={"tags": tags} if tags else {}))

    for line in template.read_text().splitlines():
        m = CELL.match(line)
        if m:
            close()
            kind = "markdown" if m["md"] else "code"
            tags = [t.strip().strip("'\"") for t in (m["taglist"] or "").split(",") if t.strip()]
            lines = []
        elif kind is not None:
            lines.append(line)
    close()
    if not any("parameters" in c.metadata.get("tags", []) for c in cells):
        raise DataError(template, "no cell tagged parameters (`# %% tags=[\"parameters\"]`)")
    return cells


def parameterize(nb: nbformat.NotebookNode, **values: object) -> nbformat.NotebookNode:
    """Set `NAME = value` lines of the `parameters` cell (comments kept); unknown names are an error."""
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    left = dict(values)
    out = []
    for line in cell.source.splitlines():
        m = PARAM.match(line)
        if m and m["name"] in left:
            line = f"{m['name']} = {left.pop(m['name'])!r}{m['comment'] or ''}"
        out.append(line)
    if left:
        raise KeyError(f"not a notebook parameter: {', '.join(left)}")
    cell.source = "\n".join(out)
    return nb


def build_notebook(cfg: DictConfig) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = read_cells(ROOT / cfg.template if not Path(cfg.template).is_absolute() else cfg.template)
    nb.metadata.update({
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    })
    parameterize(nb, DATA=str(cfg.data_input), BUNDLE=f"/kaggle/input/{cfg.dataset.slug}",
                 WORK=str(cfg.work_dir), SUBMISSION=str(cfg.submission))
    nbformat.validate(nb)
    return nb


def _wheel_file(folder: Path, requirement: str) -> Path | None:
    name, _, version = requirement.partition("==")
    norm = re.sub(r"[-_.]+", "_", name).lower()
    for p in folder.glob("*.whl") if folder.is_dir() else []:
        dist, ver = p.name.split("-")[:2]
        if re.sub(r"[-_.]+", "_", dist).lower() == norm and (not version or ver == version):
            return p
    return None


def fetch_wheels(packages: list[str], cache: Path) -> list[Path]:
    """A wheel of each pinned package in `cache` (downloaded once; built from the sdist, still
    pure Python, when PyPI has no wheel, e.g. antlr4-python3-runtime 4.9.3)."""
    cache.mkdir(parents=True, exist_ok=True)
    found = []
    for req in packages:
        if _wheel_file(cache, req) is None:
            log.info("fetching a wheel of %s", req)
            pip = [sys.executable, "-m", "pip"]
            got = subprocess.run([*pip, "download", "--quiet", "--no-deps", "--only-binary=:all:", req, "-d", str(cache)],
                                 capture_output=True, text=True)
            if got.returncode != 0:
                got = subprocess.run([*pip, "wheel", "--quiet", "--no-deps", req, "-w", str(cache)], capture_output=True, text=True)
            if got.returncode != 0 or _wheel_file(cache, req) is None:
                raise DataError(None, f"no wheel of {req} could be downloaded or built ({got.stderr.strip().splitlines()[-1:]}); "
                                      "check the network, or build without them: wheels.download=false")
        found.append(_wheel_file(cache, req))
    return found


def _swap_in(tmp: Path, final: Path) -> None:
    """Replace folder `final` by the complete folder `tmp` (the old one goes only after)."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _copy_code(cfg: DictConfig, dataset: Path) -> None:
    """Copy the project's `code` files and folders into `dataset/code/`."""
    for name in cfg.code:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dataset / "code" / name, ignore=IGNORE)
        elif src.is_file():
            (dataset / "code").mkdir(exist_ok=True)
            shutil.copy2(src, dataset / "code" / name)
        else:
            raise DataError(src, "listed in `code` but not in the project")


def included(cfg: DictConfig) -> list[str]:
    """The models to bundle: `include`, or every family that trains (pipeline/graph.py) and the ensemble."""
    if cfg.include is not None:
        for m in cfg.include:
            if m != ENSEMBLE and m not in {f.name for f in FAMILIES}:
                raise DataError(None, f"include names '{m}', which is no model family ({', '.join(f.name for f in FAMILIES)}) "
                                      f"nor the {ENSEMBLE}")
        return list(cfg.include)
    return [f.name for f in FAMILIES if f.trained] + [ENSEMBLE]


def inference_command(name: str) -> str:
    """The predict-only command of a bundled model, its stage's module in predict (ensemble: apply) mode."""
    if name == ENSEMBLE:
        return f"pipeline.{stage_named(ENSEMBLE).module} mode=apply splits=[test]"  # after the baseline's test predictions (a possible member)
    return f"pipeline.{family(name).module} mode=predict splits=[test]"


def predictor_order(cfg: DictConfig) -> list[str]:
    """The models whose test predictions the notebook submits, the first present."""
    if cfg.predictor_order is not None:
        return list(cfg.predictor_order)
    return [ENSEMBLE] + [f.name for f in FAMILIES if f.trained]


def _copy_models(cfg: DictConfig, dataset: Path) -> list[str]:
    """Copy the trained artifacts of the `include`d models that exist; returns their names."""
    models = []
    for m in included(cfg):
        src = Path(cfg.models_dir) / m
        if src.is_dir() and any(p.is_file() for p in src.rglob("*")):
            shutil.copytree(src, dataset / "artifacts" / "models" / m, ignore=MODEL_IGNORE)
            models.append(m)
    log.info("trained models bundled: %s", ", ".join(models) or f"none under {cfg.models_dir} (the notebook will submit the baseline)")
    return models


def _copy_stats(cfg: DictConfig, dataset: Path, models: list[str]) -> Path:
    """Copy the pad stage's statistics, when there are any; returns their path."""
    stats = Path(cfg.stats)
    if stats.is_file():
        (dataset / "artifacts").mkdir(exist_ok=True)
        shutil.copy2(stats, dataset / "artifacts" / "stats.json")
    elif any(m != "ensemble" for m in models):
        raise DataError(stats, "normalization statistics not found, and the bundled models need them (run `make pad` first)")
    else:
        log.warning("no normalization statistics at %s: the notebook can only run the baseline", stats)
    return stats


def _copy_wheels(cfg: DictConfig, out: Path, dataset: Path) -> list[str]:
    """Copy a wheel of each `wheels.packages` (fetched into `out/.wheels`); returns the ones bundled."""
    if not cfg.wheels.download:
        log.warning("wheels.download=false: the bundle has no wheels; the notebook relies on the Kaggle image having %s",
                    ", ".join(cfg.wheels.packages))
        return []
    for wheel in fetch_wheels(list(cfg.wheels.packages), out / ".wheels"):
        (dataset / "wheels").mkdir(exist_ok=True)
        shutil.copy2(wheel, dataset / "wheels" / wheel.name)
    return list(cfg.wheels.packages)


def _fill_dataset(cfg: DictConfig, out: Path, dataset: Path) -> dict:
    """Fill the dataset bundle's folder: code, artifacts, wheels and metadata; returns its manifest."""
    _copy_code(cfg, dataset)
    models = _copy_models(cfg, dataset)
    stats = _copy_stats(cfg, dataset, models)
    wheels = _copy_wheels(cfg, out, dataset)
    manifest = {
        "commit": git_commit(), "source_dataset": cfg.paths.dataset, "models": models,
        "inference": {m: inference_command(m) for m in models}, "predictor_order": predictor_order(cfg),
        "stats": stats.is_file(), "wheels": wheels,
    }
    write_text_atomic(dataset / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    write_text_atomic(dataset / "dataset-metadata.json", json.dumps(dataset_metadata(cfg), indent=1) + "\n")
    return manifest


def build(cfg: DictConfig) -> dict:
    """Build the dataset bundle and the notebook under `out`, swapped in whole; returns the bundle's manifest."""
    check_names(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / ".complete").unlink(missing_ok=True)
    pid = os.getpid()
    dataset = _fresh(out / f".dataset.tmp-{pid}")
    kernel = _fresh(out / f".kernel.tmp-{pid}")
    try:
        manifest = _fill_dataset(cfg, out, dataset)
        nbformat.write(build_notebook(cfg), str(kernel / cfg.kernel.code_file))
        write_text_atomic(kernel / "kernel-metadata.json", json.dumps(kernel_metadata(cfg), indent=1) + "\n")
    except BaseException:
        shutil.rmtree(dataset, ignore_errors=True)
        shutil.rmtree(kernel, ignore_errors=True)
        raise
    _swap_in(dataset, out / "dataset")
    _swap_in(kernel, out / "kernel")
    models = manifest["models"]
    size = sum(p.stat().st_size for p in (out / "dataset").rglob("*") if p.is_file())
    finish_stage(out, {"models": models, "bytes": size})
    log.info("wrote %s (%.1f MB: code, %d models, %d wheels) and %s; next: make kaggle-push",
             out / "dataset", size / 1e6, len(models), len(manifest["wheels"]), out / "kernel")
    if cfg.owner == PLACEHOLDER_OWNER:
        log.warning("owner is still '%s': set owner=<your Kaggle username> before pushing", PLACEHOLDER_OWNER)
    return manifest


def _kaggle(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the Kaggle CLI; with `check`, its output goes to the terminal and a failure stops here."""
    log.info("$ kaggle %s", " ".join(args))
    proc = subprocess.run(["kaggle", *args], text=True, capture_output=not check)
    if check and proc.returncode != 0:
        raise DataError(None, f"`kaggle {' '.join(args[:2])}` failed with exit status {proc.returncode} (its message is above)")
    return proc


def push(cfg: DictConfig) -> None:
    if not shutil.which("kaggle") or not credentials_present():
        raise DataError(None, (
            "`make kaggle-push` needs the Kaggle CLI with credentials: `pip install kaggle`, put your API token in "
            "~/.kaggle/kaggle.json (or set KAGGLE_USERNAME and KAGGLE_KEY), and set your Kaggle username with "
            "ARGS=\"owner=<username>\" (or `owner:` in conf/kaggle.yaml), then run `make kaggle-push` again"))
    if cfg.owner == PLACEHOLDER_OWNER:
        raise DataError(None, "owner is not set: run with ARGS=\"owner=<your Kaggle username>\" (or set `owner:` in conf/kaggle.yaml)")
    build(cfg)  # always from the current code and artifacts, with this run's owner and slugs
    out = Path(cfg.out)
    ds, kn = out / "dataset", out / "kernel"
    dataset_id = dataset_metadata(cfg)["id"]
    message = f"pipeline {git_commit()}"
    if _kaggle("datasets", "status", dataset_id, check=False).returncode == 0:
        _kaggle("datasets", "version", "-p", str(ds), "-m", message, "--dir-mode", "zip")
    else:
        _kaggle("datasets", "create", "-p", str(ds), "--dir-mode", "zip")
    # the notebook must not start on the previous version while the new one is processed
    deadline = time.monotonic() + float(cfg.push_wait_s)
    while time.monotonic() < deadline:
        status = _kaggle("datasets", "status", dataset_id, check=False)
        if status.returncode == 0 and "ready" in status.stdout.lower():
            break
        time.sleep(max(0.0, min(10.0, deadline - time.monotonic())))
    else:
        log.warning("dataset %s is not ready after %s s; pushing the notebook anyway", dataset_id, cfg.push_wait_s)
    _kaggle("kernels", "push", "-p", str(kn))
    log.info("pushed %s and %s", dataset_id, kernel_metadata(cfg)["id"])


@stage("kaggle")
def main(cfg: DictConfig) -> None:
    if cfg.mode == "build":
        build(cfg)
    elif cfg.mode == "push":
        push(cfg)
    else:
        raise DataError(None, f"mode='{cfg.mode}' is not build or push")


if __name__ == "__main__":
    main()
