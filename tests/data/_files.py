"""Real files for the data tests: pydicom's shipped test DICOMs, nilearn's MNI template, and writers for
DICOM (pydicom), MHA/NRRD (SimpleITK), NIfTI (nibabel) and PNG (PIL) files made in ``tmp_path``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "SECRET-4711"


def pydicom_test_file(name: str) -> str:
    """A DICOM file that ships inside the pydicom wheel (no download)."""
    import pydicom

    path = Path(pydicom.__file__).parent / "data" / "test_files" / name
    assert path.is_file(), path
    return str(path)


def pacs_path(root: str | os.PathLike, suffix: str = ".dcm") -> Path:
    """A PACS-export style path ``root/<PatientID>/<StudyUID>/<SOPUID><suffix>`` (folders created): every
    component identifies the patient or the study. :data:`PACS_IDENTIFIERS` are strings it contains."""
    folder = Path(root) / "PIDQX7731" / "1.2.826.0.1.111"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"1.2.826.0.1.222{suffix}"


PACS_IDENTIFIERS = ("PIDQX7731", "1.2.826")


def mni_template() -> str:
    """nilearn's MNI152 T1 template (197 x 233 x 189, shipped in the wheel)."""
    import nilearn

    path = Path(nilearn.__file__).parent / "datasets" / "data" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    assert path.is_file(), path
    return str(path)


def write_dicom(
    path: str | os.PathLike,
    raw: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    slope: float | None = None,
    intercept: float | None = None,
    **attributes,
) -> str:
    """A DX image with patient identifiers, written with pydicom's ``set_pixel_data``: ``raw`` is
    ``(rows, columns)``, ``(frames, rows, columns)`` (multi-frame, NumberOfFrames set), or with
    ``photometric="RGB"`` ``(rows, columns, 3)`` / ``(frames, rows, columns, 3)`` uint8. ``attributes``:
    further DICOM keywords and values (e.g. ``InstanceNumber``)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = "19700101"
    ds.OtherPatientIDs = "OTHER-0815"
    ds.InstitutionName = "St. Example Hospital"
    ds.ReferringPhysicianName = "House^Gregory"
    ds.AccessionNumber = "ACC-999"
    ds.StudyInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.ViewPosition = "PA"
    ds.ImagerPixelSpacing = [0.143, 0.143]
    ds.set_pixel_data(raw, photometric, bits_stored)
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(str(path), enforce_file_format=True)
    return str(path)


def write_png(path: str | os.PathLike, array: np.ndarray) -> str:
    """``array`` as ``(H, W)`` grey, ``(H, W, 2)`` grey+alpha, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA uint8 PNG."""
    from PIL import Image

    Image.fromarray(array).save(str(path))
    return str(path)


def lps_geometry(affine_ras: np.ndarray) -> tuple[tuple, tuple, tuple]:
    """SimpleITK (direction, spacing, origin) of the image whose RAS affine is ``affine_ras``."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_ras
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing
    return tuple(direction.ravel()), tuple(spacing), tuple(lps[:3, 3])


def write_sitk(path: str | os.PathLike, array_xyz: np.ndarray, affine_ras: np.ndarray | None = None) -> str:
    """``array_xyz`` (indexed x, y[, z], like nibabel's arrays) written with SimpleITK (MHA, NRRD, ...)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array_xyz.T))  # SimpleITK's numpy order is (z, y, x)
    if affine_ras is not None:
        direction, spacing, origin = lps_geometry(affine_ras)
        image.SetDirection(direction)
        image.SetSpacing(spacing)
        image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))
    return str(path)
