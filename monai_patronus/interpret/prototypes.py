"""What and where: the Patronus prototype visualisation (docs/method.md section 5).

For a prototype ``k``: invert images to ``x_T``, raise ``s_k`` to the plausible maximum, regenerate,
re-encode the regenerated image, and box its most-activated patch (the argmin cell ``u*_k`` and its
receptive field). Of several images, the one where ``s_k`` rose most is shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from monai_patronus.inferers import PatronusInferer
from monai_patronus.interpret.editing import edit_activations, plausible_maximum
from monai_patronus.interpret.heatmaps import check_encoder

__all__ = ["PrototypeVisualisation", "visualize_prototypes"]


@dataclass
class PrototypeVisualisation:
    """The chosen example of one prototype.

    Attributes:
        prototype: index ``k``.
        image_index: which input image was chosen (largest rise of ``s_k``).
        original: that image ``(C, *spatial)``; ``regenerated``: after raising ``s_k``.
        box: ``((start, stop), ...)`` per spatial axis, in the regenerated image.
        patch: ``regenerated`` cropped to ``box``.
        activation_before / activation_after: ``s_k`` of the unedited and of the edited regeneration (both from
            the same inverted noise, so the inversion error cancels and a model that ignores ``s`` shows no rise).
        target: the value ``s_k`` was set to.
        gains: ``(N,)`` rise of ``s_k`` for every candidate image (edited minus unedited regeneration).
        activation_original: ``s_k`` of the original image.
    """

    prototype: int
    image_index: int
    original: torch.Tensor
    regenerated: torch.Tensor
    box: tuple[tuple[int, int], ...]
    patch: torch.Tensor
    activation_before: float
    activation_after: float
    target: float
    gains: torch.Tensor
    activation_original: float = float("nan")


@torch.no_grad()
def visualize_prototypes(
    inferer: PatronusInferer,
    network: nn.Module,
    images: torch.Tensor,
    prototypes: Sequence[int] | None = None,
    targets: torch.Tensor | None = None,
    num_inference_steps: int = 50,
    depth: int | None = None,
    batch_size: int = 32,
) -> list[PrototypeVisualisation]:
    """Visualise ``prototypes`` (default: all) on candidate ``images`` ``(N, C, *spatial)``.

    Every image is inverted and regenerated unedited once; each prototype then costs one batched regeneration
    of the candidates. The chosen image is the one whose ``s_k`` rises most over its unedited regeneration.

    Args:
        targets: ``(K,)`` values to raise ``s_k`` to; default :func:`plausible_maximum` of ``s(images)``.
        depth: partial inversion (see :meth:`PatronusInferer.invert`).
        batch_size: images per network call.
    """
    encoder = network.prototype_encoder
    prototypes = check_encoder(encoder, prototypes, images).tolist()
    s = torch.cat([network.encode(chunk) for chunk in images.split(batch_size)])
    targets = plausible_maximum(s) if targets is None else torch.as_tensor(targets, dtype=s.dtype, device=s.device)
    latents = torch.cat(
        [
            inferer.invert(x, network, sx, num_inference_steps, depth=depth)
            for x, sx in zip(images.split(batch_size), s.split(batch_size))
        ]
    )
    unedited = torch.cat(
        [
            network.encode(inferer.reconstruct(z, network, e, num_inference_steps, depth=depth))
            for z, e in zip(latents.split(batch_size), s.split(batch_size))
        ]
    )
    results = []
    for k in prototypes:
        edited = edit_activations(s, set={k: float(targets[k])})
        regenerated = torch.cat(
            [
                inferer.reconstruct(z, network, e, num_inference_steps, depth=depth)
                for z, e in zip(latents.split(batch_size), edited.split(batch_size))
            ]
        )
        maps = [encoder(chunk, return_maps=True) for chunk in regenerated.split(batch_size)]
        after = torch.cat([m.activations[:, k] for m in maps])
        locations = torch.cat([m.locations[:, k] for m in maps])
        gains = after - unedited[:, k]
        best = int(gains.argmax())
        box_t = encoder.boxes(locations[best], tuple(images.shape[2:]))
        box = tuple((int(a), int(b)) for a, b in box_t.tolist())
        patch = regenerated[best][(slice(None), *(slice(a, b) for a, b in box))]
        results.append(
            PrototypeVisualisation(
                k,
                best,
                images[best],
                regenerated[best],
                box,
                patch,
                float(unedited[best, k]),
                float(after[best]),
                float(targets[k]),
                gains,
                float(s[best, k]),
            )
        )
    return results
