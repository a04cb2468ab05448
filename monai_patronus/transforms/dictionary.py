"""MONAI dict transforms and a collate for Patronus: channel conversion, image checks, anti-aliased resize, and
skipping bad samples (``on_error="skip"``: logged on ``"monai_patronus.data"``, counted, returned as ``None``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, list_data_collate
from monai.transforms import Compose, MapTransform, Resize
from monai.utils import ImageMetaKey, ensure_tuple, look_up_option

__all__ = [
    "AntialiasResized",
    "CheckImaged",
    "DropNoneCollate",
    "LUMA_BT601",
    "SkipNoneCompose",
    "ToChannelsd",
    "to_channels",
]

logger = logging.getLogger("monai_patronus.data")

ON_ERROR = ("raise", "skip")
#: ITU-R BT.601 luma weights, as PIL's ``convert("L")`` (without its rounding to 8 bits).
LUMA_BT601 = (0.299, 0.587, 0.114)


def _row(data: Any) -> str | None:
    """The item's datalist row (``data["row"]``) as text, or ``None`` when the item has no ``"row"`` key."""
    if not isinstance(data, Mapping) or "row" not in data:
        return None
    row = data["row"]
    row = row.item() if isinstance(row, (torch.Tensor, np.generic)) else row
    return str(int(row)) if isinstance(row, (int, float)) and float(row).is_integer() else f"{row}"


def _source(data: Mapping, key: Hashable) -> str:
    """How messages name an item: ``datalist row N`` (never its path), else its file name, else its id."""
    row = _row(data)
    if row is not None:
        return f"datalist row {row}"
    value = data.get(key)
    meta = value.meta if isinstance(value, MetaTensor) else data.get(f"{key}_meta_dict", {})
    name = meta.get(ImageMetaKey.FILENAME_OR_OBJ) if isinstance(meta, Mapping) else None
    if name:
        return f"{name}"
    if "id" in data:
        return f"sample id {data['id']!r} (no file name in its meta data)"
    return "an image without file name in its meta data"


def _number_of_frames(img) -> int:
    """``NumberOfFrames`` from a MetaTensor's meta (set by ``DicomReader`` for multi-frame files), else 1."""
    try:
        return int(img.meta.get("NumberOfFrames", 1)) if isinstance(img, MetaTensor) else 1
    except (TypeError, ValueError):
        return 1


def to_channels(img: torch.Tensor, channels: int) -> torch.Tensor:
    """Channel-first ``img`` with 3 channels -> grey by :data:`LUMA_BT601` (``channels=1``), 1 channel -> RGB by
    repetition (``channels=3``); other channel counts are returned unchanged."""
    c = img.shape[0]
    if channels == 1 and c == 3:
        weights = torch.as_tensor(LUMA_BT601, dtype=img.dtype if img.is_floating_point() else torch.float32)
        return (img * weights.reshape(3, *([1] * (img.ndim - 1))).to(img.device)).sum(0, keepdim=True)
    if channels == 3 and c == 1:
        return img.repeat(3, *([1] * (img.ndim - 1)))
    return img


class CheckImaged(MapTransform):
    """Check channel-first images: not empty, number of spatial axes, channel count, finite, not constant.

    A failing image raises a ``ValueError`` naming the sample, or with ``on_error="skip"`` the sample becomes
    ``None`` (counted in ``num_skipped``). Constant images (blank frames, failed exports) are refused by default.

    Args:
        keys: keys of the images to check.
        expected_channels: required ``C`` of ``(C, *spatial)``; ``None``: any.
        spatial_dims: required number of spatial axes; ``None``: any.
        allow_nonfinite: accept NaN/inf values.
        on_error: ``"raise"`` or ``"skip"``.
        allow_missing_keys: don't raise when a key is absent.
        allow_constant: accept images whose values are all the same.
    """

    def __init__(
        self,
        keys: KeysCollection,
        expected_channels: int | None = None,
        spatial_dims: int | None = None,
        allow_nonfinite: bool = False,
        on_error: str = "raise",
        allow_missing_keys: bool = False,
        allow_constant: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        for name, value in (("expected_channels", expected_channels), ("spatial_dims", spatial_dims)):
            if value is not None and value < 1:
                raise ValueError(f"CheckImaged: {name} must be a positive int or None, got {value!r}.")
        self.expected_channels = expected_channels
        self.spatial_dims = spatial_dims
        self.allow_nonfinite = bool(allow_nonfinite)
        self.allow_constant = bool(allow_constant)
        self.on_error = look_up_option(on_error, ON_ERROR)
        self.num_skipped = 0

    def problem(self, img) -> str | None:
        """What is wrong with one image (a sentence), or ``None``."""
        if not isinstance(img, (torch.Tensor, np.ndarray)):
            raise TypeError(f"CheckImaged: expected a torch.Tensor or numpy array, got {type(img)}.")
        shape = tuple(img.shape)
        if len(shape) < 2:
            return f"has shape {shape}; expected channel-first (C, *spatial), use EnsureChannelFirstd first"
        if int(np.prod(shape)) == 0:
            return f"is empty (shape {shape})"
        if self.spatial_dims is not None and len(shape) - 1 != self.spatial_dims:
            frames = _number_of_frames(img)
            if frames > 1 and len(shape) - 1 == 3 and self.spatial_dims == 2:
                return (
                    f"is a multi-frame volume with {frames} frames (shape {shape}, channel first, frames last), "
                    "not a 2-D image; use spatial_dims=3 to load it as a volume, or export the frame you need as "
                    "a single-frame file"
                )
            return (
                f"has {len(shape) - 1} spatial axes (shape {shape}, channel first), expected {self.spatial_dims}; "
                "use spatial_dims=3 for volumes or give 2-D images"
            )
        if self.expected_channels is not None and shape[0] != self.expected_channels:
            return (
                f"has {shape[0]} channels (shape {shape}, channel first), expected {self.expected_channels}; "
                "convert the file or set expected_channels"
            )
        t = img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(img)
        num_bad = 0 if self.allow_nonfinite else int((~torch.isfinite(t)).sum())
        if num_bad:
            return (
                f"has {num_bad} non-finite values (NaN/inf) of {t.numel()}; fix the file or pass allow_nonfinite=True"
            )
        flat = t.reshape(-1)
        if not self.allow_constant and bool((flat == flat[0]).all()):
            return (
                f"is constant (every value {float(flat[0].real if t.is_complex() else flat[0]):g}): a blank "
                "image or a failed export, which the intensity scaling would turn into a flat image; fix or "
                "remove the file, or pass allow_constant=True to keep such images"
            )
        return None

    def __call__(self, data: Mapping | None):
        if data is None:
            return None
        d = dict(data)
        for key in self.key_iterator(d):
            problem = self.problem(d[key])
            if problem is None:
                continue
            message = f"CheckImaged: {key!r} of {_source(d, key)} {problem}."
            if self.on_error == "raise":
                raise ValueError(message + " Or pass on_error='skip' to drop such samples.")
            self.num_skipped += 1
            logger.warning("skipped a sample: %s", message)
            return None
        return d


class ToChannelsd(MapTransform):
    """Convert channel-first images to ``channels`` channels with :func:`to_channels`. ``None`` passes through.

    Args:
        keys: keys of the images.
        channels: 1 or 3.
        allow_missing_keys: don't raise when a key is absent.
    """

    def __init__(self, keys: KeysCollection, channels: int = 1, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if channels not in (1, 3):
            raise ValueError(f"ToChannelsd: channels must be 1 or 3, got {channels!r}.")
        self.channels = channels

    def __call__(self, data: Mapping | None):
        if data is None:
            return None
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = to_channels(d[key], self.channels)
        return d


class AntialiasResized(MapTransform):
    """Resize channel-first images to ``spatial_size`` with MONAI's ``Resize``: ``mode="area"`` when no axis grows
    (2048x2500 -> 224x224: ~5 ms, against ~0.9 s with Gaussian anti-aliasing), else (bi/tri)linear with
    anti-aliasing. ``None`` passes through.

    Args:
        keys: keys of the images.
        spatial_size: output spatial shape (1 to 3 axes).
        allow_missing_keys: don't raise when a key is absent.
    """

    def __init__(self, keys: KeysCollection, spatial_size: Sequence[int], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.spatial_size = tuple(ensure_tuple(spatial_size))
        if not 1 <= len(self.spatial_size) <= 3 or min(self.spatial_size) < 1:
            raise ValueError(f"AntialiasResized: spatial_size must be 1 to 3 positive ints, got {spatial_size!r}.")
        mode = ("linear", "bilinear", "trilinear")[len(self.spatial_size) - 1]
        self.shrink = Resize(self.spatial_size, mode="area")
        self.grow = Resize(self.spatial_size, mode=mode, anti_aliasing=True)

    def __call__(self, data: Mapping | None):
        if data is None:
            return None
        d = dict(data)
        for key in self.key_iterator(d):
            shape = tuple(d[key].shape[1:])
            shrinking = len(shape) == len(self.spatial_size) and all(s >= t for s, t in zip(shape, self.spatial_size))
            d[key] = (self.shrink if shrinking else self.grow)(d[key])
        return d


class SkipNoneCompose(Compose):
    """A ``monai.transforms.Compose`` that returns ``None`` as soon as a transform does (a skipped sample);
    ``start``/``end`` work as in ``Compose``, so ``CacheDataset`` caches the ``None``."""

    def __call__(self, input_, start=0, end=None, threading=False, lazy: bool | None = None):
        end_ = len(self.transforms) if end is None else end
        if start is None or not 0 <= start <= end_ <= len(self.transforms):
            return super().__call__(input_, start=start, end=end, threading=threading, lazy=lazy)  # MONAI's error
        data = input_
        for i in range(start, end_):
            if data is None:
                return None
            data = super().__call__(data, start=i, end=i + 1, threading=threading, lazy=lazy)
        return data


class DropNoneCollate:
    """``collate_fn`` that drops, counts and logs ``None`` samples and collates the rest with ``collate_fn``.
    :attr:`num_dropped` is the total over DataLoader workers (shared memory, one slot per worker).

    Args:
        collate_fn: collates the kept samples.
        on_empty: when every sample of a batch was skipped: ``"raise"`` a ``ValueError`` (MONAI's trainers
            cannot take an empty batch) or ``"none"``: return ``None``.
        max_workers: number of worker slots in the shared counter.
    """

    def __init__(
        self, collate_fn: Callable[[Sequence], Any] = list_data_collate, on_empty: str = "raise", max_workers: int = 256
    ) -> None:
        self.collate_fn = collate_fn
        self.on_empty = look_up_option(on_empty, ("raise", "none"))
        self._counts = torch.zeros(max_workers + 1, dtype=torch.int64).share_memory_()  # slot 0: main process

    @property
    def num_dropped(self) -> int:
        """Samples dropped so far, over all processes."""
        return int(self._counts.sum())

    def reset(self) -> None:
        """Set the count back to zero."""
        self._counts.zero_()

    def __call__(self, batch: Sequence):
        kept, num_dropped = [], 0
        for item in batch:
            if isinstance(item, list):  # multi-sample transforms return a list per dataset item
                num_dropped += sum(i is None for i in item)
                item = [i for i in item if i is not None] or None
            else:
                num_dropped += item is None
            if item is not None:
                kept.append(item)
        if num_dropped:
            info = torch.utils.data.get_worker_info()
            self._counts[0 if info is None else 1 + info.id % (self._counts.numel() - 1)] += num_dropped
            logger.warning(
                f"DropNoneCollate: dropped {num_dropped} skipped sample(s) from a batch of {len(batch)} "
                f"({self.num_dropped} dropped so far)."
            )
        if kept:
            return self.collate_fn(kept)
        if self.on_empty == "none":
            return None
        raise ValueError(
            f"DropNoneCollate: every sample of a batch of {len(batch)} was skipped (see the warnings on "
            "'monai_patronus.data' for the files); remove the bad files from the datalist, use a larger "
            "batch_size, or on_empty='none' with a loop that skips None batches."
        )
