"""Real medical demo data that ships inside a PyPI package: the MNI152 (ICBM 2009a) templates in nilearn's wheel.

The templates are 1-mm brain MRI volumes (T1, grey- and white-matter probability maps; 197x233x189).
The functions here write them out as ordinary files (2-D PNG slices, or NIfTI volumes) so that bundles
load them through ``monai.transforms.LoadImaged`` exactly as they would load user data.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
from monai.utils import look_up_option, optional_import

__all__ = [
    "MNI152_SLICE_ATTRIBUTES",
    "mni152_slice_attributes",
    "mni152_template_path",
    "prepare_mni152_slices",
    "prepare_mni152_volumes",
]

logger = logging.getLogger("monai_patronus.data")

_TEMPLATES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


def mni152_template_path(kind: str = "t1") -> Path:
    """Path of an MNI152 template inside the installed nilearn package (``kind``: t1, gm or wm)."""
    name = look_up_option(kind, _TEMPLATES)
    nilearn, has_nilearn = optional_import("nilearn")
    if not has_nilearn:
        raise ImportError("The MNI152 demo data ship with nilearn: pip install 'monai-patronus[medical]' (or nilearn).")
    path = Path(nilearn.__file__).parent / "datasets" / "data" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed nilearn; reinstall nilearn.")
    return path


def _load(kind: str) -> np.ndarray:
    nib, _ = optional_import("nibabel")
    return np.asarray(nib.load(str(mni152_template_path(kind))).dataobj)


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: no half-written file is ever visible."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp_", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def prepare_mni152_slices(
    output_dir: str | Path, axes: tuple[int, ...] = (0, 1, 2), step: int = 2, min_foreground: float = 0.15
) -> list[dict]:
    """Write 2-D slices of the MNI152 T1 template as 8-bit PNG files and return a MONAI datalist.

    Slices are taken every ``step`` voxels along each of ``axes`` and kept when at least
    ``min_foreground`` of their pixels are brighter than the volume's median (so near-empty slices at
    the edges are dropped). A manifest of the written files makes a second call cheap.

    Returns:
        ``[{"image": "<output_dir>/mni152_t1_axA_NNN.png", "id": "mni152_t1_axA_NNN"}, ...]``.
    """
    from PIL import Image

    if step < 1:
        raise ValueError(f"prepare_mni152_slices: step must be an int >= 1, got {step!r}.")
    if not axes or any(a not in (0, 1, 2) for a in axes):
        raise ValueError(f"prepare_mni152_slices: axes must be a non-empty subset of (0, 1, 2), got {axes!r}.")
    if not 0.0 <= min_foreground < 1.0:
        raise ValueError(f"prepare_mni152_slices: min_foreground must be in [0, 1), got {min_foreground!r}.")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    manifest = output_dir / f"datalist_axes{''.join(map(str, axes))}_step{step}_fg{min_foreground}.json"
    if manifest.is_file():
        datalist = json.loads(manifest.read_text())
        if all(Path(item["image"]).is_file() for item in datalist):
            return datalist
    volume = _load("t1")
    threshold = np.median(volume)
    datalist = []
    for axis in axes:
        for index in range(0, volume.shape[axis], step):
            image = np.take(volume, index, axis=axis)
            if (image > threshold).mean() < min_foreground:
                continue
            name = f"mni152_t1_ax{axis}_{index:03d}"
            path = output_dir / f"{name}.png"
            if not path.exists():
                png = Image.fromarray(np.ascontiguousarray(image.astype(np.uint8)))
                _atomic_write(path, lambda tmp, im=png: im.save(tmp, format="PNG"))
            datalist.append({"image": str(path), "id": name})
    _atomic_write(manifest, lambda tmp: Path(tmp).write_text(json.dumps(datalist, indent=1)))
    logger.info("MNI152 demo data: %d PNG slices in %s", len(datalist), output_dir)
    return datalist


#: attributes of a demo slice, known from its id: its plane, and whether it lies in the upper half of its axis
MNI152_SLICE_ATTRIBUTES = ("sagittal", "coronal", "axial", "upper_half")


def mni152_slice_attributes(ids) -> tuple[np.ndarray, list[str]]:
    """Binary attributes of demo slices from their ids (``mni152_t1_axA_NNN``), for attribute-prototype analysis
    of the demo model: ``(labels (N, 4) float32, names)`` with the columns of :data:`MNI152_SLICE_ATTRIBUTES`
    (axis 0, 1, 2 of the RAS template are the sagittal, coronal and axial planes).

    Raises:
        ValueError: naming an id that is not a demo slice's.
    """
    shape = (197, 233, 189)  # the template's voxel grid (nilearn's 2009a 1-mm templates)
    labels = []
    for image_id in ids:
        parts = str(image_id).rsplit("_", 2)
        if len(parts) != 3 or parts[1] not in ("ax0", "ax1", "ax2") or not parts[2].isdigit():
            raise ValueError(f"mni152_slice_attributes: {image_id!r} is not a demo slice id (mni152_t1_axA_NNN).")
        axis, index = int(parts[1][2]), int(parts[2])
        labels.append([float(axis == 0), float(axis == 1), float(axis == 2), float(index >= shape[axis] / 2)])
    return np.asarray(labels, dtype=np.float32).reshape(-1, 4), list(MNI152_SLICE_ATTRIBUTES)


def prepare_mni152_volumes(output_dir: str | Path, kinds: tuple[str, ...] = ("t1", "gm", "wm")) -> list[dict]:
    """Copy MNI152 template volumes (T1, grey- and white-matter maps) as NIfTI files; return a datalist."""
    import shutil

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    datalist = []
    for kind in kinds:
        source = mni152_template_path(kind)
        path = output_dir / f"mni152_{kind}.nii.gz"
        if not path.exists():
            _atomic_write(path, lambda tmp, src=source: shutil.copyfile(src, tmp))
        datalist.append({"image": str(path), "id": f"mni152_{kind}"})
    return datalist
