"""`make gpu-check` on a machine without CUDA says so and exits 0; its summary lines name the
benchmark's figures."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from pipeline.tools import gpu_check


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: gpu-check would run the GPU tests")
def test_without_cuda_it_says_so_and_exits_0() -> None:
    proc = subprocess.run([sys.executable, "-m", "pipeline.tools.gpu_check"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("gpu-check: no CUDA device visible") and "nothing to check" in proc.stdout
    assert gpu_check.no_gpu_reason() in proc.stdout


def test_summary_lines_carry_the_rate_the_fraction_and_the_memory() -> None:
    rec = {"bench": "gnn_train", "device": "cuda", "configs_per_s": 812.5, "k": 64, "kept_nodes": 3919,
           "of_matmul_rate": 0.1234, "matmul_gflops": 250000.0, "peak_gpu_mb": 5120}
    (line,) = gpu_check.bench_lines([rec])
    assert line == ("bench-gnn train cuda: 812.5 configs/s, K=64, 3919 nodes, 0.123 of the 250000 GFLOP/s matmul rate, "
                    "peak GPU 5120 MB")
    (infer,) = gpu_check.bench_lines([{**rec, "bench": "gnn_infer"}])
    assert infer.startswith("bench-gnn infer cuda:")
