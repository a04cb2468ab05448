"""CheXpert-style CSV (Irvin et al., AAAI 2019, https://arxiv.org/abs/1901.07031) -> MONAI datalist.

Messages name spreadsheet rows (header = row 1) and the CSV's file name, never an image path (in hospital
exports the folders are patient ids).
"""

from __future__ import annotations

import csv
import logging
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from monai.utils import look_up_option

__all__ = [
    "CHEXPERT_LABELS",
    "CHEXPERT_METADATA",
    "UNCERTAIN_POLICIES",
    "chexpert_label_columns",
    "load_chexpert_datalist",
]

logger = logging.getLogger("monai_patronus.data")

CHEXPERT_LABELS = tuple(
    "No Finding, Enlarged Cardiomediastinum, Cardiomegaly, Lung Opacity, Lung Lesion, Edema, Consolidation, "
    "Pneumonia, Atelectasis, Pneumothorax, Pleural Effusion, Pleural Other, Fracture, Support Devices".split(", ")
)
#: CheXpert's metadata columns: never taken as labels, copied into items only when listed in ``extra_columns``
CHEXPERT_METADATA = ("Sex", "Age", "Frontal/Lateral", "AP/PA")
UNCERTAIN_POLICIES = ("ones", "zeros", "ignore", "error")
_UNCERTAIN_VALUE = {"ones": 1.0, "zeros": 0.0, "ignore": float("nan")}


def _key(column: str) -> str:
    """``"Frontal/Lateral"`` -> ``"frontal_lateral"``, ``"AP/PA"`` -> ``"ap_pa"``."""
    return re.sub(r"[^0-9a-z]+", "_", column.lower()).strip("_")


def _need_columns(columns: Sequence[str], present: Sequence[str], csv_path: Path, what: str, argument: str) -> None:
    missing = [c for c in columns if c not in present]
    if missing:
        raise ValueError(
            f"load_chexpert_datalist: {csv_path.name} has no {what} column(s) {missing}; available columns: "
            f"{list(present)}. Pass the right {argument} or fix the CSV header."
        )


def _uncertain_policies(uncertain: str | Mapping[str, str], label_columns: Sequence[str]) -> dict[str, str]:
    policies = dict.fromkeys(label_columns, uncertain) if isinstance(uncertain, str) else dict(uncertain)
    missing = [c for c in label_columns if c not in policies]
    if missing:
        raise ValueError(
            f"load_chexpert_datalist: uncertain gives no policy for label columns {missing}; give one per "
            f"column or a single policy from {UNCERTAIN_POLICIES}."
        )
    return {column: look_up_option(policies[column], UNCERTAIN_POLICIES) for column in label_columns}


def _default_image_root(csv_path: Path, paths: Sequence[str]) -> Path:
    """The CSV's folder, or its parent when every relative path starts with that folder's name."""
    folder = csv_path.parent
    relative = [PurePosixPath(p.replace("\\", "/")) for p in paths if not os.path.isabs(p)]
    if relative and all(len(p.parts) > 1 and p.parts[0] == folder.name for p in relative):
        return folder.parent
    return folder


def _read_csv(csv_path: Path, nrows: int | None = None):
    """The CSV (first ``nrows`` rows) as strings; a trailing comma is accepted, more non-blank fields refused."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            # index_col=False: pandas would otherwise take the first column as the index when rows have a trailing comma
            frame = pd.read_csv(
                csv_path, dtype=str, keep_default_na=False, skipinitialspace=True, index_col=False, nrows=nrows
            )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"load_chexpert_datalist: cannot parse {csv_path.name} as CSV ({e}).") from e
    if any(issubclass(w.category, pd.errors.ParserWarning) for w in caught):  # some row is longer than the header
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f, skipinitialspace=True)
            width = len(next(reader))
            for row, fields in enumerate(reader, start=2):
                if any(value.strip() for value in fields[width:]):
                    raise ValueError(
                        f"load_chexpert_datalist: {csv_path.name} row {row} has {len(fields)} fields but the header "
                        f"has {width}; fix that row (a comma inside a value must be quoted)."
                    )
    return frame


def chexpert_label_columns(
    csv_path: str | os.PathLike, path_column: str = "Path", extra_columns: Sequence[str] = ()
) -> list[str]:
    """The default label columns of :func:`load_chexpert_datalist`: the CSV header's columns except
    ``path_column``, :data:`CHEXPERT_METADATA` and ``extra_columns``, in CSV order."""
    return _default_label_columns(list(_read_csv(Path(csv_path), nrows=0).columns), path_column, extra_columns)


def _default_label_columns(columns: Sequence[str], path_column: str, extra_columns: Sequence[str]) -> list[str]:
    skip = {path_column, *CHEXPERT_METADATA, *extra_columns}
    return [c for c in columns if c not in skip]


def load_chexpert_datalist(
    csv_path: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    label_columns: Sequence[str] | None = None,
    uncertain: str | Mapping[str, str] = "ones",
    frontal_only: bool | None = None,
    extra_columns: Sequence[str] = (),
    on_missing: str = "raise",
    path_column: str = "Path",
) -> list[dict]:
    """Read a CheXpert-style CSV (a path column and label columns) into a MONAI datalist.

    Each item is ``{"image": absolute path, "label": float32 (len(label_columns),), "id": the CSV path without
    suffix, "row": spreadsheet row, **extras}`` (``"Frontal/Lateral"`` -> key ``"frontal_lateral"``, numeric
    columns as float). Labels: blank -> 0.0, uncertain -1.0 by ``uncertain``: ``"ones"`` (U-Ones), ``"zeros"``,
    ``"ignore"`` (NaN, mask it in the loss) or ``"error"``.

    Args:
        csv_path: the CSV file.
        image_root: folder the paths are relative to. ``None``: the CSV's folder, or its parent when every path
            starts with the CSV folder's name (the CheXpert layout).
        label_columns: label columns in output order; ``None``: :func:`chexpert_label_columns`.
        uncertain: a policy, or ``{column: policy}`` for all ``label_columns``.
        frontal_only: keep only ``Frontal/Lateral == Frontal`` rows (``True``: the column must exist; ``None``:
            when the column exists).
        extra_columns: more columns to copy into each item (they must exist).
        on_missing: a row whose image file does not exist: ``"raise"`` or ``"skip"`` (counted and logged by row).
        path_column: the image path column.

    Returns:
        The datalist, in CSV order.
    """
    csv_path = Path(csv_path).expanduser()
    if not csv_path.is_file():
        raise ValueError(f"load_chexpert_datalist: CSV file {csv_path} does not exist (or is not a file).")
    on_missing = look_up_option(on_missing, ("raise", "skip"))
    extra_columns = list(extra_columns)
    if label_columns is not None and not list(label_columns):
        raise ValueError("load_chexpert_datalist: label_columns is empty; give at least one label column or None.")

    frame = _read_csv(csv_path)
    columns = list(frame.columns)
    if label_columns is None:
        label_columns = _default_label_columns(columns, path_column, extra_columns)
        if not label_columns:
            raise ValueError(
                f"load_chexpert_datalist: {csv_path.name} has no label column: its columns {columns} are the path, "
                "CheXpert metadata or extra columns; add label columns to the CSV or name them in label_columns."
            )
    label_columns = list(label_columns)
    policies = _uncertain_policies(uncertain, label_columns)
    _need_columns([path_column], columns, csv_path, "path", "path_column")
    _need_columns(label_columns, columns, csv_path, "label", "label_columns")
    _need_columns(extra_columns, columns, csv_path, "extra", "extra_columns")
    if frontal_only:
        _need_columns(["Frontal/Lateral"], columns, csv_path, "view", "frontal_only=False")
    elif frontal_only is None:
        frontal_only = "Frontal/Lateral" in columns
    rows = np.arange(len(frame)) + 2  # spreadsheet rows: header is row 1

    # labels: parse all at once, then report the first bad cell by row and column
    text = frame[label_columns].apply(lambda c: c.str.strip())
    values = text.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64, copy=True)
    blank = (text == "").to_numpy()
    bad = ~blank & ~np.isin(values, (1.0, 0.0, -1.0))
    if bad.any():
        i, j = map(int, np.argwhere(bad)[0])
        raise ValueError(
            f"load_chexpert_datalist: {csv_path.name} row {rows[i]}, column {label_columns[j]!r}: label "
            f"{text.iat[i, j]!r} is not 1.0, 0.0, -1.0 (uncertain) or blank; fix the CSV, or pass label_columns "
            "if this column is not a label."
        )
    values[blank] = 0.0
    for j, column in enumerate(label_columns):
        uncertain_rows = np.flatnonzero(values[:, j] == -1.0)
        if uncertain_rows.size == 0:
            continue
        if policies[column] == "error":
            i = int(uncertain_rows[0])
            raise ValueError(
                f"load_chexpert_datalist: {csv_path.name} row {rows[i]}, column {column!r} is uncertain (-1.0) and "
                f"uncertain='error' ({uncertain_rows.size} such rows in this column); choose 'ones', 'zeros' or "
                "'ignore'."
            )
        values[uncertain_rows, j] = _UNCERTAIN_VALUE[policies[column]]
    labels = values.astype(np.float32)

    paths = frame[path_column].str.strip().tolist()
    for i, p in enumerate(paths):
        if not p:
            raise ValueError(f"load_chexpert_datalist: {csv_path.name} row {rows[i]} has a blank {path_column!r}.")
    root = _default_image_root(csv_path, paths) if image_root is None else Path(image_root).expanduser()

    extras = {}
    for column in extra_columns:
        stripped = frame[column].str.strip()
        numeric = pd.to_numeric(stripped, errors="coerce")
        is_numeric = bool(((stripped == "") | numeric.notna()).all() and numeric.notna().any())
        extras[_key(column)] = numeric.astype(float).tolist() if is_numeric else stripped.tolist()

    keep = np.ones(len(frame), dtype=bool)
    if frontal_only:
        keep &= (frame["Frontal/Lateral"].str.strip().str.lower() == "frontal").to_numpy()
    num_frontal_dropped = int((~keep).sum())

    datalist, missing = [], []
    for i in np.flatnonzero(keep):
        image = Path(os.path.abspath(paths[i] if os.path.isabs(paths[i]) else root / paths[i]))
        if not image.exists():
            if on_missing == "raise":
                raise ValueError(
                    f"load_chexpert_datalist: {csv_path.name} row {rows[i]}: the image file in column {path_column!r} "
                    "does not exist (relative paths are read from image_root: the CSV's folder unless given); fix "
                    "image_root (bundles: --image_root) or the row, or pass on_missing='skip'."
                )
            missing.append(int(rows[i]))
            continue
        item = {
            "image": str(image),
            "label": labels[i].copy(),
            "id": str(PurePosixPath(paths[i].replace("\\", "/")).with_suffix("")),
            "row": int(rows[i]),
        }
        item.update({key: column_values[i] for key, column_values in extras.items()})
        datalist.append(item)

    if missing:
        shown = ", ".join(map(str, missing[:20])) + (", ..." if len(missing) > 20 else "")
        logger.warning(
            f"load_chexpert_datalist: skipped {len(missing)} of {len(frame)} rows of {csv_path.name} whose image "
            f"file does not exist (rows {shown})."
        )
    if not datalist:
        raise ValueError(
            f"load_chexpert_datalist: no images left from {csv_path.name}: {len(frame)} rows, {num_frontal_dropped} "
            f"dropped by frontal_only, {len(missing)} skipped for a missing image file; check image_root."
        )
    return datalist
