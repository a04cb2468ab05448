"""Steering Patronus through its prototype activations: edit, interpolate, extrapolate, vary.

All functions take a trained ε-predictor (e.g. :class:`~monai_patronus.networks.PatronusUNet`) and a
:class:`~monai_patronus.inferers.PatronusInferer` with a ``DDIMScheduler(clip_sample=False)``, and work
on 2-D and 3-D images alike. Edits start from the DDIM inversion of the image, so everything the
vector ``s`` does not describe is kept (docs/method.md section 4).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from monai_patronus.inferers import PatronusInferer

__all__ = [
    "EditResult",
    "edit_activations",
    "edit_images",
    "extrapolate",
    "interpolate",
    "plausible_maximum",
    "slerp",
    "variations",
]


def plausible_maximum(activations: torch.Tensor) -> torch.Tensor:
    """The paper's target for raising a prototype: the maximum of each ``s_k`` over a batch, ``(K,)``."""
    return activations.max(dim=0).values


def edit_activations(
    activations: torch.Tensor,
    set: Mapping[int, float | torch.Tensor] | None = None,  # noqa: A002 - mirrors the method's wording
    scale: Mapping[int, float] | None = None,
    add: Mapping[int, float] | None = None,
    suppress: Sequence[int] = (),
) -> torch.Tensor:
    """Return a copy of ``activations`` ``(N, K)`` with prototypes set, scaled, shifted or suppressed (set to 0,
    the smallest possible similarity). Operations apply in that order; a prototype may appear in several."""
    out = activations.clone()
    k = out.shape[1]
    for name, mapping in (("set", set), ("scale", scale), ("add", add), ("suppress", {i: 0.0 for i in suppress})):
        for index, value in (mapping or {}).items():
            if not 0 <= index < k:
                raise ValueError(f"edit_activations: {name} prototype index must be an int in [0, {k}), got {index!r}.")
            if name == "scale":
                out[:, index] = out[:, index] * float(value)
            elif name == "add":
                out[:, index] = out[:, index] + float(value)
            else:
                out[:, index] = torch.as_tensor(value, dtype=out.dtype, device=out.device)
    return out


@dataclass
class EditResult:
    """Images before and after an edit, with what produced them.

    Attributes:
        original: the input images ``(N, C, *spatial)``.
        activations: their ``s``, ``(N, K)``; ``edited_activations``: the edited vectors.
        latents: the DDIM inversion of ``original`` (at ``t_depth``).
        reconstructed: regenerated from ``latents`` with the original ``s`` (what the edit is compared to).
        edited: regenerated from ``latents`` with the edited ``s``.
        edited_encoded: ``s`` of the edited images (did the edit take?).
    """

    original: torch.Tensor
    activations: torch.Tensor
    edited_activations: torch.Tensor
    latents: torch.Tensor
    reconstructed: torch.Tensor | None
    edited: torch.Tensor
    edited_encoded: torch.Tensor


@torch.no_grad()
def edit_images(
    inferer: PatronusInferer,
    network: nn.Module,
    images: torch.Tensor,
    edited_activations: torch.Tensor | None = None,
    num_inference_steps: int = 50,
    depth: int | None = None,
    reconstruct: bool = True,
    **edits,
) -> EditResult:
    """Invert ``images``, regenerate them with edited activations and re-encode the result.

    Args:
        inferer, network: the trained model.
        images: ``(N, C, *spatial)`` in [-1, 1].
        edited_activations: the target vectors ``(N, K)`` (or ``(1, K)``); or leave ``None`` and give
            ``set=``, ``scale=``, ``add=``, ``suppress=`` as for :func:`edit_activations`.
        num_inference_steps: DDIM grid size ``N``.
        depth: invert only ``depth`` steps (1 .. N-1) and regenerate from there; small depths keep
            coarse structure and change only what emerges late (see :func:`prototype_emergence`).
        reconstruct: also regenerate with the unedited vector, for comparison.
    """
    s = network.encode(images)
    if edited_activations is None:
        edited_activations = edit_activations(s, **edits)
    elif edits:
        raise ValueError(f"edit_images: give edited_activations or edit keywords, not both (got {sorted(edits)}).")
    edited_activations = edited_activations.to(s).expand_as(s)
    latents = inferer.invert(images, network, s, num_inference_steps, depth=depth)
    edited = inferer.reconstruct(latents, network, edited_activations, num_inference_steps, depth=depth)
    recon = inferer.reconstruct(latents, network, s, num_inference_steps, depth=depth) if reconstruct else None
    return EditResult(images, s, edited_activations, latents, recon, edited, network.encode(edited))


def slerp(a: torch.Tensor, b: torch.Tensor, weight: float) -> torch.Tensor:
    """Spherical interpolation between noise tensors of one shape, per sample (flattened)."""
    af, bf = a.flatten(1), b.flatten(1)
    cos = (af * bf).sum(1) / (af.norm(dim=1) * bf.norm(dim=1)).clamp_min(1e-12)
    theta = torch.arccos(cos.clamp(-1.0, 1.0))[:, None]
    sin = torch.sin(theta)
    linear = sin.abs() < 1e-6  # (anti)parallel: fall back to linear interpolation
    wa = torch.where(linear, torch.full_like(theta, 1.0 - weight), torch.sin((1.0 - weight) * theta) / sin)
    wb = torch.where(linear, torch.full_like(theta, weight), torch.sin(weight * theta) / sin)
    return (wa * af + wb * bf).view_as(a)


@torch.no_grad()
def interpolate(
    inferer: PatronusInferer,
    network: nn.Module,
    image_a: torch.Tensor,
    image_b: torch.Tensor,
    steps: int = 10,
    num_inference_steps: int = 50,
) -> torch.Tensor:
    """Images along the path from ``image_a`` to ``image_b`` ``(1, C, *spatial)``: linear in ``s``, slerp in ``x_T``.

    Returns ``(steps, C, *spatial)``; the first and last are the reconstructions of a and b.
    """
    pair = torch.cat([image_a, image_b])
    s = network.encode(pair)
    latents = inferer.invert(pair, network, s, num_inference_steps)
    weights = torch.linspace(0, 1, steps).tolist()
    s_path = torch.stack([(1 - w) * s[0] + w * s[1] for w in weights])
    x_path = torch.cat([slerp(latents[:1], latents[1:], w) for w in weights])
    return inferer.reconstruct(x_path, network, s_path, num_inference_steps)


@torch.no_grad()
def extrapolate(
    inferer: PatronusInferer,
    network: nn.Module,
    image: torch.Tensor,
    prototype: int,
    values: Sequence[float] | torch.Tensor = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0),
    num_inference_steps: int = 50,
    depth: int | None = None,
) -> torch.Tensor:
    """Sweep ``s_prototype`` of one image ``(1, C, *spatial)`` over ``values`` (the paper: linspace(0, 3, 7),
    beyond the observed range) from its inverted noise; returns ``(len(values), C, *spatial)``."""
    s = network.encode(image)
    values = torch.as_tensor(values, dtype=s.dtype).flatten()
    if values.numel() == 0:
        raise ValueError("extrapolate: values must hold at least one value.")
    sweep = s.repeat(values.numel(), 1)
    sweep = edit_activations(sweep, set={prototype: values})
    latents = inferer.invert(image, network, s, num_inference_steps, depth=depth)
    latents = latents.expand(values.numel(), *latents.shape[1:])
    return inferer.reconstruct(latents, network, sweep, num_inference_steps, depth=depth)


@torch.no_grad()
def variations(
    inferer: PatronusInferer,
    network: nn.Module,
    image: torch.Tensor,
    num: int = 8,
    num_inference_steps: int = 50,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Images with the same ``s`` as ``image`` ``(1, C, *spatial)`` from fresh noise: ``(num, C, *spatial)``."""
    s = network.encode(image)
    noise = torch.randn((num, *image.shape[1:]), generator=generator).to(image)
    return inferer.sample(noise, network, s.expand(num, -1), num_inference_steps)
