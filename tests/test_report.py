"""Validation report on a tiny embedded sample: files exist, PNGs are real images, figures agree
with `pipeline.evaluate`, an oracle scores perfectly, a model that misses a graph is scored on the
collections it serves in full (no overall), one that serves none is left out, and
the noise ceiling appears exactly when the generator's noiseless costs are there."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import kendalltau

from builders import cfg as stage_cfg
from models import metrics
from pipeline import baseline, evaluate, report, sample_data, submission
from pipeline.core.errors import DataError
from pipeline.io.catalog import COLLECTIONS, TRUTH, discover, truth_path
from pipeline.io.predictions import write_predictions
from pipeline.io.runtimes import load_runtimes

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> dict[str, Path]:
    """A tiny raw tree (valid split only) and the baseline's predictions on it."""
    root = tmp_path_factory.mktemp("report")
    d = {"raw": root / "raw", "pred": root / "pred", "root": root}
    sample_data.generate(stage_cfg("sample_data", out=d["raw"], splits="[valid]", **{"graphs.valid": 2, "tile_scale": 2}))
    baseline.main(stage_cfg("baseline", data=d["raw"], splits="[valid]", predictions=d["pred"]))
    return d


def _run(sample: dict[str, Path], out: Path, **kw) -> dict:
    return report.run(stage_cfg("report", data=sample["raw"], predictions=sample["pred"], out=out, **kw))


def _check_png(path: Path) -> None:
    import matplotlib.image as mpimg
    from PIL import Image

    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        width, height = im.size
    pixels = mpimg.imread(path)
    assert pixels.shape[:2] == (height, width)
    assert width >= 500 and height >= 300, (path, width, height)
    assert pixels.std() > 0.01, f"{path} is blank"  # something was drawn


def test_report_with_only_the_baseline(sample, tmp_path) -> None:
    out = tmp_path / "rep"
    result = _run(sample, out)
    assert list(result["models"]) == ["baseline"]
    for f in ("validation.md", "validation.json", "validation_scores.png", "validation_ranks.png", "validation_topk.png"):
        assert (out / f).is_file(), f
    for f in result["figures"].values():
        _check_png(out / f)
    md = (out / "validation.md").read_text()
    for f in result["figures"].values():
        assert f"]({f})" in md
    assert "| baseline |" in md
    assert report.IN_SAMPLE["valid"] in md  # the reader is told these scores are optimistic
    assert json.loads((out / "validation.json").read_text()) == json.loads(json.dumps(result))
    assert not list(out.glob(".*tmp*"))  # atomic writes leave no temporary behind


def test_json_matches_pipeline_evaluate(sample, tmp_path) -> None:
    """Scores of the report = `pipeline.evaluate` on the CSV `pipeline.submission` writes."""
    out = tmp_path / "rep"
    _run(sample, out)
    got = json.loads((out / "validation.json").read_text())["models"]["baseline"]
    csv = tmp_path / "valid.csv"
    submission.main(stage_cfg("submission", data=sample["raw"], split="valid", submission=csv, keep_copy=False,
                         predictions=sample["pred"] / "baseline" / "valid.parquet"))
    want = evaluate.run(csv, sample["raw"], "valid", None)
    assert set(got["collections"]) == set(want["collections"]) and len(want["collections"]) == 5
    for c, v in want["collections"].items():
        assert got["collections"][c] == pytest.approx(v, abs=1e-12)
    assert got["score"] == pytest.approx(want["score"], abs=1e-12)
    assert got["per_graph"] == pytest.approx(want["per_graph"], abs=1e-12)


def test_oracle_and_incomplete_models(sample, tmp_path) -> None:
    files = discover(sample["raw"], splits=["valid"])
    runtimes = load_runtimes(files)
    pred = tmp_path / "pred"
    (pred / "baseline").mkdir(parents=True)
    for f in (sample["pred"] / "baseline").iterdir():
        (pred / "baseline" / f.name).write_bytes(f.read_bytes())
    write_predictions(pred / "ensemble" / "valid.parquet", runtimes)  # lower runtime = lower score: perfect
    first = next(iter(runtimes))
    missing = dict(list(runtimes.items())[1:])
    write_predictions(pred / "gnn" / "valid.parquet", missing)  # serves every collection but the first graph's
    write_predictions(pred / "gbdt" / "valid.parquet", {first: runtimes[first]})  # no collection in full
    out = tmp_path / "rep"
    result = report.run(stage_cfg("report", data=sample["raw"], predictions=pred, out=out, top_k=10))
    assert list(result["models"]) == ["baseline", "gnn", "ensemble"]
    assert "gbdt" in result["skipped"] and "none" in result["skipped"]["gbdt"]
    partial = result["models"]["gnn"]
    lost = next(f.collection for f in files if f.id == first)
    assert partial["score"] is None and lost not in partial["collections"]
    assert sorted(partial["collections"]) == sorted({f.collection for f in files} - {lost})
    assert "all" not in result["top_k"]["slowdown"]["gnn"] and lost not in result["top_k"]["slowdown"]["gnn"]
    assert "| gnn | " in (out / "validation.md").read_text() and result["best"][lost] != "gnn"
    oracle = result["models"]["ensemble"]
    assert all(v == pytest.approx(1.0) for v in oracle["collections"].values())
    assert result["best"]["overall"] == "ensemble"
    curves = result["top_k"]["slowdown"]
    assert len(curves["ensemble"]["all"]) == 10
    assert curves["ensemble"]["all"] == pytest.approx([1.0] * 10)
    base = np.array(curves["baseline"]["all"])
    assert base[0] >= 1.0 and np.all(np.diff(base) <= 1e-12)  # more tries never find a slower best
    assert "**1.0000**" in (out / "validation.md").read_text()
    _check_png(out / "validation_ranks.png")


def test_top_k_slowdown_by_hand() -> None:
    runtime = np.array([4.0, 1.0, 2.0, 8.0])
    scores = np.array([0.0, 3.0, 1.0, 2.0])  # predicted order: 0, 2, 3, 1
    assert report.top_k_slowdown(scores, runtime, 6).tolist() == [4.0, 2.0, 2.0, 1.0, 1.0, 1.0]


def test_refuses_test_split_and_missing_predictions(sample, tmp_path) -> None:
    with pytest.raises(DataError, match="test split"):
        _run(sample, tmp_path / "a", split="test")
    with pytest.raises(DataError, match="no <model>/valid.parquet"):
        report.run(stage_cfg("report", data=sample["raw"], predictions=tmp_path / "none", out=tmp_path / "b"))
    with pytest.raises(DataError, match="predictions not found"):
        _run(sample, tmp_path / "c", models="[gbdt]")


def test_ceiling_score_by_hand() -> None:
    truth = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 5.0])
    runtime = np.array([1.1, 1.9, 3.2, 2.9, 5.3, 4.8])
    # a strict order by truth, ties by index: 15 pairs, (2, 3) discordant and the tied pair (4, 5)
    # ordered 4 before 5 against its runtimes, so tau = (13 - 2) / 15
    assert report.ceiling_score("layout", truth, runtime) == pytest.approx(11 / 15, abs=1e-12)
    assert report.ceiling_score("layout", truth, runtime) == pytest.approx(
        kendalltau(np.arange(6), runtime).statistic, abs=1e-12)
    assert report.ceiling_score("layout", truth, runtime) < metrics.kendall_tau(truth, runtime)  # tau-b skips the tie
    assert report.ceiling_score("layout", np.ones(4), np.ones(4)) == metrics.UNDEFINED_TAU_SCORE
    # tile: the noiseless top 5 is configs 0..4, the measured best (config 6) is not among them
    tile_truth = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    tile_runtime = np.array([1.2, 1.1, 3.0, 4.0, 5.0, 6.0, 1.0])
    assert report.ceiling_score("tile", tile_truth, tile_runtime) == pytest.approx(2 - 1.1 / 1.0)
    assert report.ceiling_score("tile", tile_truth, tile_runtime, k=1) == pytest.approx(2 - 1.2 / 1.0)


def _truth_of(raw: Path) -> tuple[list, dict, dict]:
    files = discover(raw, splits=["valid"])
    runtimes = load_runtimes(files)
    truth = {f.id: np.load(truth_path(raw, f.collection, f.split, f.stem)) for f in files}
    return files, runtimes, truth


def test_report_has_the_noise_ceiling_when_truth_exists(sample, tmp_path) -> None:
    files, runtimes, truth = _truth_of(sample["raw"])
    pred = tmp_path / "pred"
    shutil.copytree(sample["pred"], pred)
    write_predictions(pred / "ensemble" / "valid.parquet", truth)  # ranks by the noiseless cost
    out = tmp_path / "rep"
    result = report.run(stage_cfg("report", data=sample["raw"], predictions=pred, out=out))
    ceiling = result["noise_ceiling"]
    assert list(ceiling["collections"]) == list(COLLECTIONS) and ceiling["missing"] == []
    assert ceiling["graphs"] == result["graphs"]
    for f in files:
        r, t = runtimes[f.id], truth[f.id]
        want = (metrics.tile_score(metrics.ranking(t), r) if f.kind == "tile" else metrics.layout_score(metrics.ranking(t), r))
        assert ceiling["per_graph"][f.id] == pytest.approx(want, abs=1e-12), f.id
    for c in COLLECTIONS:
        ids = [f.id for f in files if f.collection == c]
        assert ceiling["collections"][c] == pytest.approx(np.mean([ceiling["per_graph"][g] for g in ids]))
        assert 0.0 < ceiling["collections"][c] <= 1.0
    assert ceiling["score"] == pytest.approx(np.mean(list(ceiling["collections"].values())))
    for m, s in result["models"].items():
        for c in COLLECTIONS:
            assert ceiling["fraction"][m][c] == pytest.approx(s["collections"][c] / ceiling["collections"][c])
        assert ceiling["fraction"][m]["overall"] == pytest.approx(s["score"] / ceiling["score"])
    # a submission by the noiseless cost lists each config once in its top 5 (tile_order), while
    # the ceiling lets every copy of the best config count: at most the ceiling, and exactly that
    tiles = [f for f in files if f.kind == "tile"]
    submitted = np.mean([metrics.tile_score(metrics.tile_order(truth[f.id]), runtimes[f.id]) for f in tiles])
    assert result["models"]["ensemble"]["collections"]["tile:xla"] == pytest.approx(submitted, abs=1e-12)
    assert submitted <= ceiling["collections"]["tile:xla"] + 1e-12
    assert json.loads((out / "validation.json").read_text())["noise_ceiling"] == json.loads(json.dumps(ceiling))
    md = (out / "validation.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| *noise ceiling* |"))
    assert f"*{ceiling['collections']['tile:xla']:.4f}*" in row and f"*{ceiling['score']:.4f}*" in row
    assert "## Fraction of the noise ceiling" in md
    frac = next(line for line in md.splitlines()[md.splitlines().index("## Fraction of the noise ceiling"):]
                if line.startswith("| baseline |"))
    assert f"{ceiling['fraction']['baseline']['overall']:.3f} |" in frac
    _check_png(out / "validation_scores.png")


def test_report_without_truth_has_no_ceiling(sample, tmp_path) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(sample["raw"], raw, ignore=shutil.ignore_patterns(TRUTH))
    assert not (raw / TRUTH).exists()
    for data, extra in ((raw, {}), (sample["raw"], {"noise_ceiling": "false"})):
        out = tmp_path / f"rep{len(extra)}"
        result = report.run(stage_cfg("report", data=data, predictions=sample["pred"], out=out, audit="null", **extra))
        assert "noise_ceiling" not in result and "noise_ceiling" not in json.loads((out / "validation.json").read_text())
        md = (out / "validation.md").read_text()
        assert "noise ceiling" not in md and "| baseline |" in md


def test_without_truth_the_audit_gives_the_ceiling(sample, tmp_path) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(sample["raw"], raw, ignore=shutil.ignore_patterns(TRUTH))
    files = discover(raw, splits=["valid"])
    layout = [f for f in files if f.collection == "layout:xla:default"]
    graphs = {f.id: {"ceiling": 0.5 + 0.1 * i} for i, f in enumerate(layout)}
    none = {f.id: {"ceiling": None, "ceiling_why": "no duplicate configs: the noise is unknown"}
            for f in files if f.collection == "tile:xla"}  # tile graphs: none (no duplicates)
    (tmp_path / "audit.json").write_text(json.dumps({"graphs": graphs | none}))
    out = tmp_path / "rep"
    result = report.run(stage_cfg("report", data=raw, predictions=sample["pred"], out=out, audit=tmp_path / "audit.json"))
    ceiling = result["noise_ceiling"]
    assert ceiling["source"] == "audit" and set(ceiling["collections"]) == {"layout:xla:default"}
    assert ceiling["collections"]["layout:xla:default"] == pytest.approx(np.mean([g["ceiling"] for g in graphs.values()]))
    assert ceiling["fraction"]["baseline"]["layout:xla:default"] == pytest.approx(
        result["models"]["baseline"]["collections"]["layout:xla:default"] / ceiling["collections"]["layout:xla:default"])
    md = (out / "validation.md").read_text()
    assert "`make audit`'s estimate per graph" in md
    assert f"- n/a for {len(none)} graph(s): no duplicate configs: the noise is unknown" in md
    assert set(ceiling["why"]) >= set(none)


def test_collection_with_a_missing_truth_file_gets_no_ceiling(sample, tmp_path) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(sample["raw"], raw)
    files = discover(raw, splits=["valid"])
    gone = next(f for f in files if f.collection == "layout:nlp:random")
    truth_path(raw, gone.collection, gone.split, gone.stem).unlink()
    short = next(f for f in files if f.collection == "tile:xla")
    np.save(truth_path(raw, short.collection, short.split, short.stem), np.ones(3))  # wrong length
    result = report.run(stage_cfg("report", data=raw, predictions=sample["pred"], out=tmp_path / "rep"))
    ceiling = result["noise_ceiling"]
    assert set(ceiling["collections"]) == set(COLLECTIONS) - {"layout:nlp:random", "tile:xla"}
    assert sorted(ceiling["missing"]) == sorted([gone.id, short.id])
    assert ceiling["score"] is None and ceiling["fraction"]["baseline"]["overall"] is None
    row = next(line for line in (tmp_path / "rep" / "validation.md").read_text().splitlines()
               if line.startswith("| *noise ceiling* |"))
    assert row.count("*—*") == 3  # tile, nlp:random and overall


def test_the_report_says_what_served_each_collection(tmp_path) -> None:
    w = tmp_path / "weights.json"
    assert report.ensemble_served(w) == {}  # no ensemble: no section
    w.write_text(json.dumps({"collections": {"tile:xla": {"method": "best", "out_of_fold": {"best": 0.9}}},
                             "served": {"test": {"tile:xla": {"gnn": 1.0}, "layout:nlp:random": {"baseline": 1.0}}}}))
    got = report.ensemble_served(w)
    lines = report._served_lines(got)
    assert any(x.startswith("| tile:xla | gnn 1.00 | best | best 0.9000 |") for x in lines)
    assert any(x.startswith("| layout:nlp:random | baseline 1.00 | first available | - |") for x in lines)
