"""Scatter reductions against a plain Python loop; backends agree; the backend switch."""

from __future__ import annotations

import pytest
import torch

from models import scatter as sc

REDUCTIONS = ["sum", "mean", "max"]


def _loop_reference(src: torch.Tensor, index: torch.Tensor, n: int, reduce: str) -> torch.Tensor:
    """out[..., i, :] = reduce of src[..., e, :] over e with index[e] == i; 0 where none."""
    out = torch.zeros(*src.shape[:-2], n, src.shape[-1], dtype=src.dtype)
    for i in range(n):
        rows = [e for e in range(index.numel()) if int(index[e]) == i]
        if not rows:
            continue
        picked = src[..., rows, :]  # (..., r, H)
        if reduce == "sum":
            out[..., i, :] = picked.sum(-2)
        elif reduce == "mean":
            out[..., i, :] = picked.sum(-2) / len(rows)
        else:
            out[..., i, :] = picked.max(-2).values
    return out


@pytest.fixture
def case() -> tuple[torch.Tensor, torch.Tensor, int]:
    g = torch.Generator().manual_seed(0)
    n = 6
    index = torch.tensor([0, 2, 2, 3, 0, 2, 5, 3, 0], dtype=torch.long)  # nodes 1 and 4 receive nothing
    src = torch.randn(3, index.numel(), 4, generator=g, dtype=torch.float64) - 2.0  # mostly negative: max must not clip at 0
    return src, index, n


@pytest.mark.parametrize("reduce", REDUCTIONS)
def test_native_matches_loop(case, reduce: str) -> None:
    src, index, n = case
    got = sc.scatter(src, index, n, reduce, backend="native")
    assert got.shape == (3, n, 4)
    torch.testing.assert_close(got, _loop_reference(src, index, n, reduce))
    assert torch.all(got[:, [1, 4]] == 0), "nodes that receive nothing must be 0"
    # 2-D input (one config, or config-independent states) goes through the same code
    torch.testing.assert_close(sc.scatter(src[0], index, n, reduce, backend="native"), _loop_reference(src[0], index, n, reduce))


@pytest.mark.parametrize("reduce", REDUCTIONS)
def test_native_gradients(case, reduce: str) -> None:
    src, index, n = case
    src = src.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda s: sc.scatter(s, index, n, reduce, backend="native"), (src,))


def test_named_helpers_and_gather(case) -> None:
    src, index, n = case
    torch.testing.assert_close(sc.scatter_sum(src, index, n), _loop_reference(src, index, n, "sum"))
    torch.testing.assert_close(sc.scatter_mean(src, index, n), _loop_reference(src, index, n, "mean"))
    torch.testing.assert_close(sc.scatter_max(src, index, n), _loop_reference(src, index, n, "max"))
    x = torch.arange(2 * 5 * 3, dtype=torch.float32).view(2, 5, 3)
    torch.testing.assert_close(sc.gather(x, torch.tensor([4, 0, 4])), x[:, [4, 0, 4]])


def test_empty_edge_set() -> None:
    out = sc.scatter_mean(torch.zeros(2, 0, 3), torch.zeros(0, dtype=torch.long), 4)
    assert out.shape == (2, 4, 3) and torch.all(out == 0)


NO_TORCH_SCATTER = "torch-scatter is not installed (no wheels for this torch; optional backend)"


@pytest.mark.skipif(not sc.BACKENDS["torch_scatter"], reason=NO_TORCH_SCATTER)
@pytest.mark.parametrize("reduce", REDUCTIONS)
def test_backends_agree(case, reduce: str) -> None:
    src, index, n = case
    src_a = src.clone().requires_grad_()
    src_b = src.clone().requires_grad_()
    a = sc.scatter(src_a, index, n, reduce, backend="native")
    b = sc.scatter(src_b, index, n, reduce, backend="torch_scatter")
    torch.testing.assert_close(a, b)
    w = torch.randn_like(a)
    (a * w).sum().backward()
    (b * w).sum().backward()
    torch.testing.assert_close(src_a.grad, src_b.grad)


def test_backend_switch() -> None:
    assert sc.get_backend() == "native", "native is the measured default"
    assert sc.BACKENDS["native"]
    with pytest.raises(ValueError, match="unknown scatter backend"):
        sc.set_backend("cuda_magic")
    with pytest.raises(ValueError, match="unknown reduction"):
        sc.scatter(torch.zeros(1, 2, 3), torch.zeros(2, dtype=torch.long), 2, "min")
    if not sc.BACKENDS["torch_scatter"]:
        with pytest.raises(RuntimeError, match="not installed"):
            sc.set_backend("torch_scatter")
    else:
        sc.set_backend("torch_scatter")
        try:
            assert sc.get_backend() == "torch_scatter"
        finally:
            sc.set_backend("native")
    assert sc.get_backend() == "native"
