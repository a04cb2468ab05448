"""Loading medical images (X-ray PNG/JPEG, DICOM, NIfTI, MHA/NRRD) for Patronus with MONAI transforms.

Privacy: when the datalist item has a ``"row"`` key (added by ``load_chexpert_datalist``), messages name
``datalist row N`` and the reader's exception text is scrubbed of the path and its components (PACS folders are
PatientIDs) and not chained.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import ImageReader
from monai.transforms import EnsureChannelFirstd, EnsureTyped, LoadImaged, ScaleIntensityRangePercentilesd
from monai.utils import ensure_tuple, ensure_tuple_rep, look_up_option

from ..transforms import AntialiasResized, CheckImaged, DropNoneCollate, SkipNoneCompose, ToChannelsd
from ..transforms.dictionary import ON_ERROR, _row, logger
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

_PLACEHOLDER = "<file>"


def _strip_image_suffix(name: str) -> str:
    low = name.lower()
    for suffix in sorted(MedicalImageReader.supported_suffixes(), key=len, reverse=True):
        if low.endswith(f".{suffix}") and len(name) > len(suffix) + 1:
            return name[: -len(suffix) - 1]
    return name


def _scrub(text: str, names: Iterable[str]) -> str:
    """``text`` with every path in ``names`` (as given, expanded, absolute, resolved) and each of their components
    (with and without image suffix) replaced by ``<file>`` wherever they stand as a whole word."""
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


class LoadMedicalImaged(LoadImaged):
    """MONAI's ``LoadImaged`` with one explicit reader and errors that name the file.

    ``LoadImaged(reader=r)`` falls back to MONAI's default readers when ``r.read`` fails and reports corrupt files
    without their name. Here the given reader is the only one, and a failure is a ``ValueError`` naming the key
    and the sample, or with ``on_error="skip"`` a warning and ``None``.

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
        on_error = look_up_option(on_error, ON_ERROR)
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
            names = [os.fspath(v) for k in keys for v in ensure_tuple(data[k]) if isinstance(v, (str, os.PathLike))]
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

    Steps: :class:`LoadMedicalImaged`, ``EnsureChannelFirstd``, :class:`ToChannelsd`, :class:`CheckImaged`,
    :class:`AntialiasResized` (aspect ratio not kept), ``ScaleIntensityRangePercentilesd`` (per channel,
    ``percentiles`` -> [-1, 1], clipped: robust to burned-in text and padding) and ``EnsureTyped`` (plain float32
    tensors, no file path). One flat deterministic list, so ``CacheDataset`` caches the final tensors; append
    augmentations with ``SkipNoneCompose([*medical_image_transforms(...).transforms, RandFlipd(...)])``.

    Args:
        spatial_dims: 2 (images) or 3 (volumes; multi-frame DICOM files are volumes ``(x, y, frames)``).
        image_size: output size, one int for every axis or one per axis.
        keys: keys of the file names in each datalist item.
        reader: an ``ImageReader`` for every file; ``None``: chosen per file type.
        channels: 1 (RGB converted to grey) or 3 (grey repeated).
        on_error: ``"raise"`` or ``"skip"`` (bad samples become ``None``; use :class:`DropNoneCollate`).
        percentiles: lower and upper percentile mapped to -1 and 1.
        label_keys: keys converted to float32 tensors when present; ``None`` or ``()``: none.
        allow_constant: keep images whose values are all the same (they become all -1).

    Returns:
        A flat :class:`SkipNoneCompose` of MONAI transforms.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"medical_image_transforms: spatial_dims must be 2 or 3, got {spatial_dims!r}.")
    size = ensure_tuple_rep(image_size, spatial_dims)
    if min(size) < 1:
        raise ValueError(f"medical_image_transforms: image_size must be positive, got {image_size!r}.")
    if channels not in (1, 3):
        raise ValueError(f"medical_image_transforms: channels must be 1 or 3, got {channels!r}.")
    look_up_option(on_error, ON_ERROR)
    lower, upper = (float(p) for p in percentiles)
    if not 0.0 <= lower < upper <= 100.0:
        raise ValueError(
            f"medical_image_transforms: percentiles must be (lower, upper) with 0 <= lower < upper <= 100, "
            f"got {percentiles!r}."
        )
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
        CheckImaged(keys, channels, spatial_dims, on_error=on_error, allow_constant=bool(allow_constant)),
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
