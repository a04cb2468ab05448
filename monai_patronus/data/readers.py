"""Image readers for :class:`monai.transforms.LoadImaged`: SimpleITK, a privacy-safe DICOM reader, and a
dispatcher that picks the right reader from the file name.

- :class:`SimpleITKReader` reads MHA/MHD/NRRD/NIfTI with SimpleITK (MONAI's ``ITKReader`` needs the
  ``itk`` package, which is much larger). Arrays and affines follow MONAI's reader convention, so a
  volume loads the same through this reader as through ``NibabelReader``.
- :class:`DicomReader` is MONAI's ``PydicomReader`` (which already applies RescaleSlope/Intercept)
  plus what X-rays need: MONOCHROME1 images are inverted so that higher means brighter, multi-frame
  files come out with the frames as the last spatial axis (like a series), colour files
  (SamplesPerPixel=3) with their samples as channels, and the metadata is a whitelist of technical
  tags, so no patient identifier reaches the ``MetaTensor`` meta dict (which ends up in logs,
  checkpoints and batch dicts). Compressed transfer syntaxes (JPEG-LS, JPEG Lossless, JPEG 2000, ...)
  are decoded by pydicom's plugins: install the ``medical`` extra, which brings the pylibjpeg decoders.
- :class:`MedicalImageReader` chooses among these, ``NibabelReader``, ``PILReader`` and
  ``NumpyReader`` by suffix (DICOM also by directory or by the ``DICM`` preamble), so one loader
  handles a mixed datalist without MONAI's try-every-reader fallback.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ImageReader, NibabelReader, NumpyReader, PILReader, PydicomReader
from monai.data.image_reader import _copy_compatible_dict, _stack_images
from monai.data.utils import affine_to_spacing, orientation_ras_lps
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
DICOM_TECHNICAL_TAGS = (
    "Modality",
    "PhotometricInterpretation",
    "PresentationLUTShape",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "ViewPosition",
    "BodyPartExamined",
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

    Follows MONAI's ``ITKReader`` conventions: the array is indexed ``(x, y[, z])`` (SimpleITK's numpy
    view ``(z, y, x)`` transposed), multi-component pixels come last with ``original_channel_dim=-1``,
    the affine is ``direction @ diag(spacing)`` with the origin as translation, converted from ITK's LPS
    to RAS (``affine_lps_to_ras=True``), so images come out in the same orientation as with
    ``NibabelReader``. ``spatial_shape`` is ``img.GetSize()``.

    Header entries are copied into the meta dict except ITK-internal ``ITK_*`` keys and DICOM-tag keys
    (``"gggg|eeee"``, e.g. ``"0010|0010"`` = PatientName, which SimpleITK writes when converting
    DICOM), so patient identifiers carried over from DICOM do not reach the meta dict.

    Args:
        channel_dim: the channel axis of the returned array, stored as ``original_channel_dim`` for
            ``EnsureChannelFirstd``; ``None``: ``"no_channel"`` for scalar images, ``-1`` otherwise.
        affine_lps_to_ras: convert the affine from ITK's LPS to RAS (like ``NibabelReader``).
        kwargs: passed to ``SimpleITK.ReadImage`` (e.g. ``outputPixelType=SimpleITK.sitkFloat32``).
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
        arrays: list[np.ndarray] = []
        compatible_meta: dict = {}
        for image in img if isinstance(img, (list, tuple)) else [img]:  # a SimpleITK.Image iterates over pixels
            data = self._get_array_data(image)
            arrays.append(data)
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
            _copy_compatible_dict(header, compatible_meta)
        return _stack_images(arrays, compatible_meta), compatible_meta

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
    """MONAI's ``PydicomReader`` made safe for (X-ray) training data.

    What ``PydicomReader`` (MONAI 1.6) does and does not do, and what this class adds:

    - RescaleSlope/RescaleIntercept: applied by ``PydicomReader`` (float32 ``slope * stored + intercept``).
      Kept as is.
    - MONOCHROME1 (minimum = white, common for CR/DX X-rays): ``PydicomReader`` returns the raw values,
      so such images come out inverted. Here they are flipped within the representable range so that
      higher means brighter: ``out = lo + hi - value`` where ``[lo, hi]`` is the stored range given by
      BitsStored/PixelRepresentation mapped through the rescale (``(2**BitsStored - 1) - stored`` for
      unsigned data without rescale). The flip depends only on the header, not the image content.
      ``PhotometricInterpretation`` in the meta dict keeps the file's value.
    - Metadata: ``PydicomReader(prune_metadata=False)`` copies every tag (PatientName, PatientID, ...);
      its default keeps only the geometry tags ``00200037``/``00200032``/``00280030`` (needed for the
      affine). This reader always keeps those geometry entries plus ``keep_tags`` (a whitelist of
      technical keywords, :data:`DICOM_TECHNICAL_TAGS` by default) as plain values under their
      keyword; tags that may identify a patient (person names, ids, UIDs, dates, institution, ...)
      are refused in ``keep_tags``.
    - ``verify_suffix`` accepts ``.dcm``/``.dicom``/``.dic`` files, directories (series) and files with
      the ``DICM`` preamble, instead of every file.
    - Projection radiographs (CR/DX) have no ImageOrientationPatient/ImagePositionPatient, for which
      ``PydicomReader`` warns and returns an identity affine; here the affine then assumes the default
      orientation (rows along y, columns along x), origin 0 and PixelSpacing (else ImagerPixelSpacing).
    - Axes. ``PydicomReader`` returns a single-frame file as ``(columns, rows)`` = ``(x, y)`` (``swap_ij``)
      and a series directory as ``(x, y, slices)``, but a multi-frame file (pydicom's ``pixel_array`` is
      ``(frames, rows, columns)``) as ``(rows, frames, columns)``: a silently permuted volume. Here the
      frames become the last spatial axis, ``(x, y, frames)`` (``out[i, j, k] == pixel_array[k, j, i]``),
      as for a series, and ``NumberOfFrames`` is always in the meta dict of a multi-frame file (so a 2-D
      pipeline can say what it got).
    - Colour. ``PydicomReader`` treats the samples of an RGB file (SamplesPerPixel=3; pydicom converts YBR
      to RGB) as a spatial axis with ``original_channel_dim="no_channel"``. Here they are the last axis
      with ``original_channel_dim=-1`` (unless ``channel_dim`` is given), so ``EnsureChannelFirstd`` gives
      ``(3, x, y[, frames])``. Colour files cannot be stacked with other files as channels.

    VOI LUT / windowing is not applied: ``medical_image_transforms`` rescales intensities with robust
    percentiles instead.

    Args:
        keep_tags: DICOM keywords of technical attributes to copy into the meta dict when present.
        invert_monochrome1: flip MONOCHROME1 images so that higher is brighter.
        kwargs: passed to ``PydicomReader`` (``channel_dim``, ``affine_lps_to_ras``, ``swap_ij``,
            ``fname_regex``, ``pydicom.dcmread`` arguments); ``prune_metadata`` is not accepted.

    Raises:
        ValueError: when ``keep_tags`` holds an unknown or identifying keyword, or ``prune_metadata``
            is given. ``get_data`` raises a ``ValueError`` for colour files given together with other
            files (stacked as channels), and when pydicom's array does not have the shape the header
            announces.
    """

    def __init__(
        self, keep_tags: Sequence[str] = DICOM_TECHNICAL_TAGS, invert_monochrome1: bool = True, **kwargs
    ):
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
        # MONAI's PydicomReader converts the whole header to JSON before pruning it, and pydicom logs the value
        # of any invalid element it meets (e.g. a UID with letters): identifiers in the training log. Convert
        # the geometry alone (what prune_metadata keeps), with only the geometry items of functional groups.
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
        frames = _number_of_frames(img)
        if frames > 1:  # whatever keep_tags says: CheckImaged names it when a 2-D pipeline gets a volume
            meta["NumberOfFrames"] = frames
        return meta

    def get_data(self, img) -> tuple[np.ndarray, dict]:
        """``PydicomReader.get_data`` with colour samples as the last (channel) axis: ``(x, y[, z], 3)``,
        ``original_channel_dim=-1``, ``spatial_shape`` and ``spacing`` without the samples axis.

        Raises:
            ValueError: colour files or series given together with other files (stacked as channels).
        """
        data, meta = super().get_data(img)
        datasets = img if isinstance(img, (list, tuple)) else [img]
        first = datasets[0][0] if isinstance(datasets[0], (list, tuple)) else datasets[0]
        if _samples_per_pixel(first) == 1:
            return data, meta
        several = isinstance(img, (list, tuple)) and (not self.has_series or isinstance(img[0], (list, tuple)))
        if several:
            raise ValueError(
                f"DicomReader: colour DICOM (SamplesPerPixel={_samples_per_pixel(first)}) cannot be stacked with "
                f"other files as channels ({len(datasets)} files or series given); load one colour file or series "
                "per key."
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
        frames, samples = _number_of_frames(img), _samples_per_pixel(img)
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


def _header_int(img, keyword: str, default: int) -> int:
    try:
        value = img.get(keyword, None)
        return default if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return default


def _number_of_frames(img) -> int:
    """NumberOfFrames of a pydicom dataset (1 when absent or unreadable)."""
    return max(_header_int(img, "NumberOfFrames", 1), 1)


def _samples_per_pixel(img) -> int:
    """SamplesPerPixel of a pydicom dataset (1 when absent or unreadable)."""
    return max(_header_int(img, "SamplesPerPixel", 1), 1)


def _looks_like_dicom(name: str) -> bool:
    if _full_suffix_match(name, DICOM_SUFFIXES) or os.path.isdir(name):
        return True
    return has_pydicom and os.path.isfile(name) and bool(pydicom.misc.is_dicom(name))


# ---------------------------------------------------------------------------------------------------- dispatcher


_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def _composite_over_black(image):
    """An image with alpha as ``RGB`` (or ``L`` for grey+alpha) composited over black:
    ``round(colour * alpha / 255)`` per channel (PIL's alpha is 8-bit, 255 = opaque)."""
    from PIL import Image

    grey = image.mode in ("LA", "La")
    array = np.asarray(image.convert("LA" if grey else "RGBA"), dtype=np.float64)
    colour, alpha = array[..., :-1], array[..., -1:]
    out = np.floor(colour * (alpha / 255.0) + 0.5).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(out[..., 0] if grey else out))


def normalize_pil_mode(image):
    """``PILReader`` converter: one documented result per PIL mode.

    - Alpha (``RGBA``, ``LA``, ``PA``, premultiplied ``RGBa``/``La``, and palette images with a transparent
      colour): composited over black, ``round(colour * alpha / 255)``, to ``RGB`` (``L`` for ``LA``). An
      opaque alpha (255 everywhere) therefore just disappears; a transparent pixel becomes black. The
      result is the same for a 1-channel and a 3-channel pipeline.
    - Palette (``P``), CMYK, YCbCr, HSV, LAB: to ``RGB`` (without it a palette PNG would load as palette
      indices); 1-bit: to ``L``.
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


class _Dispatched:
    """What :meth:`MedicalImageReader.read` returns: the chosen reader and its loaded object."""

    __slots__ = ("reader", "obj")

    def __init__(self, reader: ImageReader, obj):
        self.reader, self.obj = reader, obj


class MedicalImageReader(ImageReader):
    """Pick a reader per file from its name, for ``LoadImaged(keys, reader=MedicalImageReader())``.

    =====================================  ======================================================
    name                                   reader
    =====================================  ======================================================
    ``.dcm .dicom .dic``, a directory,     ``dicom_reader`` (:class:`DicomReader`: MONOCHROME1
    or a file with the ``DICM`` preamble   inverted, rescale applied, no patient tags in meta)
    ``.nii .nii.gz``                       ``nifti_reader`` (MONAI's ``NibabelReader``)
    ``.mha .mhd .nrrd .nhdr``              ``itk_reader`` (:class:`SimpleITKReader`)
    ``.png .jpg .jpeg .bmp .tif .tiff``    ``pil_reader`` (``PILReader`` with :func:`normalize_pil_mode`:
                                           palette to RGB, alpha composited over black)
    ``.npy .npz``                          ``numpy_reader`` (MONAI's ``NumpyReader``)
    =====================================  ======================================================

    Several files given together (stacked as channels) must all use the same reader.

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
        # (family, suffixes or None for DICOM detection, reader given by the user); plain data, so picklable.
        self.families: list[tuple[str, tuple[str, ...] | None, ImageReader | None]] = [
            ("NIfTI", NIFTI_SUFFIXES, nifti_reader),
            ("MHA/MHD/NRRD", ITK_SUFFIXES, itk_reader),
            ("PNG/JPEG/BMP/TIFF", PIL_SUFFIXES, pil_reader),
            ("NumPy", NUMPY_SUFFIXES, numpy_reader),
            ("DICOM", None, dicom_reader),
        ]
        self._instances: dict[str, ImageReader] = {}

    def _family(self, name: str) -> str | None:
        for family, suffixes, _ in self.families:
            if _looks_like_dicom(name) if suffixes is None else _full_suffix_match(name, suffixes):
                return family
        return None

    def _reader(self, family: str) -> ImageReader:
        if family not in self._instances:
            given = next(r for f, _, r in self.families if f == family)
            self._instances[family] = given if given is not None else self._default_reader(family)
        return self._instances[family]

    @staticmethod
    def _default_reader(family: str) -> ImageReader:
        if family == "NIfTI":
            return NibabelReader()
        if family == "MHA/MHD/NRRD":
            return SimpleITKReader()
        if family == "PNG/JPEG/BMP/TIFF":
            return PILReader(converter=normalize_pil_mode)
        if family == "NumPy":
            return NumpyReader()
        return DicomReader()

    def reader_for(self, filename: Sequence[os.PathLike | str] | os.PathLike | str) -> ImageReader:
        """The reader that :meth:`read` would use for ``filename``.

        Raises:
            ValueError: when a file does not exist, its type is not recognised, or several files
                need different readers.
        """
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
        return self._reader(families.pop())

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
