"""Layer selectors that train nothing (transferbench/selectors.py) and the kNN pruning of the
advice: relative gradient norms against a hand computation, the pruning rule on hand-made
candidates. That they never read the sweep is tests/test_advise.py's guard (they run inside
``advise``)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from transferbench.advise import Candidate, prune
from transferbench.interfaces import Layer
from transferbench.regret import Regime
from transferbench.selectors import best_layer, relative_gradient_norms


def _hand_rgn(w1: torch.Tensor, w2: torch.Tensor, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> list[float]:
    """||dL/dW|| / ||W|| for z = W2 (W1 x), L the mean cross-entropy of each batch, averaged
    over the batches: the chain rule written out."""
    g1, g2 = torch.zeros_like(w1), torch.zeros_like(w2)
    for x, y in batches:
        h = x @ w1.T
        p = torch.softmax(h @ w2.T, dim=1)
        dz = (p - torch.eye(w2.shape[0], dtype=p.dtype)[y]) / len(y)  # dL/dz of the batch mean
        g2 += dz.T @ h
        g1 += (dz @ w2).T @ x
    g1, g2 = g1 / len(batches), g2 / len(batches)
    return [float(g1.norm() / w1.norm()), float(g2.norm() / w2.norm())]


def test_relative_gradient_norms_equal_the_hand_computed_ratio():
    w1 = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.8, -1.0]], dtype=torch.float64)
    w2 = torch.tensor([[2.0, -1.0], [0.5, 1.5], [-0.7, 0.2]], dtype=torch.float64)
    model = nn.Sequential(nn.Linear(3, 2, bias=False), nn.Linear(2, 3, bias=False)).double()
    with torch.no_grad():
        model[0].weight.copy_(w1)
        model[1].weight.copy_(w2)
    model[0].weight.requires_grad_(False)  # a frozen layer still gets its RGN
    batches = [(torch.tensor([[1.0, 0.0, 2.0], [0.5, -1.0, 1.0]], dtype=torch.float64), torch.tensor([0, 2])),
               (torch.tensor([[-1.0, 1.0, 0.0]], dtype=torch.float64), torch.tensor([1]))]
    layers = [Layer("fc1", ("0",)), Layer("fc2", ("1",)), Layer("empty", ("2",))]
    got = relative_gradient_norms(model, layers, batches, num_classes=3)
    assert got[:2] == pytest.approx(_hand_rgn(w1, w2, batches), rel=1e-6)  # float32 logits
    assert got[2] == 0.0  # no parameter
    assert not model[0].weight.requires_grad and model[1].weight.requires_grad  # left as they were
    assert all(p.grad is None for p in model.parameters())
    assert math.isfinite(got[0]) and got[0] > 0


def test_relative_gradient_norms_need_a_batch():
    with pytest.raises(ValueError, match="at least one batch"):
        relative_gradient_norms(nn.Linear(2, 2), [Layer("fc", ("weight", "bias"))], [], num_classes=2)


def _candidates(regimes: list[Regime]) -> list[Candidate]:
    return [Candidate(("t", 0, "B"), r, None) for r in regimes]  # type: ignore[arg-type]


def test_pruning_drops_the_frozen_regimes_deeper_than_the_peak_of_the_curve():
    regimes = [Regime("frozen", n) for n in (1, 2, 3, 4)] + [Regime("finetune", n) for n in (1, 2, 3, 4)] + [
        Regime("surgical", 4), Regime("scratch")]
    kept = [c.regime for c in prune(_candidates(regimes), {1: 0.5, 2: 0.7, 3: 0.6, 4: 0.4})]
    assert kept == [r for r in regimes if not (r.kind == "frozen" and r.n > 2)]
    # ties go to the deepest layer; an empty curve prunes nothing
    assert Regime("frozen", 3) in [c.regime for c in prune(_candidates(regimes), {1: 0.5, 2: 0.7, 3: 0.7, 4: 0.1})]
    assert [c.regime for c in prune(_candidates(regimes), {})] == regimes


def test_a_selector_picks_the_layer_of_the_highest_signal_among_the_regimes_it_may_name():
    signal = {1: 0.2, 2: 0.9, 3: 0.9, 4: 5.0}
    assert best_layer(signal, [1, 2, 3]) == 2  # layer 4 is not a regime of the sweep; ties: the shallower
    assert best_layer(signal, [1, 2, 3], ties="deeper") == 3
    assert best_layer(signal, [1, 2, 3, 4]) == 4
    with pytest.raises(ValueError):
        best_layer(signal, [])
