"""Scatter (segment) reductions over the node dimension, with a swappable backend.

Message passing gathers node states along edges, `(K, N, H) -> (K, E, H)`, then reduces them
back onto nodes, `(K, E, H) -> (K, N, H)`: the index (which node each edge row lands on) is the
same for every config, so it stays one `(E,)` vector and is never expanded to `(K, E, H)`.

Backends (`BACKENDS` says which are importable here; `set_backend` picks the default, a call's
`backend=` overrides it):
- `native` (default): `Tensor.index_add_` for sum and mean, `Tensor.index_reduce_(amax)` for
  max; no dependency beyond torch.
- `torch_scatter`: `torch_scatter.scatter`, when the package is installed (it has no wheels
  for every torch, so it is optional).

Both give the same results: a node that receives nothing gets 0 for every reduction; mean
divides by the number of incoming rows. `python -m pipeline.tools.bench_scatter` times every
installed backend; native is the default because it needs nothing and, on CPU at K=64,
N=5000, E=10000, H=64, sum/mean take ~50-60 ms forward and ~150-180 ms forward + backward.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

REDUCTIONS = ("sum", "mean", "max")

try:  # detected once; a broken build (ABI mismatch) counts as absent
    import torch_scatter as _torch_scatter  # type: ignore[import-not-found]
except (ImportError, OSError):  # pragma: no cover - depends on the environment
    _torch_scatter = None

BACKENDS: dict[str, bool] = {"native": True, "torch_scatter": _torch_scatter is not None}
_default = "native"


def set_backend(name: str) -> None:
    """Make `name` (`native` or `torch_scatter`) the default backend of this module."""
    global _default
    _default = check_backend(name)


def get_backend() -> str:
    return _default


def check_backend(name: str) -> str:
    """`name` if it is a known, installed backend; ValueError / RuntimeError otherwise."""
    if name not in BACKENDS:
        raise ValueError(f"unknown scatter backend '{name}' (one of {sorted(BACKENDS)})")
    if not BACKENDS[name]:
        raise RuntimeError(f"scatter backend '{name}' is not installed here (pip install torch-scatter)")
    return name


def gather(x: Tensor, index: Tensor) -> Tensor:
    """Rows of the node dimension picked by `index`.

    Shapes: x (..., N, H); index (E,) long -> (..., E, H).
    """
    return x.index_select(-2, index)


def scatter(src: Tensor, index: Tensor, dim_size: int, reduce: str = "sum", backend: str | None = None) -> Tensor:
    """Reduce the rows of `src` onto `dim_size` nodes: `out[..., index[e], :] (+)= src[..., e, :]`.

    Args:
        src: (..., E, H) float, e.g. (K, E, H) messages of K configs.
        index: (E,) long in [0, dim_size): the node each row lands on.
        dim_size: N, the number of nodes.
        reduce: `sum`, `mean` or `max` (empty nodes get 0 for each).
        backend: None = the module default (`set_backend`).

    Shapes: src (..., E, H) -> (..., N, H).
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"unknown reduction '{reduce}' (one of {REDUCTIONS})")
    name = _default if backend is None else check_backend(backend)
    if name == "torch_scatter":
        return _torch_scatter.scatter(src, index, dim=-2, dim_size=dim_size, reduce=reduce)
    return _native(src, index, dim_size, reduce)


def _native(src: Tensor, index: Tensor, dim_size: int, reduce: str) -> Tensor:
    if reduce == "max":
        out = src.new_zeros((*src.shape[:-2], dim_size, src.shape[-1]))
        # include_self=False: a node's result is the max of its rows only; untouched nodes keep 0.
        with warnings.catch_warnings():  # index_reduce_ is flagged beta; it is tested here
            warnings.filterwarnings("ignore", message=r"index_reduce\(\) is in beta")
            return out.index_reduce_(src.dim() - 2, index, src, "amax", include_self=False)
    out = _IndexAdd.apply(src, index, dim_size)
    if reduce == "mean":
        count = torch.bincount(index, minlength=dim_size).clamp_(min=1).to(src.dtype)  # (N,)
        out.div_(count.unsqueeze(-1))  # in place: neither backward needs out's value
    return out


class _IndexAdd(torch.autograd.Function):
    """`index_add_` over dim -2 whose backward keeps only the index: autograd's own keeps the
    (K, E, H) source alive until backward, 2 (K, N, H)-sized tensors per direction and layer."""

    @staticmethod
    def forward(ctx, src: Tensor, index: Tensor, dim_size: int) -> Tensor:
        ctx.save_for_backward(index)
        out = src.new_zeros((*src.shape[:-2], dim_size, src.shape[-1]))
        return out.index_add_(src.dim() - 2, index, src)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        (index,) = ctx.saved_tensors
        return grad.index_select(-2, index), None, None


def scatter_sum(src: Tensor, index: Tensor, dim_size: int, backend: str | None = None) -> Tensor:
    """(..., E, H) -> (..., N, H): sum of the rows landing on each node."""
    return scatter(src, index, dim_size, "sum", backend)


def scatter_mean(src: Tensor, index: Tensor, dim_size: int, backend: str | None = None) -> Tensor:
    """(..., E, H) -> (..., N, H): mean of the rows landing on each node (0 where none)."""
    return scatter(src, index, dim_size, "mean", backend)


def scatter_max(src: Tensor, index: Tensor, dim_size: int, backend: str | None = None) -> Tensor:
    """(..., E, H) -> (..., N, H): elementwise max of the rows landing on each node (0 where none)."""
    return scatter(src, index, dim_size, "max", backend)
