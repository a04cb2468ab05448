"""One way to read images (and named entries) out of the batches of a dataset or loader: a ``(B, C, *spatial)``
tensor, a mapping (MONAI dictionary batch) holding the images under ``image_key``, or a tuple/list whose first
item holds the images (torchvision-style). ``MetaTensor`` images come back as plain tensors.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence

import torch

__all__ = ["unpack_batch", "iter_batches", "pick_images", "gather_images"]

logger = logging.getLogger("monai_patronus.data")


def unpack_batch(
    batch: object, index: int = 0, image_key: str = "image", keys: Sequence[str] = (), optional_keys: Sequence[str] = ()
) -> tuple[torch.Tensor, dict[str, object]]:
    """Images ``(B, C, *spatial)`` of one batch and its entries under ``keys``.

    Args:
        batch: a tensor, a mapping with ``image_key``, or an ``(images, ...)`` tuple/list.
        index: the batch number, for error messages.
        image_key: the images' key in a mapping batch.
        keys: further entries to return (mapping batches only; e.g. ``("id", "label")``).
        optional_keys: entries to return when the batch is a mapping that holds them.

    Returns:
        ``(images, extras)``: floating-point plain-tensor images and ``{key: batch[key]}`` for ``keys`` and the
        ``optional_keys`` the batch holds.
    """
    if isinstance(batch, torch.Tensor):
        images = batch
    elif isinstance(batch, Mapping):
        missing = [k for k in (image_key, *keys) if k not in batch]
        if missing:
            raise ValueError(
                f"batch {index} has no key {missing[0]!r} (its keys: {sorted(map(str, batch))}); "
                f"pass the key that holds it (image_key for the images)."
            )
        images = batch[image_key]
    elif isinstance(batch, (tuple, list)) and len(batch) > 0:
        images = batch[0]
    else:
        raise TypeError(
            f"batch {index} must be a tensor (B, C, *spatial), a dict with {image_key!r} or an "
            f"(images, ...) tuple; got {type(batch).__name__}."
        )
    if keys and not isinstance(batch, Mapping):
        raise TypeError(
            f"batch {index} is a {type(batch).__name__}, but entries {list(keys)} were asked for; "
            "give dictionary batches (e.g. a MONAI Dataset of dicts) that hold them."
        )
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"batch {index} images must be a torch.Tensor, got {type(images).__name__}.")
    if not images.dtype.is_floating_point:
        raise TypeError(f"batch {index} images must be floating point, got dtype {images.dtype}.")
    if images.ndim < 3:
        raise ValueError(f"batch {index} images must have shape (B, C, *spatial), got {tuple(images.shape)}.")
    extras = {k: batch[k] for k in (*keys, *optional_keys) if k in batch} if isinstance(batch, Mapping) else {}
    return images.as_subclass(torch.Tensor), extras


def iter_batches(
    data: object,
    image_key: str = "image",
    keys: Sequence[str] = (),
    optional_keys: Sequence[str] = (),
    name: str = "data",
) -> Iterator[tuple[int, torch.Tensor, dict[str, object]]]:
    """Stream ``(offset, images, extras)`` over the batches of ``data`` (see :func:`unpack_batch`).

    ``offset`` is the running index of the batch's first image. A single tensor or mapping counts as one batch.
    Empty batches and ``None`` (every sample skipped, ``DropNoneCollate(on_empty="none")``) are skipped.
    ``name`` is the argument's name in the caller, for error messages.
    """
    if isinstance(data, (torch.Tensor, Mapping)):
        data = [data]
    if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise TypeError(f"{name} must be an iterable of batches (e.g. a DataLoader), got {type(data).__name__}.")
    offset = 0
    for index, batch in enumerate(data):
        if batch is None:
            continue
        images, extras = unpack_batch(batch, index, image_key, keys, optional_keys)
        if images.shape[0] == 0:
            continue
        yield offset, images, extras
        offset += images.shape[0]


def gather_images(data: object, indices: Iterable[int], image_key: str = "image") -> dict[int, torch.Tensor]:
    """The images at running ``indices`` of ``data`` as ``{index: (C, *spatial) image}``, in one streaming pass
    that keeps only those (the data must be in the same order as in the pass that chose them).
    """
    wanted = {int(i) for i in indices}
    found: dict[int, torch.Tensor] = {}
    total = 0
    for offset, images, _ in iter_batches(data, image_key):
        total = offset + images.shape[0]
        for i in range(images.shape[0]):
            if offset + i in wanted:
                found[offset + i] = images[i]
        if len(found) == len(wanted):
            break
    missing = sorted(wanted - set(found))
    if missing:
        raise ValueError(
            f"gather_images: indices {missing[:5]} lie beyond the data's {total} images; the data must be the same, "
            "in the same order (no shuffling), as in the pass that chose them."
        )
    return found


def pick_images(dataset: Sequence, num: int, image_key: str = "image", allow_fewer: bool = False) -> torch.Tensor:
    """``num`` images spread evenly over ``dataset``, skipping items that are ``None``.

    A dataset whose transforms drop unreadable files (``SkipNoneCompose``) returns ``None`` for them; such a
    position is replaced by the next valid item not already chosen.

    Args:
        dataset: a sequence of dicts holding ``image_key`` or of ``(C, *spatial)`` tensors, e.g. a MONAI ``Dataset``.
        num: how many images to pick.
        image_key: the images' key in dict items.
        allow_fewer: when the dataset holds fewer than ``num`` valid items, return all of them (with a warning)
            instead of raising.

    Returns:
        ``(num, C, *spatial)`` plain tensor (fewer rows only with ``allow_fewer``), in dataset order.
    """
    if num < 1:
        raise ValueError(f"pick_images: num must be >= 1 (images to pick), got {num}.")
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
        raise ValueError(
            f"pick_images: the picked images differ in shape {sorted(shapes)}; resize them in the transforms."
        )
    return torch.stack([picked[i] for i in sorted(picked)])
