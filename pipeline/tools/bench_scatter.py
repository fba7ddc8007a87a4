"""Benchmark of the scatter backends (models/scatter.py) at the GNN's working sizes.

    python -m pipeline.tools.bench_scatter                     # K=64 N=5000 E=10000 H=64, CPU or CUDA
    python -m pipeline.tools.bench_scatter --device cpu --nodes 10000 --edges 20000

Prints one JSON line per backend and op: gather (K, N, H) -> (K, E, H); scatter sum, mean and
max (K, E, H) -> (K, N, H); and one bidirectional SAGE layer of models/gnn.py. Each line has the
median forward time and the median forward + backward time over `--repeats` runs, in ms. A
backend that is not installed gets one line saying so. Reads and writes nothing; the default
backend in conf/arch/gnn.yaml was chosen from its output.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Callable

import torch

from models import scatter as sc
from models.gnn import SAGEBlock


def _time(fn: Callable[[], torch.Tensor], repeats: int, backward: bool, device: torch.device) -> float:
    """Median wall time of `fn` (and of backward through its output) in ms, after one warm-up."""

    def once() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if backward:
            out.backward(torch.ones_like(out))
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) * 1e3

    once()
    return statistics.median(once() for _ in range(repeats))


def bench(k: int, n: int, e: int, h: int, repeats: int, device: torch.device, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(k, n, h, generator=g).to(device).requires_grad_()
    msg = torch.randn(k, e, h, generator=g).to(device).requires_grad_()
    edges = torch.randint(0, n, (e, 2), generator=g).to(device)
    consumer, producer = edges[:, 0], edges[:, 1]
    rows = []
    for backend, available in sc.BACKENDS.items():
        base = {"backend": backend, "K": k, "N": n, "E": e, "H": h, "device": str(device), "threads": torch.get_num_threads()}
        if not available:
            rows.append({**base, "available": False, "reason": "not installed (pip install torch-scatter)"})
            continue
        layer = SAGEBlock(h, scatter_backend=backend).to(device)
        ops: dict[str, Callable[[], torch.Tensor]] = {
            "gather": lambda: sc.gather(x, producer),
            "sum": lambda: sc.scatter_sum(msg, consumer, n, backend),
            "mean": lambda: sc.scatter_mean(msg, consumer, n, backend),
            "max": lambda: sc.scatter_max(msg, consumer, n, backend),
            "sage_layer": lambda: layer(x, consumer, producer),
        }
        for op, fn in ops.items():
            with torch.no_grad():
                fwd = _time(fn, repeats, backward=False, device=device)
            both = _time(fn, repeats, backward=True, device=device)
            rows.append({**base, "op": op, "fwd_ms": round(fwd, 2), "fwd_bwd_ms": round(both, 2), "repeats": repeats})
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", type=int, default=64, help="K, configs per batch")
    p.add_argument("--nodes", type=int, default=5000, help="N")
    p.add_argument("--edges", type=int, default=10000, help="E")
    p.add_argument("--hidden", type=int, default=64, help="H")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args(argv)
    for row in bench(a.configs, a.nodes, a.edges, a.hidden, a.repeats, torch.device(a.device)):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
