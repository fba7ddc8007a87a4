"""Any npz root through `make`: the dataset name derived from the root, degenerate graphs end
to end, roots without train or valid splits, and a `make all` that settles."""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

import pytest

from builders import COL_MAJOR, DEFAULT, ROW_MAJOR, layout_configs, tile_configs, write_chain_graph
from conftest import ROOT
from pipeline.io.catalog import discover
from pipeline.io.submission_csv import validate_submission

QUICK_GNN = "experiment=gnn_quick model.hidden=16 model.layers=2"


def make(*args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, env={**os.environ, **(env or {})})
    if check:
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def dataset_of(*args: str) -> str:
    out = make("-s", "help", *args).stdout
    line = next(x for x in out.splitlines() if "variables:" in x)
    return line.split("DATASET=")[1].split()[0]


def stages_run(proc: subprocess.CompletedProcess) -> list[str]:
    """The pipeline stages a make run started (`python -m pipeline.<stage>` command lines)."""
    return [x.split("-m pipeline.")[1].split()[0] for x in proc.stdout.splitlines() if " -m pipeline." in x]


def test_the_dataset_name_is_derived_from_the_root() -> None:
    assert dataset_of() == "sample"
    assert dataset_of("DATA=data/raw/sample") == "sample"
    assert dataset_of("DATA=../shared/tpugraphs-samples") == "tpugraphs-samples"
    assert dataset_of("DATA=/somewhere/Kaggle Data/npz_all/npz") == "kaggle-data"
    assert dataset_of("DATA=/somewhere/sample") == "sample-ext"  # never the embedded sample's name
    assert dataset_of("DATA=/somewhere/x", "DATASET=mine") == "mine"
    assert dataset_of("DATASET=kaggle") == "kaggle"
    proc = make("-s", "help", "DATA=/somewhere/else", "DATASET=sample", check=False)
    assert proc.returncode != 0 and "DATASET=sample" in proc.stderr


def test_a_new_or_changed_raw_file_reruns_prune(tmp_path: Path) -> None:
    root, data = tmp_path / "root", tmp_path / "data"
    write_chain_graph(root / "tile/xla/train/a.npz", "tile", tile_configs(8, 16), [2, 1])
    common = (f"DATA={root}", f"DATA_DIR={data}")
    assert stages_run(make("prune", *common)) == ["prune"]
    assert stages_run(make("prune", *common)) == []
    os.utime(root / "tile/xla/train/a.npz")  # changed
    assert stages_run(make("-n", "prune", *common)) == ["prune"]
    make("prune", *common)
    write_chain_graph(root / "tile/xla/train/b.npz", "tile", tile_configs(8, 16), [2, 1])  # added
    assert stages_run(make("-n", "prune", *common)) == ["prune"]
    make("prune", *common)
    (root / "tile/xla/train/b.npz").unlink()  # removed
    assert stages_run(make("-n", "prune", *common)) == ["prune"]
    assert stages_run(make("-n", "prune", *common, "ARGS=hops=2")) == ["prune"]  # other arguments


def degenerate_root(root: Path) -> None:
    """A root of odd but valid graphs: one unique config, configurable nodes that never vary,
    two configs, equal runtimes, a constant config column, and collections without train."""
    t = "tile/xla"
    write_chain_graph(root / t / "train/ok.npz", "tile", tile_configs(8, 16, 32, 64), [4, 3, 2, 1])
    write_chain_graph(root / t / "train/twins.npz", "tile", tile_configs(8, 8), [5, 6])  # one unique config
    write_chain_graph(root / t / "train/flat.npz", "tile", tile_configs(8, 16, 32), [7, 7, 7])  # equal runtimes
    write_chain_graph(root / t / "valid/pair.npz", "tile", tile_configs(16, 32), [3, 1])  # two configs
    write_chain_graph(root / t / "test/t.npz", "tile", tile_configs(8, 16, 32, 64, 128, 256), [0] * 6)
    lx = "layout/xla/default"
    varied = layout_configs((DEFAULT, DEFAULT), (ROW_MAJOR, DEFAULT), (COL_MAJOR, ROW_MAJOR), (COL_MAJOR, COL_MAJOR))
    fixed = layout_configs(*[(ROW_MAJOR, DEFAULT)] * 20)  # no configurable node ever varies
    write_chain_graph(root / lx / "train/ok.npz", "layout", varied, [9, 7, 5, 3])
    write_chain_graph(root / lx / "train/fixed.npz", "layout", fixed, [10 + i for i in range(20)])
    write_chain_graph(root / lx / "valid/ok.npz", "layout", varied[:3], [2, 3, 1])
    write_chain_graph(root / lx / "valid/fixed.npz", "layout", fixed[:5], [4, 4, 4, 4, 4])
    write_chain_graph(root / lx / "test/ok.npz", "layout", varied, [0] * 4)
    write_chain_graph(root / lx / "test/fixed.npz", "layout", fixed[:3], [0] * 3)
    # nothing learnable in train: models skip the collection, the baseline serves its test file
    write_chain_graph(root / "layout/xla/random/train/fixed.npz", "layout", fixed, [3] * 20)
    write_chain_graph(root / "layout/xla/random/test/t.npz", "layout", varied, [0] * 4)
    # test only: not padded (statistics are train-only), served by the baseline
    write_chain_graph(root / "layout/nlp/default/test/t.npz", "layout", varied, [0] * 4)


@pytest.mark.slow
def test_degenerate_graphs_go_end_to_end_and_a_second_make_all_does_nothing(tmp_path: Path) -> None:
    root, data, subs, reports = tmp_path / "odd", tmp_path / "data", tmp_path / "subs", tmp_path / "reports"
    degenerate_root(root)
    common = (f"DATA={root}", f"DATA_DIR={data}", f"SUBMISSIONS={subs}", f"REPORTS={reports}", f"GNN_ARGS={QUICK_GNN}")
    first = make("all", *common, env={"PROGRESS_INTERVAL": "0"})
    log = first.stdout + first.stderr
    assert "Traceback" not in log and "\r" not in log
    assert "tile:xla:twins set aside from training: one unique config" in log
    assert "tile:xla:flat set aside from training: all 3 unique configs have the same runtime" in log
    assert "layout:xla:default:fixed set aside from training: one unique config" in log
    assert "layout:xla:random: no train graph has an order to learn" in log
    assert "test layout:nlp:default: served by baseline" in log
    assert "test layout:xla:random: served by baseline" in log
    sub = subs / "odd" / "submission.csv"
    files = discover(root, splits=["test"])
    assert not validate_submission(sub, files).errors
    with sub.open() as fh:
        assert {r["ID"] for r in csv.DictReader(fh)} == {f.id for f in files}
    assert (reports / "odd" / "validation.json").is_file()
    copies = sorted(subs.glob("odd/odd_ensemble_test_*.csv"))
    assert len(copies) == 1

    second = make("all", *common)
    assert stages_run(second) == [], second.stdout + first.stdout
    assert sorted(subs.glob("odd/odd_ensemble_test_*.csv")) == copies  # no new copy


@pytest.mark.slow
def test_make_all_on_the_real_samples_needs_only_data(samples: Path, tmp_path: Path) -> None:
    """The shared real files: some collections have test files only, none has valid; the run
    still ends in a valid submission and never touches the embedded sample's artifacts."""
    data, subs, reports = tmp_path / "data", tmp_path / "subs", tmp_path / "reports"
    marker = data / "processed" / "sample" / "keep.txt"
    marker.parent.mkdir(parents=True)
    marker.write_text("the sample's artifacts")
    proc = make("all", f"DATA={samples}", f"DATA_DIR={data}", f"SUBMISSIONS={subs}", f"REPORTS={reports}",
                f"GNN_ARGS={QUICK_GNN}")
    log = proc.stdout + proc.stderr
    assert "Traceback" not in log
    assert "set aside from training: one unique config" in log  # openai_v0_rnn_optimized, the 2-config tile graph
    for c in ("layout:nlp:default", "layout:nlp:random"):
        assert f"test {c}: served by baseline" in log
    files = discover(samples, splits=["test"])
    sub = subs / "tpugraphs-samples" / "submission.csv"
    assert not validate_submission(sub, files).errors
    assert sorted(p.name for p in data.glob("*/sample/*")) == ["keep.txt"]
    assert marker.read_text() == "the sample's artifacts"
