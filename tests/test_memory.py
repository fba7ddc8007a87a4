"""Memory that fits a budget (pipeline.gnn.memory): the measured peaks are the tensors' peaks,
linear in the configs per step, and the plan keeps K, then checkpoints, then lowers K."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.core.cli import compose
from pipeline.gnn import memory, steps as gnn_steps
from pipeline.gnn.training import Precision

GB = memory.GB


def footprint(train=(0.1, 1.0), checkpointed=(0.1, 0.3), infer=(0.05, 0.1)) -> memory.Footprint:
    """GB lines: (fixed, per config)."""
    line = lambda fp: memory.Line(fp[0] * GB, fp[1] * GB)  # noqa: E731
    return memory.Footprint(line(train), line(checkpointed), line(infer))


def test_a_step_that_fits_is_left_as_configured():
    p = memory.plan(10 * GB, 8, 16, footprint())
    assert (p.k, p.checkpoint, p.infer_k) == (8, False, 16) and p.train_bytes == pytest.approx(8.1 * GB)
    assert "fits as configured" in p.describe(10 * GB)


def test_checkpointing_comes_before_fewer_configs():
    p = memory.plan(5 * GB, 8, 16, footprint())  # 8.1 GB as is, 2.5 GB checkpointed
    assert (p.k, p.checkpoint) == (8, True) and p.train_bytes == pytest.approx(2.5 * GB)
    assert "with activation checkpointing at K=8" in p.describe(5 * GB)


def test_fewer_configs_when_checkpointing_is_not_enough():
    p = memory.plan(1.0 * GB, 8, 16, footprint())  # checkpointed: 0.1 + 0.3 k <= 1.0 -> k = 3
    assert (p.k, p.checkpoint, p.infer_k) == (3, True, 9) and p.train_bytes <= 1.0 * GB
    assert "fewer configs per step" in p.describe(1.0 * GB)


def test_a_budget_below_two_checkpointed_configs_is_refused():
    with pytest.raises(ValueError, match="too small: 2 configs with checkpointing need ~0.70 GB"):
        memory.plan(0.5 * GB, 8, 16, footprint())


def test_peak_bytes_sees_the_largest_tensor_alive_at_once():
    def work():
        a = torch.ones(1000, 1000)  # 4 MB
        b = a * 2  # 8 MB alive
        del a
        return (b + 1).sum()  # b and b + 1: 8 MB again

    peak = memory.peak_bytes(work, torch.device("cpu"))
    assert 8e6 <= peak < 9e6, peak


@pytest.fixture(scope="module")
def graph():
    from pipeline.tools.bench_gnn import synthetic_graph

    g, _ = synthetic_graph(nodes=1500, config_nodes=60, configs=40, hops=1, feat_dim=8, seed=0)
    return g


def model_for(graph, *extra):
    cfg = compose("train_gnn", ["model.hidden=16", "model.layers=3", "model.dropout=0.1", *extra])
    torch.manual_seed(0)
    return gnn_steps.build_model(gnn_steps.model_config(cfg, {"node_feat_dim": 8}, "layout"))


def test_measured_lines_predict_a_larger_step_and_leave_no_trace(graph):
    model = model_for(graph)
    prec = Precision.make(torch.device("cpu"), True, "bfloat16")
    state = torch.random.get_rng_state()
    fp = memory.measure(model, graph, prec.autocast)
    assert torch.equal(state, torch.random.get_rng_state()) and all(p.grad is None for p in model.parameters())
    assert model.training and not model.checkpoint
    assert 0 < fp.checkpointed.per_config < fp.train.per_config / 1.5 and 0 < fp.infer.per_config < fp.train.per_config

    def step(k):
        scores = model(graph.select(np.arange(k)))
        model.loss(scores.float(), torch.from_numpy(graph.runtime[:k])).backward()

    measured = memory.peak_bytes(lambda: step(16), torch.device("cpu"))
    assert fp.train.at(16) == pytest.approx(measured, rel=0.1)  # extrapolated from 2 and 4 configs
