"""One way to read images (and named entries) out of the batches of a dataset or loader.

Every streaming pass of the package (encoding a dataset, provenance search, fetching source images,
labelled analyses) accepts the same batch forms, checked in one place:

- a ``(B, C, *spatial)`` tensor;
- a mapping (MONAI dictionary batch) holding the images under ``image_key``;
- a tuple or list whose first item holds the images (torchvision-style ``(images, labels)``).

MONAI ``MetaTensor`` images come back as plain tensors.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence

import torch

__all__ = ["unpack_batch", "iter_batches", "pick_images", "gather_images"]

logger = logging.getLogger("monai_patronus.data")


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
    batch. Empty batches, and ``None`` (a batch whose every sample was skipped, from
    ``DropNoneCollate(on_empty="none")``), are skipped. ``name`` is the argument's name in the caller, for error
    messages.

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
        if batch is None:
            continue
        images, extras = unpack_batch(batch, owner, index, image_key, keys, optional_keys)
        if images.shape[0] == 0:
            continue
        yield offset, images, extras
        offset += images.shape[0]


def gather_images(
    data: object, indices: Iterable[int], owner: str = "gather_images", image_key: str = "image"
) -> dict[int, torch.Tensor]:
    """The images at running ``indices`` of ``data``, in one streaming pass that keeps only those.

    For a second pass after a search over a dataset (provenance, counterfactual candidates) without holding
    the dataset in memory. The order of the data must be the same as in the first pass (no shuffling).

    Returns:
        ``{index: (C, *spatial) image}`` for every index found.

    Raises:
        ValueError: when some indices lie beyond the data (naming them and the number of images).
    """
    wanted = {int(i) for i in indices}
    found: dict[int, torch.Tensor] = {}
    total = 0
    for offset, images, _ in iter_batches(data, owner, image_key):
        total = offset + images.shape[0]
        for i in range(images.shape[0]):
            if offset + i in wanted:
                found[offset + i] = images[i]
        if len(found) == len(wanted):
            break
    missing = sorted(wanted - set(found))
    if missing:
        raise ValueError(
            f"{owner}: indices {missing[:5]} lie beyond the data's {total} images; the data must be the same, "
            "in the same order (no shuffling), as in the pass that chose them."
        )
    return found


def pick_images(dataset: Sequence, num: int, image_key: str = "image", allow_fewer: bool = False) -> torch.Tensor:
    """``num`` images spread evenly over ``dataset``, skipping items that are ``None``.

    Bundles use it to choose the images that sample grids and explanations are made of. A dataset whose
    transforms drop unreadable files (``SkipNoneCompose``) returns ``None`` for them; such a position is
    replaced by the next valid item not already chosen.

    Args:
        dataset: a sequence of items (``len`` and indexing): dicts holding ``image_key`` or ``(C, *spatial)``
            tensors, e.g. a MONAI ``Dataset``.
        num: how many images to pick.
        image_key: the images' key in dict items.
        allow_fewer: when the dataset holds fewer than ``num`` valid items, return all of them (with a
            warning on the ``monai_patronus.data`` logger) instead of raising.

    Returns:
        ``(num, C, *spatial)`` plain tensor (fewer rows only with ``allow_fewer``), in dataset order.

    Raises:
        TypeError: for a bad ``num`` or a dataset that is not a sized sequence, or items of another kind.
        ValueError: when ``num < 1``, the dataset holds no valid item (or fewer than ``num`` without
            ``allow_fewer``), or the images differ in shape.
    """
    if isinstance(num, bool) or not isinstance(num, int):
        raise TypeError(f"pick_images: num must be an int >= 1, got {num!r}.")
    if num < 1:
        raise ValueError(f"pick_images: num must be >= 1 (images to pick), got {num}.")
    if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
        raise TypeError(f"pick_images: dataset must support len() and indexing, got {type(dataset).__name__}.")
    size = len(dataset)
    spread = torch.linspace(0, max(size - 1, 0), min(num, size)).round().long().tolist() if size else []
    order = list(dict.fromkeys(spread + list(range(size))))  # the even spread first, then the rest as fallback
    picked: dict[int, torch.Tensor] = {}
    for position in order:
        if len(picked) == num:
            break
        item = dataset[position]
        if item is None:
            continue
        if isinstance(item, Mapping) and image_key not in item:
            raise ValueError(
                f"pick_images: item {position} has no key {image_key!r} (its keys: {sorted(map(str, item))}); "
                "pass the images' key as image_key."
            )
        image = item[image_key] if isinstance(item, Mapping) else item
        if not isinstance(image, torch.Tensor):
            raise TypeError(
                f"pick_images: item {position} must be a dict holding {image_key!r} or a tensor (C, *spatial), "
                f"got {type(image).__name__}."
            )
        picked[position] = image.as_subclass(torch.Tensor)
    if len(picked) < num and (not allow_fewer or not picked):
        raise ValueError(
            f"pick_images: the dataset holds {len(picked)} valid items of {size}, fewer than num={num}; "
            "lower num or fix the unreadable files."
        )
    if len(picked) < num:
        logger.warning("pick_images: picked all %d valid items of %d (%d were asked for).", len(picked), size, num)
    shapes = {tuple(v.shape) for v in picked.values()}
    if len(shapes) != 1:
        raise ValueError(f"pick_images: the picked images differ in shape {sorted(shapes)}; resize them in the transforms.")
    return torch.stack([picked[i] for i in sorted(picked)])
