"""CheXpert-style CSV -> MONAI datalist (a list of dicts for ``monai.data.Dataset``).

CheXpert (Irvin et al., AAAI 2019, https://arxiv.org/abs/1901.07031) labels 14 observations per image
as 1.0 (positive), 0.0 (negative), -1.0 (uncertain) or blank (not mentioned). The uncertain policy is
always explicit here: U-Ones, U-Zeros, ignore (NaN, to be masked in the loss) or refuse.

Row numbers in messages are spreadsheet rows: the header is row 1, the first data row is row 2. Messages and
log lines name rows and the CSV's file name, never an image path: in hospital exports the folders are patient
ids and the file names are UIDs.
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
from monai.utils import optional_import

__all__ = ["CHEXPERT_LABELS", "CHEXPERT_METADATA", "UNCERTAIN_POLICIES", "chexpert_label_columns", "load_chexpert_datalist"]

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


def _read_csv(csv_path: Path, nrows: int | None = None):
    """The CSV (its first ``nrows`` rows; ``0``: the header alone) as a frame of stripped strings. Rows that end in
    a trailing comma (one more field than the header, all blank) read as the header says; a row with more
    non-blank fields than the header is refused by row."""
    pd = optional_import("pandas")[0]
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
                        f"load_chexpert_datalist: {csv_path.name} row {row} has {len(fields)} fields but the header has "
                        f"{width}; fix that row (a comma inside a value must be quoted)."
                    )
    return frame


def chexpert_label_columns(
    csv_path: str | os.PathLike, path_column: str = "Path", extra_columns: Sequence[str] = ()
) -> list[str]:
    """The label columns :func:`load_chexpert_datalist` takes by default: every column of the CSV header except
    ``path_column``, CheXpert's metadata columns (:data:`CHEXPERT_METADATA`) and ``extra_columns``, in CSV order.
    On a CheXpert CSV these are the 14 :data:`CHEXPERT_LABELS`; on a user's CSV with a path column and finding
    columns, the finding columns."""
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
    """Read a CheXpert-style CSV into a MONAI datalist.

    The CSV needs a path column and label columns, nothing else; CheXpert's metadata columns (``Sex``,
    ``Age``, ``Frontal/Lateral``, ``AP/PA``) are used only when present or asked for.

    Each item is ``{"image": absolute path (str), "label": float32 array (len(label_columns),),
    "id": the CSV path without its suffix (e.g. "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal"),
    "row": spreadsheet row number, **extras}``. Extras are the ``extra_columns`` under lower-case
    identifier keys (``"Sex"`` -> ``"sex"``, ``"Frontal/Lateral"`` -> ``"frontal_lateral"``, ``"AP/PA"`` ->
    ``"ap_pa"``): numeric columns as float (blank -> NaN), others as str (blank -> ``""``), so batches
    collate. The ``id`` is what logs and MLflow see only as a pseudonym (:mod:`monai_patronus.tracking.privacy`);
    the ``row`` is how messages name an item.

    Label values: ``1.0`` positive, ``0.0`` negative, blank (not mentioned) -> ``0.0``, ``-1.0``
    (uncertain) -> by ``uncertain``: ``"ones"`` (U-Ones: 1), ``"zeros"`` (U-Zeros: 0), ``"ignore"``
    (NaN, mask it in the loss) or ``"error"`` (raise); or a dict giving a policy per label column.

    Args:
        csv_path: the CSV file.
        image_root: folder the ``Path`` column is relative to (absolute paths are kept). ``None``: the
            CSV's folder, or its parent when every path starts with the CSV folder's name (the CheXpert
            layout, where ``CheXpert-v1.0-small/train.csv`` lists ``CheXpert-v1.0-small/train/...``).
        label_columns: label columns in output order; ``None``: :func:`chexpert_label_columns` (every column but
            the path, the metadata and the extra columns; on a CheXpert CSV, the 14 :data:`CHEXPERT_LABELS`).
        uncertain: ``"ones"``, ``"zeros"``, ``"ignore"``, ``"error"``, or ``{column: policy}`` for all
            ``label_columns``.
        frontal_only: ``True``: keep only rows whose ``Frontal/Lateral`` is ``Frontal`` (the column must exist);
            ``False``: keep every row; ``None``: keep frontal rows when the CSV has a ``Frontal/Lateral`` column,
            every row otherwise.
        extra_columns: more columns to copy into each item (they must exist).
        on_missing: a row whose image file does not exist: ``"raise"`` (ValueError naming the row)
            or ``"skip"`` (dropped, counted and logged as a warning on ``monai_patronus.data`` by row number).
        path_column: the image path column.

    Returns:
        The datalist, in CSV order.

    Raises:
        ValueError: missing or unreadable CSV; a row longer than the header; missing column (named, with the
            available ones); blank path; label value other than 1, 0, -1 or blank (row and column named); an
            uncertain label with ``uncertain="error"``; a missing image with ``on_missing="raise"``; an empty
            datalist.
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
    if frontal_only not in (True, False, None):
        raise ValueError(f"load_chexpert_datalist: frontal_only must be True, False or None (auto), got {frontal_only!r}.")
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
            "load_chexpert_datalist: skipped %d of %d rows of %s whose image file does not exist (rows %s).",
            len(missing), len(frame), csv_path.name, shown,
        )
    if not datalist:
        raise ValueError(
            f"load_chexpert_datalist: no images left from {csv_path.name}: {len(frame)} rows, {num_frontal_dropped} "
            f"dropped by frontal_only, {len(missing)} skipped for a missing image file; check image_root."
        )
    return datalist
