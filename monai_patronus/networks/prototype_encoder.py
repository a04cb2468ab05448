"""Patch-prototype encoder (the Patronus prototype activation block), N-D.

Weng, Feragen, Bigdeli, "Patronus: Interpretable Diffusion Models with Prototypes", ICLR 2026,
https://arxiv.org/abs/2503.22782 (section 1 of ``METHOD.md``), after ProtoPNet (Chen et al. 2019).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from monai.networks.layers.factories import Conv
from torch import nn

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

    Attributes:
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

    Raises:
        ValueError / TypeError: for an invalid argument, naming it and its value.
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
        if spatial_dims not in (1, 2, 3) or isinstance(spatial_dims, bool):
            raise ValueError(f"PrototypeEncoder: spatial_dims must be 1, 2 or 3, got {spatial_dims!r}.")
        _check_positive_int("in_channels", in_channels)
        _check_positive_int("num_prototypes", num_prototypes)
        if preset is not None and preset not in ENCODER_PRESETS:
            raise ValueError(f"PrototypeEncoder: preset must be one of {sorted(ENCODER_PRESETS)} or None, got {preset!r}.")
        defaults = ENCODER_PRESETS[preset] if preset is not None else {}
        channels = defaults.get("channels") if channels is None else channels
        kernel_sizes = defaults.get("kernel_sizes") if kernel_sizes is None else kernel_sizes
        strides = defaults.get("strides", 1) if strides is None else strides
        paddings = defaults.get("paddings", 0) if paddings is None else paddings
        if channels is None or kernel_sizes is None:
            raise ValueError("PrototypeEncoder: with preset=None give channels and kernel_sizes explicitly.")
        if isinstance(channels, int) or not isinstance(channels, Sequence) or len(channels) == 0:
            raise ValueError(f"PrototypeEncoder: channels must be a non-empty list of ints, got {channels!r}.")
        for c in channels:
            _check_positive_int("channels", c, shown=channels)
        if not isinstance(epsilon, (int, float)) or isinstance(epsilon, bool) or not epsilon > 0:
            raise ValueError(f"PrototypeEncoder: epsilon must be a float > 0, got {epsilon!r}.")
        if not isinstance(init_std, (int, float)) or isinstance(init_std, bool) or not init_std > 0:
            raise ValueError(f"PrototypeEncoder: init_std must be a float > 0, got {init_std!r}.")

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
        """Encode images to prototype activations.

        Args:
            x: images ``(N, in_channels, *spatial)``, scaled to [-1, 1].
            return_maps: also return the distance maps, minimum distances and argmin locations.

        Returns:
            the ``(N, K)`` activation vector ``s``, or a :class:`PrototypeActivations` when ``return_maps``.
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"PrototypeEncoder: x must be a torch.Tensor, got {type(x).__name__}.")
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"PrototypeEncoder: x must have shape (N, {self.in_channels}, *{self.spatial_dims} spatial dims), "
                f"got {tuple(x.shape)}."
            )
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
        """Squared L2 distance of every feature cell to every prototype, ``(N, K, *spatial)``.

        Uses ``||z||^2 - 2 z.p + ||p||^2`` (no pairwise tensor), in at least float32, also under autocast,
        clamped at 0 since cancellation can make it slightly negative.
        """
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
        """Set the prototypes to feature cells of ``images`` (ProtoPNet-style), chosen by k-means++ seeding.

        With the paper's init (uniform in [0, 1)) every prototype starts far from every feature cell, so ``s``
        is tiny and nearly constant across images and the denoiser learns to ignore it (see
        the README's "Training recipe"). Starting each prototype *on* a real cell makes ``s_k`` high (``log(1/eps)``) on
        the image the cell came from and on images with a similar patch, lower elsewhere, from step 0.
        Cells are drawn with probability proportional to their squared distance to the cells already chosen
        (Arthur & Vassilvitskii 2007), so the prototypes cover distinct patterns rather than repeating the
        commonest one (e.g. background).

        Args:
            images: ``(N, in_channels, *spatial)`` training images in [-1, 1].
            seed: seed of the draw.

        Returns:
            ``(K, 1 + spatial_dims)`` long tensor: for each prototype, the index of its source image in
            ``images``, then the feature-grid location of its cell (its provenance at init).
        """
        if not isinstance(images, torch.Tensor) or images.ndim != self.spatial_dims + 2 or images.shape[1] != self.in_channels:
            raise ValueError(
                f"init_prototypes_from_features: images must be a tensor (N, {self.in_channels}, *spatial), "
                f"got {tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}."
            )
        device = self.prototypes.device
        z = torch.cat([self.features(chunk.to(device=device, dtype=self.prototypes.dtype)) for chunk in images.split(32)])
        grid = z.shape[2:]
        cells = z.flatten(2).transpose(1, 2).reshape(-1, z.shape[1]).float()  # (N * L, C)
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        chosen = [int(torch.randint(cells.shape[0], (1,), generator=gen))]
        d2 = ((cells - cells[chosen[0]]) ** 2).sum(1)
        for _ in range(1, self.num_prototypes):
            weights = d2.clamp_min(0).cpu().double()
            if not weights.sum() > 0:  # fewer distinct cells than prototypes: repeat at random
                idx = int(torch.randint(cells.shape[0], (1,), generator=gen))
            else:
                idx = int(torch.multinomial(weights, 1, generator=gen))
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
    """Initialise the prototypes of ``network`` (a :class:`PatronusUNet` or a :class:`PrototypeEncoder`) from
    feature cells of up to ``num_images`` images of ``data`` (see :meth:`PrototypeEncoder.init_prototypes_from_features`).

    For bundle configs: ``"$monai_patronus.networks.init_prototypes_from_data(@network, @train#dataset)"`` in
    ``initialize``, before the trainer runs (a resumed run then loads its checkpoint's prototypes over these).

    Args:
        network: the model or its encoder.
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
            f"init_prototypes_from_data: network must be a PatronusUNet or a PrototypeEncoder, got {type(network).__name__}."
        )
    _check_positive_int("num_images", num_images)
    if isinstance(data, torch.Tensor):
        images = data[:num_images]
    elif hasattr(data, "__len__") and hasattr(data, "__getitem__") and not isinstance(data, torch.utils.data.DataLoader):
        images = pick_images(data, min(num_images, len(data)), allow_fewer=True)  # skips unreadable items
    else:  # a loader: its first images
        parts, count = [], 0
        for _, batch, _ in iter_batches(data, "init_prototypes_from_data"):
            parts.append(batch)
            count += batch.shape[0]
            if count >= num_images:
                break
        if not parts:
            raise ValueError("init_prototypes_from_data: data yielded no images; give the training dataset or loader.")
        images = torch.cat(parts)[:num_images]
    encoder.init_prototypes_from_features(images, seed=seed)
    return network


def _check_positive_int(name: str, value: object, shown: object | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"PrototypeEncoder: {name} must be an int, got {shown if shown is not None else value!r}.")
    if value < 1:
        raise ValueError(f"PrototypeEncoder: {name} must be >= 1, got {shown if shown is not None else value!r}.")
