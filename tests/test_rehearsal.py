"""`make rehearsal` on a tiny generated tree: every stage runs in its own process, the table
has a row per stage (and per collection for preprocessing) with wall time, peak RSS and a
projection, and a second run reuses the generated data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builders import cfg
from pipeline.tools import rehearsal

TINY = ["generate.graphs.train=2", "generate.graphs.valid=1", "generate.graphs.test=1", "generate.tile_scale=1",
        "generate.sizes.xla.nodes=[150,200]", "generate.sizes.xla.config_nodes=[6,10]", "generate.sizes.xla.configs=[100,150]",
        "generate.sizes.nlp.nodes=[80,120]", "generate.sizes.nlp.config_nodes=[4,8]", "generate.sizes.nlp.configs=[100,150]",
        "generate.sizes.tile.configs=[30,60]", "generate.split_configs.valid=50", "generate.split_configs.test=50",
        "gnn_minutes=0.05", "gnn_args=['infer_permutations=1','epochs=3','samples_per_graph=4','model.hidden=16','model.layers=1']",
        "bench_args=['nodes=600','config_nodes=30','model.hidden=16','model.layers=1','k=8','infer_k=16','threads=1']"]


@pytest.mark.slow
def test_rehearsal_times_every_stage_and_projects_to_the_real_counts(tmp_path: Path) -> None:
    c = cfg("rehearsal", f"paths.data_dir={tmp_path / 'data'}", f"paths.reports={tmp_path / 'reports'}", *TINY)
    rows = rehearsal.rehearse(c)
    stages = [r["stage"] for r in rows]
    for name in ("prune", "pad", "extract", "baseline", "train_gbdt", "train_analytical"):
        # one row per collection (layout only for the analytical ranker)
        assert stages.count(name) == (4 if name == "train_analytical" else 5), stages
    for name in ("train_gnn", "ensemble", "submission"):
        assert stages.count(name) == 1, stages
    timed = [r for r in rows if r["wall_s"] is not None]
    assert all(r["wall_s"] > 0 and r["peak_rss_mb"] > 0 for r in timed)
    # the projection scales each row by the real graph counts over the rehearsal's (thousands of tile graphs vs 4)
    tile_prune = next(r for r in rows if r["stage"] == "prune" and r["collection"] == "tile:xla")
    assert tile_prune["projected_h"] > tile_prune["wall_s"] / 3600 * 1000
    # configs, not graphs, for the stages whose cost grows with them: a real valid layout graph
    # (60,000 configs assumed) costs the baseline 60,000 / 50 times a rehearsal one
    xla_base = next(r for r in rows if r["stage"] == "baseline" and r["collection"] == "layout:xla:random")
    per_graph = (7 * 60000 + 8 * 1000) / (50 + 50)
    assert xla_base["projected_h"] == pytest.approx(xla_base["wall_s"] * per_graph / 3600, rel=0.01)
    assert xla_base["projected_h_cores"] < xla_base["projected_h"]  # spread over the cores
    ensemble = next(r for r in rows if r["stage"] == "ensemble")
    assert ensemble["projected_h_cores"] == ensemble["projected_h"]  # one process
    gnn = [r for r in rows if r["stage"].startswith("train_gnn (training")]  # from the s per step logged after 20 steps
    assert len(gnn) == 5 and all(r["projected_h"] > 0 and r["gpu_h"] > 0 for r in gnn)
    for r in gnn:  # the step on the GPU: the batch built on the CPU against the model step's largest bound
        step = r["gpu_step"]
        assert step["bound"] in ("bytes", "flops", "launches") and step["model_s"] > 0
        assert step["waits_for_cpu"] == (step["batch_s"] > step["model_s"])
    infer = [r for r in rows if r["stage"] == "train_gnn (inference)"]
    assert len(infer) == 5 and all(r["gpu_h"] > 0 for r in infer)
    assert (tmp_path / "reports/submission.csv").is_file()  # its submission beside its report, none under submissions/
    report = json.loads((tmp_path / "reports/rehearsal.json").read_text())
    assert report["graphs"]["layout:nlp:random"]["valid"]["graphs"] == 1
    md = (tmp_path / "reports/rehearsal.md").read_text()
    assert "| prune | tile:xla |" in md and "CPU stages together" in md and "GB/s" in md
    # the merged member predictions serve the ensemble: every collection's test graph is in them
    from pipeline.io.predictions import read_predictions
    gbdt_test = read_predictions(Path(c.paths.predictions) / "gbdt" / "test.parquet")
    assert {gid.rsplit(":", 1)[0] for gid in gbdt_test} >= {"tile:xla", "layout:xla:random", "layout:nlp:default"}
    stamp = Path(c.paths.raw) / ".complete"
    before = stamp.stat().st_mtime_ns
    assert rehearsal.ensure_data(c) == Path(c.paths.raw) and stamp.stat().st_mtime_ns == before  # cached, not regenerated


def test_a_stage_peak_rss_is_its_own_not_the_size_of_the_process_that_spawned_it(tmp_path: Path) -> None:
    import sys

    import numpy as np

    ballast = np.ones(400 * 2**20 // 8)  # this process holds 400 MB resident while it spawns
    _, small, _ = rehearsal.run_process([sys.executable, "-c", "pass"], tmp_path / "small.log")
    _, large, _ = rehearsal.run_process([sys.executable, "-c", "import numpy; a = numpy.ones(300 * 2**20 // 8)"],
                                        tmp_path / "large.log")
    assert ballast.sum() > 0 and small < 150 < 300 < large < 400, (small, large)
    assert not list(tmp_path.glob("*.rss"))
