# %% [markdown]
# # TpuGraphs runtime ranking: submission from a trained pipeline bundle
#
# Runs offline inside a Kaggle notebook (or locally, with other paths below). It installs the
# project from the attached bundle dataset (built by `make kaggle`), prunes, pads (with the
# normalization statistics saved by the training run) and extracts the competition's test
# files, runs every trained model found in the bundle in predict-only mode (the ensemble last),
# and writes a validated `submission.csv`. With no trained model in the bundle it submits the
# training-free baseline.
#
# The next cell holds the parameters (papermill-style): change them to run elsewhere.

# %% tags=["parameters"]
DATA = "/kaggle/input/predict-ai-model-runtime/npz_all/npz"  # competition npz root: its test files are ranked
BUNDLE = "/kaggle/input/tpugraphs-pipeline-bundle"  # the attached bundle dataset: code, artifacts, wheels
WORK = "/kaggle/working/tpugraphs"  # scratch space: a copy of the code and every artifact of this run
SUBMISSION = "/kaggle/working/submission.csv"  # the file Kaggle scores
INSTALL = True  # pip install the bundled wheels and the project offline; False: this Python has them already
PREPROCESS = "auto"  # prune/pad/extract the test files: "auto" = when a bundled model needs them; True; False
JOBS = 0  # worker processes for preprocessing; 0 = all cores

# %%
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

bundle, work = Path(BUNDLE), Path(WORK)
manifest = json.loads((bundle / "manifest.json").read_text())
print(f"bundle {bundle}: commit {manifest['commit']}, models {manifest['models'] or 'none'}, "
      f"statistics {'yes' if manifest['stats'] else 'no'}, wheels {manifest['wheels'] or 'none'}")

# Kaggle inputs are read-only and the stages write beside the code (logs/): run from a copy.
code = work / "code"
shutil.rmtree(code, ignore_errors=True)
shutil.copytree(bundle / "code", code)
if INSTALL:
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index"]
    if manifest["wheels"]:
        subprocess.run([*pip, "--find-links", str(bundle / "wheels"), *manifest["wheels"]], check=True)
    # every stage also runs from the code copy (cwd, PYTHONPATH): the install only adds the metadata
    if subprocess.run([*pip, "--no-deps", "--no-build-isolation", "-e", str(code)]).returncode:
        print("note: `pip install -e` of the project failed; the stages run from the code copy anyway")

# %%
DATASET = "kaggle"  # keys every artifact path of this run under WORK/data
data_dir = work / "data"
COMMON = [f"paths.dataset={DATASET}", f"paths.data_dir={data_dir}", f"paths.raw={DATA}",
          f"paths.submissions={work / 'submissions'}", f"paths.reports={work / 'reports'}", f"jobs={JOBS}"]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(code), os.environ.get("PYTHONPATH")]))}
PROGRESS = re.compile(r"\d+%\|")  # progress-bar lines: noise in a notebook log


def run_command(command: str, *extra: str) -> None:
    """`python -m <module> <args>` from the code copy, with this run's paths; stops on failure."""
    module, *args = command.split()
    name = module.rsplit(".", 1)[-1]
    cmd = [sys.executable, "-m", module, *COMMON, *args, *extra, f"hydra.run.dir={work / 'logs' / name}"]
    print("$ python -m", " ".join(cmd[2:]), flush=True)
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=code, env=ENV, capture_output=True, text=True)
    log = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip() and not PROGRESS.search(ln)]
    print("\n".join(log[-15:]))
    print(f"[{name}: exit {proc.returncode} after {time.time() - t0:.1f} s]", flush=True)
    if proc.returncode:
        raise RuntimeError(f"{module} failed with exit status {proc.returncode} (its output is above)")


# %% [markdown]
# ## Trained artifacts and preprocessing of the test files

# %%
sys.path.insert(0, str(code))  # the project's own helpers, from the code copy
from pipeline import graph  # noqa: E402  (the stage graph and the model families)

models_dir = data_dir / "models" / DATASET
present = []
for m in manifest["models"]:
    src = bundle / "artifacts" / "models" / m
    if src.is_dir():
        shutil.copytree(src, models_dir / m, dirs_exist_ok=True)
        present.append(m)
print("trained models:", ", ".join(present) or "none (the training-free baseline will be submitted)")

needs_features = [m for m in present if m != graph.ENSEMBLE]  # the ensemble reads its members' predictions
if PREPROCESS is True or (PREPROCESS == "auto" and needs_features):
    if not manifest["stats"]:
        raise RuntimeError("the bundle has no normalization statistics (artifacts/stats.json): rebuild it with `make kaggle` after `make pad`")
    for step in graph.feature_stages():  # prune, pad, extract, as the stage graph orders them
        run_command(f"pipeline.{step.module}", "splits=[test]",
                    *([f"stats_from={bundle / 'artifacts' / 'stats.json'}"] if step.module == "pad" else []))

# %% [markdown]
# ## Inference: every bundled model in predict-only mode, the ensemble last

# %%
untrained = next(f for f in graph.FAMILIES if not f.trained)  # the training-free family (the baseline)
for m in present:
    if m == graph.ENSEMBLE:
        run_command(f"pipeline.{untrained.module}", "splits=[test]")  # a training-free member its weights may count on
    run_command(manifest["inference"][m])

from pipeline.io.predictions import predictions_path  # noqa: E402

pred_dir = data_dir / "predictions" / DATASET
predictor = next((m for m in manifest["predictor_order"] if predictions_path(pred_dir, m, "test").is_file()), None)
if predictor is None:
    run_command(f"pipeline.{untrained.module}", "splits=[test]")
    predictor = untrained.name
print("submitting the predictions of:", predictor)

# %% [markdown]
# ## The submission, validated before it is written

# %%
run_command("pipeline.submission", f"predictor={predictor}", "split=test", f"submission={SUBMISSION}", "keep_copy=false")

from pipeline.io.catalog import discover  # noqa: E402
from pipeline.io.submission_csv import validate_submission  # noqa: E402

files = discover(DATA, splits=["test"])
report = validate_submission(SUBMISSION, files)
assert report.ok, "\n".join(report.lines())
counts = {}
for f in files:
    counts[f.collection] = counts.get(f.collection, 0) + 1
print(f"{SUBMISSION}: {len(files)} rows, valid; by collection: {counts}")
print("".join(open(SUBMISSION).readlines()[:3])[:600])
