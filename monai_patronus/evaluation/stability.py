"""Seed stability of prototypes (``METHOD.md`` section 8: asked for by the paper's reviewers, absent from it).

Two Patronus models trained with different seeds learn their prototypes in arbitrary order. To ask whether
they learn the *same* prototypes, encode the same images with both, correlate every prototype of model A
with every prototype of model B across the images, and find the one-to-one matching with the largest total
correlation (Hungarian algorithm, :func:`scipy.optimize.linear_sum_assignment`). The mean matched correlation
summarises stability: 1 means the second model re-learnt every prototype (up to an increasing affine map of
its activation), values near 0 mean nothing was shared.

Signed correlation. The matching maximises the *signed* Pearson correlation: the activation
``s_k = log((d_k + 1) / (d_k + eps))`` grows as the image comes closer to prototype ``k``, so a prototype of B
whose activation falls where A's rises is a different pattern (its absence), not the same one. A negative
matched correlation is reported as such.

Constant prototypes. A prototype whose activation is the same on every image (a dead prototype, or one that
every image matches equally) has no defined correlation. Its correlations are set to 0 and it is listed in
``constant_a`` / ``constant_b``; it can still be matched (with correlation 0), which lowers the mean.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from monai_patronus.evaluation.attributes import check_activations
from monai_patronus.interpret.prior import encode_dataset

__all__ = ["StabilityResult", "match_prototypes", "seed_stability"]


@dataclass(frozen=True, eq=False)
class StabilityResult:
    """Optimal one-to-one matching between the prototypes of two models.

    Attributes:
        pairs: matched ``(k_a, k_b)`` prototype indices, ``min(Ka, Kb)`` of them, sorted by ``k_a``.
        correlations: signed Pearson correlation of each pair, across images (same order as ``pairs``).
        mean_correlation: mean of ``correlations`` (pairs involving a constant prototype count as 0).
        correlation_matrix: ``(Ka, Kb)`` float64 Pearson correlations (0 in rows/columns of constant prototypes).
        unmatched_a: prototypes of A left without a partner (when ``Ka > Kb``), ascending.
        unmatched_b: prototypes of B left without a partner (when ``Kb > Ka``), ascending.
        constant_a: prototypes of A whose activation is constant over the images, ascending.
        constant_b: the same for B.
        num_images: number of images ``N`` the correlations are computed over.
    """

    pairs: list[tuple[int, int]]
    correlations: list[float]
    mean_correlation: float
    correlation_matrix: np.ndarray
    unmatched_a: list[int] = field(default_factory=list)
    unmatched_b: list[int] = field(default_factory=list)
    constant_a: list[int] = field(default_factory=list)
    constant_b: list[int] = field(default_factory=list)
    num_images: int = 0

    @property
    def total_correlation(self) -> float:
        """Sum of the matched correlations (what the Hungarian matching maximises)."""
        return float(sum(self.correlations))

    @property
    def permutation(self) -> dict[int, int]:
        """``{k_a: k_b}`` for every matched pair."""
        return dict(self.pairs)

    def to_dict(self) -> dict:
        """JSON-serialisable summary (lists and floats only)."""
        return {
            "pairs": [[int(a), int(b)] for a, b in self.pairs],
            "correlations": [float(c) for c in self.correlations],
            "mean_correlation": float(self.mean_correlation),
            "total_correlation": self.total_correlation,
            "correlation_matrix": self.correlation_matrix.tolist(),
            "unmatched_a": list(self.unmatched_a),
            "unmatched_b": list(self.unmatched_b),
            "constant_a": list(self.constant_a),
            "constant_b": list(self.constant_b),
            "num_images": int(self.num_images),
        }


def _normalised_columns(x: np.ndarray, constant_tol: float) -> tuple[np.ndarray, list[int]]:
    """Centred, unit-norm columns; constant columns (std <= constant_tol * max|x|) become 0."""
    centred = x - x.mean(axis=0, keepdims=True)
    std = np.sqrt((centred**2).mean(axis=0))
    scale = np.abs(x).max(axis=0)
    constant = std <= constant_tol * scale
    norms = np.linalg.norm(centred, axis=0)
    safe = np.where(constant | (norms == 0), 1.0, norms)
    z = centred / safe
    z[:, constant] = 0.0
    return z, [int(k) for k in np.flatnonzero(constant)]


def match_prototypes(
    activations_a: torch.Tensor | np.ndarray,
    activations_b: torch.Tensor | np.ndarray,
    constant_tol: float = 1e-6,
) -> StabilityResult:
    """Match the prototypes of two models by the correlation of their activations over the same images.

    Pearson correlation of every column of ``activations_a`` with every column of ``activations_b`` (float64),
    then the one-to-one matching that maximises the total signed correlation
    (``scipy.optimize.linear_sum_assignment(C, maximize=True)``). With ``Ka != Kb`` the ``min(Ka, Kb)`` best
    pairs are matched and the rest listed as unmatched. See the module docstring for why the signed
    correlation is used and how constant prototypes are handled.

    Args:
        activations_a: ``(N, Ka)`` activations of model A on N images.
        activations_b: ``(N, Kb)`` activations of model B on the same N images, in the same order.
        constant_tol: a prototype counts as constant when the standard deviation of its activation is at most
            ``constant_tol`` times its largest absolute value (float32 rounding of a constant column stays
            below the default 1e-6); its correlations are set to 0.

    Returns:
        a :class:`StabilityResult`.

    Raises:
        TypeError: for non-arrays or non-real dtypes.
        ValueError: for arrays that are not 2-D, have fewer than 2 rows or no columns, differ in N, hold NaN or
            inf, or for a negative ``constant_tol``.
    """
    owner = "match_prototypes"
    if (
        isinstance(constant_tol, bool)
        or not isinstance(constant_tol, (int, float))
        or not (math.isfinite(constant_tol) and constant_tol >= 0)
    ):
        raise ValueError(f"{owner}: constant_tol must be a finite float >= 0, got {constant_tol!r}.")
    a = check_activations(activations_a, owner=owner, name="activations_a", min_samples=2)
    b = check_activations(activations_b, owner=owner, name="activations_b", min_samples=2)
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{owner}: activations_a has N={a.shape[0]} images but activations_b N={b.shape[0]}; "
            "encode the same images, in the same order, with both models."
        )
    za, constant_a = _normalised_columns(a, float(constant_tol))
    zb, constant_b = _normalised_columns(b, float(constant_tol))
    corr = np.clip(za.T @ zb, -1.0, 1.0)

    rows, cols = linear_sum_assignment(corr, maximize=True)
    order = np.argsort(rows)
    rows, cols = rows[order], cols[order]
    pairs = [(int(r), int(c)) for r, c in zip(rows, cols)]
    correlations = [float(corr[r, c]) for r, c in pairs]
    matched_a, matched_b = set(rows.tolist()), set(cols.tolist())
    return StabilityResult(
        pairs=pairs,
        correlations=correlations,
        mean_correlation=float(np.mean(correlations)),
        correlation_matrix=corr,
        unmatched_a=[k for k in range(a.shape[1]) if k not in matched_a],
        unmatched_b=[k for k in range(b.shape[1]) if k not in matched_b],
        constant_a=constant_a,
        constant_b=constant_b,
        num_images=int(a.shape[0]),
    )


def seed_stability(
    network_a: nn.Module,
    network_b: nn.Module,
    data: Iterable | torch.Tensor | dict,
    image_key: str = "image",
    device: str | torch.device | None = None,
    constant_tol: float = 1e-6,
) -> StabilityResult:
    """Prototype stability between two models (e.g. trained with different seeds) on the same images.

    Encodes ``data`` with each network through
    :func:`monai_patronus.interpret.prior.encode_dataset` (one pass each, without gradients) and matches the
    prototypes with :func:`match_prototypes`. Because the data is read twice it must be re-iterable and yield
    the images in the same order both times: a list of batches, a tensor, or a ``DataLoader`` without
    shuffling (a one-shot iterator or a shuffling loader is refused).

    Args:
        network_a, network_b: ``PatronusUNet`` models (or prototype encoders); their ``K`` may differ.
        data: batches as accepted by :func:`~monai_patronus.data.batches.iter_batches`, at least 2 images.
        image_key: the images' key in dict batches.
        device: where to run both encoders; defaults to each network's own device.
        constant_tol: see :func:`match_prototypes`.

    Returns:
        a :class:`StabilityResult`.
    """
    owner = "seed_stability"
    for name, net in (("network_a", network_a), ("network_b", network_b)):
        if not isinstance(net, nn.Module):
            raise TypeError(
                f"{owner}: {name} must be a PatronusUNet or PrototypeEncoder (an nn.Module), got {type(net).__name__}."
            )
    if isinstance(data, Iterator):
        raise TypeError(
            f"{owner}: data is a one-shot iterator ({type(data).__name__}) but is read once per model; "
            "pass a re-iterable: a list of batches, a tensor, or a DataLoader."
        )
    if isinstance(data, DataLoader) and isinstance(data.sampler, RandomSampler):
        raise ValueError(  # noqa: TRY004 - the type is right, its shuffling is not
            f"{owner}: data is a DataLoader with shuffle=True, so the two passes would see the images in different "
            "orders; build it with shuffle=False."
        )
    s_a = encode_dataset(network_a, data, image_key=image_key, device=device)
    s_b = encode_dataset(network_b, data, image_key=image_key, device=device)
    return match_prototypes(s_a, s_b, constant_tol=constant_tol)
