"""Ranking losses over the K configs of one graph.

Every loss takes `scores` (K,) with LOWER = predicted faster (pipeline.io.predictions' convention)
and `runtimes` (K,) measured (any positive scale: only their order matters), and returns a
scalar. Configs with equal runtime are never pushed apart.

- `hinge` (default, the 1st place's and the TpuGraphs paper's choice): mean over all pairs
  (i, j) with runtime_i < runtime_j of `relu(margin - (score_j - score_i))`.
- `listmle`: the Plackett-Luce negative log-likelihood of the true order (fastest first) under
  utilities `-score`, divided by K so its scale does not grow with the batch.
- `margin`: torch's `MarginRankingLoss` form, `max(0, -y * (x1 - x2) + margin)`, on the K pairs
  (i, i+1 mod K) of the batch order only: O(K) pairs instead of O(K^2), a noisier but cheaper
  signal (batches are random samples of configs, so the pairs are random too).

    loss_fn = get_loss("hinge", margin=1.0); loss_fn(scores, runtimes).backward()
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOSSES = ("hinge", "listmle", "margin")


def pairwise_hinge(scores: Tensor, runtimes: Tensor, margin: float = 1.0) -> Tensor:
    """Mean hinge over every ordered pair with runtime_i < runtime_j (0 when there is none).

    Shapes: scores (K,), runtimes (K,) -> ().
    """
    faster = runtimes.unsqueeze(1) < runtimes.unsqueeze(0)  # (K, K): [i, j] = i faster than j
    gap = scores.unsqueeze(0) - scores.unsqueeze(1)  # (K, K): [i, j] = score_j - score_i
    loss = F.relu(margin - gap)
    n = faster.sum()
    return (loss * faster).sum() / n.clamp(min=1)


def listmle(scores: Tensor, runtimes: Tensor) -> Tensor:
    """ListMLE: -log P(true order | Plackett-Luce with utilities -score), divided by K.

    Ties in runtime keep the batch order (a stable sort), so they cost a constant, not a bias
    in one direction.
    Shapes: scores (K,), runtimes (K,) -> ().
    """
    order = torch.argsort(runtimes, stable=True)  # fastest first
    u = -scores[order]  # (K,) utilities, best first
    tail = torch.logcumsumexp(u.flip(0), dim=0).flip(0)  # (K,) log sum_{j >= i} exp(u_j)
    return (tail - u).sum() / scores.numel()


def margin_ranking(scores: Tensor, runtimes: Tensor, margin: float = 0.1) -> Tensor:
    """`nn.MarginRankingLoss(margin)` on the pairs (i, i+1 mod K), tied pairs dropped.

    y = sign(runtime_i - runtime_j): +1 when i is slower, so it should score higher.
    Shapes: scores (K,), runtimes (K,) -> ().
    """
    x2, r2 = scores.roll(-1), runtimes.roll(-1)
    y = torch.sign(runtimes - r2).to(scores.dtype)
    keep = y != 0
    if not bool(keep.any()):
        return scores.sum() * 0.0  # keeps the graph connected for backward
    return F.margin_ranking_loss(scores[keep], x2[keep], y[keep], margin=margin)


class RankingLoss(nn.Module):
    """One of `LOSSES` behind a module, so configs can name it.

    Args:
        name: `hinge` (default), `listmle` or `margin`.
        margin: the hinge / margin-ranking margin (ignored by listmle); None = the loss's
            own default (1.0 hinge, 0.1 margin).
    """

    def __init__(self, name: str = "hinge", margin: float | None = None):
        super().__init__()
        if name not in LOSSES:
            raise ValueError(f"unknown loss '{name}' (one of {LOSSES})")
        self.name = name
        self.margin = margin

    def forward(self, scores: Tensor, runtimes: Tensor) -> Tensor:
        if scores.shape != runtimes.shape or scores.dim() != 1:
            raise ValueError(f"scores {tuple(scores.shape)} and runtimes {tuple(runtimes.shape)} must both be (K,)")
        kw = {} if self.margin is None else {"margin": self.margin}
        if self.name == "hinge":
            return pairwise_hinge(scores, runtimes, **kw)
        if self.name == "listmle":
            return listmle(scores, runtimes)
        return margin_ranking(scores, runtimes, **kw)

    def extra_repr(self) -> str:
        return f"name={self.name}, margin={self.margin}"


def get_loss(name: str = "hinge", margin: float | None = None) -> RankingLoss:
    return RankingLoss(name, margin)
