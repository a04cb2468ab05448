"""Attribute labels against prototype activations: label checks, labelled encoding and the AUROC matrix.

Section 6 of ``docs/method.md``: ``AUROC[a, k] = max(AUROC(y_a, s_k), AUROC(y_a, -s_k))`` for every attribute ``a``
and prototype ``k``. Labels: ``1`` positive, ``0`` negative, ``NaN`` not labelled, ``-1`` uncertain (CheXpert).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from monai.utils import look_up_option
from scipy.stats import rankdata
from torch import nn

from monai_patronus.data.batches import iter_batches
from monai_patronus.interpret.prior import encode_dataset
from monai_patronus.utils import json_safe

__all__ = [
    "UNCERTAIN_POLICIES",
    "AttributeAUROC",
    "LabelledActivations",
    "attribute_labels",
    "attribute_auroc",
    "check_activations",
    "check_labels",
    "encode_labelled",
    "one_hot_classes",
]

logger = logging.getLogger("monai_patronus.evaluation")

#: accepted values of ``uncertain`` (how ``-1`` labels are read).
UNCERTAIN_POLICIES = ("error", "ignore", "ones", "zeros")
#: accepted values of ``on_constant``.
CONSTANT_POLICIES = ("error", "skip")


def _as_array(value: object, name: str) -> np.ndarray:
    """A real numeric ndarray (float64) from a tensor, an ndarray or a (nested) list."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().as_subclass(torch.Tensor).double().numpy()
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers (use NaN, not None, for missing labels), got {value!r:.80}.")
    return array.astype(np.float64)  # always a copy


def check_labels(
    labels: object, num_samples: int | None = None, names: Sequence[str] | None = None, uncertain: str = "error"
) -> tuple[np.ndarray, list[str]]:
    """Validate binary attribute labels and resolve uncertain (``-1``) entries.

    Args:
        labels: ``(N,)`` or ``(N, A)`` tensor, ndarray or (nested) list of ``1``, ``0``, ``NaN``, ``-1``.
        num_samples: when given, ``N`` must equal it. ``names``: ``A`` unique names (default ``"attr0"``, ...).
        uncertain: ``-1`` labels: ``"error"`` raises, ``"ignore"`` makes them ``NaN``, ``"ones"`` 1, ``"zeros"`` 0.

    Returns:
        ``(labels, names)``: a new float64 ``(N, A)`` array of ``0``, ``1`` and ``NaN``, and the names.
    """
    uncertain = look_up_option(uncertain, UNCERTAIN_POLICIES)
    out = _as_array(labels, "labels")
    shape, out = out.shape, (out[:, None] if out.ndim == 1 else out)
    if out.ndim != 2 or 0 in out.shape or num_samples not in (None, out.shape[0]):
        rows = "" if num_samples is None else f" and N={num_samples} (one row per sample)"
        raise ValueError(f"labels must have shape (N,) or (N, A) with N, A >= 1{rows}, got {shape}.")
    names = [f"attr{i}" for i in range(out.shape[1])] if names is None else list(names)
    if len(names) != out.shape[1] or len(set(names)) != len(names):
        raise ValueError(f"names must be {out.shape[1]} unique attribute names, one per label column, got {names!r}.")
    invalid = ~(np.isnan(out) | np.isin(out, (0.0, 1.0, -1.0)))
    if invalid.any():
        row, col = (int(i) for i in np.argwhere(invalid)[0])
        raise ValueError(
            f"labels of attribute {names[col]!r} must be 1 (positive), 0 (negative), NaN (not labelled) or -1 "
            f"(uncertain), got {float(out[row, col])!r} at row {row}; map the labels to these values."
        )
    unsure = out == -1
    if unsure.any() and uncertain == "error":
        counts = unsure.sum(axis=0)
        listed = ", ".join(f"{names[c]!r}: {int(counts[c])}" for c in np.flatnonzero(counts))
        raise ValueError(
            f"labels hold uncertain (-1) entries ({listed}); pass uncertain='ignore' (leave them out), "
            "uncertain='ones' (count them positive) or uncertain='zeros' (count them negative)."
        )
    out[unsure] = {"error": np.nan, "ignore": np.nan, "ones": 1.0, "zeros": 0.0}[uncertain]
    return out, names


def check_activations(
    activations: object, num_samples: int | None = None, name: str = "activations", min_samples: int = 1
) -> np.ndarray:
    """Prototype activations ``(N, K)`` (tensor, ndarray or list) as float64, checked for shape and finiteness:
    ``N == num_samples`` when given and ``N >= min_samples``; ``name`` is the argument's name in messages.
    """
    s = _as_array(activations, name)
    if s.ndim != 2 or s.shape[1] < 1 or s.shape[0] < min_samples:
        raise ValueError(f"{name} must have shape (N, K), one s per row, N >= {max(min_samples, 1)}, got {s.shape}.")
    if num_samples is not None and s.shape[0] != num_samples:
        raise ValueError(f"{name} must have N={num_samples} rows (one per sample, in label order), got {s.shape[0]}.")
    if not np.isfinite(s).all():
        row, col = (int(i) for i in np.argwhere(~np.isfinite(s))[0])
        raise ValueError(f"{name} must be finite, got {float(s[row, col])!r} at row {row}, column (prototype) {col}.")
    return s


def _skip(on_constant: str, name: str, reason: str, skipped: dict[str, str], problem: str) -> None:
    """``on_constant="error"``: raise ``attribute {name!r} {problem}``; ``"skip"``: log and record ``reason``."""
    if on_constant == "error":
        raise ValueError(f"attribute {name!r} {problem}.")
    logger.warning("skipped attribute %r (%s).", name, reason)
    skipped[name] = reason


# ---------------------------------------------------------------------------------------------- encoding
@dataclass(frozen=True)
class LabelledActivations:
    """Prototype activations of a labelled data set (see :func:`encode_labelled`): ``activations`` ``(N, K)`` float32
    CPU tensor in data order, ``labels`` ``(N, A)`` float64 of ``0``/``1``/``NaN`` and the ``A`` attribute ``names``.
    """

    activations: torch.Tensor
    labels: np.ndarray
    names: list[str]

    def __len__(self) -> int:
        return int(self.activations.shape[0])


def encode_labelled(
    network: nn.Module,
    data: object,
    label_key: str = "label",
    image_key: str = "image",
    device: str | torch.device | None = None,
    names: Sequence[str] | None = None,
    uncertain: str = "error",
    classes: Sequence[str] | None = None,
) -> LabelledActivations:
    """Encode a labelled data set to prototype activations (:func:`encode_dataset`) in one streaming pass.

    Args:
        network: a ``PatronusUNet`` or a ``PrototypeEncoder``.
        data: an iterable of dict batches (e.g. a MONAI ``DataLoader``), or a single dict batch.
        label_key, image_key: the keys of the ``(B,)`` or ``(B, A)`` labels and the ``(B, C, *spatial)`` images.
        device: where to run the encoder; defaults to the encoder's device.
        names, uncertain: as in :func:`check_labels`.
        classes: for class-index labels (e.g. CIFAR-10), the class names: one binary attribute per class.

    Returns:
        :class:`LabelledActivations` with ``(N, K)`` float32 CPU activations and ``(N, A)`` checked labels.
    """
    if names is not None and classes is not None:
        raise ValueError("encode_labelled: give names (attribute labels) or classes (class-index labels), not both.")
    chunks: list[np.ndarray] = []
    state = {"exhausted": False}

    def images() -> Iterator[torch.Tensor]:
        for index, (_, batch, extras) in enumerate(iter_batches(data, image_key, keys=(label_key,))):
            chunk = _as_array(extras[label_key], label_key)
            shape, chunk = chunk.shape, (chunk[:, None] if chunk.ndim == 1 else chunk)
            if chunk.ndim != 2 or chunk.shape[0] != batch.shape[0] or (chunks and chunk.shape[1] != chunks[0].shape[1]):
                raise ValueError(
                    f"encode_labelled: batch {index} {label_key!r} must have shape (B,) or (B, A) with "
                    f"B={batch.shape[0]} (its images) and the A of earlier batches, got {shape}."
                )
            chunks.append(chunk)
            yield batch
        state["exhausted"] = True

    try:
        activations = encode_dataset(network, images(), device=device)
    except ValueError:
        if state["exhausted"] and not chunks:
            raise ValueError("encode_labelled: data yielded no non-empty batch; give a labelled batch.") from None
        raise
    raw = np.concatenate(chunks)
    if classes is not None:
        raw, names = one_hot_classes(raw, classes)
    labels, names = check_labels(raw, num_samples=activations.shape[0], names=names, uncertain=uncertain)
    return LabelledActivations(activations=activations, labels=labels, names=names)


def one_hot_classes(indices: object, classes: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Class indices ``(N,)`` (or ``(N, 1)``) as ``(N, C)`` one-vs-rest 0/1 attributes named by ``classes``."""
    names = list(classes)
    index = _as_array(indices, "class labels")
    index = index[:, 0] if index.ndim == 2 and index.shape[1] == 1 else index
    valid = np.isfinite(index) & (index == np.round(index)) & (index >= 0) & (index < len(names))
    if index.ndim != 1 or not valid.all():
        row = int(np.flatnonzero(~valid)[0]) if index.ndim == 1 else 0
        raise ValueError(
            f"class labels must have shape (N,) with integer indices in [0, {len(names)}) for classes {names}, got "
            f"shape {index.shape}, value {float(index.flat[row])!r} at row {row}; fix the labels or the class list."
        )
    return np.eye(len(names))[index.astype(np.int64)], names


# ---------------------------------------------------------------------------------------------- AUROC
def _mann_whitney_u(ranks: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """``P(s_pos > s_neg) + 0.5 P(s_pos = s_neg)`` for every column of ``ranks`` (average ranks, ties included)."""
    n_pos = int(positive.sum())
    n_neg = positive.shape[0] - n_pos
    rank_sum = ranks[positive].sum(axis=0)
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


@dataclass(frozen=True)
class AttributeAUROC:
    """Attribute × prototype AUROC matrix (see :func:`attribute_auroc`).

    Attributes:
        auroc: ``(A, K)`` float64, ``max(AUROC(y_a, s_k), AUROC(y_a, -s_k))`` in ``[0.5, 1]``.
        names: the ``A`` attributes kept; ``skipped``: ``{name: reason}`` of those dropped with ``on_constant="skip"``.
        num_labelled, num_positive: ``(A,)`` labelled and positive samples per attribute.
        signed: ``(A, K)`` ``AUROC(y_a, s_k)`` before folding (above 0.5 when ``s_k`` rises with the attribute).
    """

    auroc: np.ndarray
    names: list[str]
    num_labelled: np.ndarray
    num_positive: np.ndarray
    skipped: dict[str, str] = field(default_factory=dict)
    signed: np.ndarray | None = None

    @property
    def num_prototypes(self) -> int:
        return int(self.auroc.shape[1])

    def index(self, attribute: str | int) -> int:
        """Row of ``attribute`` (a name, or a row index into :attr:`names`)."""
        if isinstance(attribute, str):
            if attribute not in self.names:
                extra = f" (skipped: {self.skipped[attribute]})" if attribute in self.skipped else ""
                raise ValueError(f"AttributeAUROC: unknown attribute {attribute!r}{extra}; choose one of {self.names}.")
            return self.names.index(attribute)
        return range(len(self.names))[attribute]

    def top(self, attribute: str | int, n: int = 3) -> list[tuple[int, float]]:
        """The ``n`` prototypes with the highest AUROC for ``attribute`` (name or row index), as
        ``[(prototype index, auroc), ...]`` sorted by AUROC descending, then index ascending."""
        row = self.auroc[self.index(attribute)]
        order = np.lexsort((np.arange(row.shape[0]), -row))[:n]
        return [(int(k), float(row[k])) for k in order]

    def to_dict(self) -> dict:
        """JSON-serialisable summary (plain lists, ints, floats and strings)."""
        summary = asdict(self) | {"num_prototypes": self.num_prototypes}
        summary.pop("signed")
        return json_safe(summary)


def attribute_auroc(
    activations: object,
    labels: object,
    names: Sequence[str] | None = None,
    uncertain: str = "error",
    on_constant: str = "error",
) -> AttributeAUROC:
    """Attribute × prototype AUROC: ``AUROC[a, k] = max(AUROC(y_a, s_k), AUROC(y_a, -s_k))``.

    Each attribute uses its labelled samples only. The AUROC is the Mann–Whitney statistic with average ranks (a tie
    counts 0.5), for all ``K`` prototypes at once; it equals ``sklearn.metrics.roc_auc_score``.

    Args:
        activations: ``(N, K)`` finite activations (tensor, ndarray or list).
        labels: ``(N,)`` or ``(N, A)`` labels (see :func:`check_labels`).
        names: ``A`` attribute names.
        uncertain: how ``-1`` labels are read (see :func:`check_labels`).
        on_constant: an attribute with no labelled sample or a single class: ``"error"`` raises, ``"skip"`` drops it,
            lists it in ``skipped`` and logs a warning on the ``monai_patronus.evaluation`` logger.

    Returns:
        :class:`AttributeAUROC`.
    """
    on_constant = look_up_option(on_constant, CONSTANT_POLICIES)
    y, names = check_labels(labels, names=names, uncertain=uncertain)
    s = check_activations(activations, num_samples=y.shape[0])

    rank_cache: dict[bytes, np.ndarray] = {}
    signed, kept, n_lab, n_pos_all = [], [], [], []
    skipped: dict[str, str] = {}
    for a, name in enumerate(names):
        labelled = ~np.isnan(y[:, a])
        positive = y[labelled, a] == 1
        n, n_pos = int(labelled.sum()), int(positive.sum())
        if n_pos == 0 or n_pos == n:
            reason = f"{n} labelled samples, {n_pos} positive and {n - n_pos} negative; both classes are needed"
            _skip(on_constant, name, reason, skipped, f"is constant or unlabelled ({reason}); pass on_constant='skip'")
            continue
        key = labelled.tobytes()
        if key not in rank_cache:
            rank_cache[key] = rankdata(s[labelled], method="average", axis=0)
        signed.append(_mann_whitney_u(rank_cache[key], positive))
        kept.append(name)
        n_lab.append(n)
        n_pos_all.append(n_pos)
    if not kept:
        raise ValueError(f"every attribute was skipped ({skipped}); give labels with both classes present.")
    u = np.stack(signed).astype(np.float64)
    count = np.asarray(n_lab, dtype=np.int64)
    return AttributeAUROC(np.maximum(u, 1.0 - u), kept, count, np.asarray(n_pos_all, dtype=np.int64), skipped, u)


def attribute_labels(ids: Sequence[str], table: str | os.PathLike | None) -> tuple[np.ndarray | None, list[str]]:
    """Attribute labels ``(N, A)`` for images named by ``ids``, from ``table``, and the attribute names.

    Args:
        ids: the images' ids, in data order.
        table: ``"mni152"`` for the demo slices (plane and half, from the ids:
            :func:`monai_patronus.data.mni152_slice_attributes`); a CSV path with an ``id`` column and one
            column of 0/1 (or NaN, -1) per attribute; or ``None`` for no labels (``(None, [])``).

    Raises:
        ValueError: a CSV without an ``id`` column, or ids missing from it (naming a few).
    """
    if table is None:
        return None, []
    if isinstance(table, str) and table == "mni152":
        from monai_patronus.data import mni152_slice_attributes

        return mni152_slice_attributes(ids)
    import pandas as pd

    frame = pd.read_csv(table)
    if "id" not in frame.columns:
        raise ValueError(f"attribute_labels: {table} has no 'id' column; its columns are {list(frame.columns)}.")
    frame = frame.set_index(frame["id"].astype(str)).drop(columns="id")
    missing = [i for i in map(str, ids) if i not in frame.index]
    if missing:
        raise ValueError(f"attribute_labels: {len(missing)} id(s) are not in {table}, e.g. {missing[:3]}; add them.")
    frame = frame.loc[list(map(str, ids))]
    return frame.to_numpy(dtype=np.float32), [str(c) for c in frame.columns]
