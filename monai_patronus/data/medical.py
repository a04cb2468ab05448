"""Loading medical images (X-ray PNG/JPEG, DICOM, NIfTI, MHA/NRRD) for Patronus with MONAI transforms.

:func:`medical_image_transforms` builds the whole pipeline, one flat list of MONAI transforms: MONAI's
``LoadImaged`` with :class:`~monai_patronus.data.readers.MedicalImageReader` (reader chosen by file type),
MONAI's ``EnsureChannelFirstd``, :class:`ToChannelsd` (RGB -> grey), :class:`CheckImaged` (NaN/inf,
constant image, channel count, dimensionality), :class:`AntialiasResized` (MONAI's ``Resize``, area or
linear), MONAI's ``ScaleIntensityRangePercentilesd`` (to [-1, 1]) and MONAI's ``EnsureTyped`` (plain
float32 tensors for the image and the labels). None of them is random, so ``CacheDataset`` and
``PersistentDataset`` cache the final tensors.

Bad samples can be skipped instead of stopping training (``on_error="skip"``):

- :class:`LoadMedicalImaged` (unreadable, truncated or missing file) and :class:`CheckImaged` (bad
  content) then log a warning on ``logging.getLogger("monai_patronus.data")`` naming the sample, count
  it (``num_skipped``, per process) and return ``None`` instead of the sample;
- :class:`SkipNoneCompose` (what :func:`medical_image_transforms` returns) stops at a ``None``, so the
  dataset item is ``None`` (also with ``CacheDataset``/``PersistentDataset``, which cache the ``None``);
- :class:`DropNoneCollate`, the DataLoader's ``collate_fn``, drops the ``None`` items before MONAI's
  ``list_data_collate`` and counts them in shared memory, so ``num_dropped`` is the total over all
  DataLoader workers.

With ``on_error="raise"`` the errors are ``ValueError`` naming the sample. Inside a ``Compose``/``Dataset``,
MONAI re-raises every transform error as ``RuntimeError("applying transform ...")`` whose
``__cause__`` is that ``ValueError``.

How a sample is named (privacy): in hospital (PACS) exports the folders are PatientIDs and the file names
UIDs, and warnings and errors leave the run (logs, MLflow, terminals). So when the datalist item has a
``"row"`` key (the CSV row number that ``load_chexpert_datalist`` adds to every item), messages name it
``datalist row N`` and hold neither its path nor any component of it: the reader's own exception text is
scrubbed of the path and of each path component (replaced by ``<file>``) and is not chained to the raised
``ValueError``; its type name is kept. Items without ``"row"`` (a user's own datalist) are named by their
file, as before.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import ImageReader, MetaTensor, list_data_collate
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    Resize,
    ScaleIntensityRangePercentilesd,
)
from monai.utils import ImageMetaKey, ensure_tuple

from .readers import MedicalImageReader

__all__ = [
    "AntialiasResized",
    "CheckImaged",
    "DropNoneCollate",
    "LoadMedicalImaged",
    "SkipNoneCompose",
    "ToChannelsd",
    "medical_image_transforms",
]

logger = logging.getLogger("monai_patronus.data")

ON_ERROR = ("raise", "skip")
_LUMA_BT601 = (0.299, 0.587, 0.114)  # the weights PIL's convert("L") uses


def _number_of_frames(img) -> int:
    """``NumberOfFrames`` from a MetaTensor's meta (set by ``DicomReader`` for multi-frame files), else 1."""
    meta = img.meta if isinstance(img, MetaTensor) else {}
    try:
        return int(meta.get("NumberOfFrames", 1))
    except (TypeError, ValueError):
        return 1


def _check_on_error(owner: str, on_error: str) -> str:
    if on_error not in ON_ERROR:
        raise ValueError(f"{owner}: on_error must be 'raise' or 'skip', got {on_error!r}.")
    return on_error


_PLACEHOLDER = "<file>"


def _row(data: Any) -> str | None:
    """The item's datalist row (``data["row"]``) as text, or ``None`` when the item has no ``"row"`` key."""
    if not isinstance(data, Mapping) or "row" not in data:
        return None
    row = data["row"]
    if isinstance(row, torch.Tensor) and row.numel() == 1:
        row = row.item()
    if isinstance(row, (int, np.integer)) and not isinstance(row, bool):
        return str(int(row))
    if isinstance(row, (float, np.floating)) and float(row).is_integer():
        return str(int(row))
    return f"{row}"


def _file_names(value: Any) -> list[str]:
    """The file names held by a datalist value (a name or a list of names)."""
    return [os.fspath(v) for v in ensure_tuple(value) if isinstance(v, (str, os.PathLike))]


def _strip_image_suffix(name: str) -> str:
    low = name.lower()
    for suffix in sorted(MedicalImageReader.supported_suffixes(), key=len, reverse=True):
        if low.endswith(f".{suffix}") and len(name) > len(suffix) + 1:
            return name[: -len(suffix) - 1]
    return name


def _scrub(text: str, names: Iterable[str]) -> str:
    """``text`` with every path in ``names`` (as given, expanded, absolute and resolved) and each of their
    components (folder names, the file name, the file name without its image suffix) replaced by
    ``<file>``. Components are replaced where they are not part of a longer word or number, so a folder
    named like a common word also blanks that word in the text: privacy before readability."""
    wholes: set[str] = set()
    for name in names:
        expanded = os.path.expanduser(name)
        wholes.update({name, expanded, os.path.abspath(expanded), os.path.realpath(expanded)})
    parts: set[str] = set()
    for whole in wholes:
        path = Path(whole)
        for part in path.parts:
            if part in (path.anchor, os.sep, "/", ".", "..", ""):
                continue
            parts.update({part, _strip_image_suffix(part)})
    for whole in sorted(wholes - {""}, key=len, reverse=True):
        text = text.replace(whole, _PLACEHOLDER)
    for part in sorted(parts - {""}, key=len, reverse=True):
        text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(part)}(?![A-Za-z0-9])", _PLACEHOLDER, text)
    return text


def _source(data: Mapping, key: Hashable) -> str:
    """How messages name an item: ``datalist row N`` when it has a ``"row"`` key (never its path), else the
    MetaTensor's ``filename_or_obj``, else the ``{key}_meta_dict`` one, else the sample id."""
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


class LoadMedicalImaged(LoadImaged):
    """MONAI's ``LoadImaged`` with one explicit reader and errors that name the file.

    ``LoadImaged(reader=r)`` falls back to every default reader when ``r.read`` fails and reports
    corrupt files (e.g. pydicom's ``MR_truncated.dcm``) without their name. Here the given reader
    (default: :class:`~monai_patronus.data.readers.MedicalImageReader`, which picks one per file type)
    is the only one used, and any failure becomes a ``ValueError`` naming the key and the sample with
    the reader's exception type and message, or, with ``on_error="skip"``, a warning on
    ``monai_patronus.data`` and ``None`` instead of the sample (see :class:`DropNoneCollate`).

    The sample is named by its file (the reader's exception chained), or, when the datalist item has a
    ``"row"`` key, as ``datalist row N`` with the reader's message scrubbed of the path and of every
    path component, and nothing chained (see the module docstring).

    Args:
        keys: keys of the file names to load.
        reader: an ``ImageReader`` instance; ``None``: a :class:`MedicalImageReader`.
        on_error: ``"raise"`` or ``"skip"``.
        dtype, image_only, kwargs: as for ``monai.transforms.LoadImaged``.

    Attributes:
        num_skipped: samples skipped by this instance in this process.
    """

    def __init__(
        self,
        keys: KeysCollection,
        reader: ImageReader | None = None,
        on_error: str = "raise",
        dtype=np.float32,
        image_only: bool = True,
        **kwargs,
    ) -> None:
        on_error = _check_on_error("LoadMedicalImaged", on_error)
        reader = MedicalImageReader() if reader is None else reader
        if not isinstance(reader, ImageReader):
            raise TypeError(
                f"LoadMedicalImaged: reader must be a monai.data.ImageReader instance or None, got {type(reader)}."
            )
        with warnings.catch_warnings():  # LoadImaged also builds MONAI's default readers, which this class never uses
            warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
            super().__init__(keys, reader=reader, dtype=dtype, image_only=image_only, **kwargs)
        self.image_reader = reader
        self.on_error = on_error
        self.num_skipped = 0

    def __call__(self, data, reader: ImageReader | None = None):
        if data is None:
            return None
        reader = reader or self.image_reader
        try:
            return super().__call__(data, reader=reader)
        except MemoryError:
            raise
        except Exception as e:  # handled below, outside this block, so a raise there has no implicit __context__
            error = e
        fix = "The file may be missing, truncated or corrupt: fix or remove it from the datalist"
        row = _row(data)
        if row is None:
            files = {k: data[k] for k in self.keys if k in data}
            message = (
                f"LoadMedicalImaged: cannot load {files} with {type(reader).__name__} "
                f"({type(error).__name__}: {error}). {fix}"
            )
            cause: BaseException | None = error
        else:  # the reader's text may echo the path: scrub it and do not chain the exception
            keys = [k for k in self.keys if k in data]
            names = [name for k in keys for name in _file_names(data[k])]
            message = (
                f"LoadMedicalImaged: cannot load {', '.join(repr(k) for k in keys)} of datalist row {row} with "
                f"{type(reader).__name__} ({type(error).__name__}: {_scrub(str(error), names)}). {fix}"
            )
            cause = None
        del error
        if self.on_error == "raise":
            raise ValueError(message + ", or pass on_error='skip'.") from cause
        self.num_skipped += 1
        logger.warning("skipped a sample: %s.", message)
        return None


class CheckImaged(MapTransform):
    """Check loaded images: not empty, number of spatial axes, channel count, finite values, not constant.

    Expects channel-first images (after ``EnsureChannelFirstd``). A failing image raises a
    ``ValueError`` naming the sample (``datalist row N`` when the item has a ``"row"`` key, else its file
    from the ``MetaTensor`` meta ``filename_or_obj``), or with ``on_error="skip"`` is logged as a warning
    on ``monai_patronus.data``, counted in ``num_skipped`` and the whole sample becomes ``None`` (see
    :class:`SkipNoneCompose`, :class:`DropNoneCollate`). A ``None`` input passes through.

    A constant image (every value the same: a blank frame, a failed export) is refused by default: the
    intensity scaling would turn it into a flat image of -1 that trains as if it were data. A multi-frame
    DICOM file given to a 2-D check is reported as such, with its number of frames.

    Args:
        keys: keys of the images to check.
        expected_channels: required ``C`` of ``(C, *spatial)``; ``None``: any.
        spatial_dims: required number of spatial axes; ``None``: any.
        allow_nonfinite: accept NaN/inf values.
        on_error: ``"raise"`` or ``"skip"``.
        allow_missing_keys: don't raise when a key is absent.
        allow_constant: accept images whose values are all the same.

    Attributes:
        num_skipped: samples skipped by this instance in this process.
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
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"CheckImaged: {name} must be a positive int or None, got {value!r}.")
        for name, value in (("allow_nonfinite", allow_nonfinite), ("allow_constant", allow_constant)):
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"CheckImaged: {name} must be True or False, got {value!r}.")
        self.expected_channels = expected_channels
        self.spatial_dims = spatial_dims
        self.allow_nonfinite = bool(allow_nonfinite)
        self.allow_constant = bool(allow_constant)
        self.on_error = _check_on_error("CheckImaged", on_error)
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
        if not self.allow_nonfinite and (t.is_floating_point() or t.is_complex()):
            num_bad = int((~torch.isfinite(t)).sum())
            if num_bad:
                return (
                    f"has {num_bad} non-finite values (NaN/inf) of {t.numel()}; fix the file or pass "
                    "allow_nonfinite=True"
                )
        if not self.allow_constant:
            flat = t.reshape(-1)
            if bool((flat == flat[0]).all()):
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
    """Convert channel-first images to ``channels`` channels: RGB -> grey with the ITU-R BT.601 luma
    weights ``0.299 R + 0.587 G + 0.114 B`` (as PIL's ``convert("L")``), grey -> RGB by repeating. Other
    channel counts (e.g. a 4-channel NIfTI or NumPy array) are left for :class:`CheckImaged` to report.
    Images with an alpha channel (RGBA/LA/transparent palette PNG or TIFF) never get here with it:
    :func:`~monai_patronus.data.readers.normalize_pil_mode` composites them over black when they are read.
    ``None`` passes through.

    Args:
        keys: keys of the images.
        channels: 1 or 3.
        allow_missing_keys: don't raise when a key is absent.
    """

    def __init__(self, keys: KeysCollection, channels: int = 1, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if channels not in (1, 3) or isinstance(channels, bool):
            raise ValueError(f"ToChannelsd: channels must be 1 or 3, got {channels!r}.")
        self.channels = channels

    def __call__(self, data: Mapping | None):
        if data is None:
            return None
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            c = img.shape[0]
            if self.channels == 1 and c == 3:
                weights = torch.as_tensor(_LUMA_BT601, dtype=img.dtype if img.is_floating_point() else torch.float32)
                weights = weights.reshape(3, *([1] * (img.ndim - 1)))
                d[key] = (img[:3] * weights.to(img.device)).sum(0, keepdim=True)
            elif self.channels == 3 and c == 1:
                d[key] = img.repeat(3, *([1] * (img.ndim - 1)))
        return d


class AntialiasResized(MapTransform):
    """Resize channel-first images to ``spatial_size`` with MONAI's ``Resize``, choosing the filter per image:
    ``"area"`` (box-filter averaging, which is anti-aliased by construction) when no axis grows, else
    bilinear/trilinear with MONAI's Gaussian anti-aliasing on the shrinking axes. On a 2048x2500 radiograph
    to 224x224, area takes ~5 ms where Gaussian anti-aliasing takes ~0.9 s; on a 197x233x189 volume to 16^3,
    17 ms against ~7 s. ``None`` passes through.

    Args:
        keys: keys of the images.
        spatial_size: output spatial shape.
        allow_missing_keys: don't raise when a key is absent.
    """

    def __init__(self, keys: KeysCollection, spatial_size: Sequence[int], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.spatial_size = tuple(ensure_tuple(spatial_size))
        if not 1 <= len(self.spatial_size) <= 3 or any(
            isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in self.spatial_size
        ):
            raise ValueError(
                f"AntialiasResized: spatial_size must be 1 to 3 positive ints, got {spatial_size!r}."
            )
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(self.spatial_size)]
        self.shrink = Resize(self.spatial_size, mode="area")
        self.grow = Resize(self.spatial_size, mode=mode, anti_aliasing=True)

    def __call__(self, data: Mapping | None):
        if data is None:
            return None
        d = dict(data)
        for key in self.key_iterator(d):
            shape = tuple(d[key].shape[1:])
            shrinking = len(shape) == len(self.spatial_size) and all(
                s >= t for s, t in zip(shape, self.spatial_size)
            )
            d[key] = (self.shrink if shrinking else self.grow)(d[key])
        return d


class SkipNoneCompose(Compose):
    """A ``monai.transforms.Compose`` that stops as soon as a transform returns ``None`` (a sample
    skipped by ``on_error="skip"``) and returns ``None``; a ``None`` input gives ``None``.

    The transforms run one at a time (with ``lazy=True``, pending lazy operations are therefore applied
    after each transform). ``start``/``end`` work as in ``Compose``, so ``CacheDataset`` and
    ``PersistentDataset`` cache the ``None`` of a bad sample and skip it every epoch.
    """

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
    """``collate_fn`` for a DataLoader whose dataset may return ``None`` (samples skipped with
    ``on_error="skip"``): drops them, counts them, logs a warning on ``monai_patronus.data``, and
    collates the rest with ``collate_fn`` (MONAI's ``list_data_collate``). Batches can therefore be
    smaller than ``batch_size``.

    The count lives in shared memory (one slot per DataLoader worker), so :attr:`num_dropped` is the
    total over all workers of the DataLoaders using this instance, read in the main process.

    Args:
        collate_fn: collates the kept samples.
        on_empty: when every sample of a batch was skipped: ``"raise"`` a ``ValueError`` (MONAI's
            trainers cannot take an empty batch) or return ``"none"`` (``None``, for loops that
            ``continue`` on it).
        max_workers: number of worker slots in the shared counter.

    Example:
        >>> collate = DropNoneCollate()
        >>> loader = DataLoader(Dataset(datalist, medical_image_transforms(on_error="skip")),
        ...                     batch_size=16, num_workers=4, collate_fn=collate)
        >>> ...; print(collate.num_dropped)
    """

    def __init__(
        self, collate_fn: Callable[[Sequence], Any] = list_data_collate, on_empty: str = "raise", max_workers: int = 256
    ) -> None:
        if on_empty not in ("raise", "none"):
            raise ValueError(f"DropNoneCollate: on_empty must be 'raise' or 'none', got {on_empty!r}.")
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ValueError(f"DropNoneCollate: max_workers must be a positive int, got {max_workers!r}.")
        self.collate_fn = collate_fn
        self.on_empty = on_empty
        self._counts = torch.zeros(max_workers + 1, dtype=torch.int64).share_memory_()  # slot 0: main process

    @property
    def num_dropped(self) -> int:
        """Samples dropped so far, over all processes."""
        return int(self._counts.sum())

    def reset(self) -> None:
        """Set the count back to zero."""
        self._counts.zero_()

    def __call__(self, batch: Sequence):
        kept: list = []
        for item in batch:
            if isinstance(item, list):  # multi-sample transforms return a list per dataset item
                item = [i for i in item if i is not None]
                if item:
                    kept.append(item)
            elif item is not None:
                kept.append(item)
        num_dropped = sum(1 for i in batch if i is None) + sum(
            sum(1 for j in i if j is None) for i in batch if isinstance(i, list)
        )
        if num_dropped:
            info = torch.utils.data.get_worker_info()
            slot = 0 if info is None else 1 + info.id % (self._counts.numel() - 1)
            self._counts[slot] += num_dropped
            logger.warning(
                "DropNoneCollate: dropped %d skipped sample(s) from a batch of %d (%d dropped so far).",
                num_dropped, len(batch), self.num_dropped,
            )
        if not kept:
            if self.on_empty == "none":
                return None
            raise ValueError(
                f"DropNoneCollate: every sample of a batch of {len(batch)} was skipped (see the warnings on "
                "'monai_patronus.data' for the files); remove the bad files from the datalist, use a larger "
                "batch_size, or on_empty='none' with a loop that skips None batches."
            )
        return self.collate_fn(kept)


def medical_image_transforms(
    spatial_dims: int = 2,
    image_size: int | Sequence[int] = 224,
    keys: KeysCollection = "image",
    reader: ImageReader | None = None,
    channels: int = 1,
    on_error: str = "raise",
    percentiles: tuple[float, float] = (0.5, 99.5),
    label_keys: KeysCollection | None = "label",
    allow_constant: bool = False,
) -> SkipNoneCompose:
    """File name -> ``(channels, *image_size)`` float32 image in [-1, 1], built from MONAI transforms.

    Steps: :class:`LoadMedicalImaged` (reader by file type: PNG/JPEG -> ``PILReader``, DICOM ->
    :class:`~monai_patronus.data.readers.DicomReader` (MONOCHROME1 inverted, rescale applied, no patient
    tags in meta), NIfTI -> ``NibabelReader``, MHA/NRRD -> :class:`~monai_patronus.data.readers.SimpleITKReader`),
    ``EnsureChannelFirstd``, :class:`ToChannelsd`, :class:`CheckImaged` (finite, ``channels`` channels,
    ``spatial_dims`` axes), :class:`AntialiasResized` (MONAI's ``Resize``: area averaging when shrinking,
    else bilinear/trilinear) to ``image_size`` per axis (the aspect ratio is not kept), then
    ``ScaleIntensityRangePercentilesd``: per image and channel, the ``percentiles`` (0.5 and 99.5 by
    default) are mapped to -1 and 1 and values outside are clipped. Percentiles rather than min/max because
    X-rays and CT carry outliers (burned-in text and markers, collimator borders, padding values such as
    -2000 HU) that would squeeze the anatomy into a few grey levels. Scaling after resizing makes the
    [-1, 1] range exact and costs less on large radiographs. Last, MONAI's ``EnsureTyped`` with
    ``track_meta=False`` makes the image a plain float32 ``torch.Tensor`` (no ``MetaTensor`` meta, so no
    file path travels in batches or cache files) and every ``label_keys`` entry present a float32 tensor.

    Caching: the returned :class:`SkipNoneCompose` is one flat list of deterministic MONAI transforms, so
    ``CacheDataset``/``PersistentDataset(transform=medical_image_transforms(...))`` cache the final tensors
    (and the ``None`` of a skipped sample), and a cached item has the same types as a freshly computed one.
    Do not nest it in another ``Compose``: MONAI caches only up to the first transform that is random or
    not a ``Transform``, and a nested ``Compose`` counts as random. Append random augmentations with
    ``SkipNoneCompose([*medical_image_transforms(...).transforms, RandFlipd(...)])`` instead.
    ``PersistentDataset`` keys its cache files by the datalist item alone: change ``cache_dir`` (or pass
    ``hash_transform=monai.data.utils.pickle_hashing``) when the pipeline's arguments change.

    Image content: multi-frame DICOM files are volumes ``(x, y, frames)`` (use ``spatial_dims=3``; a 2-D
    pipeline names the number of frames); colour DICOM and RGB PNG/JPEG are converted to grey for
    ``channels=1``; an alpha channel is composited over black when the file is read (an opaque alpha thus
    simply disappears); constant images are refused unless ``allow_constant=True``.

    Args:
        spatial_dims: 2 (images) or 3 (volumes).
        image_size: output size, one int for every axis or one per axis.
        keys: keys of the file names in each datalist item.
        reader: an ``ImageReader`` for every file; ``None``: chosen per file type.
        channels: 1 (RGB converted to grey) or 3 (grey repeated).
        on_error: ``"raise"``: ``ValueError`` naming the sample (its datalist row when the item has a
            ``"row"`` key, else its file) for unreadable files and bad images; ``"skip"``: such samples
            become ``None``, use :class:`DropNoneCollate` as ``collate_fn``.
        percentiles: lower and upper percentile mapped to -1 and 1.
        label_keys: keys converted to float32 tensors when present (e.g. the ``"label"`` array of
            ``load_chexpert_datalist``); ``None`` or ``()``: none.
        allow_constant: keep images whose values are all the same (they become all -1).

    Returns:
        A flat :class:`SkipNoneCompose` (a ``monai.transforms.Compose``) of MONAI transforms.

    Raises:
        ValueError: an argument out of range, or ``label_keys`` sharing a key with ``keys``.
        TypeError: ``allow_constant`` not a bool.
    """
    if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
        raise ValueError(f"medical_image_transforms: spatial_dims must be 2 or 3, got {spatial_dims!r}.")
    size = ensure_tuple(image_size)
    if len(size) == 1:
        size = size * spatial_dims
    if len(size) != spatial_dims or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
        raise ValueError(
            f"medical_image_transforms: image_size must be a positive int or {spatial_dims} positive ints, "
            f"got {image_size!r}."
        )
    if channels not in (1, 3) or isinstance(channels, bool):
        raise ValueError(f"medical_image_transforms: channels must be 1 or 3, got {channels!r}.")
    _check_on_error("medical_image_transforms", on_error)
    lower, upper = (float(p) for p in percentiles)
    if not 0.0 <= lower < upper <= 100.0:
        raise ValueError(
            f"medical_image_transforms: percentiles must be (lower, upper) with 0 <= lower < upper <= 100, "
            f"got {percentiles!r}."
        )
    if not isinstance(allow_constant, (bool, np.bool_)):
        raise TypeError(f"medical_image_transforms: allow_constant must be True or False, got {allow_constant!r}.")
    labels = () if label_keys is None else ensure_tuple(label_keys)
    shared = set(labels) & set(ensure_tuple(keys))
    if shared:
        raise ValueError(
            f"medical_image_transforms: label_keys {sorted(map(str, shared))} are also image keys; give the "
            "label entries of the datalist items (e.g. 'label') or None."
        )
    transforms = [
        LoadMedicalImaged(keys, reader=reader, on_error=on_error, dtype=np.float32, image_only=True),
        EnsureChannelFirstd(keys),
        ToChannelsd(keys, channels=channels),
        CheckImaged(
            keys, expected_channels=channels, spatial_dims=spatial_dims, on_error=on_error,
            allow_constant=bool(allow_constant),
        ),
        AntialiasResized(keys, spatial_size=size),
        ScaleIntensityRangePercentilesd(
            keys, lower=lower, upper=upper, b_min=-1.0, b_max=1.0, clip=True, channel_wise=True, dtype=np.float32
        ),
        EnsureTyped(keys, data_type="tensor", dtype=torch.float32, track_meta=False),
    ]
    if labels:
        transforms.append(
            EnsureTyped(labels, data_type="tensor", dtype=torch.float32, track_meta=False, allow_missing_keys=True)
        )
    return SkipNoneCompose(transforms)
