"""Seed stability of prototypes (``METHOD.md`` section 8: asked for by the paper's reviewers, absent from it).

Two Patronus models trained with different seeds learn their prototypes in arbitrary order. To ask whether
they learn the *same* prototypes, encode the same images with both, correlate every prototype of model A
with every prototype of model B across the images, and find the one-to-one matching with the largest total
correlation (Hungarian algorithm, :func:`scipy.optimize.linear_sum_assignment`). The mean matched correlation
summarises stability: 1 means the second model re-learnt every prototype (up to an increasing affine map of
its activation).

Chance level. The mean matched correlation is *not* near 0 for models that share nothing: the matching takes
the best of ``K!`` pairings, and every activation ``s_k = log((d_k + 1) / (d_k + eps))`` of one image shares a
component (its feature norm enters every ``d_k``), so prototypes of two unrelated models correlate through the
images alone. Pairs of untrained, independently initialised models of the demo's size score 0.13 to 0.58 on
256 digits (0.27 on average over 12 pairs): the chance level is high *and* varies a lot from one random pair
to another. The bare number is therefore read against a baseline: :func:`seed_stability` by default also
scores pairs of reference models that learnt nothing, namely fresh random initialisations of the two
architectures (the :class:`~monai_patronus.networks.PrototypeEncoder` initialisation: conv weights
``N(0, init_std)``, zero biases, prototypes uniform in [0, 1)), encoded on the *same* images and averaged over
a few seeds. It reports ``baseline_mean_correlation`` (and its spread over those seeds) and
``above_baseline``, the mean minus the baseline: a value near 0 means the two models share no more than the
architecture and the images impose; 1 minus the baseline is the most there is to gain. Judge
``above_baseline`` against the baseline's spread (``baseline_std_correlation``, and the per-seed
``baseline_correlations``): a difference within about two spreads is not distinguishable from chance. The
baseline is a chance level for *untrained* features; trained encoders can have a stronger (or weaker) shared
feature-norm component, so a small positive ``above_baseline`` is weak evidence; look at the individual
matched correlations too.

Signed correlation. The matching maximises the *signed* Pearson correlation: the activation
``s_k = log((d_k + 1) / (d_k + eps))`` grows as the image comes closer to prototype ``k``, so a prototype of B
whose activation falls where A's rises is a different pattern (its absence), not the same one. A negative
matched correlation is reported as such.

Constant prototypes. A prototype whose activation is the same on every image (a dead prototype, or one that
every image matches equally) has no defined correlation. Its correlations are set to 0 and it is listed in
``constant_a`` / ``constant_b``; it can still be matched (with correlation 0), which lowers the mean.
"""

from __future__ import annotations

import copy
import dataclasses
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
from monai_patronus.networks.prototype_encoder import PrototypeEncoder

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
        baseline_correlations: chance level (module docstring): the mean matched correlation of each pair of
            freshly initialised reference models on the same images, one per baseline seed (empty when no
            baseline was computed, e.g. from :func:`match_prototypes`).
        baseline_mean_correlation: mean of ``baseline_correlations``, or ``None`` without a baseline.
        baseline_std_correlation: their sample standard deviation (``ddof=1``), or ``None`` with fewer than 2.
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
            "baseline_mean_correlation": _float_or_none(self.baseline_mean_correlation),
            "baseline_std_correlation": _float_or_none(self.baseline_std_correlation),
            "baseline_correlations": [float(c) for c in self.baseline_correlations],
            "above_baseline": _float_or_none(self.above_baseline),
        }


def _float_or_none(value: float | None) -> float | None:
    return None if value is None else float(value)


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
    baseline_seeds: int | None = 3,
    baseline_seed: int = 0,
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
        baseline_seeds: number of reference pairs for the chance level (module docstring); ``None`` or 0 skips
            it. Reference pair ``i`` is a copy of each model's prototype encoder (``network.prototype_encoder``
            of a ``PatronusUNet``, the network itself otherwise) re-initialised as at construction with its own
            fresh seed: a ``PrototypeEncoder`` gets conv weights ``N(0, init_std)`` (its ``init_std`` attribute
            when it has one, else the default 0.1), zero biases and prototypes uniform in [0, 1); any other
            module gets ``reset_parameters()`` on each submodule that has it. The pairs are matched exactly like
            the two models, on the same images (one extra pass over ``data`` encodes all of them); the copies are
            discarded and the networks are not changed.
        baseline_seed: base seed of the reference initialisations; the same seed gives the same baseline.

    Returns:
        a :class:`StabilityResult`, with ``baseline_*`` filled in unless the baseline is skipped.

    Raises:
        ValueError: for a negative ``baseline_seeds`` or ``baseline_seed``, or a network with nothing to
            re-initialise when a baseline is asked for.
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
    for name, value, allowed in (("baseline_seeds", baseline_seeds, " or None"), ("baseline_seed", baseline_seed, "")):
        if value is None and allowed:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{owner}: {name} must be an int >= 0{allowed}, got {value!r}.")
    s_a = encode_dataset(network_a, data, image_key=image_key, device=device)
    s_b = encode_dataset(network_b, data, image_key=image_key, device=device)
    result = match_prototypes(s_a, s_b, constant_tol=constant_tol)
    if not baseline_seeds:
        return result
    baseline = _baseline_correlations(
        network_a, network_b, data, image_key, device, constant_tol, int(baseline_seeds), int(baseline_seed)
    )
    return dataclasses.replace(
        result,
        baseline_correlations=baseline,
        baseline_mean_correlation=float(np.mean(baseline)),
        baseline_std_correlation=float(np.std(baseline, ddof=1)) if len(baseline) > 1 else None,
    )


# ---------------------------------------------------------------------------------------------- chance baseline
def _prototype_encoder_of(network: nn.Module) -> nn.Module:
    """The module whose activations ``encode_dataset`` reads: a PatronusUNet's encoder, else the network."""
    if isinstance(network, PrototypeEncoder):
        return network
    encoder = getattr(network, "prototype_encoder", None)
    return encoder if isinstance(encoder, PrototypeEncoder) else network


def _cuda_indices(module: nn.Module) -> list[int]:
    return sorted({p.device.index or 0 for p in module.parameters() if p.device.type == "cuda"})


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
                if isinstance(m, nn.modules.conv._ConvNd):
                    draw(m.weight, lambda t: t.normal_(0.0, std, generator=gen))
                    if m.bias is not None:
                        m.bias.zero_()
            draw(enc.prototypes, lambda t: t.uniform_(0.0, 1.0, generator=gen))
            touched = True
        others = [m for m in fresh.modules() if id(m) not in done and callable(getattr(m, "reset_parameters", None))]
        if others:
            with torch.random.fork_rng(devices=_cuda_indices(fresh)):
                torch.manual_seed(seed)
                for m in others:
                    m.reset_parameters()
            touched = True
    if not touched:
        raise ValueError(
            f"seed_stability: {type(module).__name__} has no PrototypeEncoder and no submodule with "
            "reset_parameters(), so no untrained reference can be built for the chance baseline; pass "
            "baseline_seeds=None to skip it."
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


def _baseline_correlations(
    network_a: nn.Module,
    network_b: nn.Module,
    data,
    image_key: str,
    device,
    constant_tol: float,
    num_seeds: int,
    base_seed: int,
) -> list[float]:
    """Mean matched correlation of ``num_seeds`` pairs of freshly initialised copies of the two encoders."""
    target = None if device is None else torch.device(device)
    seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(base_seed).spawn(2 * num_seeds)]
    sources = (_prototype_encoder_of(network_a), _prototype_encoder_of(network_b))
    encoders = [_reinitialised(sources[j % 2], seeds[j], target) for j in range(2 * num_seeds)]
    stacked = _Stacked(encoders)
    activations = encode_dataset(stacked, data, image_key=image_key, device=device)
    per_model = torch.split(activations, stacked.widths, dim=1)
    return [
        match_prototypes(per_model[2 * i], per_model[2 * i + 1], constant_tol=constant_tol).mean_correlation
        for i in range(num_seeds)
    ]
