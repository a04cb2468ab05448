"""A quantitative faithfulness measure for prototype boxes (``docs/method.md`` section 8: what the paper lacks).

The explanation "prototype ``k`` is at box ``B``" is faithful when the evidence for ``s_k`` really lies in
``B``. :func:`masking_faithfulness` tests this by deletion: replace the box of ``k``'s argmin cell by a
Gaussian-blurred copy of the image there and measure the drop of ``s_k``; compare it with the mean drop
for random boxes of the same size placed fully inside the image. A faithful box gives a much larger drop
than a random one (ratio well above 1); a ratio near 1 means the box is no better than chance.

Only the argmin cell's box can lower ``s_k = f(min_u d_k(u))`` directly; a random box away from it can only
raise ``s_k`` (another cell may come closer). Where a prototype is barely present in an image, its argmin
cell is arbitrary and both drops are near zero or negative. :meth:`FaithfulnessResult.summary` therefore
also scores the images where each prototype is most active (``top_fraction``), which is what explanations
show.

Blurring (rather than zeros or noise) keeps the local mean intensity, so the drop is not caused by an
out-of-distribution hole. The blur uses replicate padding, so a constant image stays constant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from monai.networks.layers import gaussian_1d, separable_filtering
from monai.utils import ensure_tuple_rep

from monai_patronus.interpret.heatmaps import check_encoder
from monai_patronus.networks.prototype_encoder import PrototypeEncoder

__all__ = ["FaithfulnessResult", "masking_faithfulness", "blur_images", "replace_boxes"]


@dataclass(frozen=True, eq=False)
class FaithfulnessResult:
    """Deletion-test results per image and prototype.

    Attributes:
        prototypes: the prototype indices of the ``P`` columns.
        activation: ``(N, P)`` original activations ``s_k``.
        drop_boxed: ``(N, P)`` ``s_k`` minus ``s_k`` after blurring the box of ``k``'s argmin cell.
        drop_random: ``(N, P)`` mean drop over the random boxes of the same size.
        boxes: ``(N, P, spatial_dims, 2)`` the argmin boxes ``[start, stop)`` (clipped to the image).
    """

    prototypes: tuple[int, ...]
    activation: torch.Tensor
    drop_boxed: torch.Tensor
    drop_random: torch.Tensor
    boxes: torch.Tensor

    @property
    def ratio(self) -> float:
        """``mean(drop_boxed) / mean(drop_random)`` over all images and prototypes (> 1: boxes beat chance).

        A ratio only means something when random boxes lower ``s_k`` on average. When the mean random drop
        is ``<= 0`` (masking random boxes raises ``s_k``, common where the prototype is barely present), this
        returns ``inf`` if the boxed drop is positive and ``nan`` otherwise; use :meth:`summary` with a
        ``top_fraction`` for the images where each prototype is present.
        """
        return _ratio(self.drop_boxed.double().mean(), self.drop_random.double().mean())

    @property
    def per_prototype_ratio(self) -> torch.Tensor:
        """``(P,)`` float64 ratio of the mean drops over images, one per prototype (same conventions as ``ratio``)."""
        boxed, rand = self.drop_boxed.double().mean(dim=0), self.drop_random.double().mean(dim=0)
        return torch.tensor([_ratio(b, r) for b, r in zip(boxed, rand)], dtype=torch.float64)

    def present(self, top_fraction: float = 1.0) -> torch.Tensor:
        """``(N, P)`` bool mask of the images where each prototype is most active: per prototype (column),
        the ``ceil(top_fraction * N)`` images with the largest ``activation`` (ties broken by image order).

        Raises:
            ValueError: unless ``0 < top_fraction <= 1``.
        """
        if not 0 < top_fraction <= 1:
            raise ValueError(f"FaithfulnessResult: top_fraction must be a number in (0, 1], got {top_fraction!r}.")
        n = self.activation.shape[0]
        count = max(1, math.ceil(top_fraction * n - 1e-9))
        order = torch.sort(self.activation, dim=0, descending=True, stable=True).indices[:count]  # (count, P)
        mask = torch.zeros_like(self.activation, dtype=torch.bool)
        return mask.scatter_(0, order, True)

    def summary(self, top_fraction: float = 1.0) -> dict[str, float]:
        """Scores over the (image, prototype) pairs of :meth:`present` ``(top_fraction)``.

        Returns:
            ``{"pairs", "drop_boxed", "drop_random", "ratio", "win_rate", "relative_drop_boxed",
            "relative_drop_random"}``: the number of pairs, the mean drops, their ratio (conventions of
            :attr:`ratio`), the fraction of pairs whose boxed drop exceeds their mean random drop, and the mean
            drops relative to the original activation.
        """
        mask = self.present(top_fraction)
        act = self.activation[mask].double()
        boxed, rand = self.drop_boxed[mask].double(), self.drop_random[mask].double()
        safe = act.clamp_min(torch.finfo(torch.float64).tiny)
        return {
            "pairs": int(mask.sum()),
            "drop_boxed": float(boxed.mean()),
            "drop_random": float(rand.mean()),
            "ratio": _ratio(boxed.mean(), rand.mean()),
            "win_rate": float((boxed > rand).double().mean()),
            "relative_drop_boxed": float((boxed / safe).mean()),
            "relative_drop_random": float((rand / safe).mean()),
        }


def _ratio(boxed: torch.Tensor, rand: torch.Tensor) -> float:
    boxed, rand = float(boxed), float(rand)
    if rand > 0:
        return boxed / rand
    return math.inf if boxed > 0 else math.nan


def masking_faithfulness(
    encoder: PrototypeEncoder,
    images: torch.Tensor,
    prototypes: Sequence[int] | torch.Tensor | None = None,
    num_random: int = 8,
    blur_sigma: float | Sequence[float] | None = None,
    generator: torch.Generator | None = None,
) -> FaithfulnessResult:
    """Deletion test of the prototype boxes: boxed masking against random masking of the same size.

    For every image and prototype ``k``: take the box of ``k``'s argmin cell (``encoder.boxes``), replace the
    image inside it (only there) by a blurred copy of the image and re-encode; then do the same for
    ``num_random`` boxes of the same (clipped) size whose positions are uniform over all placements fully
    inside the image (they may overlap the argmin box). Batched over images, one pass per prototype and
    random draw, without gradients.

    Args:
        encoder: the prototype encoder (``PatronusUNet.prototype_encoder`` for a trained Patronus model).
        images: ``(N, C, *spatial)`` images in the encoder's input range, on the encoder's device.
        prototypes: prototype indices to test (default: all ``K``).
        num_random: random boxes per image and prototype.
        blur_sigma: Gaussian standard deviation in pixels, one value or one per spatial axis
            (default: receptive-field size / 4 per axis).
        generator: random generator for the random box positions (a CPU generator, or one on the images'
            device), for reproducible results.

    Returns:
        a :class:`FaithfulnessResult` with ``(N, P)`` ``activation``, ``drop_boxed`` and ``drop_random``.

    Raises:
        ValueError: for wrongly shaped ``images``, bad prototype indices, ``num_random < 1`` or ``blur_sigma <= 0``.
    """
    index = check_encoder(encoder, prototypes, images)
    if num_random < 1:
        raise ValueError(f"masking_faithfulness: num_random must be >= 1 (random boxes per image), got {num_random}.")
    d = encoder.spatial_dims
    sigma = [s / 4.0 for s in encoder.receptive_field.size] if blur_sigma is None else blur_sigma

    images = images.as_subclass(torch.Tensor)
    spatial = tuple(images.shape[2:])
    n = images.shape[0]
    with torch.no_grad():
        out = encoder(images, return_maps=True)
        activation = out.activations.index_select(1, index.to(images.device))
        boxes = encoder.boxes(out.locations.index_select(1, index.to(images.device)), spatial)  # (N, P, D, 2)
        blurred = blur_images(images, sigma)
        sizes = boxes[..., 1] - boxes[..., 0]  # (N, P, D)
        gen_device = generator.device if generator is not None else torch.device("cpu")
        drop_boxed = torch.empty_like(activation)
        drop_random = torch.zeros_like(activation)
        for p, k in enumerate(index.tolist()):
            masked = replace_boxes(images, blurred, boxes[:, p])
            drop_boxed[:, p] = activation[:, p] - encoder(masked)[:, k]
            room = torch.tensor(spatial, device=sizes.device) - sizes[:, p] + 1  # placements per axis, (N, D)
            for _ in range(num_random):
                u = torch.rand(n, d, generator=generator, device=gen_device).to(sizes.device, torch.float64)
                start = torch.minimum((u * room).floor().long(), room - 1)
                rand_boxes = torch.stack([start, start + sizes[:, p]], dim=-1)
                masked = replace_boxes(images, blurred, rand_boxes)
                drop_random[:, p] += activation[:, p] - encoder(masked)[:, k]
        drop_random /= num_random
    return FaithfulnessResult(tuple(index.tolist()), activation, drop_boxed, drop_random, boxes)


def blur_images(images: torch.Tensor, sigma: float | Sequence[float]) -> torch.Tensor:
    """Gaussian blur of every channel, N-D, with replicate padding (a constant image stays constant).

    Args:
        images: ``(N, C, *spatial)`` floating-point images.
        sigma: standard deviation in pixels, one value or one per spatial axis (``> 0``).

    Returns:
        the blurred ``(N, C, *spatial)`` images (MONAI ``gaussian_1d`` kernels, ``truncated=4``, normalised to sum 1).

    Raises:
        ValueError: for a ``sigma`` that is not one or ``spatial_dims`` finite values > 0.
    """
    sigmas = ensure_tuple_rep(sigma, images.ndim - 2)
    if not all(0 < float(v) < math.inf for v in sigmas):
        raise ValueError(f"sigma must be finite and > 0 pixels, got {sigma!r}.")
    kernels = []
    for s in sigmas:
        k = gaussian_1d(torch.tensor(float(s), dtype=torch.float64), truncated=4.0, approx="erf")
        kernels.append((k / k.sum()).to(images))
    return separable_filtering(images.as_subclass(torch.Tensor), kernels, mode="replicate")


def replace_boxes(images: torch.Tensor, replacement: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Copy of ``images`` with, per image, the voxels inside its box taken from ``replacement``.

    Args:
        images: ``(N, C, *spatial)`` images.
        replacement: ``(N, C, *spatial)`` values to put inside the boxes (e.g. :func:`blur_images` output).
        boxes: integer ``(N, spatial_dims, 2)`` ``[start, stop)`` per axis, one box per image.

    Returns:
        ``(N, C, *spatial)``: ``replacement`` inside each box, ``images`` everywhere else.
    """
    d = images.ndim - 2
    boxes = boxes.to(images.device)
    mask = torch.ones(images.shape[0], *([1] * (d + 1)), dtype=torch.bool, device=images.device)
    for a, size in enumerate(images.shape[2:]):
        pos = torch.arange(size, device=images.device)
        inside = (pos >= boxes[:, a, :1]) & (pos < boxes[:, a, 1:])  # (N, size)
        shape = [images.shape[0]] + [1] * (d + 1)
        shape[a + 2] = size
        mask = mask & inside.view(shape)
    return torch.where(mask, replacement, images)
