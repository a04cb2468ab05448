from __future__ import annotations

import math

import pytest
import torch

from monai_patronus.losses import PrototypeDistinctLoss


def _reference(prototypes: torch.Tensor, delta: float) -> float:
    """Loops over pairs, as the formula reads."""
    k = prototypes.shape[0]
    total = 0.0
    for i in range(k):
        nearest = math.inf
        for j in range(k):
            if j != i:
                cos = torch.dot(prototypes[i], prototypes[j]) / (prototypes[i].norm() * prototypes[j].norm())
                nearest = min(nearest, 1.0 - abs(float(cos)))
        total += max(0.0, delta - nearest)
    return total / k


@pytest.mark.parametrize("k, c, delta", [(2, 3, 0.2), (7, 4, 0.2), (10, 16, 0.9), (5, 2, 0.0)])
def test_matches_pairwise_reference(k, c, delta):
    p = torch.randn(k, c)
    assert float(PrototypeDistinctLoss(delta)(p)) == pytest.approx(_reference(p, delta), abs=1e-6)


def test_extremes_and_gradient():
    loss = PrototypeDistinctLoss(0.2)
    assert float(loss(torch.eye(4))) == pytest.approx(0.0)  # orthogonal: distance 1 > delta
    same = torch.ones(3, 5)
    assert float(loss(same)) == pytest.approx(0.2)
    assert float(loss(torch.stack([torch.ones(5), -torch.ones(5)]))) == pytest.approx(0.2)  # sign does not matter
    p = (torch.ones(4, 6) + 0.01 * torch.randn(4, 6)).requires_grad_(True)
    loss(p).backward()
    assert p.grad.abs().sum() > 0


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_invalid_delta(bad):
    with pytest.raises(ValueError, match="delta"):
        PrototypeDistinctLoss(bad)


def test_invalid_prototypes():
    with pytest.raises(ValueError, match=r"K >= 2, got \(1, 4\)"):
        PrototypeDistinctLoss()(torch.randn(1, 4))
    with pytest.raises(ValueError, match=r"got \(4,\)"):
        PrototypeDistinctLoss()(torch.randn(4))
