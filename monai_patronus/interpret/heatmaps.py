"""Prototype similarity heat-maps on the input grid, placed by exact receptive-field geometry.

The encoder gives one squared distance ``d_k(u)`` per feature cell ``u`` (``(N, K, *feature_spatial)``).
The similarity ``log((d + 1) / (d + eps))`` of cell ``u`` belongs to the *centre* of its receptive-field
box in the input, ``c(u) = u * J + O + (R - 1) / 2`` per axis (jump ``J``, offset ``O``, size ``R`` of
:class:`~monai_patronus.networks.ReceptiveField`). :func:`similarity_heatmaps` puts every cell's value at
that centre and interpolates between neighbouring centres (multilinear or nearest), clamping to the
nearest centre outside their span. (A plain resize of the feature map would stretch it evenly over the
whole image and so misplace it wherever the box centres are not spread that way, e.g. with padding.)
So a heat-map pixel on a box centre holds exactly that cell's similarity, and the peak sits over the
box of the argmin cell ``u*_k``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.utils import look_up_option

from monai_patronus.networks.prototype_encoder import PrototypeEncoder

__all__ = ["similarity_heatmaps"]


def similarity_heatmaps(
    encoder: PrototypeEncoder,
    images: torch.Tensor,
    prototypes: Sequence[int] | torch.Tensor | None = None,
    mode: str = "bilinear",
) -> torch.Tensor:
    """Per-prototype similarity heat-maps on the input grid.

    Args:
        encoder: the prototype encoder (``PatronusUNet.prototype_encoder`` for a trained Patronus model).
        images: ``(N, C, *spatial)`` images in the encoder's input range, on the encoder's device.
        prototypes: prototype indices to map (default: all ``K``, in order); repeats are allowed.
        mode: ``"bilinear"`` (multilinear between box centres: bilinear in 2-D, trilinear in 3-D) or
            ``"nearest"`` (each pixel takes the value of the closest box centre; halves round up).

    Returns:
        float tensor ``(N, P, *spatial)`` (``P = len(prototypes)``) of similarities
        ``log((d + 1) / (d + eps))``, equal to the cell's value exactly at every cell's box centre.
        Computed without gradients.
    """
    index = check_encoder(encoder, prototypes, images)
    mode = look_up_option(mode, ("bilinear", "nearest"))

    with torch.no_grad():
        maps = encoder(images, return_maps=True).distance_maps  # (N, K, *feature_spatial)
        maps = maps.index_select(1, index.to(maps.device))
        sim = torch.log((maps + 1.0) / (maps + encoder.epsilon))
        rf = encoder.receptive_field
        out = sim
        for axis, n_out in enumerate(images.shape[2:]):
            dim = axis + 2
            n_cells = sim.shape[dim]
            # position of each output pixel in units of cells: cell i's box centre is at t = i exactly.
            # float64 keeps t integral at every centre (centres are integers or half-integers).
            centre0 = rf.offset[axis] + (rf.size[axis] - 1) / 2.0
            pos = torch.arange(n_out, dtype=torch.float64, device=sim.device)
            t = ((pos - centre0) / rf.jump[axis]).clamp(0.0, n_cells - 1)
            if mode == "nearest":
                idx = torch.floor(t + 0.5).long().clamp(max=n_cells - 1)
                out = out.index_select(dim, idx)
                continue
            lo = torch.floor(t).long().clamp(max=max(n_cells - 2, 0))
            hi = (lo + 1).clamp(max=n_cells - 1)
            w = (t - lo.to(torch.float64)).to(sim.dtype)
            shape = [1] * out.ndim
            shape[dim] = n_out
            w = w.view(shape)
            # at a centre w == 0, so the value is v_lo * 1 + v_hi * 0 == v_lo bit for bit
            out = out.index_select(dim, lo) * (1.0 - w) + out.index_select(dim, hi) * w
        return out


def check_encoder(
    encoder: PrototypeEncoder,
    prototypes: Sequence[int] | torch.Tensor | None = None,
    images: torch.Tensor | None = None,
    name: str = "images",
) -> torch.Tensor:
    """Check that ``encoder`` is a :class:`PrototypeEncoder` and that it can take ``images``
    ``(N >= 1, in_channels, *spatial)``; return ``prototypes`` as a 1-D long tensor (all ``K`` when ``None``)."""
    if not isinstance(encoder, PrototypeEncoder):
        hint = " (for a PatronusUNet pass net.prototype_encoder)" if hasattr(encoder, "prototype_encoder") else ""
        raise TypeError(f"encoder must be a PrototypeEncoder{hint}, got {type(encoder).__name__}.")
    if images is not None:
        if images.ndim != encoder.spatial_dims + 2 or images.shape[1] != encoder.in_channels or images.shape[0] == 0:
            raise ValueError(
                f"{name} must have shape (N >= 1, {encoder.in_channels}, *{encoder.spatial_dims} spatial dims) "
                f"for this encoder, got {tuple(images.shape)}."
            )
        encoder.receptive_field.output_shape(tuple(images.shape[2:]))  # names the too-small input shape
    k = encoder.num_prototypes
    index = torch.arange(k) if prototypes is None else torch.as_tensor(prototypes, dtype=torch.long).reshape(-1)
    if index.numel() == 0 or not ((index >= 0) & (index < k)).all():
        raise ValueError(f"prototypes must be indices in [0, {k}) for this encoder, got {index.tolist()}.")
    return index.cpu()
