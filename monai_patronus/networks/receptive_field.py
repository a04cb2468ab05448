"""Exact receptive-field arithmetic for a stack of convolutions (ProtoPNet-style, N-D).

For a chain of layers with kernel sizes ``k_l``, strides ``s_l`` and paddings ``p_l`` (per
spatial axis), feature cell ``i`` of the last layer depends on the input indices

    ``[i * J + O, i * J + O + R)``  (half-open), clipped to the image,

with jump ``J = prod_l s_l``, size ``R = 1 + sum_l (k_l - 1) * J_{l-1}`` and offset
``O = -sum_l p_l * J_{l-1}`` (``J_{l-1}`` is the jump before layer ``l``, ``J_0 = 1``).
All quantities are integers, so boxes are exact for any configuration.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.utils import ensure_tuple_rep

__all__ = ["ReceptiveField", "per_layer_per_axis"]


def per_layer_per_axis(
    name: str, values: Sequence[int | Sequence[int]] | int, num_layers: int, spatial_dims: int, minimum: int
) -> tuple[tuple[int, ...], ...]:
    """Expand ``values`` (an int, or one entry per layer, each an int or one int per axis) to ``num_layers``
    tuples of ``spatial_dims`` ints (``monai.utils.ensure_tuple_rep``), each at least ``minimum``."""
    try:
        out = tuple(ensure_tuple_rep(v, spatial_dims) for v in ensure_tuple_rep(values, num_layers))
    except ValueError as err:
        raise ValueError(
            f"{name} must be an int or have one entry per layer ({num_layers}), each an int or {spatial_dims} ints "
            f"(one per axis), got {values!r}."
        ) from err
    flat = [v for t in out for v in t]
    if not all(isinstance(v, int) for v in flat):
        raise TypeError(f"{name} must hold ints, got {values!r}.")
    if min(flat) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {values!r}.")
    return out


class ReceptiveField:
    """Receptive field of every cell of the last layer of a convolution stack, in 2-D or 3-D.

    Args:
        spatial_dims: number of spatial axes.
        kernel_sizes: one kernel size per layer (int, or one int per axis).
        strides: one stride per layer (int, or one int per axis).
        paddings: one zero-padding per layer (int, or one int per axis).

    Example::

        rf = ReceptiveField(2, kernel_sizes=[3, 3, 3, 3], strides=[2, 1, 1, 1], paddings=[1, 0, 0, 0])
        rf.size  # (15, 15): each cell of the 64x64 preset sees a 15-px patch
        rf.boxes(torch.tensor([[3, 4]]), (64, 64))  # (1, 2, 2) [start, stop) per axis
    """

    def __init__(
        self,
        spatial_dims: int,
        kernel_sizes: Sequence[int | Sequence[int]],
        strides: Sequence[int | Sequence[int]],
        paddings: Sequence[int | Sequence[int]],
    ) -> None:
        if spatial_dims < 1:
            raise ValueError(f"spatial_dims must be a positive int, got {spatial_dims!r}.")
        if isinstance(kernel_sizes, int) or len(kernel_sizes) == 0:
            raise ValueError(f"kernel_sizes must be a non-empty list with one entry per layer, got {kernel_sizes!r}.")
        n = len(kernel_sizes)
        self.spatial_dims = spatial_dims
        self.kernel_sizes = per_layer_per_axis("kernel_sizes", kernel_sizes, n, spatial_dims, 1)
        self.strides = per_layer_per_axis("strides", strides, n, spatial_dims, 1)
        self.paddings = per_layer_per_axis("paddings", paddings, n, spatial_dims, 0)
        k, s, p = (torch.tensor(v) for v in (self.kernel_sizes, self.strides, self.paddings))  # (layers, axes)
        before = torch.cat([torch.ones_like(s[:1]), s[:-1]]).cumprod(0)  # the jump before each layer
        self.jump, self.size = tuple(s.prod(0).tolist()), tuple((1 + ((k - 1) * before).sum(0)).tolist())
        self.offset = tuple((-(p * before).sum(0)).tolist())

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Spatial shape of the last feature map for an input of spatial shape ``input_shape``."""
        shape = self._check_shape(input_shape)
        for k, s, p in zip(self.kernel_sizes, self.strides, self.paddings):
            shape = [(n + 2 * p[a] - k[a]) // s[a] + 1 for a, n in enumerate(shape)]
            if min(shape) < 1:
                raise ValueError(
                    f"input spatial shape {tuple(input_shape)} is too small for this convolution stack "
                    f"(receptive field {self.size}); use a larger input or fewer/smaller layers."
                )
        return tuple(shape)

    def boxes(self, cells: torch.Tensor, input_shape: Sequence[int], clip: bool = True) -> torch.Tensor:
        """Input boxes ``(..., spatial_dims, 2)`` (long, ``[start, stop)`` per axis, so ``image[..., start_0:stop_0,
        start_1:stop_1]`` is the patch) of integer feature-cell indices ``cells`` ``(..., spatial_dims)``, clipped to
        the image of spatial shape ``input_shape`` with ``clip`` (the part in the zero padding carries no signal)."""
        shape = self._check_shape(input_shape)
        bad_dtype = cells.dtype.is_floating_point or cells.dtype == torch.bool
        if bad_dtype or cells.ndim == 0 or cells.shape[-1] != self.spatial_dims:
            raise ValueError(
                f"cells must be an integer tensor (..., {self.spatial_dims}), got {tuple(cells.shape)} {cells.dtype}."
            )
        cells = cells.long()
        jump = cells.new_tensor(self.jump)
        start = cells * jump + cells.new_tensor(self.offset)
        stop = start + cells.new_tensor(self.size)
        if clip:
            start = start.clamp(min=0)
            stop = torch.minimum(stop, cells.new_tensor(shape))
        return torch.stack([start, stop], dim=-1)

    def _check_shape(self, input_shape: Sequence[int]) -> list[int]:
        shape = [int(n) for n in input_shape]
        if len(shape) != self.spatial_dims or min(shape) < 1:
            raise ValueError(
                f"input_shape must be {self.spatial_dims} positive ints (the spatial shape), got "
                f"{tuple(input_shape)!r}."
            )
        return shape

    def __repr__(self) -> str:
        rf = f"size={self.size}, jump={self.jump}, offset={self.offset}"
        return f"ReceptiveField(spatial_dims={self.spatial_dims}, {rf})"
