"""Patch-prototype encoder (the Patronus prototype activation block), N-D.

Weng, Feragen, Bigdeli, "Patronus: Interpretable Diffusion Models with Prototypes", ICLR 2026,
https://arxiv.org/abs/2503.22782 (section 1 of ``docs/method.md``), after ProtoPNet (Chen et al. 2019).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from monai.networks.layers.factories import Conv
from monai.utils import look_up_option
from torch import nn
from torch.utils.data import DataLoader

from monai_patronus.networks.receptive_field import ReceptiveField, per_layer_per_axis

__all__ = ["PrototypeEncoder", "PrototypeActivations", "ENCODER_PRESETS", "init_prototypes_from_data"]

# The paper's encoder settings; ``channels`` excludes the input channel count.
ENCODER_PRESETS: dict[str, dict] = {
    # 32x32 and 64x64 images (CelebA, CIFAR-10, FFHQ, Fashion-MNIST): 26x26 map of 15-px patches at 64 px.
    "small": {"channels": (32, 64, 64, 128), "kernel_sizes": 3, "strides": (2, 1, 1, 1), "paddings": (1, 0, 0, 0)},
    # 224x224 chest X-rays: 43x43 map of 61-px patches.
    "cxr224": {
        "channels": (32, 64, 64, 128, 128),
        "kernel_sizes": 5,
        "strides": (2, 2, 1, 1, 1),
        "paddings": (1, 1, 0, 0, 0),
    },
}


class PrototypeActivations(NamedTuple):
    """Everything the prototype block computes for a batch.

    activations: ``(N, K)`` similarity ``s_k = log((d_k + 1) / (d_k + eps))``.
    min_distances: ``(N, K)`` squared L2 distance of the closest feature cell ``d_k``.
    distance_maps: ``(N, K, *feature_spatial)`` squared L2 distance of every cell.
    locations: ``(N, K, spatial_dims)`` long index of the closest cell ``u*_k`` (feature grid).
    """

    activations: torch.Tensor
    min_distances: torch.Tensor
    distance_maps: torch.Tensor
    locations: torch.Tensor


class PrototypeEncoder(nn.Module):
    """ProtoPNet-style patch-prototype encoder: ``Conv -> ReLU`` stack, K prototypes, min-distance similarity.

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        in_channels: channels of the input image.
        num_prototypes: number of prototypes ``K`` (paper: 100; 30 for Fashion-MNIST).
        channels: output channels of each conv layer; the last one is the prototype dimension ``C``.
        kernel_sizes: kernel size per layer (int for all layers, or a list; entries may be per-axis tuples).
        strides: stride per layer (as ``kernel_sizes``).
        paddings: zero padding per layer (as ``kernel_sizes``).
        epsilon: ``eps`` in the log similarity (paper: 1e-4).
        init_std: standard deviation of the normal init of the conv weights (paper: 0.1); biases start at 0.
        preset: name in :data:`ENCODER_PRESETS` (``"small"`` or ``"cxr224"``) to take the conv settings from;
            explicit ``channels``/``kernel_sizes``/``strides``/``paddings`` override it.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_prototypes: int = 100,
        channels: Sequence[int] | None = None,
        kernel_sizes: Sequence[int | Sequence[int]] | int | None = None,
        strides: Sequence[int | Sequence[int]] | int | None = None,
        paddings: Sequence[int | Sequence[int]] | int | None = None,
        epsilon: float = 1e-4,
        init_std: float = 0.1,
        preset: str | None = "small",
    ) -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"PrototypeEncoder: spatial_dims must be 1, 2 or 3, got {spatial_dims!r}.")
        for name, value in (("in_channels", in_channels), ("num_prototypes", num_prototypes)):
            if value < 1:
                raise ValueError(f"PrototypeEncoder: {name} must be an int >= 1, got {value!r}.")
        defaults = {} if preset is None else look_up_option(preset, ENCODER_PRESETS)
        channels = defaults.get("channels") if channels is None else channels
        kernel_sizes = defaults.get("kernel_sizes") if kernel_sizes is None else kernel_sizes
        strides = defaults.get("strides", 1) if strides is None else strides
        paddings = defaults.get("paddings", 0) if paddings is None else paddings
        if not channels or kernel_sizes is None or min(channels) < 1:
            raise ValueError(
                f"PrototypeEncoder: channels must be a non-empty list of ints >= 1 and kernel_sizes given (both are "
                f"needed with preset=None), got channels={channels!r}, kernel_sizes={kernel_sizes!r}."
            )
        if not (epsilon > 0 and init_std > 0):
            raise ValueError(f"PrototypeEncoder: epsilon and init_std must be > 0, got {epsilon}, {init_std}.")

        n = len(channels)
        ks = per_layer_per_axis("kernel_sizes", kernel_sizes, n, spatial_dims, 1)
        ss = per_layer_per_axis("strides", strides, n, spatial_dims, 1)
        ps = per_layer_per_axis("paddings", paddings, n, spatial_dims, 0)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.init_std = float(init_std)
        self.num_prototypes = num_prototypes
        self.prototype_dim = int(channels[-1])
        self.epsilon = float(epsilon)
        self.receptive_field = ReceptiveField(spatial_dims, ks, ss, ps)

        conv_type = Conv[Conv.CONV, spatial_dims]
        layers: list[nn.Module] = []
        c_in = in_channels
        for c_out, k, s, p in zip(channels, ks, ss, ps):
            conv = conv_type(c_in, int(c_out), kernel_size=k, stride=s, padding=p)
            nn.init.normal_(conv.weight, mean=0.0, std=init_std)
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.ReLU()]
            c_in = int(c_out)
        self.features = nn.Sequential(*layers)
        # 1x1 prototypes in feature space, uniform in [0, 1) as in the paper
        self.prototypes = nn.Parameter(torch.rand(num_prototypes, self.prototype_dim))

    def forward(self, x: torch.Tensor, return_maps: bool = False) -> torch.Tensor | PrototypeActivations:
        """The ``(N, K)`` activation vector ``s`` of images ``x`` ``(N, in_channels, *spatial)`` in [-1, 1], or with
        ``return_maps`` a :class:`PrototypeActivations` (also distance maps, minimum distances and locations)."""
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"PrototypeEncoder: x must be (N, {self.in_channels}, *spatial), got {tuple(x.shape)}.")
        self.receptive_field.output_shape(tuple(x.shape[2:]))  # clear error for too-small inputs
        z = self.features(x)
        maps = self.distance_maps(z)
        flat = maps.flatten(2)
        min_distances, argmin = flat.min(dim=2)
        activations = torch.log((min_distances + 1.0) / (min_distances + self.epsilon))
        if not return_maps:
            return activations
        locations = torch.stack(torch.unravel_index(argmin, maps.shape[2:]), dim=-1)
        return PrototypeActivations(activations, min_distances, maps, locations)

    def distance_maps(self, z: torch.Tensor) -> torch.Tensor:
        """Squared L2 distance of every feature cell to every prototype, ``(N, K, *spatial)``: ``||z||^2 - 2 z.p +
        ||p||^2`` in at least float32 (also under autocast), clamped at 0 against cancellation."""
        dtype = torch.promote_types(z.dtype, torch.float32)
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.to(dtype)
            p = self.prototypes.to(dtype)
            zf = z.flatten(2)  # (N, C, L)
            cross = torch.einsum("ncl,kc->nkl", zf, p)
            d = (zf * zf).sum(dim=1, keepdim=True) - 2.0 * cross + (p * p).sum(dim=1)[None, :, None]
            return d.clamp_min(0.0).view(z.shape[0], p.shape[0], *z.shape[2:])

    @torch.no_grad()
    def init_prototypes_from_features(self, images: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """Set the prototypes to feature cells of ``images`` chosen by k-means++ seeding (Arthur & Vassilvitskii
        2007); unlike the paper's uniform init, ``s`` then varies from step 0 (the README's "Training recipe").

        Args:
            images: ``(N, in_channels, *spatial)`` training images in [-1, 1].
            seed: seed of the draw.

        Returns:
            ``(K, 1 + spatial_dims)`` long tensor: each prototype's source image index, then its feature-grid cell.
        """
        if images.ndim != self.spatial_dims + 2 or images.shape[1] != self.in_channels:
            raise ValueError(
                f"init_prototypes_from_features: images must be a tensor (N, {self.in_channels}, *spatial), "
                f"got {tuple(images.shape)}."
            )
        device = self.prototypes.device
        z = torch.cat([self.features(c.to(device=device, dtype=self.prototypes.dtype)) for c in images.split(32)])
        grid = z.shape[2:]
        cells = z.flatten(2).transpose(1, 2).reshape(-1, z.shape[1]).float()  # (N * L, C)
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        chosen = [int(torch.randint(cells.shape[0], (1,), generator=gen))]
        d2 = ((cells - cells[chosen[0]]) ** 2).sum(1)
        for _ in range(1, self.num_prototypes):
            weights = d2.clamp_min(0).cpu().double()  # all 0: fewer distinct cells than prototypes, repeat at random
            draw = torch.multinomial(weights, 1, generator=gen) if weights.sum() > 0 else None
            idx = int(torch.randint(len(cells), (1,), generator=gen) if draw is None else draw)
            chosen.append(idx)
            d2 = torch.minimum(d2, ((cells - cells[idx]) ** 2).sum(1))
        self.prototypes.copy_(cells[chosen].to(self.prototypes.dtype))
        index = torch.tensor(chosen)
        num_cells = int(torch.tensor(grid).prod())
        where = torch.stack(torch.unravel_index(index % num_cells, tuple(grid)), dim=-1)
        return torch.cat([(index // num_cells)[:, None], where], dim=1)

    def boxes(self, locations: torch.Tensor, input_shape: Sequence[int]) -> torch.Tensor:
        """Input-space ``[start, stop)`` boxes ``(..., spatial_dims, 2)`` of feature cells (e.g. ``locations``)."""
        return self.receptive_field.boxes(locations, input_shape)


def init_prototypes_from_data(network: nn.Module, data, num_images: int = 256, seed: int = 0) -> nn.Module:
    """Initialise the prototypes of ``network`` from up to ``num_images`` images of ``data``
    (:meth:`PrototypeEncoder.init_prototypes_from_features`), e.g. in a bundle's ``initialize``.

    Args:
        network: the model or its encoder (DDP-wrapped too).
        data: a dataset or loader of ``{"image": ...}`` items or batches, or an image tensor ``(N, C, *spatial)``.
        num_images: images read at most (spread evenly over a dataset).
        seed: seed of the k-means++ draw.

    Returns:
        ``network``, with its prototypes set.
    """
    from monai_patronus.data import iter_batches, pick_images

    encoder = getattr(getattr(network, "module", network), "prototype_encoder", network)  # DDP-wrapped too
    if not isinstance(encoder, PrototypeEncoder):
        raise TypeError(
            "init_prototypes_from_data: network must be a PatronusUNet or a PrototypeEncoder, got "
            f"{type(network).__name__}."
        )
    if num_images < 1:
        raise ValueError(f"init_prototypes_from_data: num_images must be an int >= 1, got {num_images!r}.")
    if isinstance(data, torch.Tensor):
        images = data[:num_images]
    elif hasattr(data, "__getitem__") and hasattr(data, "__len__") and not isinstance(data, DataLoader):
        images = pick_images(data, min(num_images, len(data)), allow_fewer=True)  # skips unreadable items
    else:  # a loader: its first images
        parts, count = [], 0
        for _, batch, _ in iter_batches(data):
            parts.append(batch)
            count += batch.shape[0]
            if count >= num_images:
                break
        if not parts:
            raise ValueError("init_prototypes_from_data: data yielded no images; give the training dataset or loader.")
        images = torch.cat(parts)[:num_images]
    encoder.init_prototypes_from_features(images, seed=seed)
    return network
