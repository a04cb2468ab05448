"""One way to read images (and named entries) out of the batches of a dataset or loader.

Every streaming pass of the package (encoding a dataset, provenance search, fetching source images,
labelled analyses) accepts the same batch forms, checked in one place:

- a ``(B, C, *spatial)`` tensor;
- a mapping (MONAI dictionary batch) holding the images under ``image_key``;
- a tuple or list whose first item holds the images (torchvision-style ``(images, labels)``).

MONAI ``MetaTensor`` images come back as plain tensors.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

import torch

__all__ = ["unpack_batch", "iter_batches"]


def unpack_batch(
    batch: object,
    owner: str,
    index: int = 0,
    image_key: str = "image",
    keys: Sequence[str] = (),
    optional_keys: Sequence[str] = (),
) -> tuple[torch.Tensor, dict[str, object]]:
    """Images ``(B, C, *spatial)`` of one batch and its entries under ``keys``.

    Args:
        batch: a tensor, a mapping with ``image_key``, or an ``(images, ...)`` tuple/list.
        owner: the calling function's name, for error messages.
        index: the batch number, for error messages.
        image_key: the images' key in a mapping batch.
        keys: further entries to return (mapping batches only; e.g. ``("id", "label")``).
        optional_keys: entries to return when the batch is a mapping that holds them.

    Returns:
        ``(images, extras)``: floating-point plain-tensor images with at least one spatial axis, and
        ``{key: batch[key]}`` for every key in ``keys`` and every key in ``optional_keys`` that the batch holds.

    Raises:
        TypeError: for another batch type, non-tensor or non-floating-point images, or ``keys`` asked of a
            batch that is not a mapping.
        ValueError: for a mapping without ``image_key`` or one of ``keys``, or images without a spatial axis.
    """
    if isinstance(batch, torch.Tensor):
        images = batch
    elif isinstance(batch, Mapping):
        missing = [k for k in (image_key, *keys) if k not in batch]
        if missing:
            raise ValueError(
                f"{owner}: batch {index} has no key {missing[0]!r} (its keys: {sorted(map(str, batch))}); "
                f"pass the key that holds it (image_key for the images)."
            )
        images = batch[image_key]
    elif isinstance(batch, (tuple, list)) and len(batch) > 0:
        images = batch[0]
    else:
        raise TypeError(
            f"{owner}: batch {index} must be a tensor (B, C, *spatial), a dict with {image_key!r} or an "
            f"(images, ...) tuple; got {type(batch).__name__}."
        )
    if keys and not isinstance(batch, Mapping):
        raise TypeError(
            f"{owner}: batch {index} is a {type(batch).__name__}, but entries {list(keys)} were asked for; "
            "give dictionary batches (e.g. a MONAI Dataset of dicts) that hold them."
        )
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{owner}: batch {index} images must be a torch.Tensor, got {type(images).__name__}.")
    if not images.dtype.is_floating_point:
        raise TypeError(f"{owner}: batch {index} images must be floating point, got dtype {images.dtype}.")
    if images.ndim < 3:
        raise ValueError(f"{owner}: batch {index} images must have shape (B, C, *spatial), got {tuple(images.shape)}.")
    extras = {k: batch[k] for k in (*keys, *optional_keys) if k in batch} if isinstance(batch, Mapping) else {}
    return images.as_subclass(torch.Tensor), extras


def iter_batches(
    data: object,
    owner: str,
    image_key: str = "image",
    keys: Sequence[str] = (),
    optional_keys: Sequence[str] = (),
    name: str = "data",
) -> Iterator[tuple[int, torch.Tensor, dict[str, object]]]:
    """Stream ``(offset, images, extras)`` over the batches of ``data`` (see :func:`unpack_batch`).

    ``offset`` is the running index of the batch's first image. A single tensor or mapping counts as one
    batch. Empty batches are skipped. ``name`` is the argument's name in the caller, for error messages.

    Raises:
        TypeError: when ``data`` is not iterable (or is a string), or for a bad batch (see :func:`unpack_batch`).
    """
    if isinstance(data, (torch.Tensor, Mapping)):
        data = [data]
    if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise TypeError(
            f"{owner}: {name} must be an iterable of batches (e.g. a DataLoader), got {type(data).__name__}."
        )
    offset = 0
    for index, batch in enumerate(data):
        images, extras = unpack_batch(batch, owner, index, image_key, keys, optional_keys)
        if images.shape[0] == 0:
            continue
        yield offset, images, extras
        offset += images.shape[0]
