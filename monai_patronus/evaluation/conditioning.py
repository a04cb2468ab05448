"""Does generation use the prototype vector? Conditioning metrics, each with its chance level.

Every Patronus explanation (what, where, when, edits, shortcut counterfactuals) is a statement about how the
network *uses* ``s``. A network that ignores ``s`` still denoises, and DDIM inversion reconstructs through an untrained,
zero-initialised network at > 100 dB (its ε = 0 makes inversion exact), so reconstruction PSNR says nothing
about it. The
metrics here compare the model with itself given the right and a wrong ``s`` (the other image is the next one in
the given order: pass images in a shuffled or spread order, since neighbouring slices have similar ``s``); a network that ignores ``s``
scores exactly the chance level, whatever else it learned.

- :func:`semantic_reconstruction`: generate from fresh noise given ``s(x)``, and from the *same* noise given
  the ``s`` of another image; PSNR/SSIM (and a feature distance) of both to ``x``. The gap is what ``s``
  carries into generation (chance: 0; win rate chance: 0.5).
- :func:`edit_efficacy`: set ``s_k`` to its plausible maximum (raise) or minimum (suppress), regenerate by
  invert + regenerate (or by sampling), re-encode: the share of the intended change of ``s_k`` that the
  regenerated image shows (chance: 0; 1 = the edit took fully), and how much of the pixel change falls in
  prototype ``k``'s box relative to the box's share of the image (chance: 1).
- :func:`conditioning_gain`: held-out denoising loss per timestep band with the right ``s`` against the same
  images' ``s`` shuffled between them (chance: 0; the relative loss reduction that ``s`` buys).
- :func:`sample_sanity`: saturation and range of generated images against the data.

:func:`conditioning_metrics` runs all four on one fixed set of images (the training handler, ``evaluate``
and the explain workflows use it); :func:`conditioning_summary` is the one line that goes beside every
explanation figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import PSNRMetric, SSIMMetric
from monai.networks.utils import eval_mode
from torch import nn

from monai_patronus.evaluation.generation import _check_image_range, _ssim_window

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


def _per_image_similarity(prediction: torch.Tensor, target: torch.Tensor, win_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image PSNR (dB, ``max_val = 2``) and SSIM (``data_range = 2``) from MONAI, images in [-1, 1]."""
    window = _ssim_window("semantic_reconstruction", target.shape[2:], win_size)
    psnr = PSNRMetric(max_val=2.0, reduction="none")(y_pred=prediction, y=target).reshape(-1)
    ssim = SSIMMetric(spatial_dims=target.ndim - 2, data_range=2.0, win_size=window, reduction="none")
    return psnr, ssim(y_pred=prediction, y=target).reshape(target.shape[0], -1).mean(1)


def _check_images(owner: str, images: object) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim not in (4, 5) or not images.dtype.is_floating_point:
        shown = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{owner}: images must be a float tensor (N, C, H, W[, D]) in [-1, 1], got {shown}.")
    if images.shape[0] < 2:
        raise ValueError(f"{owner}: images must hold at least 2 images (each is compared with another's s), "
                         f"got {images.shape[0]}.")
    _check_image_range(owner, "images", images)
    return images.float()


def _noise(images: torch.Tensor, seed: int) -> torch.Tensor:
    return torch.randn(images.shape, generator=torch.Generator().manual_seed(seed)).to(images.device)


@torch.no_grad()
def semantic_reconstruction(
    network: nn.Module,
    inferer,
    images: torch.Tensor,
    num_inference_steps: int = 50,
    seed: int = 0,
    feature_extractor: nn.Module | None = None,
    win_size: int = 11,
    return_samples: bool = False,
) -> dict:
    """How much of an image its ``s`` reproduces when generating from fresh noise.

    Each image ``x`` is generated twice from the same noise: given ``s(x)`` ("own") and given ``s`` of another
    image of the set ("other", a cyclic shift). Both are clamped to [-1, 1] and compared with ``x``.

    Returns:
        ``{"psnr": {"own", "other", "gap"}, "ssim": {...}, "win_rate", "num_images", "chance"}`` (means over
        images; ``gap = own - other``; ``win_rate`` is the share of images whose own-``s`` sample is closer in
        PSNR, differences below 0.001 dB counted as half a win), ``"feature_distance"`` (mean L2 distance of extractor features, ``gap = other -
        own`` so that positive is better) with a ``feature_extractor``, and ``"samples"`` (own, CPU) when
        ``return_samples``. A network that ignores ``s`` gives identical samples: every gap is 0 and the win
        rate 0.5. ``samples`` are the own-``s`` samples before clamping (for :func:`sample_sanity`).
    """
    x = _check_images("semantic_reconstruction", images)
    with eval_mode(network):
        s = network.encode(x)
        noise = _noise(x, seed)
        raw = inferer.sample(torch.cat([noise, noise]), network, torch.cat([s, s[_derangement(len(x))]]),
                             num_inference_steps)
    own, other = raw.clamp(-1.0, 1.0).chunk(2)
    psnr_own, ssim_own = _per_image_similarity(own, x, win_size)
    psnr_other, ssim_other = _per_image_similarity(other, x, win_size)
    tie = (psnr_own - psnr_other).abs() < 1e-3  # differences below 0.001 dB are rounding, not a win
    wins = ((psnr_own > psnr_other) & ~tie).float() + 0.5 * tie.float()
    result = {
        "psnr": _gap(psnr_own, psnr_other),
        "ssim": _gap(ssim_own, ssim_other),
        "win_rate": float(wins.mean()),
        "num_images": int(x.shape[0]),
        "num_inference_steps": num_inference_steps,
        "chance": {"gap": 0.0, "win_rate": 0.5},
    }
    if feature_extractor is not None:
        with eval_mode(feature_extractor):
            f_x, f_own, f_other = (feature_extractor(t).flatten(1).float() for t in (x, own, other))
        d_own, d_other = (f_own - f_x).norm(dim=1), (f_other - f_x).norm(dim=1)
        result["feature_distance"] = {"own": float(d_own.mean()), "other": float(d_other.mean()),
                                      "gap": float((d_other - d_own).mean())}
    if return_samples:
        result["samples"] = raw[: len(x)].cpu()
    return result


def _gap(own: torch.Tensor, other: torch.Tensor) -> dict:
    finite = torch.isfinite(own) & torch.isfinite(other)  # identical images give PSNR inf
    diff = torch.where(finite, own - other, torch.zeros_like(own))
    return {"own": float(own[torch.isfinite(own)].mean()) if torch.isfinite(own).any() else math.inf,
            "other": float(other[torch.isfinite(other)].mean()) if torch.isfinite(other).any() else math.inf,
            "gap": float(diff.mean())}


def _default_prototypes(reference: torch.Tensor, num_prototypes: int) -> list[int]:
    """The prototypes whose activation varies most over the reference images (a constant one cannot be edited)."""
    spread = reference.max(0).values - reference.min(0).values
    order = torch.argsort(spread, descending=True, stable=True)
    return [int(k) for k in order[: min(num_prototypes, reference.shape[1])]]


@torch.no_grad()
def edit_efficacy(
    network: nn.Module,
    inferer,
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

    For each prototype ``k`` and each image, two edits: *raise* ``s_k`` to its plausible maximum and
    *suppress* it to its plausible minimum (the paper's targets: the extremes of ``s_k`` over ``reference``,
    by default over ``images``). ``"invert"``: invert the image, regenerate with the edited vector and compare
    with the regeneration with the unedited vector (so inversion error cancels); ``"sample"``: generate from
    fresh noise with both vectors. Per image and edit, ``efficacy = (s_k(edited) - s_k(unedited)) / (target -
    s_k(x))``, over the edits whose intended change is at least ``min_change`` of ``k``'s range.

    Where: for each edit the pixel change ``|edited - unedited|`` is compared with prototype ``k``'s box (its
    receptive field at the closest cell: on the edited image for a raise, on the unedited one for a suppress).
    ``in_box_ratio = (share of the change inside the box) / (share of the image the box covers)``: 1 is chance
    (change spread evenly), larger means the edit changed the pattern's place.

    Args:
        network, inferer: the model (eval mode set here and restored).
        images: ``(N, C, *spatial)`` in [-1, 1], N >= 2.
        prototypes: the prototypes to edit; default the ``num_prototypes`` whose activation varies most over
            ``reference``.
        reference: ``(M, K)`` activations that define the plausible range (e.g. the training set's).
        num_inference_steps, depth: the DDIM grid and partial inversion.
        modes: ``"invert"`` and/or ``"sample"``.
        seed: the noise of ``"sample"``.
        min_change: see above.

    Returns:
        ``{mode: {"raise": {"median", "mean", "count"}, "suppress": {...}, "in_box_ratio": {"median", "mean",
        "count"}}, "prototypes", "chance": {"efficacy": 0, "in_box_ratio": 1}, ...}``. A network that ignores
        ``s`` regenerates the same image: efficacy 0 and no change to locate (``in_box_ratio`` count 0).
    """
    x = _check_images("edit_efficacy", images)
    unknown = [m for m in modes if m not in ("invert", "sample")]
    if unknown or not modes:
        raise ValueError(f"edit_efficacy: modes must be a non-empty subset of ('invert', 'sample'), got {tuple(modes)!r}.")
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
        result: dict = {"prototypes": ks, "num_images": n, "num_inference_steps": num_inference_steps, "depth": depth,
                        "chance": {"efficacy": 0.0, "in_box_ratio": 1.0}}
        for mode in modes:
            if mode == "invert":
                latents = inferer.invert(x, network, s, num_inference_steps, depth=depth)
                unedited = inferer.reconstruct(latents, network, s, num_inference_steps, depth=depth)
                edited = inferer.reconstruct(latents.repeat(2 * p, *([1] * (x.ndim - 1))), network, target_s,
                                             num_inference_steps, depth=depth)
            else:
                noise = _noise(x, seed)
                unedited = inferer.sample(noise, network, s, num_inference_steps)
                edited = inferer.sample(noise.repeat(2 * p, *([1] * (x.ndim - 1))), network, target_s, num_inference_steps)
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
    inferer,
    images: torch.Tensor,
    num_bands: int = 4,
    repeats: int = 2,
    seed: int = 0,
) -> dict:
    """Held-out denoising loss with the right ``s`` against ``s`` shuffled between the images, per timestep band.

    The timesteps ``[0, T)`` are cut into ``num_bands`` equal bands; for each band and repeat, every image gets a
    timestep drawn uniformly in the band and fresh noise, and the network's training loss (MSE to the noise, or
    to the velocity for a ``v_prediction`` scheduler) is computed twice on the same noisy input: conditioned on
    the image's own ``s`` and on another image's. ``gain = 1 - loss_right / loss_shuffled`` is the share of
    the loss that knowing the right ``s`` removes (chance: 0; negative: the wrong ``s`` does better).

    Returns:
        ``{"bands": [[lo, hi), ...], "loss_right", "loss_shuffled", "gain" (per band), "mean_gain", "chance"}``.
    """
    x = _check_images("conditioning_gain", images)
    scheduler = inferer.scheduler
    T = int(scheduler.num_train_timesteps)
    if isinstance(num_bands, bool) or not isinstance(num_bands, int) or not 1 <= num_bands <= T:
        raise ValueError(f"conditioning_gain: num_bands must be an int in [1, {T}], got {num_bands!r}.")
    edges = np.linspace(0, T, num_bands + 1).round().astype(int)
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
    return {"bands": [[int(a), int(b)] for a, b in zip(edges[:-1], edges[1:])], "loss_right": right,
            "loss_shuffled": shuffled, "gain": gain, "mean_gain": float(np.mean(gain)), "chance": {"gain": 0.0}}


def sample_sanity(samples: torch.Tensor, images: torch.Tensor, threshold: float = 0.98) -> dict:
    """Saturation and range of generated ``samples`` (unclamped) against the data ``images``.

    ``saturated`` is the share of pixels beyond ``±threshold`` and ``out_of_range`` the share beyond ±1; the
    data's own values are given beside them (a black background saturates real images too). A sampler that
    diverges shows samples far more saturated than the data, a range far beyond [-1, 1] and a different spread.
    """
    def describe(t: torch.Tensor) -> dict:
        t = t.float()
        return {"saturated": float((t.abs() > threshold).float().mean()), "out_of_range": float((t.abs() > 1.0).float().mean()),
                "min": float(t.min()), "max": float(t.max()), "mean": float(t.mean()), "std": float(t.std())}

    return {"samples": describe(samples), "data": describe(images), "threshold": threshold}


@torch.no_grad()
def conditioning_metrics(
    network: nn.Module,
    inferer,
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
    semantic = semantic_reconstruction(network, inferer, images, num_inference_steps, seed, feature_extractor,
                                       return_samples=True)
    samples = semantic.pop("samples")
    result = {
        "semantic_reconstruction": semantic,
        "edit_efficacy": edit_efficacy(network, inferer, images, None, num_prototypes, reference, num_inference_steps,
                                       depth, edit_modes, seed),
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
        parts.append(f"samples saturated {san['samples']['saturated']:.0%} (data {san['data']['saturated']:.0%}), "
                     f"beyond ±1 {san['samples']['out_of_range']:.0%}")
    return "; ".join(parts)


def _cell(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def conditioning_table(results: dict) -> str:
    """Markdown table of :func:`conditioning_metrics` results, one row per model, with the chance row."""
    rows = [
        "| model | semantic PSNR own / other / gap (dB) | SSIM gap | win rate | edit efficacy raise / suppress (median) "
        "| in-box ratio | conditioning gain | saturated samples / data |",
        "|---|---|---|---|---|---|---|---|",
        "| chance | gap 0 | 0 | 0.50 | 0 / 0 | 1 | 0 | - |",
    ]
    for name, r in results.items():
        sem, san, gain = r["semantic_reconstruction"], r["sample_sanity"], r["conditioning_gain"]
        eff = r["edit_efficacy"]["invert" if "invert" in r["edit_efficacy"] else "sample"]
        rows.append("| " + " | ".join([
            name,
            f"{sem['psnr']['own']:.2f} / {sem['psnr']['other']:.2f} / {sem['psnr']['gap']:+.2f}",
            f"{sem['ssim']['gap']:+.3f}",
            f"{sem['win_rate']:.2f}",
            f"{_cell(eff['raise']['median'], '.2f')} / {_cell(eff['suppress']['median'], '.2f')}",
            _cell(eff["in_box_ratio"]["median"], ".2f"),
            f"{gain['mean_gain']:+.1%}",
            f"{san['samples']['saturated']:.2f} / {san['data']['saturated']:.2f}",
        ]) + " |")
    return "\n".join(rows)


def compare_conditioning(
    network: nn.Module,
    inferer,
    images: torch.Tensor,
    reference_weights: str | None,
    output_path: str | None = None,
    num_inference_steps: int = 50,
    num_prototypes: int = 4,
    seed: int = 0,
    names: tuple[str, str] = ("this run", "reference"),
) -> dict:
    """The conditioning metrics of ``network`` beside those of the same architecture loaded from
    ``reference_weights`` (e.g. a bundle's shipped pretrained model), on the same images, noise and settings.

    For the end of a training run: prints a markdown table (:func:`conditioning_table`) and writes the numbers
    to ``output_path`` (JSON) when given. When the reference cannot be loaded (no file, or another
    architecture, e.g. after changing ``image_size``) only ``network`` is measured, and the reason is printed
    and returned under ``"reference_skipped"``.

    Returns:
        ``{"results": {name: conditioning_metrics(...)}, "table": str, "num_images", "num_inference_steps"}``.
    """
    import copy
    import json
    from pathlib import Path

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
    print(f"Does generation follow s? {out['num_images']} held-out images, {num_inference_steps} DDIM steps, "
          f"guidance {getattr(inferer, 'guidance_scale', 1.0):g}:\n{out['table']}")
    if output_path is not None:
        Path(output_path).parent.mkdir(parents=True, exist_ok=True)
        Path(output_path).write_text(json.dumps(out, indent=1, default=float))
    return out
