"""Prototype distinct loss (Patronus, section 3 of ``docs/method.md``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PrototypeDistinctLoss"]


class PrototypeDistinctLoss(nn.Module):
    """``mean_k relu(delta - min_{j != k} (1 - |cos(p_k, p_j)|))``: pushes every prototype away from
    its most similar other prototype (up to sign) until their cosine distance reaches ``delta``.

    Args:
        delta: margin (paper: 0.2), in [0, 1].

    Input: prototypes ``(K, C)`` with ``K >= 2`` (e.g. ``encoder.prototypes``). Output: a scalar.
    """

    def __init__(self, delta: float = 0.2) -> None:
        super().__init__()
        if not 0.0 <= delta <= 1.0:
            raise ValueError(f"PrototypeDistinctLoss: delta must be a float in [0, 1], got {delta!r}.")
        self.delta = float(delta)

    def forward(self, prototypes: torch.Tensor) -> torch.Tensor:
        if prototypes.ndim != 2 or prototypes.shape[0] < 2:
            raise ValueError(
                f"PrototypeDistinctLoss: prototypes must have shape (K, C) with K >= 2, got {tuple(prototypes.shape)}."
            )
        unit = F.normalize(prototypes.float(), dim=1, eps=1e-12)
        distance = 1.0 - (unit @ unit.T).abs()
        eye = torch.eye(distance.shape[0], dtype=torch.bool, device=distance.device)  # exclude j == k from the min
        nearest = distance.masked_fill(eye, float("inf")).min(dim=1).values
        return F.relu(self.delta - nearest).mean()
