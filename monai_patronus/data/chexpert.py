"""CheXpert-style CSV -> MONAI datalist (a list of dicts for ``monai.data.Dataset``).

CheXpert (Irvin et al., AAAI 2019, https://arxiv.org/abs/1901.07031) labels 14 observations per image
as 1.0 (positive), 0.0 (negative), -1.0 (uncertain) or blank (not mentioned). The uncertain policy is
always explicit here: U-Ones, U-Zeros, ignore (NaN, to be masked in the loss) or refuse.

Row numbers in messages are spreadsheet rows: the header is row 1, the first data row is row 2.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
from monai.utils import optional_import

__all__ = ["CHEXPERT_LABELS", "UNCERTAIN_POLICIES", "load_chexpert_datalist"]

logger = logging.getLogger("monai_patronus.data")

CHEXPERT_LABELS = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
UNCERTAIN_POLICIES = ("ones", "zeros", "ignore", "error")
_UNCERTAIN_VALUE = {"ones": 1.0, "zeros": 0.0, "ignore": float("nan")}


def _key(column: str) -> str:
    """``"Frontal/Lateral"`` -> ``"frontal_lateral"``, ``"AP/PA"`` -> ``"ap_pa"``."""
    return re.sub(r"[^0-9a-z]+", "_", column.lower()).strip("_")


def _need_columns(columns: Sequence[str], present: Sequence[str], csv_path: Path, what: str, argument: str) -> None:
    missing = [c for c in columns if c not in present]
    if missing:
        raise ValueError(
            f"load_chexpert_datalist: {csv_path} has no {what} column(s) {missing}; available columns: "
            f"{list(present)}. Pass the right {argument} or fix the CSV header."
        )


def _uncertain_policies(uncertain, label_columns: Sequence[str]) -> dict[str, str]:
    if isinstance(uncertain, str):
        policies = dict.fromkeys(label_columns, uncertain)
    elif isinstance(uncertain, Mapping):
        unknown = [c for c in uncertain if c not in label_columns]
        if unknown:
            raise ValueError(
                f"load_chexpert_datalist: uncertain names columns {unknown} that are not in label_columns "
                f"{list(label_columns)}."
            )
        missing = [c for c in label_columns if c not in uncertain]
        if missing:
            raise ValueError(
                f"load_chexpert_datalist: uncertain gives no policy for label columns {missing}; give one per "
                f"column or a single policy from {UNCERTAIN_POLICIES}."
            )
        policies = dict(uncertain)
    else:
        raise TypeError(
            f"load_chexpert_datalist: uncertain must be one of {UNCERTAIN_POLICIES} or a dict column -> policy, "
            f"got {uncertain!r}."
        )
    for column, policy in policies.items():
        if policy not in UNCERTAIN_POLICIES:
            raise ValueError(
                f"load_chexpert_datalist: uncertain policy {policy!r} for column {column!r} is not one of "
                f"{UNCERTAIN_POLICIES} ('ones' = U-Ones, 'zeros' = U-Zeros, 'ignore' = NaN to mask, "
                "'error' = refuse uncertain labels)."
            )
    return policies


def _default_image_root(csv_path: Path, paths: Sequence[str]) -> Path:
    """The CSV's folder, or its parent when every relative Path starts with that folder's name (the
    CheXpert layout: ``CheXpert-v1.0-small/train.csv`` lists ``CheXpert-v1.0-small/train/...``)."""
    folder = csv_path.parent
    relative = [PurePosixPath(p.replace("\\", "/")) for p in paths if not os.path.isabs(p)]
    if relative and all(len(p.parts) > 1 and p.parts[0] == folder.name for p in relative):
        return folder.parent
    return folder


def load_chexpert_datalist(
    csv_path: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    label_columns: Sequence[str] | None = None,
    uncertain: str | Mapping[str, str] = "ones",
    frontal_only: bool = False,
    extra_columns: Sequence[str] = ("Sex", "Age", "Frontal/Lateral", "AP/PA"),
    on_missing: str = "raise",
    path_column: str = "Path",
) -> list[dict]:
    """Read a CheXpert-style CSV into a MONAI datalist.

    Each item is ``{"image": absolute path (str), "label": float32 array (len(label_columns),),
    "id": the CSV path without its suffix (e.g. "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal"),
    "row": spreadsheet row number, **extras}``. Extras are the ``extra_columns`` under lower-case
    identifier keys (``"Sex"`` -> ``"sex"``, ``"Frontal/Lateral"`` -> ``"frontal_lateral"``, ``"AP/PA"`` ->
    ``"ap_pa"``): numeric columns as float (blank -> NaN), others as str (blank -> ``""``), so batches
    collate.

    Label values: ``1.0`` positive, ``0.0`` negative, blank (not mentioned) -> ``0.0``, ``-1.0``
    (uncertain) -> by ``uncertain``: ``"ones"`` (U-Ones: 1), ``"zeros"`` (U-Zeros: 0), ``"ignore"``
    (NaN, mask it in the loss) or ``"error"`` (raise); or a dict giving a policy per label column.

    Args:
        csv_path: the CSV file.
        image_root: folder the ``Path`` column is relative to (absolute paths are kept). ``None``: the
            CSV's folder, or its parent when every path starts with the CSV folder's name (the CheXpert
            layout, where ``CheXpert-v1.0-small/train.csv`` lists ``CheXpert-v1.0-small/train/...``).
        label_columns: label columns in output order; ``None``: the 14 :data:`CHEXPERT_LABELS`.
        uncertain: ``"ones"``, ``"zeros"``, ``"ignore"``, ``"error"``, or ``{column: policy}`` for all
            ``label_columns``.
        frontal_only: keep only rows whose ``Frontal/Lateral`` is ``Frontal``.
        extra_columns: more columns to copy into each item.
        on_missing: a row whose image file does not exist: ``"raise"`` (ValueError naming row and path)
            or ``"skip"`` (dropped, counted and logged as a warning on ``monai_patronus.data``).
        path_column: the image path column.

    Returns:
        The datalist, in CSV order.

    Raises:
        ValueError: missing or unreadable CSV; missing column (named, with the available ones); blank
            path; label value other than 1, 0, -1 or blank (row and column named); an uncertain label
            with ``uncertain="error"``; a missing image with ``on_missing="raise"``; an empty datalist.
        TypeError: ``uncertain`` of the wrong type.
    """
    pd, has_pandas = optional_import("pandas")
    if not has_pandas:
        raise ImportError("load_chexpert_datalist needs pandas: pip install 'monai-patronus[medical]' or pandas.")
    csv_path = Path(csv_path).expanduser()
    if not csv_path.is_file():
        raise ValueError(f"load_chexpert_datalist: CSV file {csv_path} does not exist (or is not a file).")
    if on_missing not in ("raise", "skip"):
        raise ValueError(f"load_chexpert_datalist: on_missing must be 'raise' or 'skip', got {on_missing!r}.")
    label_columns = list(CHEXPERT_LABELS if label_columns is None else label_columns)
    if not label_columns:
        raise ValueError("load_chexpert_datalist: label_columns is empty; give at least one label column or None.")
    policies = _uncertain_policies(uncertain, label_columns)

    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"load_chexpert_datalist: cannot parse {csv_path} as CSV ({e}).") from e
    columns = list(frame.columns)
    _need_columns([path_column], columns, csv_path, "path", "path_column")
    _need_columns(label_columns, columns, csv_path, "label", "label_columns")
    _need_columns(list(extra_columns), columns, csv_path, "extra", "extra_columns")
    if frontal_only:
        _need_columns(["Frontal/Lateral"], columns, csv_path, "view", "frontal_only=False")
    rows = np.arange(len(frame)) + 2  # spreadsheet rows: header is row 1

    # labels: parse all at once, then report the first bad cell by row and column
    text = frame[label_columns].apply(lambda c: c.str.strip())
    values = text.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64, copy=True)
    blank = (text == "").to_numpy()
    bad = ~blank & ~np.isin(values, (1.0, 0.0, -1.0))
    if bad.any():
        i, j = map(int, np.argwhere(bad)[0])
        raise ValueError(
            f"load_chexpert_datalist: {csv_path} row {rows[i]}, column {label_columns[j]!r}: label "
            f"{text.iat[i, j]!r} is not 1.0, 0.0, -1.0 (uncertain) or blank; fix the CSV."
        )
    values[blank] = 0.0
    for j, column in enumerate(label_columns):
        uncertain_rows = np.flatnonzero(values[:, j] == -1.0)
        if uncertain_rows.size == 0:
            continue
        if policies[column] == "error":
            i = int(uncertain_rows[0])
            raise ValueError(
                f"load_chexpert_datalist: {csv_path} row {rows[i]}, column {column!r} is uncertain (-1.0) and "
                f"uncertain='error' ({uncertain_rows.size} such rows in this column); choose 'ones', 'zeros' or "
                "'ignore'."
            )
        values[uncertain_rows, j] = _UNCERTAIN_VALUE[policies[column]]
    labels = values.astype(np.float32)

    paths = frame[path_column].str.strip().tolist()
    for i, p in enumerate(paths):
        if not p:
            raise ValueError(f"load_chexpert_datalist: {csv_path} row {rows[i]} has a blank {path_column!r}.")
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
                    f"load_chexpert_datalist: {csv_path} row {rows[i]}: image file {image} does not exist "
                    f"({path_column} {paths[i]!r}, image_root {root}); fix image_root or pass on_missing='skip'."
                )
            missing.append((int(rows[i]), str(image)))
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
        logger.warning(
            "load_chexpert_datalist: skipped %d of %d rows of %s whose image file does not exist (first: row %d, %s).",
            len(missing), len(frame), csv_path, missing[0][0], missing[0][1],
        )
    if not datalist:
        raise ValueError(
            f"load_chexpert_datalist: no images left from {csv_path}: {len(frame)} rows, {num_frontal_dropped} "
            f"dropped by frontal_only, {len(missing)} skipped for a missing image file (image_root {root})."
        )
    return datalist
