"""Image readers for :class:`monai.transforms.LoadImaged`: :class:`SimpleITKReader` (MONAI's ``ITKReader`` needs
the much larger ``itk``), a privacy-safe :class:`DicomReader`, and :class:`MedicalImageReader`, which picks the
reader from the file name (``LoadImage`` would also try MONAI's default readers, and ``PydicomReader`` accepts
any name).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ImageReader, NibabelReader, NumpyReader, PILReader, PydicomReader
from monai.data.utils import affine_to_spacing, is_no_channel, orientation_ras_lps
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple, optional_import

sitk, has_sitk = optional_import("SimpleITK")
pydicom, has_pydicom = optional_import("pydicom")

__all__ = [
    "DICOM_SUFFIXES",
    "DICOM_TECHNICAL_TAGS",
    "DicomReader",
    "ITK_SUFFIXES",
    "MedicalImageReader",
    "NIFTI_SUFFIXES",
    "NUMPY_SUFFIXES",
    "PIL_SUFFIXES",
    "SimpleITKReader",
    "normalize_pil_mode",
]

DICOM_SUFFIXES = ("dcm", "dicom", "dic")
NIFTI_SUFFIXES = ("nii.gz", "nii")
ITK_SUFFIXES = ("mha", "mhd", "nrrd", "nhdr")
PIL_SUFFIXES = ("png", "jpg", "jpeg", "bmp", "tif", "tiff")
NUMPY_SUFFIXES = ("npy", "npz")

# Technical DICOM attributes kept in the meta dict by DicomReader (besides the geometry MONAI needs).
DICOM_TECHNICAL_TAGS = tuple(
    "Modality PhotometricInterpretation PresentationLUTShape Rows Columns NumberOfFrames SamplesPerPixel "
    "BitsAllocated BitsStored HighBit PixelRepresentation PixelSpacing ImagerPixelSpacing RescaleSlope "
    "RescaleIntercept RescaleType ViewPosition BodyPartExamined".split()
)

# Value representations that carry names, dates, times, ages or unique ids: never kept.
_IDENTIFYING_VRS = frozenset({"PN", "DA", "DT", "TM", "UI", "AS", "SQ"})
_IDENTIFYING_WORDS = re.compile(
    r"Patient|Institution|Physician|Operator|Accession|Station|Address|Telephone|Serial|Comment|Description"
    r"|Name|Identifier|ID$|IDs$|Birth|Ethnic|Occupation|Admitting|Requesting|Performing|Referring"
)
# the header elements the DICOM reader's meta dict is made of (MONAI's prune_metadata set): orientation,
# position and spacing, and the geometry items of enhanced multi-frame functional groups
_GEOMETRY_TAGS = (0x00200037, 0x00200032, 0x00280030)
_FUNCTIONAL_GROUPS = (0x52009229, 0x52009230)
_FUNCTIONAL_GROUP_GEOMETRY = (0x00209116, 0x00209113, 0x00289110)
_GEOMETRY_WITH_PATIENT_IN_NAME = frozenset(
    {"ImageOrientationPatient", "ImagePositionPatient", "PatientOrientation", "PatientPosition"}
)


def _full_suffix_match(name: str, suffixes: Sequence[str]) -> bool:
    low = name.lower()
    return any(low.endswith(f".{s}") for s in suffixes)


# ---------------------------------------------------------------------------------------------------- SimpleITK


class SimpleITKReader(ImageReader):
    """Load MHA/MHD/NRRD/NIfTI (any format SimpleITK reads) for :class:`monai.transforms.LoadImage`.

    As MONAI's ``ITKReader``: the array is ``(x, y[, z])``, vector pixels last (``original_channel_dim=-1``), the
    affine ``direction @ diag(spacing)`` plus origin, LPS -> RAS. Header entries are copied except ``ITK_*`` and
    DICOM-tag keys (``"0010|0010"`` = PatientName).

    Args:
        channel_dim: the channel axis of the returned array; ``None``: ``"no_channel"`` for scalar images,
            ``-1`` otherwise.
        affine_lps_to_ras: convert the affine from ITK's LPS to RAS (like ``NibabelReader``).
        kwargs: passed to ``SimpleITK.ReadImage``.
    """

    suffixes = ITK_SUFFIXES + NIFTI_SUFFIXES + ("gipl", "gipl.gz", "vtk", "hdr")

    def __init__(self, channel_dim: int | str | None = None, affine_lps_to_ras: bool = True, **kwargs):
        super().__init__()
        if not has_sitk:
            raise ImportError("SimpleITKReader needs SimpleITK: pip install SimpleITK.")
        self.channel_dim = float("nan") if channel_dim == "no_channel" else channel_dim
        self.affine_lps_to_ras = affine_lps_to_ras
        self.kwargs = kwargs

    def verify_suffix(self, filename: Sequence[os.PathLike | str] | os.PathLike | str) -> bool:
        """Whether every name in ``filename`` ends with a suffix in :attr:`suffixes`."""
        return has_sitk and all(_full_suffix_match(f"{f}", self.suffixes) for f in ensure_tuple(filename))

    def read(self, data: Sequence[os.PathLike | str] | os.PathLike | str, **kwargs):
        """Read one file (a ``SimpleITK.Image``) or several (a list, stacked as channels by ``get_data``)."""
        kwargs_ = {**self.kwargs, **kwargs}
        images = [sitk.ReadImage(f"{name}", **kwargs_) for name in ensure_tuple(data)]
        return images[0] if len(images) == 1 else images

    def get_data(self, img) -> tuple[np.ndarray, dict]:
        """Return ``(array, meta)`` with ``affine``, ``original_affine``, ``spatial_shape``, ``space`` and
        ``original_channel_dim`` set as MONAI's readers do; several images are stacked as channels."""
        arrays, metas = [], []
        for image in img if isinstance(img, (list, tuple)) else [img]:  # a SimpleITK.Image iterates over pixels
            data = self._get_array_data(image)
            header = self._get_meta_dict(image)
            header[MetaKeys.ORIGINAL_AFFINE] = self._get_affine(image)
            header[MetaKeys.SPACE] = SpaceKeys.RAS if self.affine_lps_to_ras else SpaceKeys.LPS
            header[MetaKeys.AFFINE] = header[MetaKeys.ORIGINAL_AFFINE].copy()
            header[MetaKeys.SPATIAL_SHAPE] = self._get_spatial_shape(image)
            if self.channel_dim is None:
                no_channel = data.ndim == len(header[MetaKeys.SPATIAL_SHAPE])
                header[MetaKeys.ORIGINAL_CHANNEL_DIM] = float("nan") if no_channel else -1
            else:
                header[MetaKeys.ORIGINAL_CHANNEL_DIM] = self.channel_dim
            arrays.append(data)
            metas.append(header)
        meta = metas[0]
        for other in metas[1:]:
            if not (
                np.allclose(other[MetaKeys.AFFINE], meta[MetaKeys.AFFINE])
                and np.array_equal(other[MetaKeys.SPATIAL_SHAPE], meta[MetaKeys.SPATIAL_SHAPE])
            ):
                raise ValueError("SimpleITKReader: files stacked as channels must share the affine and spatial shape.")
        if len(arrays) == 1:
            return arrays[0], meta
        if is_no_channel(meta[MetaKeys.ORIGINAL_CHANNEL_DIM]):
            meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
            return np.stack(arrays), meta
        return np.concatenate(arrays, axis=int(meta[MetaKeys.ORIGINAL_CHANNEL_DIM])), meta

    @staticmethod
    def _spatial_rank(image) -> int:
        return max(min(image.GetDimension(), 3), 1)

    def _get_meta_dict(self, image) -> dict:
        meta: dict[str, Any] = {}
        for key in image.GetMetaDataKeys():
            if key.startswith("ITK_") or re.fullmatch(r"[0-9A-Fa-f]{4}\|[0-9A-Fa-f]{4}", key):
                continue
            meta[key] = image.GetMetaData(key)
        meta["spacing"] = np.asarray(image.GetSpacing())
        return meta

    def _get_affine(self, image) -> np.ndarray:
        dim = image.GetDimension()
        sr = self._spatial_rank(image)
        direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)
        spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
        origin = np.asarray(image.GetOrigin(), dtype=np.float64)
        affine = np.eye(sr + 1)
        affine[:sr, :sr] = direction[:sr, :sr] @ np.diag(spacing[:sr])
        affine[:sr, -1] = origin[:sr]
        return orientation_ras_lps(affine) if self.affine_lps_to_ras else affine

    def _get_spatial_shape(self, image) -> np.ndarray:
        size = list(image.GetSize())
        if isinstance(self.channel_dim, int) and image.GetNumberOfComponentsPerPixel() == 1:
            size.pop(self.channel_dim)
        return np.asarray(size[: self._spatial_rank(image)])

    @staticmethod
    def _get_array_data(image) -> np.ndarray:
        array = sitk.GetArrayFromImage(image)  # (z, y, x[, c])
        if image.GetNumberOfComponentsPerPixel() == 1:
            return np.ascontiguousarray(array.T)  # (x, y, z)
        return np.ascontiguousarray(np.moveaxis(array.T, 0, -1))  # (x, y, z, c)


# ---------------------------------------------------------------------------------------------------- DICOM


def _check_technical_tags(keep_tags: Sequence[str]) -> tuple[str, ...]:
    tags = tuple(keep_tags)
    for keyword in tags:
        if not isinstance(keyword, str):
            raise TypeError(f"DicomReader: keep_tags must be DICOM keywords (str), got {keyword!r}.")
        tag = pydicom.datadict.tag_for_keyword(keyword)
        if tag is None:
            raise ValueError(
                f"DicomReader: keep_tags entry {keyword!r} is not a DICOM keyword; use keywords such as "
                "'Modality' or 'PixelSpacing' (see pydicom.datadict)."
            )
        identifying = pydicom.datadict.dictionary_VR(tag) in _IDENTIFYING_VRS or (
            keyword not in _GEOMETRY_WITH_PATIENT_IN_NAME and _IDENTIFYING_WORDS.search(keyword) is not None
        )
        if identifying:
            raise ValueError(
                f"DicomReader: keep_tags entry {keyword!r} may identify a patient, person, institution or study "
                "(names, ids, UIDs, dates, descriptions) and is never kept; take such covariates from a datalist "
                "CSV instead."
            )
    return tags


def _plain_value(value) -> Any:
    """A pydicom element value as a collate-friendly plain value (or ``None`` to drop it)."""
    if value is None or isinstance(value, (bytes, bytearray)):
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        items = [_plain_value(v) for v in value]
        if not items or any(v is None for v in items):
            return None
        if all(isinstance(v, (int, float)) for v in items):
            return np.asarray(items, dtype=np.float64)
        return [str(v) for v in items]
    if isinstance(value, bool):
        return value
    if isinstance(value, int):  # includes pydicom's IS
        return int(value)
    if isinstance(value, float):  # includes pydicom's DSfloat
        return float(value)
    text = str(value)
    return text if text else None


class DicomReader(PydicomReader):
    """MONAI's ``PydicomReader`` made safe for (X-ray) training data:

    - MONOCHROME1 is flipped (``out = lo + hi - value``, ``[lo, hi]`` the rescaled stored range) so higher is brighter.
    - Metadata: the geometry MONAI needs plus the technical ``keep_tags``; identifying keywords are refused.
    - ``verify_suffix``: ``.dcm``/``.dicom``/``.dic``, directories and files with the ``DICM`` preamble only.
    - Radiographs without patient geometry get the default orientation, origin 0 and (Imager)PixelSpacing.
    - Multi-frame files load as ``(x, y, frames)``, like a series; colour samples last
      (``original_channel_dim=-1``). VOI LUT / windowing is not applied.

    Args:
        keep_tags: DICOM keywords of technical attributes to copy into the meta dict when present.
        invert_monochrome1: flip MONOCHROME1 images so that higher is brighter.
        kwargs: passed to ``PydicomReader``; ``prune_metadata`` is not accepted.
    """

    def __init__(self, keep_tags: Sequence[str] = DICOM_TECHNICAL_TAGS, invert_monochrome1: bool = True, **kwargs):
        if "prune_metadata" in kwargs:
            raise ValueError(
                "DicomReader: prune_metadata is not supported, the meta dict is always the geometry plus "
                "keep_tags; list extra technical keywords in keep_tags."
            )
        super().__init__(prune_metadata=True, **kwargs)
        self.keep_tags = _check_technical_tags(keep_tags)
        self.invert_monochrome1 = invert_monochrome1

    def verify_suffix(self, filename: Sequence[os.PathLike | str] | os.PathLike | str) -> bool:
        """Whether every name is a DICOM file (by suffix or ``DICM`` preamble) or a directory."""
        return has_pydicom and all(_looks_like_dicom(f"{f}") for f in ensure_tuple(filename))

    def _get_meta_dict(self, img) -> dict:
        # PydicomReader converts the whole header to JSON (pydicom logs invalid values: identifiers in the
        # log) before pruning it: convert the geometry alone.
        geometry = pydicom.Dataset()
        for tag in _GEOMETRY_TAGS:
            if tag in img:
                geometry[tag] = img[tag]
        for tag in _FUNCTIONAL_GROUPS:
            if tag in img:
                items = []
                for item in img[tag].value:
                    kept = pydicom.Dataset()
                    for sub in _FUNCTIONAL_GROUP_GEOMETRY:
                        if sub in item:
                            kept[sub] = item[sub]
                    items.append(kept)
                geometry.add_new(tag, "SQ", items)
        meta = geometry.to_json_dict(suppress_invalid_tags=True)
        for keyword in self.keep_tags:
            value = _plain_value(img.get(keyword, None))
            if value is not None:
                meta[keyword] = value
        frames = _header_count(img, "NumberOfFrames")
        if frames > 1:  # whatever keep_tags says: CheckImaged names it when a 2-D pipeline gets a volume
            meta["NumberOfFrames"] = frames
        return meta

    def get_data(self, img) -> tuple[np.ndarray, dict]:
        """``PydicomReader.get_data`` with colour samples as the last (channel) axis: ``(x, y[, z], 3)``."""
        data, meta = super().get_data(img)
        datasets = img if isinstance(img, (list, tuple)) else [img]
        first = datasets[0][0] if isinstance(datasets[0], (list, tuple)) else datasets[0]
        samples = _header_count(first, "SamplesPerPixel")
        if samples == 1:
            return data, meta
        several = isinstance(img, (list, tuple)) and (not self.has_series or isinstance(img[0], (list, tuple)))
        if several:
            raise ValueError(
                f"DicomReader: colour DICOM (SamplesPerPixel={samples}) cannot be stacked with other files as channels "
                f"({len(datasets)} files or series given); load one colour file or series per key."
            )
        spatial = list(meta[MetaKeys.SPATIAL_SHAPE])
        if self.has_series:  # slices (x, y, samples) were stacked on a new last axis: (x, y, samples, slices)
            data = np.moveaxis(data, 2, -1)
            del spatial[2]
        else:
            del spatial[-1]
        meta[MetaKeys.SPATIAL_SHAPE] = tuple(spatial)
        if self.channel_dim is None:
            meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = -1
        meta["spacing"] = affine_to_spacing(meta[MetaKeys.ORIGINAL_AFFINE], r=len(spatial))
        return np.ascontiguousarray(data), meta

    def _get_affine(self, metadata: dict, lps_to_ras: bool = True):
        if "00200037" in metadata and "00200032" in metadata:
            return super()._get_affine(metadata, lps_to_ras)
        # projection radiographs (CR/DX) have no patient geometry: default orientation, origin 0, pixel spacing
        filled = {**metadata, "00200037": {"Value": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]}, "00200032": {"Value": [0.0] * 3}}
        if "00280030" not in filled and "ImagerPixelSpacing" in metadata:
            filled["00280030"] = {"Value": [float(v) for v in np.ravel(metadata["ImagerPixelSpacing"])[:2]]}
        return super()._get_affine(filled, lps_to_ras)

    def _get_array_data(self, img, filename):
        data = super()._get_array_data(img, filename)
        if "SegmentSequence" in img:  # DICOM SEG: PydicomReader._get_seg_data splits the frames itself
            return data
        frames, samples = _header_count(img, "NumberOfFrames"), _header_count(img, "SamplesPerPixel")
        expected = 2 + (frames > 1) + (samples > 1)
        if data.ndim != expected:
            raise ValueError(
                f"DicomReader: the pixel data has shape {tuple(data.shape)}, but the header announces "
                f"NumberOfFrames={frames}, SamplesPerPixel={samples}, Rows={getattr(img, 'Rows', None)}, "
                f"Columns={getattr(img, 'Columns', None)}; the file is inconsistent, re-export it."
            )
        if frames > 1:  # pydicom: (frames, rows, columns[, samples]) -> (rows, columns, frames[, samples]), as a series
            data = np.moveaxis(data, 0, 2)
        if self.invert_monochrome1 and str(getattr(img, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
            lo, hi = self._rescaled_range(img)
            data = (lo + hi) - data.astype(np.float32)
        return data

    @staticmethod
    def _rescaled_range(img) -> tuple[float, float]:
        bits = int(getattr(img, "BitsStored", None) or getattr(img, "BitsAllocated", 16))
        if int(getattr(img, "PixelRepresentation", 0)) == 1:
            smin, smax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        else:
            smin, smax = 0, 2**bits - 1
        slope = float(getattr(img, "RescaleSlope", 1.0))  # as PydicomReader applies them
        intercept = float(getattr(img, "RescaleIntercept", 0.0))
        a, b = slope * smin + intercept, slope * smax + intercept
        return min(a, b), max(a, b)


def _header_count(img, keyword: str) -> int:
    """``NumberOfFrames``/``SamplesPerPixel`` of a pydicom dataset (1 when absent or unreadable)."""
    try:
        return max(int(img.get(keyword, None) or 1), 1)
    except (TypeError, ValueError):
        return 1


def _looks_like_dicom(name: str) -> bool:
    if _full_suffix_match(name, DICOM_SUFFIXES) or os.path.isdir(name):
        return True
    return has_pydicom and os.path.isfile(name) and bool(pydicom.misc.is_dicom(name))


# ---------------------------------------------------------------------------------------------------- dispatcher


_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def _composite_over_black(image):
    """An image with alpha as ``RGB`` (``L`` for grey+alpha) over black: ``round(colour * alpha / 255)``."""
    from PIL import Image

    grey = image.mode in ("LA", "La")
    array = np.asarray(image.convert("LA" if grey else "RGBA"), dtype=np.float64)
    colour, alpha = array[..., :-1], array[..., -1:]
    out = np.floor(colour * (alpha / 255.0) + 0.5).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(out[..., 0] if grey else out))


def normalize_pil_mode(image):
    """``PILReader`` converter: one documented result per PIL mode.

    - Alpha (``RGBA``, ``LA``, ``PA``, ``RGBa``/``La``, transparent palette): composited over black to ``RGB``
      (``L`` for ``LA``), ``round(colour * alpha / 255)``.
    - Palette (``P``), CMYK, YCbCr, HSV, LAB: to ``RGB``; 1-bit: to ``L``.
    - Other modes (``L``, ``I;16``, ``I``, ``F``, ``RGB``) unchanged.
    """
    mode = image.mode
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        return _composite_over_black(image)
    if mode in ("P", "CMYK", "YCbCr", "HSV", "LAB"):
        return image.convert("RGB")
    if mode == "1":
        return image.convert("L")
    return image


@dataclass(frozen=True)
class _Dispatched:
    """What :meth:`MedicalImageReader.read` returns: the chosen reader and its loaded object."""

    reader: ImageReader
    obj: Any


# family: (suffixes, or None for DICOM detection; default reader)
_FAMILIES = {
    "NIfTI": (NIFTI_SUFFIXES, NibabelReader),
    "MHA/MHD/NRRD": (ITK_SUFFIXES, SimpleITKReader),
    "PNG/JPEG/BMP/TIFF": (PIL_SUFFIXES, partial(PILReader, converter=normalize_pil_mode)),
    "NumPy": (NUMPY_SUFFIXES, NumpyReader),
    "DICOM": (None, DicomReader),
}


class MedicalImageReader(ImageReader):
    """Pick a reader per file from its name, for ``LoadImaged(keys, reader=MedicalImageReader())``.

    DICOM (suffix, directory or ``DICM`` preamble): :class:`DicomReader`; NIfTI: ``NibabelReader``; MHA/NRRD:
    :class:`SimpleITKReader`; PNG/JPEG/BMP/TIFF: ``PILReader`` with :func:`normalize_pil_mode`; ``.npy .npz``:
    ``NumpyReader``. Files stacked as channels must all use the same reader.

    Args:
        dicom_reader, nifti_reader, itk_reader, pil_reader, numpy_reader: replace the default reader
            for that family.
    """

    def __init__(
        self,
        dicom_reader: ImageReader | None = None,
        nifti_reader: ImageReader | None = None,
        itk_reader: ImageReader | None = None,
        pil_reader: ImageReader | None = None,
        numpy_reader: ImageReader | None = None,
    ):
        super().__init__()
        self.readers = dict(zip(_FAMILIES, (nifti_reader, itk_reader, pil_reader, numpy_reader, dicom_reader)))

    @staticmethod
    def _family(name: str) -> str | None:
        for family, (suffixes, _) in _FAMILIES.items():
            if _looks_like_dicom(name) if suffixes is None else _full_suffix_match(name, suffixes):
                return family
        return None

    def reader_for(self, filename: Sequence[os.PathLike | str] | os.PathLike | str) -> ImageReader:
        """The reader that :meth:`read` would use for ``filename`` (``ValueError`` when there is none)."""
        names = [f"{Path(f).expanduser()}" for f in ensure_tuple(filename)]
        families = set()
        for name in names:
            family = self._family(name)
            if family is None:
                if not os.path.exists(name):
                    raise ValueError(f"MedicalImageReader: file {name} does not exist.")
                raise ValueError(
                    f"MedicalImageReader: cannot tell the image type of {name} from its suffix (and it is not "
                    f"DICOM); supported: {', '.join('.' + s for s in self.supported_suffixes())}, DICOM files "
                    "or directories."
                )
            families.add(family)
        if len(families) > 1:
            raise ValueError(
                f"MedicalImageReader: files {names} need different readers ({sorted(families)}); files stacked "
                "as channels must have the same type."
            )
        family = families.pop()
        if self.readers[family] is None:  # created on first use: SimpleITK and pydicom are optional
            self.readers[family] = _FAMILIES[family][1]()
        return self.readers[family]

    @staticmethod
    def supported_suffixes() -> tuple[str, ...]:
        """Suffixes recognised without looking into the file."""
        return DICOM_SUFFIXES + NIFTI_SUFFIXES + ITK_SUFFIXES + PIL_SUFFIXES + NUMPY_SUFFIXES

    def verify_suffix(self, filename: Sequence[os.PathLike | str] | os.PathLike | str) -> bool:
        """Whether one reader handles every name in ``filename``."""
        try:
            self.reader_for(filename)
        except ValueError:
            return False
        return True

    def read(self, data: Sequence[os.PathLike | str] | os.PathLike | str, **kwargs) -> _Dispatched:
        """Read with the reader chosen by :meth:`reader_for`; ``get_data`` then uses the same reader."""
        reader = self.reader_for(data)
        return _Dispatched(reader, reader.read(data, **kwargs))

    def get_data(self, img) -> tuple[Any, dict]:
        """``(array, meta)`` from the reader that read ``img``."""
        if not isinstance(img, _Dispatched):
            raise TypeError(f"MedicalImageReader.get_data expects the result of its read(), got {type(img)}.")
        return img.reader.get_data(img.obj)
