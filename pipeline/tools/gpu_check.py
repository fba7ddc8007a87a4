"""Verify a CUDA machine in one command: the GPU tests, then the GNN benchmark on the GPU.

    python -m pipeline.tools.gpu_check [--bench-args k=128 ...]     (make gpu-check)

Runs `tests/test_gpu.py` (a bf16 and an fp16 training run, the checkpoint reloaded to predict
the same scores, a 1-rank torchrun run on nccl), then `python -m pipeline.tools.bench_gnn
devices=[cuda]` (a full-size layout graph), and prints one summary: each test's outcome and the
benchmark's configs/s, fraction of the matmul rate and peak GPU memory. Exit status 0 when
everything passed, 1 when a test or the benchmark failed. On a machine without a CUDA device
it says so and exits 0: there is nothing to check.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = "tests/test_gpu.py"
TEST_TIMEOUT_S, BENCH_TIMEOUT_S = 240, 150  # within 5 minutes together


def no_gpu_reason() -> str | None:
    """Why there is nothing to check here, or None when torch sees a CUDA device."""
    import torch

    if torch.cuda.is_available():
        return None
    build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a CPU-only build")
    return f"no CUDA device visible ({build}; torch.cuda.is_available() is False): nothing to check on this machine"


def run_tests() -> tuple[bool, list[str]]:
    """pytest on the GPU tests; (passed, one line per test outcome)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", TESTS]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=TEST_TIMEOUT_S)
    outcomes = [line for line in proc.stdout.splitlines() if line.split(" ", 1)[0] in ("PASSED", "FAILED", "ERROR", "SKIPPED")]
    if proc.returncode != 0 and not outcomes:
        outcomes = proc.stdout.splitlines()[-20:] + proc.stderr.splitlines()[-20:]
    return proc.returncode == 0, outcomes


def run_bench(extra: list[str]) -> tuple[bool, list[dict], str]:
    """bench_gnn on cuda; (ran, its JSON records, the tail of its log when it failed)."""
    cmd = [sys.executable, "-m", "pipeline.tools.bench_gnn", "devices=[cuda]", *extra]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=BENCH_TIMEOUT_S)
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode == 0 and len(records) == 2, records, (proc.stdout + proc.stderr)[-2000:]


def bench_lines(records: list[dict]) -> list[str]:
    """One line per benchmark record: what it timed and how close to the machine's limit."""
    lines = []
    for r in records:
        what = "train" if r["bench"] == "gnn_train" else "infer"
        lines.append(f"bench-gnn {what:5} {r['device']}: {r['configs_per_s']} configs/s, K={r['k']}, "
                     f"{r['kept_nodes']} nodes, {r['of_matmul_rate']:.3g} of the {r['matmul_gflops']:.0f} GFLOP/s matmul rate, "
                     f"peak GPU {r.get('peak_gpu_mb', '-')} MB"
                     + (f"; per step: batch {r['batch_s_per_step']} s, model {r['model_s_per_step']} s, waited "
                        f"{r['waited_fraction']:.0%} with prefetch={r['prefetch']}" if "batch_s_per_step" in r else ""))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--bench-args", nargs="*", default=[], help="overrides passed to pipeline.tools.bench_gnn")
    args = parser.parse_args(argv)
    reason = no_gpu_reason()
    if reason:
        print(f"gpu-check: {reason}")
        return 0
    t0 = time.perf_counter()
    tests_ok, outcomes = run_tests()
    bench_ok, records, tail = run_bench(args.bench_args)
    print("gpu-check summary")
    for line in outcomes:
        print(f"  {line}")
    for line in bench_lines(records):
        print(f"  {line}")
    if not bench_ok:
        print(f"  bench-gnn failed:\n{tail}")
    ok = tests_ok and bench_ok
    print(f"gpu-check: {'passed' if ok else 'FAILED'} in {time.perf_counter() - t0:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
