"""Validation report on a tiny embedded sample: files exist, PNGs are real images, figures agree
with `pipeline.evaluate`, an oracle scores perfectly, a model that misses a graph is left out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline import baseline, evaluate, report, sample_data, submission
from pipeline.catalog import discover
from pipeline.cli import compose
from pipeline.errors import DataError
from pipeline.predictions import write_predictions

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _cfg(name: str, **kw):
    return compose(name, [f"{k}={v}" for k, v in kw.items()])


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> dict[str, Path]:
    """A tiny raw tree (valid split only) and the baseline's predictions on it."""
    root = tmp_path_factory.mktemp("report")
    d = {"raw": root / "raw", "pred": root / "pred", "root": root}
    sample_data.generate(_cfg("sample_data", out=d["raw"], splits="[valid]", **{"graphs.valid": 2, "tile_scale": 2}))
    baseline.main(_cfg("baseline", data=d["raw"], splits="[valid]", predictions=d["pred"]))
    return d


def _run(sample: dict[str, Path], out: Path, **kw) -> dict:
    return report.run(_cfg("report", data=sample["raw"], predictions=sample["pred"], out=out, **kw))


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
    submission.main(_cfg("submission", data=sample["raw"], split="valid", submission=csv, keep_copy=False,
                         predictions=sample["pred"] / "baseline" / "valid.parquet"))
    want = evaluate.run(csv, sample["raw"], "valid", None)
    assert set(got["collections"]) == set(want["collections"]) and len(want["collections"]) == 5
    for c, v in want["collections"].items():
        assert got["collections"][c] == pytest.approx(v, abs=1e-12)
    assert got["score"] == pytest.approx(want["score"], abs=1e-12)
    assert got["per_graph"] == pytest.approx(want["per_graph"], abs=1e-12)


def test_oracle_and_incomplete_models(sample, tmp_path) -> None:
    files = discover(sample["raw"], splits=["valid"])
    runtimes = evaluate.load_runtimes(files)
    pred = tmp_path / "pred"
    (pred / "baseline").mkdir(parents=True)
    for f in (sample["pred"] / "baseline").iterdir():
        (pred / "baseline" / f.name).write_bytes(f.read_bytes())
    write_predictions(pred / "ensemble" / "valid.parquet", runtimes)  # lower runtime = lower score: perfect
    missing = dict(list(runtimes.items())[1:])
    write_predictions(pred / "gnn" / "valid.parquet", missing)
    out = tmp_path / "rep"
    result = report.run(_cfg("report", data=sample["raw"], predictions=pred, out=out, top_k=10))
    assert list(result["models"]) == ["baseline", "ensemble"]
    assert "gnn" in result["skipped"] and next(iter(runtimes)) in result["skipped"]["gnn"]
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
        report.run(_cfg("report", data=sample["raw"], predictions=tmp_path / "none", out=tmp_path / "b"))
    with pytest.raises(DataError, match="predictions not found"):
        _run(sample, tmp_path / "c", models="[gbdt]")
