"""Real images that ship inside a PyPI package: scikit-learn's handwritten digits (UCI optdigits).

1,797 grey-scale 8x8 images with 17 intensity levels. Used by the demo and the tests, since nothing
can be downloaded at run time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

__all__ = ["load_digits_images"]


def load_digits_images(size: int = 16, num_images: int | None = None, digits: tuple[int, ...] | None = None):
    """Load scikit-learn's digits as a float tensor ``(N, 1, size, size)`` scaled to [-1, 1], with labels.

    Args:
        size: output side length (bilinear resize from 8 px, antialiased when shrinking); at least 8.
        num_images: keep the first ``num_images`` (after the ``digits`` filter); ``None`` keeps all.
        digits: keep only these classes (e.g. ``(0, 1)``); ``None`` keeps all ten.

    Returns:
        ``(images, labels)``: ``(N, 1, size, size)`` float32 and ``(N,)`` long.
    """
    if size < 8:
        raise ValueError(f"load_digits_images: size must be an int >= 8, got {size!r}.")
    if num_images is not None and num_images < 1:
        raise ValueError(f"load_digits_images: num_images must be a positive int or None, got {num_images!r}.")
    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0  # 0..16 -> [0, 1]
    labels = torch.as_tensor(bunch.target, dtype=torch.long)
    if digits is not None:
        keep = torch.isin(labels, torch.as_tensor(list(digits)))
        if not keep.any():
            raise ValueError(f"load_digits_images: digits must be classes in 0..9, got {digits!r}.")
        images, labels = images[keep], labels[keep]
    if num_images is not None:
        images, labels = images[:num_images], labels[:num_images]
    if size != 8:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return images * 2.0 - 1.0, labels
