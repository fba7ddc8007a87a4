"""The evaluation stage end to end on a tiny `valid` split with known runtimes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from builders import write_tiny_graph
from pipeline.core.errors import DataError
from pipeline.io.catalog import discover
from pipeline.io.runtimes import load_runtimes, score_rows, score_submission
from pipeline.io.submission_csv import write_submission

ROOT = Path(__file__).resolve().parent.parent
PYTHON = Path(sys.executable)

# (collection dir, name, runtimes, tile normalizers)
GRAPHS = [
    ("tile/xla", "ta", [5, 3, 9, 1, 7, 2], [1, 1, 12, 1, 1, 1]),  # normalized [5, 3, .75, 1, 7, 2]
    ("tile/xla", "tb", [40, 10, 30, 20, 50, 60, 70], [1, 1, 1, 1, 1, 1, 1]),
    ("layout/xla/default", "la", [40, 10, 30, 20, 50], None),
    ("layout/xla/default", "lb", [8, 6, 7, 5, 3, 9], None),
    ("layout/nlp/random", "lc", [300, 100, 200], None),
]


def _write(path: Path, runtime, normalizers) -> None:
    write_tiny_graph(path, "layout" if normalizers is None else "tile", runtime, normalizers)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    r = tmp_path_factory.mktemp("valid_root")
    for d, name, runtime, norm in GRAPHS:
        _write(r / d / "valid" / f"{name}.npz", runtime, norm)
        # The same graph with zeroed runtimes in test, as the real test split has them.
        _write(r / d / "test" / f"{name}.npz", [0] * len(runtime), None if norm is None else [1] * len(runtime))
    return r


def _true_order(runtime, norm) -> list[int]:
    r = np.asarray(runtime, float) / (1 if norm is None else np.asarray(norm, float))
    return np.argsort(r, kind="stable").tolist()


def _rows(reverse: bool) -> dict[str, list[int]]:
    rows = {}
    for d, name, runtime, norm in GRAPHS:
        order = _true_order(runtime, norm)
        order = order[::-1] if reverse else order
        gid = ":".join(Path(d).parts) + ":" + name
        rows[gid] = order[:5] if norm is not None else order
    return rows


def test_perfect_submission_scores_one(root):
    files = discover(root, splits=["valid"])
    res = score_submission(_rows(reverse=False), files)
    assert res["collections"] == pytest.approx({"tile:xla": 1.0, "layout:xla:default": 1.0, "layout:nlp:random": 1.0})
    assert res["score"] == pytest.approx(1.0)
    assert res["graphs"] == {"tile:xla": 2, "layout:xla:default": 2, "layout:nlp:random": 1}
    assert set(res["per_graph"]) == {f.id for f in files}


def test_reversed_submission(root):
    files = discover(root, splits=["valid"])
    res = score_submission(_rows(reverse=True), files)
    # ta: slowest five exclude config 2 (0.75); best of them is config 3 (1.0): 2 - 1/0.75.
    # tb: slowest five are 70, 60, 50, 40, 30; best 30 vs 10: 2 - 3.
    assert res["per_graph"]["tile:xla:ta"] == pytest.approx(2 - 4 / 3)
    assert res["per_graph"]["tile:xla:tb"] == pytest.approx(-1.0)
    assert res["collections"]["tile:xla"] == pytest.approx((2 - 4 / 3 - 1.0) / 2)
    assert res["collections"]["layout:xla:default"] == pytest.approx(-1.0)
    assert res["collections"]["layout:nlp:random"] == pytest.approx(-1.0)
    assert res["score"] == pytest.approx(((2 - 4 / 3 - 1.0) / 2 - 2.0) / 3)


def test_score_rows_reuses_runtimes_and_counts_undefined_tau_as_zero(root):
    files = discover(root, collections=["layout:nlp:random"], splits=["valid"])
    runtimes = load_runtimes(files)
    assert runtimes["layout:nlp:random:lc"].tolist() == [300, 100, 200]
    flat = {"layout:nlp:random:lc": np.array([7.0, 7.0, 7.0])}  # constant runtimes: tau undefined
    res = score_rows({"layout:nlp:random:lc": [0, 1, 2]}, flat)
    assert res["per_graph"] == {"layout:nlp:random:lc": 0.0} and res["undefined_tau"] == ["layout:nlp:random:lc"]


def test_tile_runtimes_are_normalized(root):
    runtimes = load_runtimes(discover(root, collections=["tile:xla"], splits=["valid"]))
    assert runtimes["tile:xla:ta"].tolist() == pytest.approx([5, 3, 0.75, 1, 7, 2])


def test_runtimes_read_alone_and_checked(tmp_path):
    """Only the runtime members are read (a file lacking the graph still gives its runtimes);
    a non-positive runtime or normalizer, or a missing one, is a one-sentence DataError."""
    from pipeline.io.catalog import GraphFile

    def npz(name: str, **arrays) -> GraphFile:
        p = tmp_path / f"{name}.npz"
        np.savez(p, **arrays)
        return GraphFile("tile:xla", "valid", p)

    ok = npz("ok", config_runtime=np.array([4, 2, 6]), config_runtime_normalizers=np.array([2, 2, 1]))
    assert load_runtimes([ok])["tile:xla:ok"].tolist() == [2.0, 1.0, 6.0]
    bad = [(npz("neg", config_runtime=np.array([4, 0, 6]), config_runtime_normalizers=np.ones(3, int)), "non-positive runtime"),
           (npz("norm", config_runtime=np.array([4, 2, 6]), config_runtime_normalizers=np.array([1, 0, 1])), "non-positive normalizer"),
           (npz("len", config_runtime=np.array([4, 2, 6]), config_runtime_normalizers=np.ones(2, int)), "does not match 3 configs"),
           (npz("none", config_runtime=np.array([4, 2, 6])), "config_runtime_normalizers")]
    for f, message in bad:
        with pytest.raises(DataError, match=message) as e:
            load_runtimes([f])
        assert e.value.path == str(f.path)


def test_invalid_rows_and_test_split_are_refused(root):
    files = discover(root, splits=["valid"])
    rows = _rows(reverse=False)
    del rows["layout:xla:default:lb"]
    with pytest.raises(DataError, match="layout:xla:default:lb"):
        score_submission(rows, files)
    with pytest.raises(DataError, match="all zero"):
        score_submission(_rows(reverse=False), discover(root, splits=["test"]))


def _run(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(PYTHON), "-m", *args, f"hydra.run.dir={tmp / 'hydra'}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_writes_report(root, tmp_path):
    files = discover(root, splits=["valid"])
    csv = tmp_path / "valid.csv"
    write_submission(csv, _rows(reverse=True), files)
    report = tmp_path / "reports" / "evaluation_valid.json"
    p = _run("pipeline.evaluate", f"submission={csv}", f"data={root}", "split=valid", f"report={report}", tmp=tmp_path)
    assert p.returncode == 0, p.stderr
    rep = json.loads(report.read_text())
    expected = score_submission(_rows(reverse=True), files)
    assert rep["split"] == "valid" and rep["submission"] == str(csv)
    assert rep["collections"] == pytest.approx(expected["collections"])
    assert rep["score"] == pytest.approx(expected["score"])
    assert rep["per_graph"] == pytest.approx(expected["per_graph"])
    assert "tile:xla" in p.stdout and f"{expected['score']:.4f}" in p.stdout
    assert not list(report.parent.glob(".*tmp*"))


def test_cli_bad_csv_exits_1_without_traceback(root, tmp_path):
    files = discover(root, splits=["valid"])
    csv = tmp_path / "bad.csv"
    write_submission(csv, _rows(reverse=False), files)
    lines = csv.read_text().splitlines()
    lines[1] = lines[1].rsplit(",", 1)[0] + ",0;1;1;2;3"  # repeated index on line 2
    csv.write_text("\n".join(lines) + "\n")
    report = tmp_path / "r.json"
    p = _run("pipeline.evaluate", f"submission={csv}", f"data={root}", "split=valid", f"report={report}", tmp=tmp_path)
    assert p.returncode == 1
    assert "Traceback" not in p.stderr + p.stdout
    gid = lines[1].split(",")[0]
    assert f"{csv}:2: {gid}: error: config index 1 listed more than once" in p.stderr
    assert [ln for ln in p.stderr.splitlines() if ln.startswith("error:")] == [
        f"error: {csv}: 1 errors (listed above); not scored"]
    assert not report.exists()
    # The test split has no runtimes: one clear line.
    p = _run("pipeline.evaluate", f"submission={csv}", f"data={root}", "split=test", f"report={report}", tmp=tmp_path)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert [ln for ln in p.stderr.splitlines() if ln.startswith("error:")] == [
        "error: the test split has no measured runtimes (all zero): evaluate split=valid or split=train"]


def test_cli_validate(root, tmp_path):
    files = discover(root, splits=["test"])
    csv = tmp_path / "sub.csv"
    write_submission(csv, _rows(reverse=False), files)
    p = _run("pipeline.validate", f"submission={csv}", f"data={root}", "split=test", tmp=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1].startswith(f"{csv}: valid: 5 rows")
    csv.write_text(csv.read_text().replace("tile:xla:ta", "tile:xla:zz"))
    p = _run("pipeline.validate", f"submission={csv}", f"data={root}", "split=test", tmp=tmp_path)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    out = p.stdout.splitlines()
    assert f"{csv}:2: tile:xla:zz: error: no such file in the test split (tile:xla has no 'zz')" in out
    assert any(ln.startswith(f"{csv}: tile:xla:ta: error: no row for this test file") for ln in out)
    assert "INVALID" in out[-1]
    p = _run("pipeline.validate", f"submission={tmp_path / 'none.csv'}", f"data={root}", tmp=tmp_path)
    assert p.returncode == 1 and p.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'none.csv'}: submission CSV not found"
