"""Ranking losses against values computed by hand on 3-4 configs (lower score = faster)."""

from __future__ import annotations

import math

import pytest
import torch

from models.losses import RankingLoss, get_loss, listmle, margin_ranking, pairwise_hinge

SCORES = torch.tensor([0.0, 0.5, 2.0])
RUNTIMES = torch.tensor([1.0, 3.0, 2.0])  # fastest first: config 0, then 2, then 1


def test_hinge_by_hand() -> None:
    # faster pairs (i, j): (0,1) gap s1-s0 = 0.5 -> 0.5; (0,2) gap 2 -> 0; (2,1) gap -1.5 -> 2.5
    assert pairwise_hinge(SCORES, RUNTIMES, margin=1.0).item() == pytest.approx(3.0 / 3)


def test_hinge_ignores_ties() -> None:
    scores = torch.tensor([0.0, 0.5, 2.0, 0.25])
    runtimes = torch.tensor([1.0, 3.0, 2.0, 3.0])  # configs 1 and 3 tie: that pair is skipped
    # (0,1) 0.5, (0,2) 0, (2,1) 2.5, (0,3) 1-0.25 = 0.75, (2,3) 1-(0.25-2) = 2.75; 5 pairs
    assert pairwise_hinge(scores, runtimes, margin=1.0).item() == pytest.approx(6.5 / 5)
    flat = torch.tensor([0.3, -0.2, 0.9], requires_grad=True)
    loss = pairwise_hinge(flat, torch.ones(3))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(flat.grad == 0)


def test_listmle_by_hand() -> None:
    # true order 0, 2, 1; utilities u = -score in that order: 0, -2, -0.5
    e = math.exp
    expected = (math.log(e(0) + e(-2) + e(-0.5)) - 0) + (math.log(e(-2) + e(-0.5)) + 2) + 0.0
    assert listmle(SCORES, RUNTIMES).item() == pytest.approx(expected / 3, rel=1e-6)


def test_margin_by_hand() -> None:
    # pairs (0,1), (1,2), (2,0); y = sign(r_i - r_j); max(0, -y (s_i - s_j) + 0.1)
    # (0,1): y=-1 -> max(0, (0 - 0.5) + 0.1) = 0; (1,2): y=+1 -> max(0, -(0.5 - 2) + 0.1) = 1.6;
    # (2,0): y=+1 -> max(0, -(2 - 0) + 0.1) = 0
    assert margin_ranking(SCORES, RUNTIMES, margin=0.1).item() == pytest.approx(1.6 / 3)
    ref = torch.nn.MarginRankingLoss(margin=0.1)(SCORES, SCORES.roll(-1), torch.sign(RUNTIMES - RUNTIMES.roll(-1)))
    assert margin_ranking(SCORES, RUNTIMES).item() == pytest.approx(ref.item())


@pytest.mark.parametrize("name", ["hinge", "listmle", "margin"])
def test_right_order_costs_less(name: str) -> None:
    runtimes = torch.tensor([4.0, 1.0, 3.0, 2.0])
    loss = get_loss(name)
    right = loss(runtimes * 2.0, runtimes)  # score increasing with runtime
    wrong = loss(-runtimes * 2.0, runtimes)
    assert right.item() < wrong.item()
    s = torch.zeros(4, requires_grad=True)
    loss(s, runtimes).backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


def test_selection_and_errors() -> None:
    assert RankingLoss().name == "hinge"
    by_name = RankingLoss("margin", margin=0.5)(SCORES, RUNTIMES)
    assert by_name.item() == pytest.approx(margin_ranking(SCORES, RUNTIMES, 0.5).item())
    with pytest.raises(ValueError, match="unknown loss"):
        RankingLoss("mse")
    with pytest.raises(ValueError, match="must both be"):
        RankingLoss()(SCORES, RUNTIMES[:2])
    s = torch.zeros(3, requires_grad=True)
    out = margin_ranking(s, torch.ones(3))  # every pair tied: 0, still differentiable
    out.backward()
    assert out.item() == 0.0
