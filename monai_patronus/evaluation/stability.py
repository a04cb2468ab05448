"""Seed stability of prototypes (``docs/method.md`` section 8: asked for by the paper's reviewers, absent from it).

Correlate every prototype of model A with every prototype of model B over the same images (signed Pearson) and find
the one-to-one matching with the largest total correlation (:func:`scipy.optimize.linear_sum_assignment`). Models
that share nothing score far from 0 (untrained demo-sized pairs: 0.13 to 0.58 on 256 digits), so
:func:`seed_stability` also matches freshly initialised copies of the two encoders as the chance baseline.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from monai_patronus.evaluation.attributes import check_activations
from monai_patronus.interpret.prior import encode_dataset
from monai_patronus.networks.prototype_encoder import PrototypeEncoder
from monai_patronus.utils import json_safe

__all__ = ["StabilityResult", "match_prototypes", "seed_stability"]


@dataclass(frozen=True, eq=False)
class StabilityResult:
    """Optimal one-to-one matching between the prototypes of two models.

    Attributes:
        pairs: matched ``(k_a, k_b)`` prototype indices, ``min(Ka, Kb)`` of them, sorted by ``k_a``.
        correlations: signed Pearson correlation of each pair across images; ``mean_correlation``: their mean.
        correlation_matrix: ``(Ka, Kb)`` float64 Pearson correlations (0 for constant prototypes).
        unmatched_a, unmatched_b: prototypes left without a partner (when ``Ka != Kb``), ascending.
        constant_a, constant_b: prototypes whose activation is constant over the images, ascending.
        num_images: the number of images ``N``.
        baseline_correlations: the chance level: mean matched correlation of each freshly initialised pair.
        baseline_mean_correlation, baseline_std_correlation: their mean and sample std (``ddof=1``), or ``None``.
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
    baseline_correlations: list[float] = field(default_factory=list)
    baseline_mean_correlation: float | None = None
    baseline_std_correlation: float | None = None

    @property
    def above_baseline(self) -> float | None:
        """``mean_correlation - baseline_mean_correlation`` (``None`` without a baseline)."""
        if self.baseline_mean_correlation is None:
            return None
        return float(self.mean_correlation - self.baseline_mean_correlation)

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
        return json_safe(
            dataclasses.asdict(self)
            | {"total_correlation": self.total_correlation, "above_baseline": self.above_baseline}
        )


def _normalised_columns(x: np.ndarray, constant_tol: float) -> tuple[np.ndarray, list[int]]:
    """Centred, unit-norm columns; constant columns (std <= constant_tol * max|x|) become 0."""
    centred = x - x.mean(axis=0, keepdims=True)
    constant = x.std(axis=0) <= constant_tol * np.abs(x).max(axis=0)
    z = centred / np.where(constant, 1.0, np.linalg.norm(centred, axis=0))
    z[:, constant] = 0.0
    return z, [int(k) for k in np.flatnonzero(constant)]


def match_prototypes(
    activations_a: torch.Tensor | np.ndarray, activations_b: torch.Tensor | np.ndarray, constant_tol: float = 1e-6
) -> StabilityResult:
    """Match the prototypes of two models by the Pearson correlation (float64) of their activations over the same
    images (``linear_sum_assignment(C, maximize=True)``); with ``Ka != Kb`` the rest is listed as unmatched.

    Args:
        activations_a: ``(N, Ka)`` activations of model A on N >= 2 images.
        activations_b: ``(N, Kb)`` activations of model B on the same images, in the same order.
        constant_tol: a prototype is constant when the std of its activation is at most ``constant_tol`` times its
            largest absolute value (float32 rounding of a constant column stays below the default); its correlations
            are set to 0.
    """
    a = check_activations(activations_a, name="activations_a", min_samples=2)
    b = check_activations(activations_b, num_samples=a.shape[0], name="activations_b")
    za, constant_a = _normalised_columns(a, float(constant_tol))
    zb, constant_b = _normalised_columns(b, float(constant_tol))
    corr = np.clip(za.T @ zb, -1.0, 1.0)

    rows, cols = linear_sum_assignment(corr, maximize=True)  # rows ascending
    pairs = [(int(r), int(c)) for r, c in zip(rows, cols)]
    correlations = [float(corr[r, c]) for r, c in pairs]
    return StabilityResult(
        pairs,
        correlations,
        float(np.mean(correlations)),
        corr,
        unmatched_a=np.setdiff1d(np.arange(a.shape[1]), rows).tolist(),
        unmatched_b=np.setdiff1d(np.arange(b.shape[1]), cols).tolist(),
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
    baseline_seeds: int | None = 3,
    baseline_seed: int = 0,
) -> StabilityResult:
    """Prototype stability between two models (e.g. trained with different seeds) on the same images.

    Encodes ``data`` with each network (:func:`~monai_patronus.interpret.prior.encode_dataset`) and matches the
    prototypes with :func:`match_prototypes`; ``data`` must be re-iterable in a fixed order.

    Args:
        network_a, network_b: ``PatronusUNet`` models (or prototype encoders); their ``K`` may differ.
        data: batches as accepted by :func:`~monai_patronus.data.batches.iter_batches`, at least 2 images.
        image_key: the images' key in dict batches.
        device: where to run both encoders; defaults to each network's own device.
        constant_tol: see :func:`match_prototypes`.
        baseline_seeds: number of reference pairs for the chance level (``None`` or 0: none): copies of both
            encoders re-initialised as at construction, each from its own seed, matched in one extra data pass.
        baseline_seed: base seed of the reference initialisations.

    Returns:
        a :class:`StabilityResult`, with ``baseline_*`` filled in unless the baseline is skipped.
    """
    if isinstance(data, Iterator):
        raise TypeError(
            f"seed_stability: data is a one-shot iterator ({type(data).__name__}) but is read once per model; "
            "pass a re-iterable: a list of batches, a tensor, or a DataLoader."
        )
    if isinstance(data, DataLoader) and isinstance(data.sampler, RandomSampler):
        raise ValueError(  # noqa: TRY004 - the type is right, its shuffling is not
            "seed_stability: data is a DataLoader with shuffle=True, so the two passes would see the images in "
            "different orders; build it with shuffle=False."
        )
    s_a = encode_dataset(network_a, data, image_key=image_key, device=device)
    s_b = encode_dataset(network_b, data, image_key=image_key, device=device)
    result = match_prototypes(s_a, s_b, constant_tol=constant_tol)
    if not baseline_seeds:
        return result
    target = None if device is None else torch.device(device)
    seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(baseline_seed).spawn(2 * baseline_seeds)]
    sources = (_prototype_encoder_of(network_a), _prototype_encoder_of(network_b))
    stacked = _Stacked([_reinitialised(sources[j % 2], seeds[j], target) for j in range(2 * baseline_seeds)])
    per_model = torch.split(encode_dataset(stacked, data, image_key=image_key, device=device), stacked.widths, dim=1)
    baseline = [
        match_prototypes(per_model[2 * i], per_model[2 * i + 1], constant_tol).mean_correlation
        for i in range(baseline_seeds)
    ]
    return dataclasses.replace(
        result,
        baseline_correlations=baseline,
        baseline_mean_correlation=float(np.mean(baseline)),
        baseline_std_correlation=float(np.std(baseline, ddof=1)) if len(baseline) > 1 else None,
    )


# ---------------------------------------------------------------------------------------------- chance baseline
def _prototype_encoder_of(network: nn.Module) -> nn.Module:
    """The module whose activations ``encode_dataset`` reads: a PatronusUNet's encoder, else the network."""
    encoder = getattr(network, "prototype_encoder", None)  # a PrototypeEncoder has none
    return encoder if isinstance(encoder, PrototypeEncoder) else network


def _reinitialised(module: nn.Module, seed: int, device: torch.device | None) -> nn.Module:
    """A copy of ``module`` with every parameter re-drawn as at construction, from ``seed`` (see seed_stability)."""
    fresh = copy.deepcopy(module)
    if device is not None:
        fresh = fresh.to(device)
    gen = torch.Generator().manual_seed(seed)

    def draw(param: torch.Tensor, fill) -> None:  # drawn on the CPU: the same values on every device
        param.copy_(fill(torch.empty(param.shape, dtype=torch.float32)))

    done: set[int] = set()
    touched = False
    with torch.no_grad():
        for enc in fresh.modules():
            if not isinstance(enc, PrototypeEncoder):
                continue
            std = float(getattr(enc, "init_std", 0.1))  # PrototypeEncoder's default and the paper's value
            for m in enc.modules():
                done.add(id(m))
                if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                    draw(m.weight, lambda t: t.normal_(0.0, std, generator=gen))
                    if m.bias is not None:
                        m.bias.zero_()
            draw(enc.prototypes, lambda t: t.uniform_(0.0, 1.0, generator=gen))
            touched = True
        others = [m for m in fresh.modules() if id(m) not in done and callable(getattr(m, "reset_parameters", None))]
        if others:
            cuda = {p.device.index or 0 for p in fresh.parameters() if p.device.type == "cuda"}
            with torch.random.fork_rng(devices=sorted(cuda)):
                torch.manual_seed(seed)
                for m in others:
                    m.reset_parameters()
            touched = True
    if not touched:
        raise ValueError(
            f"seed_stability: {type(module).__name__} has no PrototypeEncoder and no submodule with "
            "reset_parameters() to build the chance baseline from; pass baseline_seeds=None to skip it."
        )
    return fresh


class _Stacked(nn.Module):
    """Runs several encoders on each batch and concatenates their activations (one data pass for all)."""

    def __init__(self, encoders: list[nn.Module]):
        super().__init__()
        self.encoders = nn.ModuleList(encoders)
        self.widths: list[int] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        outs = []
        for enc in self.encoders:
            param = next(iter(enc.parameters()), None)
            x = images if param is None else images.to(param.device)
            encode = getattr(enc, "encode", None)
            s = encode(x) if callable(encode) else enc(x)
            s = s.as_tensor() if hasattr(s, "as_tensor") else s
            outs.append(s.float().to(images.device))
        self.widths = [o.shape[1] for o in outs]
        return torch.cat(outs, dim=1)
