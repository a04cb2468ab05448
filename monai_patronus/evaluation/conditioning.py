"""Does generation use the prototype vector? Conditioning metrics, each with its chance level.

Reconstruction PSNR says nothing about ``s`` (DDIM inversion is exact even through a zero-initialised network), so
these metrics compare the model given the right and a wrong ``s`` (the next image's: pass the images in a spread
order); a network that ignores ``s`` scores exactly the chance level. :func:`conditioning_metrics` runs
:func:`semantic_reconstruction`, :func:`edit_efficacy`, :func:`conditioning_gain` and :func:`sample_sanity` on one
fixed set of images; :func:`conditioning_summary` is the line beside every explanation figure.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.metrics import PSNRMetric, SSIMMetric
from monai.networks.utils import eval_mode
from torch import nn

from monai_patronus.evaluation.generation import _check_range, _ssim_window
from monai_patronus.inferers import PatronusInferer

__all__ = [
    "compare_conditioning",
    "conditioning_gain",
    "conditioning_metrics",
    "conditioning_summary",
    "conditioning_table",
    "edit_efficacy",
    "sample_sanity",
    "semantic_reconstruction",
]


def _derangement(n: int) -> torch.Tensor:
    """Each image gets another image's ``s``: a cyclic shift by one (no image keeps its own)."""
    return torch.roll(torch.arange(n), 1)


def _per_image_similarity(prediction: torch.Tensor, target: torch.Tensor, win_size: int) -> tuple[torch.Tensor, ...]:
    """Per-image PSNR (dB, ``max_val = 2``) and SSIM (``data_range = 2``) from MONAI, images in [-1, 1]."""
    window = _ssim_window(target.shape[2:], win_size)
    psnr = PSNRMetric(max_val=2.0, reduction="none")(y_pred=prediction, y=target).reshape(-1)
    ssim = SSIMMetric(spatial_dims=target.ndim - 2, data_range=2.0, win_size=window, reduction="none")
    return psnr, ssim(y_pred=prediction, y=target).reshape(target.shape[0], -1).mean(1)


def _check_images(images: torch.Tensor) -> torch.Tensor:
    if images.shape[0] < 2:
        raise ValueError(f"images must hold at least 2 images (each is compared with another's s), got {len(images)}.")
    _check_range("images", images)
    return images.float()


def _noise(images: torch.Tensor, seed: int) -> torch.Tensor:
    return torch.randn(images.shape, generator=torch.Generator().manual_seed(seed)).to(images.device)


@torch.no_grad()
def semantic_reconstruction(
    network: nn.Module,
    inferer: PatronusInferer,
    images: torch.Tensor,
    num_inference_steps: int = 50,
    seed: int = 0,
    feature_extractor: nn.Module | None = None,
    win_size: int = 11,
    return_samples: bool = False,
) -> dict:
    """How much of an image its ``s`` reproduces when generating from fresh noise.

    Each image ``x`` is generated twice from the same noise, given ``s(x)`` ("own") and ``s`` of another image (a
    cyclic shift, "other"); both are clamped to [-1, 1] and compared with ``x``.

    Returns:
        ``{"psnr": {"own", "other", "gap"}, "ssim": {...}, "win_rate", "num_images", "chance"}`` (means over images,
        ``gap = own - other``; ``win_rate``: share of images whose own sample is closer in PSNR, differences below
        0.001 dB counting half), ``"feature_distance"`` (mean L2 distance of ``feature_extractor`` features,
        ``gap = other - own``) and ``"samples"`` (own samples before clamping, CPU) when ``return_samples``.
    """
    x = _check_images(images)
    with eval_mode(network):
        s = network.encode(x)
        noise = _noise(x, seed)
        raw = inferer.sample(
            torch.cat([noise, noise]), network, torch.cat([s, s[_derangement(len(x))]]), num_inference_steps
        )
    own, other = raw.clamp(-1.0, 1.0).chunk(2)
    psnr_own, ssim_own = _per_image_similarity(own, x, win_size)
    psnr_other, ssim_other = _per_image_similarity(other, x, win_size)
    tie = (psnr_own - psnr_other).abs() < 1e-3  # differences below 0.001 dB are rounding, not a win
    wins = ((psnr_own > psnr_other) & ~tie).float() + 0.5 * tie.float()
    result = {"psnr": _gap(psnr_own, psnr_other), "ssim": _gap(ssim_own, ssim_other), "win_rate": float(wins.mean())}
    result |= {"num_images": len(x), "num_inference_steps": num_inference_steps}
    result["chance"] = {"gap": 0.0, "win_rate": 0.5}
    if feature_extractor is not None:
        with eval_mode(feature_extractor):
            f_x, f_own, f_other = (feature_extractor(t).flatten(1).float() for t in (x, own, other))
        d_own, d_other = (f_own - f_x).norm(dim=1), (f_other - f_x).norm(dim=1)
        result["feature_distance"] = _gap(d_own, d_other)
        result["feature_distance"]["gap"] = float((d_other - d_own).mean())
    if return_samples:
        result["samples"] = raw[: len(x)].cpu()
    return result


def _gap(own: torch.Tensor, other: torch.Tensor) -> dict:
    def finite_mean(t: torch.Tensor) -> float:  # identical images give PSNR inf
        return float(t[torch.isfinite(t)].mean()) if torch.isfinite(t).any() else math.inf

    diff = torch.where(torch.isfinite(own) & torch.isfinite(other), own - other, torch.zeros_like(own))
    return {"own": finite_mean(own), "other": finite_mean(other), "gap": float(diff.mean())}


def _default_prototypes(reference: torch.Tensor, num_prototypes: int) -> list[int]:
    """The prototypes whose activation varies most over the reference images (a constant one cannot be edited)."""
    spread = reference.max(0).values - reference.min(0).values
    order = torch.argsort(spread, descending=True, stable=True)
    return [int(k) for k in order[: min(num_prototypes, reference.shape[1])]]


@torch.no_grad()
def edit_efficacy(
    network: nn.Module,
    inferer: PatronusInferer,
    images: torch.Tensor,
    prototypes: Sequence[int] | None = None,
    num_prototypes: int = 4,
    reference: torch.Tensor | None = None,
    num_inference_steps: int = 50,
    depth: int | None = None,
    modes: Sequence[str] = ("invert",),
    seed: int = 0,
    min_change: float = 0.05,
) -> dict:
    """The share of an intended change of ``s_k`` that the regenerated image shows.

    Each prototype ``k`` is raised to its plausible maximum and suppressed to its plausible minimum (over
    ``reference``); ``"invert"`` regenerates the inverted image with the edited and the unedited ``s``, ``"sample"``
    generates both from fresh noise. ``efficacy = (s_k(edited) - s_k(unedited)) / (target - s_k(x))`` over the edits
    changing ``s_k`` by at least ``min_change`` of its range; ``in_box_ratio``: the share of the pixel change inside
    ``k``'s box over the share of the image the box covers (chance 1).

    Args:
        network, inferer: the model (eval mode set here and restored).
        images: ``(N, C, *spatial)`` in [-1, 1], N >= 2.
        prototypes: the prototypes to edit; default the ``num_prototypes`` varying most over ``reference``.
        reference: ``(M, K)`` activations that define the plausible range (default: those of ``images``).
        num_inference_steps, depth: the DDIM grid and partial inversion.
        modes: ``"invert"`` and/or ``"sample"``; seed: the noise of ``"sample"``.

    Returns:
        ``{mode: {"raise": {"median", "mean", "count"}, "suppress": {...}, "in_box_ratio": {...}}, "prototypes",
        "chance": {"efficacy": 0, "in_box_ratio": 1}, ...}``.
    """
    x = _check_images(images)
    if not modes or not set(modes) <= {"invert", "sample"}:
        raise ValueError(f"edit_efficacy: modes must be a non-empty subset of ('invert', 'sample'), got {modes!r}.")
    with eval_mode(network):
        s = network.encode(x)
        ref = s if reference is None else torch.as_tensor(reference, dtype=s.dtype, device=s.device)
        if ref.ndim != 2 or ref.shape[1] != s.shape[1]:
            raise ValueError(f"edit_efficacy: reference must be activations (M, {s.shape[1]}), got {tuple(ref.shape)}.")
        ks = _default_prototypes(ref, num_prototypes) if prototypes is None else [int(k) for k in prototypes]
        high, low = ref.max(0).values, ref.min(0).values
        n, p = x.shape[0], len(ks)
        # one batch: for every prototype a raised and a suppressed copy of every image
        targets, intended, keep = [], [], []
        for k in ks:
            for value in (high[k], low[k]):
                edited = s.clone()
                edited[:, k] = value
                targets.append(edited)
                change = value - s[:, k]
                intended.append(change)
                keep.append(change.abs() >= min_change * max(float(high[k] - low[k]), 1e-12))
        target_s = torch.cat(targets)
        result: dict = {"prototypes": ks, "num_images": n, "num_inference_steps": num_inference_steps, "depth": depth}
        result["chance"] = {"efficacy": 0.0, "in_box_ratio": 1.0}
        reps = (2 * p, *([1] * (x.ndim - 1)))  # one copy of the batch per edit
        for mode in modes:
            if mode == "invert":
                latents = inferer.invert(x, network, s, num_inference_steps, depth=depth)
                unedited = inferer.reconstruct(latents, network, s, num_inference_steps, depth=depth)
                edited = inferer.reconstruct(latents.repeat(*reps), network, target_s, num_inference_steps, depth=depth)
            else:
                noise = _noise(x, seed)
                unedited = inferer.sample(noise, network, s, num_inference_steps)
                edited = inferer.sample(noise.repeat(*reps), network, target_s, num_inference_steps)
            result[mode] = _efficacy(network, ks, x, unedited.clamp(-1, 1), edited.clamp(-1, 1), intended, keep)
    return result


def _efficacy(network, ks, x, unedited, edited, intended, keep) -> dict:
    n = x.shape[0]
    before = network.prototype_encoder(unedited, return_maps=True)
    after = network.prototype_encoder(edited, return_maps=True)
    out: dict = {"raise": [], "suppress": [], "in_box_ratio": []}
    encoder = network.prototype_encoder
    for i, k in enumerate(ks):
        for j, direction in enumerate(("raise", "suppress")):
            block = slice((2 * i + j) * n, (2 * i + j + 1) * n)
            achieved = after.activations[block, k] - before.activations[:, k]
            wanted, ok = intended[2 * i + j], keep[2 * i + j]
            out[direction].extend((achieved[ok] / wanted[ok]).tolist())
            change = (edited[block] - unedited).abs().sum(1)  # (N, *spatial)
            where = after.locations[block, k] if direction == "raise" else before.locations[:, k]
            boxes = encoder.boxes(where, x.shape[2:])  # (N, dims, 2)
            for m in range(n):
                total = float(change[m].sum())
                if not ok[m] or total <= 1e-6 * change[m].numel():
                    continue  # nothing changed: nothing to locate
                region = tuple(slice(int(a), int(b)) for a, b in boxes[m].tolist())
                area = math.prod(b - a for a, b in boxes[m].tolist()) / change[m].numel()
                out["in_box_ratio"].append(float(change[m][region].sum()) / total / max(area, 1e-12))
    return {key: _stats(values) for key, values in out.items()}


def _stats(values: list[float]) -> dict:
    if not values:
        return {"median": None, "mean": None, "count": 0}
    arr = np.asarray(values, dtype=np.float64)
    return {"median": float(np.median(arr)), "mean": float(arr.mean()), "count": int(arr.size)}


@torch.no_grad()
def conditioning_gain(
    network: nn.Module,
    inferer: PatronusInferer,
    images: torch.Tensor,
    num_bands: int = 4,
    repeats: int = 2,
    seed: int = 0,
) -> dict:
    """Held-out denoising loss with the right ``s`` against ``s`` shuffled between the images, per timestep band.

    ``[0, T)`` is cut into ``num_bands`` equal bands; per band and repeat every image gets a uniform timestep in the
    band and fresh noise, and the training loss (MSE to the noise, or to the velocity for ``v_prediction``) is
    computed given its own and another image's ``s``. ``gain = 1 - loss_right / loss_shuffled`` (chance 0).

    Returns:
        ``{"bands": [[lo, hi), ...], "loss_right", "loss_shuffled", "gain" (per band), "mean_gain", "chance"}``.
    """
    x = _check_images(images)
    scheduler = inferer.scheduler
    edges = np.linspace(0, int(scheduler.num_train_timesteps), num_bands + 1).round().astype(int)
    g = torch.Generator().manual_seed(seed)
    right, shuffled = [], []
    with eval_mode(network):
        s = network.encode(x)
        s_wrong = s[_derangement(len(x))]
        for lo, hi in zip(edges[:-1], edges[1:]):
            l_right = l_wrong = 0.0
            for _ in range(repeats):
                t = torch.randint(int(lo), int(hi), (len(x),), generator=g).to(x.device)
                noise = torch.randn(x.shape, generator=g).to(x.device)
                noisy = scheduler.add_noise(original_samples=x, noise=noise, timesteps=t)
                if getattr(scheduler, "prediction_type", "epsilon") == "v_prediction":
                    target = scheduler.get_velocity(x, noise, t)
                else:
                    target = noise
                l_right += float(((network(noisy, t, context=s) - target) ** 2).mean())
                l_wrong += float(((network(noisy, t, context=s_wrong) - target) ** 2).mean())
            right.append(l_right / repeats)
            shuffled.append(l_wrong / repeats)
    gain = [1.0 - r / w if w > 0 else 0.0 for r, w in zip(right, shuffled)]
    bands = [[int(a), int(b)] for a, b in zip(edges[:-1], edges[1:])]
    result = {"bands": bands, "loss_right": right, "loss_shuffled": shuffled, "gain": gain}
    return result | {"mean_gain": float(np.mean(gain)), "chance": {"gain": 0.0}}


def sample_sanity(samples: torch.Tensor, images: torch.Tensor, threshold: float = 0.98) -> dict:
    """Saturation and range of generated ``samples`` (unclamped) against the data ``images``: ``saturated`` is the
    share of pixels beyond ``±threshold``, ``out_of_range`` beyond ±1 (a diverging sampler saturates far more).
    """

    def describe(t: torch.Tensor) -> dict:
        t = t.float()
        return {
            "saturated": float((t.abs() > threshold).float().mean()),
            "out_of_range": float((t.abs() > 1.0).float().mean()),
            "min": float(t.min()),
            "max": float(t.max()),
            "mean": float(t.mean()),
            "std": float(t.std()),
        }

    return {"samples": describe(samples), "data": describe(images), "threshold": threshold}


@torch.no_grad()
def conditioning_metrics(
    network: nn.Module,
    inferer: PatronusInferer,
    images: torch.Tensor,
    num_inference_steps: int = 50,
    num_prototypes: int = 4,
    reference: torch.Tensor | None = None,
    edit_modes: Sequence[str] = ("invert",),
    depth: int | None = None,
    num_bands: int = 4,
    seed: int = 0,
    feature_extractor: nn.Module | None = None,
) -> dict:
    """All four conditioning metrics on one fixed set of images (see the module docstring).

    Returns:
        ``{"semantic_reconstruction", "edit_efficacy", "conditioning_gain", "sample_sanity", "summary"}``;
        ``summary`` is :func:`conditioning_summary`'s line.
    """
    semantic = semantic_reconstruction(
        network, inferer, images, num_inference_steps, seed, feature_extractor, return_samples=True
    )
    samples = semantic.pop("samples")
    result = {
        "semantic_reconstruction": semantic,
        "edit_efficacy": edit_efficacy(
            network, inferer, images, None, num_prototypes, reference, num_inference_steps, depth, edit_modes, seed
        ),
        "conditioning_gain": conditioning_gain(network, inferer, images, num_bands, seed=seed),
        "sample_sanity": sample_sanity(samples, images),
    }
    result["summary"] = conditioning_summary(result)
    return result


def conditioning_summary(metrics: dict) -> str:
    """One line for a figure or log: semantic-reconstruction gap, edit efficacy, conditioning gain, with chance."""
    parts = []
    sem = metrics.get("semantic_reconstruction")
    if sem:
        parts.append(f"s->image gap {sem['psnr']['gap']:+.2f} dB PSNR, {sem['ssim']['gap']:+.3f} SSIM (chance 0)")
    eff = metrics.get("edit_efficacy")
    if eff:
        mode = "invert" if "invert" in eff else "sample"
        raised = eff[mode]["raise"]["median"]
        parts.append("edit efficacy " + ("n/a" if raised is None else f"{raised:.1%}") + " (chance 0)")
    gain = metrics.get("conditioning_gain")
    if gain:
        parts.append(f"conditioning gain {gain['mean_gain']:.1%} (chance 0)")
    san = metrics.get("sample_sanity")
    if san:
        parts.append(
            f"samples saturated {san['samples']['saturated']:.0%} (data {san['data']['saturated']:.0%}), "
            f"beyond ±1 {san['samples']['out_of_range']:.0%}"
        )
    return "; ".join(parts)


def _cell(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def conditioning_table(results: dict, extra: dict[str, Callable[[dict], str]] | None = None) -> str:
    """Markdown table of :func:`conditioning_metrics` results ``{model name: result}``, one row per model, with the
    chance row; ``extra``: ``{column header: cell of a result}`` for columns after the name (e.g. training steps)."""
    extra = extra or {}
    head = [
        "model",
        *extra,
        "semantic PSNR own / other / gap (dB)",
        "SSIM gap",
        "win rate",
        "edit efficacy raise / suppress (median)",
        "in-box ratio",
        "conditioning gain",
        "saturated samples / data",
    ]
    rows = [head, ["---"] * len(head), ["chance", *["-"] * len(extra), "gap 0", "0", "0.50", "0 / 0", "1", "0", "-"]]
    for name, r in results.items():
        sem, san, gain = r["semantic_reconstruction"], r["sample_sanity"], r["conditioning_gain"]
        eff = r["edit_efficacy"]["invert" if "invert" in r["edit_efficacy"] else "sample"]
        rows.append(
            [
                name,
                *(cell(r) for cell in extra.values()),
                f"{sem['psnr']['own']:.2f} / {sem['psnr']['other']:.2f} / {sem['psnr']['gap']:+.2f}",
                f"{sem['ssim']['gap']:+.3f}",
                f"{sem['win_rate']:.2f}",
                f"{_cell(eff['raise']['median'], '.2f')} / {_cell(eff['suppress']['median'], '.2f')}",
                _cell(eff["in_box_ratio"]["median"], ".2f"),
                f"{gain['mean_gain']:+.1%}",
                f"{san['samples']['saturated']:.2f} / {san['data']['saturated']:.2f}",
            ]
        )
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def compare_conditioning(
    network: nn.Module,
    inferer: PatronusInferer,
    images: torch.Tensor,
    reference_weights: str | None,
    output_path: str | None = None,
    num_inference_steps: int = 50,
    num_prototypes: int = 4,
    seed: int = 0,
    names: tuple[str, str] = ("this run", "reference"),
) -> dict:
    """The conditioning metrics of ``network`` beside those of the same architecture loaded from
    ``reference_weights`` (e.g. a bundle's shipped model), on the same images, noise and settings.

    Prints :func:`conditioning_table` and writes the numbers to ``output_path`` (JSON) when given. When the reference
    cannot be loaded (no file, another architecture) only ``network`` is measured and the reason is printed and
    returned under ``"reference_skipped"``.

    Returns:
        ``{"results": {name: conditioning_metrics(...)}, "table": str, "num_images", "num_inference_steps"}``.
    """
    from monai_patronus.handlers import load_network_weights

    networks = {names[0]: network}
    out: dict = {"num_images": int(images.shape[0]), "num_inference_steps": num_inference_steps}
    if reference_weights is not None:
        reference = copy.deepcopy(getattr(network, "module", network))
        try:
            out["reference_weights"] = Path(load_network_weights(reference, reference_weights)).name
            networks[names[1]] = reference.eval()
        except (FileNotFoundError, KeyError, ValueError, RuntimeError) as err:
            out["reference_skipped"] = f"{names[1]} not compared: {err}"
            print(out["reference_skipped"])
    out["results"] = {
        name: conditioning_metrics(net, inferer, images, num_inference_steps, num_prototypes, seed=seed)
        for name, net in networks.items()
    }
    out["table"] = conditioning_table(out["results"])
    print(
        f"Does generation follow s? {out['num_images']} held-out images, {num_inference_steps} DDIM steps, "
        f"guidance {getattr(inferer, 'guidance_scale', 1.0):g}:\n{out['table']}"
    )
    if output_path is not None:
        Path(output_path).parent.mkdir(parents=True, exist_ok=True)
        Path(output_path).write_text(json.dumps(out, indent=1, default=float))
    return out
