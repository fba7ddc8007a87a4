"""The GNN training stage on a tiny embedded sample: it learns, predicts every original config of
every valid and test graph, resumes a stopped run where it stopped (ending where an
uninterrupted run ends), predicts from checkpoints alone, and logs through a dummy logger."""

from __future__ import annotations

from pathlib import Path

import hydra.utils
import numpy as np
import pytest
import torch

from builders import build_tiny_tree
from pipeline import train_gnn
from pipeline.core.cli import compose
from pipeline.core.errors import DataError
from pipeline.core.logger import NullLogger
from pipeline.gnn import fit as gnn_fit, steps as gnn_steps, training
from pipeline.gnn.dataset import feature_dims
from pipeline.io.catalog import collection_dir, discover
from pipeline.io.npz import read_graph
from pipeline.io.predictions import read_predictions

SMALL = ["model.hidden=16", "model.layers=2", "k.default=16", "k.random=24", "k.tile=16", "valid_permutations=1",
         "infer_permutations=2", "progress=false", "lr=3e-3"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    return build_tiny_tree(tmp_path_factory.mktemp("tiny_train"))


def cfg(tiny, out: Path, *extra: str):
    return compose("train_gnn", [f"data={tiny['gnn']}", f"out={out / 'models'}", f"predictions={out / 'pred'}",
                                 *SMALL, *extra])


def test_training_lowers_the_loss_and_predicts_every_original_config(tiny, tmp_path: Path) -> None:
    summary = train_gnn.run(cfg(tiny, tmp_path, "epochs=6", "samples_per_graph=4"))
    assert set(summary) == {"tile:xla", "layout:xla:default", "layout:xla:random", "layout:nlp:default", "layout:nlp:random"}
    for c, s in summary.items():
        assert s["epochs"] == 6 and s["steps"] == 6 * 2 * 4
        assert s["train_loss"][-1] < s["train_loss"][0], (c, s["train_loss"])
    for split in ("valid", "test"):
        pred = read_predictions(tmp_path / "pred" / "gnn" / f"{split}.parquet")  # checks 0..C-1 exactly once per graph
        files = discover(tiny["raw"], splits=[split])
        assert set(pred) == {f.id for f in files}
        for f in files:
            assert pred[f.id].size == read_graph(f.path).num_configs
            assert np.isfinite(pred[f.id]).all()
        assert (tmp_path / "pred" / "gnn" / f"{split}.yaml").is_file()
    ck = torch.load(tmp_path / "models/layout/xla/random/best.pt", weights_only=False)
    assert ck["config"]["epochs"] == 6 and ck["model_config"]["kind"] == "layout" and ck["model_config"]["hidden"] == 16
    assert (tmp_path / "models" / ".complete").is_file()


def test_resume_continues_at_the_next_epoch_and_ends_where_an_uninterrupted_run_ends(tiny, tmp_path: Path) -> None:
    one = ["collections=[layout:nlp:random]", "epochs=3", "samples_per_graph=2", "model.dropout=0.1"]
    stopped = train_gnn.run(cfg(tiny, tmp_path / "a", *one, "stop_after=1"))["layout:nlp:random"]
    assert stopped["epochs"] == 1 and stopped["steps"] == 4
    assert not (tmp_path / "a/pred/gnn/valid.parquet").exists(), "a stopped run must not predict"
    assert not (tmp_path / "a/models/.complete").exists()
    resumed = train_gnn.run(cfg(tiny, tmp_path / "a", *one, "resume=true"))["layout:nlp:random"]
    assert resumed["epochs"] == 3 and resumed["steps"] == 12  # epochs 1 and 2 only: the counter went on from 4
    whole = train_gnn.run(cfg(tiny, tmp_path / "b", *one))["layout:nlp:random"]
    np.testing.assert_allclose(resumed["train_loss"], whole["train_loss"], rtol=1e-6)
    a = torch.load(tmp_path / "a/models/layout/nlp/random/last.pt", weights_only=False)
    b = torch.load(tmp_path / "b/models/layout/nlp/random/last.pt", weights_only=False)
    assert a["step"] == b["step"] == 12 and a["epoch"] == b["epoch"] == 2
    for k in b["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-5, atol=1e-6)
    pa, pb = read_predictions(tmp_path / "a/pred/gnn/test.parquet"), read_predictions(tmp_path / "b/pred/gnn/test.parquet")
    for gid in pb:
        np.testing.assert_allclose(pa[gid], pb[gid], rtol=1e-5, atol=1e-6)


def test_a_time_budget_stops_at_a_step_predicts_and_resume_ends_where_an_uninterrupted_run_ends(
        tiny, tmp_path: Path, caplog, monkeypatch) -> None:
    one = ["collections=[layout:nlp:random]", "epochs=3", "samples_per_graph=2", "model.dropout=0.1"]
    # a budget of 0 minutes runs out after the first step
    cut = train_gnn.run(cfg(tiny, tmp_path / "a", *one, "time_budget=0"))["layout:nlp:random"]
    assert cut["stopped"] == "time_budget" and cut["steps"] == 1 and cut["epochs"] == 0
    assert (tmp_path / "a/models/layout/nlp/random/best.pt").is_file(), "a cut run still has a model to predict with"
    assert (tmp_path / "a/pred/gnn/valid.parquet").is_file() and (tmp_path / "a/models/.complete").is_file()
    monkeypatch.setattr(gnn_fit, "ESTIMATE_AFTER", 3)
    with caplog.at_level("INFO", logger="pipeline.gnn.fit"):
        resumed = train_gnn.run(cfg(tiny, tmp_path / "a", *one, "resume=true"))["layout:nlp:random"]
    assert "min for the 8 steps left" in caplog.text  # 3 steps after the resumed step 1, of 12
    assert "min left for 2 epochs" in caplog.text
    assert resumed["stopped"] is None and resumed["steps"] == 12 and resumed["epochs"] == 3
    whole = train_gnn.run(cfg(tiny, tmp_path / "b", *one))["layout:nlp:random"]
    # the cut epoch's mean loss lacks its first step; every later epoch is the same
    np.testing.assert_allclose(resumed["train_loss"][1:], whole["train_loss"][1:], rtol=1e-6)
    a = torch.load(tmp_path / "a/models/layout/nlp/random/last.pt", weights_only=False)
    b = torch.load(tmp_path / "b/models/layout/nlp/random/last.pt", weights_only=False)
    assert a["step"] == b["step"] == 12
    for k in b["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-5, atol=1e-6)


def test_collections_trained_at_once_match_one_after_another(tiny, tmp_path: Path) -> None:
    two = ["collections=[tile:xla,layout:xla:default]", "epochs=2", "samples_per_graph=2"]
    apart = train_gnn.run(cfg(tiny, tmp_path / "a", *two, "jobs=2"))
    serial = train_gnn.run(cfg(tiny, tmp_path / "b", *two, "jobs=1"))
    assert list(apart) == list(serial) == ["tile:xla", "layout:xla:default"]
    for c in serial:
        assert apart[c]["train_loss"] == serial[c]["train_loss"] and apart[c]["best"] == serial[c]["best"]
    for split in ("valid", "test"):
        pa = read_predictions(tmp_path / f"a/pred/gnn/{split}.parquet")
        pb = read_predictions(tmp_path / f"b/pred/gnn/{split}.parquet")
        assert list(pa) == list(pb)
        for gid in pb:
            np.testing.assert_array_equal(pa[gid], pb[gid])


@pytest.mark.slow  # runs stages end to end
def test_submitit_local_jobs_train_one_collection_each_and_predict_mode_merges_them(tiny, tmp_path: Path) -> None:
    """The cluster recipe (docs/GPU.md) on the local launcher: one job per collection trains without
    predicting, then one predict run writes every collection's predictions."""
    import subprocess
    import sys

    from conftest import ROOT

    two = ["tile:xla", "layout:nlp:random"]
    common = [f"data={tiny['gnn']}", f"out={tmp_path / 'models'}", f"predictions={tmp_path / 'pred'}", *SMALL,
              "epochs=2", "samples_per_graph=2"]
    sweep = [sys.executable, "-m", "pipeline.train_gnn", "-m", f"collections=[{two[0]}],[{two[1]}]",
             "hydra/launcher=submitit_local", "splits=[]", *common, f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    proc = subprocess.run(sweep, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    job_logs = sorted((tmp_path / "sweep/.submitit").glob("*/*_log.err"))
    assert len(job_logs) == 2 and all("Job completed successfully" in p.read_text() for p in job_logs)
    for c in two:
        assert (tmp_path / "models" / collection_dir(c) / "best.pt").is_file()
    assert not (tmp_path / "pred").exists()
    train_gnn.run(cfg(tiny, tmp_path, "mode=predict"))
    pred = read_predictions(tmp_path / "pred/gnn/valid.parquet")
    assert set(pred) == {
        f.id for f in discover(tiny["raw"], collections=two, splits=["valid"])}


def test_a_memory_budget_checkpoints_then_lowers_k_and_a_roomy_one_changes_nothing(tiny, tmp_path: Path, caplog) -> None:
    from pipeline.gnn import memory

    one = ["collections=[layout:nlp:random]", "epochs=1", "samples_per_graph=2", "model.dropout=0.1"]
    plain = train_gnn.run(cfg(tiny, tmp_path / "a", *one))["layout:nlp:random"]
    roomy = train_gnn.run(cfg(tiny, tmp_path / "b", *one, "memory_budget=16"))["layout:nlp:random"]
    assert plain["memory"] is None and roomy["memory"]["k"] == 24 and not roomy["memory"]["checkpoint"]
    assert roomy["train_loss"] == plain["train_loss"]  # measuring drew no random numbers
    # a budget between the checkpointed and the plain step's need (measured on the largest graph)
    c = cfg(tiny, tmp_path / "c", *one)
    train = train_gnn.training_graphs(c, "layout:nlp:random")
    g = max(train, key=lambda g: g.graph.num_nodes + g.graph.edge_index.shape[0])
    model = gnn_steps.build_model(gnn_steps.model_config(c, feature_dims(train), "layout"))
    fp = memory.measure(model, g, training.Precision.make(torch.device("cpu"), False, "bfloat16").autocast)
    between = (fp.train.at(24) + fp.checkpointed.at(24)) / 2 / memory.GB
    with caplog.at_level("INFO", logger="pipeline.gnn.fit"):
        tight = train_gnn.run(cfg(tiny, tmp_path / "c", *one, f"memory_budget={between:.9f}"))["layout:nlp:random"]
    assert tight["memory"]["checkpoint"] and tight["memory"]["k"] == 24 and "with activation checkpointing at K=24" in caplog.text
    np.testing.assert_allclose(tight["train_loss"], plain["train_loss"], rtol=1e-5)  # the same step, recomputed
    fewer = fp.checkpointed.at(10) / memory.GB + 1e-9  # one byte over: the printed budget must not round below it
    lowered = train_gnn.run(cfg(tiny, tmp_path / "d", *one, f"memory_budget={fewer:.9f}"))["layout:nlp:random"]
    assert lowered["memory"]["checkpoint"] and lowered["memory"]["k"] == 10
    assert (tmp_path / "d/pred/gnn/test.parquet").is_file()
    with pytest.raises(DataError, match="memory_budget.*too small: 2 configs with checkpointing need"):
        train_gnn.run(cfg(tiny, tmp_path / "e", *one, "memory_budget=1e-9"))


def test_predict_mode_uses_the_best_checkpoints_only(tiny, tmp_path: Path) -> None:
    one = ["collections=[layout:xla:default]", "epochs=1", "samples_per_graph=1"]
    with pytest.raises(DataError, match="no best.pt"):
        train_gnn.run(cfg(tiny, tmp_path, *one, "mode=predict"))
    train_gnn.run(cfg(tiny, tmp_path, *one))
    before = read_predictions(tmp_path / "pred/gnn/test.parquet")
    (tmp_path / "pred/gnn/test.parquet").unlink()
    # conf/ changing after training must not matter: the architecture comes from the checkpoint
    train_gnn.run(cfg(tiny, tmp_path, *one, "mode=predict", "splits=[test]", "model.hidden=32"))
    after = read_predictions(tmp_path / "pred/gnn/test.parquet")
    assert set(after) == set(before)
    for gid in before:
        np.testing.assert_allclose(after[gid], before[gid], rtol=1e-6)


def test_weight_average_is_the_mean_of_the_updates_and_swapping_it_in_is_undone() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(3, 2))
    net.register_buffer("calls", torch.zeros((), dtype=torch.long))
    avg, seen = training.WeightAverage(), []
    for i in range(3):
        with torch.no_grad():
            net[0].weight.normal_()
            net.calls.fill_(i)
        seen.append(net[0].weight.detach().clone())
        avg.update(net)
    assert avg.count == 3
    torch.testing.assert_close(avg.state["0.weight"], torch.stack(seen).mean(0))
    assert int(avg.state["calls"]) == 2  # an integer buffer keeps its latest value
    with avg.swapped_in(net):
        torch.testing.assert_close(net[0].weight, torch.stack(seen).mean(0))
    torch.testing.assert_close(net[0].weight, seen[-1])


def test_swa_keeps_the_averaged_weights_and_resumes_the_average(tiny, tmp_path: Path) -> None:
    one = ["collections=[layout:nlp:random]", "epochs=3", "samples_per_graph=2", "swa_start=0.34"]  # averages epochs 2, 3
    whole = train_gnn.run(cfg(tiny, tmp_path / "b", *one))["layout:nlp:random"]
    assert [h["averaged_epochs"] for h in whole["history"]] == [0, 1, 2]
    b_last = torch.load(tmp_path / "b/models/layout/nlp/random/last.pt", weights_only=False)
    b_best = torch.load(tmp_path / "b/models/layout/nlp/random/best.pt", weights_only=False)
    assert b_last["swa"]["count"] == 2
    if b_best["epoch"] == 2:  # best.pt holds the average, last.pt the trained weights
        for k in b_best["model"]:
            torch.testing.assert_close(b_best["model"][k], b_last["swa"]["state"][k])
    assert any(not torch.equal(b_last["model"][k], b_last["swa"]["state"][k]) for k in b_last["model"])
    train_gnn.run(cfg(tiny, tmp_path / "a", *one, "stop_after=2"))
    train_gnn.run(cfg(tiny, tmp_path / "a", *one, "resume=true"))
    a_last = torch.load(tmp_path / "a/models/layout/nlp/random/last.pt", weights_only=False)
    assert a_last["swa"]["count"] == 2
    for k in b_last["swa"]["state"]:
        torch.testing.assert_close(a_last["swa"]["state"][k], b_last["swa"]["state"][k], rtol=1e-5, atol=1e-6)
    with pytest.raises(DataError, match="swa_start must be a fraction"):
        train_gnn.run(cfg(tiny, tmp_path / "c", *one[:-1], "swa_start=1.5"))


def test_bad_requests_fail_with_one_sentence(tiny, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="GNN tensors not found"):
        train_gnn.run(compose("train_gnn", [f"data={tmp_path / 'nothing'}"]))
    with pytest.raises(DataError, match="mode must be train or predict"):
        train_gnn.run(cfg(tiny, tmp_path, "mode=fit"))
    for choice, sentence in [("model.cross=attention", "model.cross=attention is not one of softmax, mha, none"),
                             ("model.norm=batch", "model.norm=batch is not one of"),
                             ("model.aggr=min", "model.aggr=min is not one of sum, mean, max"),
                             ("amp_dtype=float8", "amp_dtype=float8 is not one of"),
                             ("malloc=jemalloc", "malloc=jemalloc is not one of reuse, system"),
                             ("memory_budget=0", "memory_budget=0 must be a positive number of GB")]:
        with pytest.raises(DataError, match=sentence):
            train_gnn.run(cfg(tiny, tmp_path, choice))
    bad = tmp_path / "models/layout/xla/default/best.pt"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"truncated")
    with pytest.raises(DataError, match="best.pt.*cannot be read"):
        train_gnn.run(cfg(tiny, tmp_path, "mode=predict", "collections=[layout:xla:default]"))


def test_epochs_are_sharded_evenly_over_ranks() -> None:
    ranks = [training.epoch_order(5, 3, seed=0, epoch=2, dist=training.Dist(r, 2, r, torch.device("cpu"))) for r in range(2)]
    assert ranks[0].size == ranks[1].size == 8  # 15 samples padded to 16 by wrapping
    counts = np.bincount(np.concatenate(ranks), minlength=5)
    assert counts.sum() == 16 and (counts >= 3).all()  # every graph 3 times, one drawn again
    again = training.epoch_order(5, 3, seed=0, epoch=2, dist=training.Dist(0, 2, 0, torch.device("cpu")))
    assert np.array_equal(again, ranks[0])  # a resumed run draws the same epoch


def test_loggers() -> None:
    c = compose("train_gnn")
    assert isinstance(hydra.utils.instantiate(c.logger, run_config={}, _recursive_=False), NullLogger)
    pytest.importorskip("wandb")
    w = compose("train_gnn", ["logger=wandb", "logger.mode=disabled"])
    logger = hydra.utils.instantiate(w.logger, run_config={"a": 1}, _recursive_=False)
    logger.log({"x": 1.0}, step=1)
    logger.finish()


def test_bench_gnn_runs_on_a_small_generated_graph() -> None:
    from pipeline.tools.bench_gnn import bench_device, synthetic_graph

    g, shape = synthetic_graph(nodes=600, config_nodes=30, configs=40, hops=1, feat_dim=8, seed=0)
    assert shape["kept_nodes"] < 600 and g.num_configs == 40
    assert g.select(np.arange(3)).config_layout.shape == (3, 30, 18)
    c = compose("bench_gnn", ["k=8", "infer_k=16", "train_steps=1", "model.hidden=8", "model.layers=1"])
    train, infer = bench_device(c, g, shape, torch.device("cpu"))
    assert train["bench"] == "gnn_train" and train["configs_per_s"] > 0 and train["k"] == 8
    assert infer["bench"] == "gnn_infer" and infer["configs_per_s"] > 0
    # FLOPs: training counts forward and backward of K=8 configs, inference a forward of all 40
    per_config = infer["model_gflop"] / 40
    assert 2 * per_config < train["model_gflop"] / 8 < 4 * per_config
    for rec in (train, infer):
        assert rec["matmul_gflops"] > 0 and 0 < rec["of_matmul_rate"] and rec["peak_rss_mb"] > 0
    # what bounds a GPU step: bytes moved and kernels, per step and per inferred config / group
    assert train["model_gbytes"] > 0 and train["kernels"] > infer["kernels_per_group"] > 0
    assert infer["gbytes_per_config"] > 0 and infer["gflop_per_config"] == pytest.approx(per_config, rel=0.01)


def test_traffic_counts_each_operand_and_result_once_and_no_view() -> None:
    from pipeline.tools.bench_gnn import count

    a, b = torch.ones(8, 16), torch.ones(16, 4)
    got = count(lambda: torch.mm(a, b).t().relu())  # mm reads a, b, writes 8x4; t() is a view; relu reads and writes 4x8
    assert got == {"flops": 2 * 8 * 16 * 4, "bytes": 4 * (8 * 16 + 16 * 4 + 8 * 4 + 2 * 4 * 8), "kernels": 2}


def test_matmul_rate_counts_two_flops_a_multiply_add(monkeypatch) -> None:
    from pipeline.tools import bench_gnn

    clock = iter(range(100))
    monkeypatch.setattr(bench_gnn.time, "perf_counter", lambda: next(clock) * 0.5)  # every product takes 0.5 s
    assert bench_gnn.matmul_gflops(1000, 10, torch.device("cpu"), torch.float32, seconds=1.0) == pytest.approx(2 * 1000 * 10 * 10 / 0.5 / 1e9)


def test_train_step_clips_and_advances_the_schedule() -> None:
    from omegaconf import DictConfig

    from pipeline.tools.bench_gnn import synthetic_graph

    g, _ = synthetic_graph(nodes=300, config_nodes=10, configs=20, hops=1, feat_dim=8, seed=0)
    c = compose("train_gnn", ["model.hidden=8", "model.layers=1"])
    torch.manual_seed(0)
    model = gnn_steps.build_model(gnn_steps.model_config(c, {"node_feat_dim": 8}, "layout"))
    opt = training.make_optimizer(model, DictConfig({"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-2, "weight_decay": 0.0}))
    sched = training.warmup_cosine(opt, 10, warmup=0.4, min_lr_ratio=0.1)
    prec = training.Precision.make(torch.device("cpu"), True, "bfloat16")
    before = [p.detach().clone() for p in model.parameters()]
    loss = gnn_steps.train_step(model, model, *gnn_steps.build_batch(g, np.arange(8)), opt, sched, prec.scaler(), prec, grad_clip=1e-3)
    assert not loss.requires_grad and loss.item() > 0
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
    assert norm <= 1e-3 * 1.01  # the step's gradients were clipped
    assert sched.last_epoch == 1 and opt.param_groups[0]["lr"] == pytest.approx(1e-2 * 2 / 4)  # warmup step 2 of 4
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_bench_graph_cache_is_keyed_by_its_sizes(tmp_path: Path) -> None:
    from pipeline.tools import bench

    def graph(configs: int) -> Path:
        c = compose("bench", [f"paths.data_dir={tmp_path}", "generator=builtin", "nodes=200", "config_nodes=10", f"configs={configs}"])
        return bench.ensure_graph(c)

    first = graph(20)
    assert read_graph(first).num_configs == 20
    again = graph(30)  # another size: generated anew, not the cached 20-config graph
    assert again == first and read_graph(again).num_configs == 30
    assert len(list((tmp_path / "raw/bench/cache").glob("*.npz"))) == 2
    assert read_graph(graph(20)).num_configs == 20  # back to the first one, from the cache
    with pytest.raises(DataError, match="unknown generator 'zip'"):
        bench.ensure_graph(compose("bench", [f"paths.data_dir={tmp_path}", "generator=zip"]))


def test_seeds_train_one_model_each_and_predict_their_rank_average(tiny, tmp_path: Path) -> None:
    from models.ensemble import average_seeds

    one = ["collections=[layout:xla:default]", "epochs=1", "samples_per_graph=1"]
    c = cfg(tiny, tmp_path / "seeds", *one, "seeds=[0,1]")
    train_gnn.TRAINER.fit(c)
    models = tmp_path / "seeds" / "models"
    assert sorted(p.name for p in models.iterdir() if p.is_dir()) == ["seed0", "seed1"]
    # the seed-0 model is the one a plain run with seed=0 trains
    train_gnn.run(cfg(tiny, tmp_path / "plain", *one, "seed=0"))
    plain = read_predictions(tmp_path / "plain" / "pred" / "gnn" / "test.parquet")
    runs = [read_predictions(models / f"seed{s}" / "predictions" / "gnn" / "test.parquet") for s in (0, 1)]
    for gid in plain:
        np.testing.assert_allclose(runs[0][gid], plain[gid], rtol=1e-6)
    mean = average_seeds(runs, "rank")
    test = tmp_path / "seeds" / "pred" / "gnn" / "test.parquet"
    got = read_predictions(test)
    assert set(got) == set(mean) and all(np.allclose(got[g], mean[g]) for g in mean)
    # predict mode averages the same models
    test.unlink()
    train_gnn.TRAINER.fit(cfg(tiny, tmp_path / "seeds", *one, "mode=predict", "splits=[test]"))
    again = read_predictions(test)
    assert all(np.allclose(again[g], mean[g], atol=1e-6) for g in mean)


def test_a_final_fit_trains_for_the_fold_models_median_epochs(tiny, tmp_path: Path) -> None:
    import json

    from pipeline.train import folds

    processed = Path(tiny["gnn"]).parent
    (processed / ".complete").touch(exist_ok=True)
    c = cfg(tiny, tmp_path, "collections=[layout:xla:default]", "epochs=3", "samples_per_graph=1", "folds=2", "final=true")
    summaries = train_gnn.TRAINER.fit(c)
    doc = json.loads((tmp_path / "models" / "runs.json").read_text())
    assert [r["role"] for r in doc["runs"]] == ["fold", "fold", "final"] and doc["test_from"] == "final"
    best = [summaries[f"fold{f}"]["layout:xla:default"]["best_epoch"] + 1 for f in (0, 1)]
    ck = torch.load(tmp_path / "models" / "final" / "layout" / "xla" / "default" / "best.pt", weights_only=False)
    assert ck["config"]["epochs"] == folds.median_int(best, 0)
    oof = read_predictions(tmp_path / "pred" / "gnn" / "oof.parquet")
    labelled = discover(tiny["raw"], collections=["layout:xla:default"], splits=["train", "valid"])
    assert {f.id: read_graph(f.path).num_configs for f in labelled} == {g: s.size for g, s in oof.items()}


def test_training_is_bit_identical_with_batches_built_ahead_or_inline(tiny, tmp_path: Path) -> None:
    one = ["collections=[layout:xla:random]", "epochs=2", "samples_per_graph=3"]
    runs = {"p0": ["prefetch=0"], "p3": ["prefetch=3"], "w3": ["prefetch=2", "prefetch_workers=3"]}
    for name, over in runs.items():
        train_gnn.run(cfg(tiny, tmp_path / name, *one, *over))
    a, *others = (torch.load(tmp_path / name / "models/layout/xla/random/last.pt", weights_only=False) for name in runs)
    for b in others:
        assert a["model"].keys() == b["model"].keys()
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
        assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
        assert all(h["feed"]["build_s"] > 0 for h in b["history"])


def test_prefetch_keeps_order_raises_at_the_item_and_stops_when_left_early() -> None:
    import threading

    from pipeline.core.prefetch import Prefetch

    for depth, workers in ((0, 1), (1, 1), (4, 1), (2, 3)):
        assert [b for _, b in Prefetch(range(20), lambda i: i * i, depth, workers)] == [i * i for i in range(20)]

    def bad(i: int) -> int:
        if i == 3:
            raise ValueError("item 3")
        return i

    for workers in (1, 3):
        got = []
        with pytest.raises(ValueError, match="item 3"):
            for i, _ in Prefetch(range(10), bad, 2, workers):
                got.append(i)
        assert got == [0, 1, 2]
        before = threading.active_count()
        it = iter(Prefetch(range(1000), lambda i: i, 2, workers))
        next(it)
        it.close()
        assert threading.active_count() == before
