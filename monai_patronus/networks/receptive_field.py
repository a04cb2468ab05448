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

__all__ = ["ReceptiveField", "per_layer_per_axis"]


def per_layer_per_axis(
    name: str, values: Sequence[int | Sequence[int]] | int, num_layers: int, spatial_dims: int, minimum: int
) -> tuple[tuple[int, ...], ...]:
    """Expand ``values`` (an int, a per-layer list of ints, or a per-layer list of per-axis tuples) to
    ``num_layers`` tuples of ``spatial_dims`` ints, each at least ``minimum``.

    Raises:
        TypeError: when an entry is not an int.
        ValueError: when the length does not match or a value is below ``minimum``.
    """
    if isinstance(values, bool):
        raise TypeError(f"{name} must be ints, got {values!r}.")
    if isinstance(values, int):
        values = [values] * num_layers
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise TypeError(f"{name} must be an int or a sequence with one entry per layer, got {values!r}.")
    if len(values) != num_layers:
        raise ValueError(
            f"{name} has {len(values)} entries ({list(values)!r}) but there are {num_layers} layers: "
            f"give one entry per layer or a single int."
        )
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, Sequence)) or isinstance(value, str):
            raise TypeError(f"{name} entries must be ints or per-axis tuples of ints, got {value!r} in {list(values)!r}.")
        per_axis = (value,) * spatial_dims if isinstance(value, int) else tuple(value)
        if len(per_axis) != spatial_dims:
            raise ValueError(f"{name} entry {value!r} must be an int or have {spatial_dims} values (one per axis).")
        for v in per_axis:
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{name} must hold ints, got {value!r} in {values!r}.")
            if v < minimum:
                raise ValueError(f"{name} must be >= {minimum}, got {v} in {list(values)!r}.")
        out.append(tuple(int(v) for v in per_axis))
    return tuple(out)


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
        if isinstance(spatial_dims, bool) or not isinstance(spatial_dims, int) or spatial_dims < 1:
            raise ValueError(f"spatial_dims must be a positive int, got {spatial_dims!r}.")
        if isinstance(kernel_sizes, int) or not isinstance(kernel_sizes, Sequence) or len(kernel_sizes) == 0:
            raise ValueError(f"kernel_sizes must be a non-empty list with one entry per layer, got {kernel_sizes!r}.")
        n = len(kernel_sizes)
        self.spatial_dims = spatial_dims
        self.kernel_sizes = per_layer_per_axis("kernel_sizes", kernel_sizes, n, spatial_dims, 1)
        self.strides = per_layer_per_axis("strides", strides, n, spatial_dims, 1)
        self.paddings = per_layer_per_axis("paddings", paddings, n, spatial_dims, 0)
        jump, size, offset = [1] * spatial_dims, [1] * spatial_dims, [0] * spatial_dims
        for k, s, p in zip(self.kernel_sizes, self.strides, self.paddings):
            for a in range(spatial_dims):
                size[a] += (k[a] - 1) * jump[a]
                offset[a] -= p[a] * jump[a]
                jump[a] *= s[a]
        self.jump, self.size, self.offset = tuple(jump), tuple(size), tuple(offset)

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
        """Input boxes of feature cells.

        Args:
            cells: integer tensor ``(..., spatial_dims)`` of feature-cell indices.
            input_shape: spatial shape of the input image, used to clip boxes to the image.
            clip: clip to the image (the part of a box in the zero padding carries no signal).

        Returns:
            long tensor ``(..., spatial_dims, 2)`` holding ``[start, stop)`` per axis, so
            ``image[..., start_0:stop_0, start_1:stop_1]`` is the patch.
        """
        shape = self._check_shape(input_shape)
        if not isinstance(cells, torch.Tensor) or cells.dtype.is_floating_point or cells.dtype == torch.bool:
            raise TypeError(f"cells must be an integer torch.Tensor, got {type(cells).__name__} {getattr(cells, 'dtype', '')}.")
        if cells.ndim == 0 or cells.shape[-1] != self.spatial_dims:
            raise ValueError(f"cells must have shape (..., {self.spatial_dims}), got {tuple(cells.shape)}.")
        cells = cells.long()
        jump = cells.new_tensor(self.jump)
        start = cells * jump + cells.new_tensor(self.offset)
        stop = start + cells.new_tensor(self.size)
        if clip:
            start = start.clamp(min=0)
            stop = torch.minimum(stop, cells.new_tensor(shape))
        return torch.stack([start, stop], dim=-1)

    def _check_shape(self, input_shape: Sequence[int]) -> list[int]:
        shape = [int(n) if hasattr(n, "__index__") and not isinstance(n, bool) else n for n in input_shape]
        if len(shape) != self.spatial_dims or any(not isinstance(n, int) or n < 1 for n in shape):
            raise ValueError(
                f"input_shape must be {self.spatial_dims} positive ints (the spatial shape), got {tuple(input_shape)!r}."
            )
        return shape

    def __repr__(self) -> str:
        return f"ReceptiveField(spatial_dims={self.spatial_dims}, size={self.size}, jump={self.jump}, offset={self.offset})"
