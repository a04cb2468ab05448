"""Attribute labels against prototype activations: label checks, labelled encoding and the AUROC matrix.

Section 6 of ``METHOD.md``: encode a labelled set to prototype activation vectors ``s ∈ R^K`` and, for every
attribute ``a`` and prototype ``k``, compute

    ``AUROC[a, k] = max(AUROC(y_a, s_k), AUROC(y_a, -s_k)) = max(u, 1 - u)``,

so a prototype that fires for the *absence* of an attribute counts as much as one that fires for its presence.
Attributes that should be independent but share their top prototypes are evidence of a shortcut.

Label convention (the one place it is checked is :func:`check_labels`, which every function of
``monai_patronus.evaluation`` uses):

- ``1``: positive, ``0``: negative;
- ``NaN``: not labelled; the sample is left out for *that attribute only* (its other attributes still count);
- ``-1``: uncertain (CheXpert style); handled by ``uncertain``: ``"error"`` (default, raise),
  ``"ignore"`` (treat as not labelled), ``"ones"`` (treat as positive) or ``"zeros"`` (treat as negative);
- anything else (``2``, ``0.5``, ``inf``, ...) is an error naming the attribute, the value and the row.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.data import MetaTensor
from scipy.stats import rankdata
from torch import nn

from monai_patronus.data.batches import iter_batches
from monai_patronus.interpret.prior import encode_dataset

__all__ = [
    "UNCERTAIN_POLICIES",
    "AttributeAUROC",
    "LabelledActivations",
    "attribute_labels",
    "attribute_auroc",
    "check_activations",
    "check_int",
    "check_labels",
    "encode_labelled",
    "one_hot_classes",
]

logger = logging.getLogger("monai_patronus.evaluation")

#: accepted values of ``uncertain`` (how ``-1`` labels are read).
UNCERTAIN_POLICIES = ("error", "ignore", "ones", "zeros")
#: accepted values of ``on_constant``.
CONSTANT_POLICIES = ("error", "skip")


# ---------------------------------------------------------------------------------------------- checks
def _check_choice(owner: str, name: str, value: object, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{owner}: {name} must be one of {list(choices)}, got {value!r}.")
    return value


def _check_names(owner: str, names: object, num: int) -> list[str]:
    """Default ``attr0 .. attr{num-1}``; otherwise ``num`` unique strings."""
    if names is None:
        return [f"attr{i}" for i in range(num)]
    if isinstance(names, (str, bytes)) or not isinstance(names, Sequence):
        raise TypeError(
            f"{owner}: names must be a list of {num} attribute names (str), got {type(names).__name__}; "
            "pass e.g. names=['Smiling', 'Male']."
        )
    names = list(names)
    for n in names:
        if not isinstance(n, str):
            raise TypeError(f"{owner}: names must hold strings, got {n!r} ({type(n).__name__}); pass str names.")
    if len(names) != num:
        raise ValueError(
            f"{owner}: names has {len(names)} entries but the labels have A={num} attributes (columns); "
            "pass one name per label column."
        )
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{owner}: names must be unique, got duplicates {duplicates}; rename those attributes.")
    return names


def _to_numpy(owner: str, name: str, value: object, what: str) -> np.ndarray:
    """A real numeric ndarray from a tensor, an ndarray or a (nested) list."""
    if isinstance(value, torch.Tensor):
        if isinstance(value, MetaTensor):
            value = value.as_tensor()
        value = value.detach().cpu()
        if value.is_complex():
            raise TypeError(f"{owner}: {name} must be real {what}, got a complex tensor ({value.dtype}).")
        if value.dtype.is_floating_point:
            value = value.double()
        array = value.numpy()
    elif isinstance(value, (str, bytes)) or value is None or isinstance(value, Mapping):
        raise TypeError(f"{owner}: {name} must be {what} (tensor, ndarray or list), got {type(value).__name__}.")
    else:
        try:
            array = np.asarray(value)
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"{owner}: {name} must be {what} (tensor, ndarray or list of numbers), got {type(value).__name__} "
                f"that numpy cannot read as a numeric array ({e})."
            ) from e
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"{owner}: {name} must hold real numbers ({what}), got dtype {array.dtype}; convert it to numbers "
            "(use NaN, not None, for missing labels)."
        )
    return array


def check_labels(
    labels: object,
    num_samples: int | None = None,
    names: Sequence[str] | None = None,
    owner: str = "check_labels",
    uncertain: str = "error",
) -> tuple[np.ndarray, list[str]]:
    """Validate binary attribute labels and resolve uncertain (``-1``) entries.

    This is the one place where attribute labels are checked; every function of
    ``monai_patronus.evaluation`` calls it.

    Args:
        labels: ``(N,)`` or ``(N, A)`` tensor, ndarray or (nested) list. ``1`` positive, ``0`` negative,
            ``NaN`` not labelled (that sample is excluded for that attribute only), ``-1`` uncertain
            (see ``uncertain``). Booleans are read as ``0``/``1``.
        num_samples: when given, ``N`` must equal it (e.g. the number of activation rows).
        names: ``A`` unique attribute names; default ``"attr0" .. "attr{A-1}"``.
        owner: the calling function's name, for error messages.
        uncertain: how ``-1`` labels are read: ``"error"`` raises, ``"ignore"`` makes them ``NaN`` (not
            labelled), ``"ones"`` makes them positive, ``"zeros"`` negative.

    Returns:
        ``(labels, names)``: a new float64 ``(N, A)`` array holding only ``0``, ``1`` and ``NaN``, and the
        list of names.

    Raises:
        TypeError: for labels that are not numeric array-likes, or names that are not strings.
        ValueError: for a wrong shape or length, mismatched or duplicate names, values other than
            ``0, 1, NaN, -1`` (naming the attribute, the value and its row), or ``-1`` values with
            ``uncertain="error"`` (naming the attributes and their counts).
    """
    _check_choice(owner, "uncertain", uncertain, UNCERTAIN_POLICIES)
    array = _to_numpy(owner, "labels", labels, "binary labels of shape (N,) or (N, A)")
    shape = tuple(array.shape)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(
            f"{owner}: labels must have shape (N,) or (N, A) with N, A >= 1, got {shape}; "
            "give one row per sample and one column per attribute."
        )
    if num_samples is not None and array.shape[0] != num_samples:
        raise ValueError(
            f"{owner}: labels must have one row per sample, N={num_samples}, got {array.shape[0]} rows; "
            "give the labels of the same samples, in the same order."
        )
    names = _check_names(owner, names, array.shape[1])
    out = array.astype(np.float64)  # always a copy

    valid = np.isnan(out) | (out == 0) | (out == 1) | (out == -1)
    if not valid.all():
        row, col = (int(i) for i in np.argwhere(~valid)[0])
        raise ValueError(
            f"{owner}: labels of attribute {names[col]!r} must be 1 (positive), 0 (negative), NaN (not labelled) "
            f"or -1 (uncertain), got {float(out[row, col])!r} at row {row} "
            f"({int((~valid).sum())} invalid entries in all); map the labels to these values."
        )
    uncertain_mask = out == -1
    if uncertain_mask.any():
        if uncertain == "error":
            counts = uncertain_mask.sum(axis=0)
            listed = ", ".join(f"{names[c]!r}: {int(counts[c])}" for c in np.flatnonzero(counts))
            raise ValueError(
                f"{owner}: labels hold uncertain (-1) entries ({listed}); pass uncertain='ignore' (leave them "
                "out), uncertain='ones' (count them positive) or uncertain='zeros' (count them negative)."
            )
        out[uncertain_mask] = {"ignore": np.nan, "ones": 1.0, "zeros": 0.0}[uncertain]
    return out, names


def check_activations(
    activations: object,
    num_samples: int | None = None,
    owner: str = "check_activations",
    name: str = "activations",
    min_samples: int = 1,
) -> np.ndarray:
    """Validate prototype activations ``(N, K)`` and return them as a float64 ndarray.

    The one check of activation matrices for the evaluation package (AUROC, probes, TAD, shortcuts, seed
    stability).

    Args:
        activations: ``(N, K)`` tensor, ndarray or (nested) list of finite real numbers.
        num_samples: when given, ``N`` must equal it (e.g. the number of label rows).
        owner: the calling function's name, for error messages.
        name: the argument's name, for error messages.
        min_samples: the least ``N`` the caller needs (e.g. 2 for correlations).

    Raises:
        TypeError: for a non-numeric input (bool and complex included).
        ValueError: for a wrong shape, fewer than ``min_samples`` rows, a row count other than
            ``num_samples``, or a NaN/inf entry (naming its row and column).
    """
    if isinstance(activations, torch.Tensor) and activations.dtype == torch.bool:
        raise TypeError(f"{owner}: {name} must be real-valued activations, got dtype {activations.dtype}.")
    array = _to_numpy(owner, name, activations, "prototype activations of shape (N, K)")
    if array.dtype.kind == "b":
        raise TypeError(f"{owner}: {name} must be real-valued activations, got dtype {array.dtype}.")
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(
            f"{owner}: {name} must have shape (N, K) with N, K >= 1 (N samples, K prototypes), got "
            f"{tuple(array.shape)}; pass one activation vector s per row (e.g. from network.encode or encode_labelled)."
        )
    if array.shape[0] < min_samples:
        raise ValueError(
            f"{owner}: {name} has N={array.shape[0]} rows; at least {min_samples} are needed (N >= {min_samples}), "
            "and far more for a meaningful result."
        )
    if num_samples is not None and array.shape[0] != num_samples:
        raise ValueError(
            f"{owner}: {name} and labels must have the same number of rows, got {array.shape[0]} "
            f"activation rows and {num_samples} label rows; give both for the same samples."
        )
    array = array.astype(np.float64)
    finite = np.isfinite(array)
    if not finite.all():
        row, col = (int(i) for i in np.argwhere(~finite)[0])
        raise ValueError(
            f"{owner}: {name} must be finite, got {float(array[row, col])!r} at row {row}, "
            f"column (prototype) {col} ({int((~finite).sum())} non-finite entries in all); drop or fix those samples."
        )
    return array


def skip_attribute(owner: str, on_constant: str, name: str, reason: str, skipped: dict[str, str], problem: str) -> None:
    """Apply the ``on_constant`` policy to an attribute that cannot be scored: ``"error"`` raises
    ``ValueError("{owner}: attribute {name!r} {problem}.")``; ``"skip"`` logs a warning and records ``reason``."""
    if on_constant == "error":
        raise ValueError(f"{owner}: attribute {name!r} {problem}.")
    logger.warning("%s: skipped attribute %r (%s).", owner, name, reason)
    skipped[name] = reason


def check_int(owner: str, name: str, value: object, minimum: int, allow_none: bool = False) -> int | None:
    """``value`` as an int ``>= minimum`` (or ``None`` when allowed); TypeError / ValueError naming it otherwise."""
    if allow_none and value is None:
        return None
    none = " or None" if allow_none else ""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{owner}: {name} must be an int >= {minimum}{none}, got {value!r} ({type(value).__name__}).")
    if value < minimum:
        raise ValueError(f"{owner}: {name} must be an int >= {minimum}{none}, got {value!r}.")
    return int(value)


# ---------------------------------------------------------------------------------------------- encoding
@dataclass(frozen=True)
class LabelledActivations:
    """Prototype activations of a labelled data set (see :func:`encode_labelled`).

    Attributes:
        activations: ``(N, K)`` float32 CPU tensor, in data order.
        labels: ``(N, A)`` float64 ndarray of ``0``/``1``/``NaN`` (after :func:`check_labels`).
        names: the ``A`` attribute names.
    """

    activations: torch.Tensor
    labels: np.ndarray
    names: list[str]

    def __len__(self) -> int:
        return int(self.activations.shape[0])


def _batch_labels(owner: str, label_key: str, index: int, value: object, batch_size: int) -> np.ndarray:
    array = _to_numpy(owner, f"batch {index} {label_key!r}", value, "binary labels of shape (B,) or (B, A)")
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[0] != batch_size:
        raise ValueError(
            f"{owner}: batch {index} {label_key!r} must have shape (B,) or (B, A) with B={batch_size} (the batch's "
            f"images), got {tuple(array.shape)}; give one label row per image."
        )
    return array.astype(np.float64)


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
    """Encode a labelled data set to prototype activations in one streaming pass.

    The batches are read with :func:`monai_patronus.data.batches.iter_batches` (dictionary batches holding
    ``image_key`` and ``label_key``); the images are encoded by
    :func:`monai_patronus.interpret.prior.encode_dataset` (no gradients, eval mode, train/eval restored) while
    the labels are collected alongside.

    Args:
        network: a ``PatronusUNet`` (its ``encode`` is used) or a ``PrototypeEncoder``.
        data: an iterable of dict batches (e.g. a MONAI ``DataLoader``), or a single dict batch.
        label_key: the labels' key in each batch: ``(B,)`` or ``(B, A)`` tensor/ndarray/list.
        image_key: the images' key in each batch: ``(B, C, *spatial)``.
        device: where to run the encoder; defaults to the encoder's device.
        names: ``A`` attribute names (default ``"attr0" ..``).
        uncertain: how ``-1`` labels are read (see :func:`check_labels`).
        classes: for class-index labels (e.g. Fashion-MNIST, CIFAR-10): the class names; each label is an
            index into them and becomes one binary attribute per class (one-vs-rest), named by ``classes``
            (``names`` must then be ``None``).

    Returns:
        :class:`LabelledActivations` with ``(N, K)`` float32 CPU activations and ``(N, A)`` checked labels.

    Raises:
        TypeError / ValueError: for a batch without ``label_key`` or ``image_key`` (naming the key), labels of
            another length than the batch's images, or invalid labels (see :func:`check_labels`).
    """
    owner = "encode_labelled"
    _check_choice(owner, "uncertain", uncertain, UNCERTAIN_POLICIES)
    if not isinstance(label_key, str) or not isinstance(image_key, str):
        raise TypeError(
            f"{owner}: label_key and image_key must be str keys of the dict batches, got "
            f"label_key={label_key!r}, image_key={image_key!r}."
        )
    chunks: list[np.ndarray] = []
    state = {"exhausted": False}

    def images() -> Iterator[torch.Tensor]:
        for index, (_, batch_images, extras) in enumerate(iter_batches(data, owner, image_key, keys=(label_key,))):
            chunk = _batch_labels(owner, label_key, index, extras[label_key], batch_images.shape[0])
            if chunks and chunk.shape[1] != chunks[0].shape[1]:
                raise ValueError(
                    f"{owner}: batch {index} {label_key!r} has A={chunk.shape[1]} attributes, earlier batches "
                    f"A={chunks[0].shape[1]}; give every batch the same label columns."
                )
            chunks.append(chunk)
            yield batch_images
        state["exhausted"] = True

    try:
        activations = encode_dataset(network, images(), device=device)
    except ValueError:
        if state["exhausted"] and not chunks:
            raise ValueError(
                f"{owner}: data yielded no (non-empty) batches; give it at least one labelled batch."
            ) from None
        raise
    raw = np.concatenate(chunks)
    if classes is not None:
        if names is not None:
            raise ValueError(f"{owner}: give names (attribute labels) or classes (class-index labels), not both.")
        raw, names = one_hot_classes(raw, classes, owner)
    labels, names = check_labels(raw, num_samples=activations.shape[0], names=names, owner=owner, uncertain=uncertain)
    return LabelledActivations(activations=activations, labels=labels, names=names)


def one_hot_classes(indices: object, classes: Sequence[str], owner: str = "one_hot_classes") -> tuple[np.ndarray, list[str]]:
    """Class indices ``(N,)`` (or ``(N, 1)``) as ``(N, C)`` one-vs-rest 0/1 attributes named by ``classes``.

    Raises:
        TypeError / ValueError: for ``classes`` that are not unique strings, or an index that is not an integer
            in ``[0, C)`` (naming its row).
    """
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence) or not classes:
        raise TypeError(f"{owner}: classes must be a non-empty sequence of class names, got {classes!r}.")
    names = _check_names(owner, list(classes), len(classes))
    array = _to_numpy(owner, "class labels", indices, "class indices of shape (N,)")
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(
            f"{owner}: class labels must have shape (N,) (one class index per sample), got {tuple(array.shape)}; "
            "for multi-attribute labels leave classes=None."
        )
    valid = np.isfinite(array) & (array == np.round(array)) & (array >= 0) & (array < len(names))
    if not valid.all():
        row = int(np.flatnonzero(~valid)[0])
        raise ValueError(
            f"{owner}: class label {array[row].item()!r} at row {row} is not an integer index in [0, {len(names)}) "
            f"for classes {names}; fix the labels or the class list."
        )
    return np.eye(len(names))[array.astype(np.int64)], names


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
        names: the ``A`` attributes kept (skipped ones are left out).
        num_labelled: ``(A,)`` labelled samples per attribute.
        num_positive: ``(A,)`` positive samples per attribute.
        skipped: ``{name: reason}`` of the attributes dropped with ``on_constant="skip"``.
        signed: ``(A, K)`` float64 ``AUROC(y_a, s_k)`` before folding: above 0.5 when ``s_k`` rises with the
            attribute, below when it falls (``None`` when not computed).
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
        owner = "AttributeAUROC"
        if isinstance(attribute, str):
            if attribute not in self.names:
                extra = f" (skipped: {self.skipped[attribute]})" if attribute in self.skipped else ""
                raise ValueError(f"{owner}: unknown attribute {attribute!r}{extra}; choose one of {self.names}.")
            return self.names.index(attribute)
        if isinstance(attribute, (int, np.integer)) and not isinstance(attribute, bool):
            if not -len(self.names) <= attribute < len(self.names):
                raise ValueError(
                    f"{owner}: attribute index must be in [0, {len(self.names)}), got {attribute}; "
                    "pass a valid index or a name."
                )
            return int(attribute) % len(self.names)
        raise TypeError(f"{owner}: attribute must be a name (str) or an index (int), got {type(attribute).__name__}.")

    def top(self, attribute: str | int, n: int = 3) -> list[tuple[int, float]]:
        """The ``n`` prototypes with the highest AUROC for ``attribute``.

        Args:
            attribute: attribute name or row index.
            n: how many (at most ``K`` are returned).

        Returns:
            ``[(prototype index, auroc), ...]`` sorted by AUROC descending, then index ascending.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"AttributeAUROC.top: n must be an int >= 1, got {n!r}.")
        row = self.auroc[self.index(attribute)]
        order = np.lexsort((np.arange(row.shape[0]), -row))[:n]
        return [(int(k), float(row[k])) for k in order]

    def to_dict(self) -> dict:
        """JSON-serialisable summary (plain lists, ints, floats and strings)."""
        return {
            "names": list(self.names),
            "auroc": self.auroc.tolist(),
            "num_labelled": [int(v) for v in self.num_labelled],
            "num_positive": [int(v) for v in self.num_positive],
            "num_prototypes": self.num_prototypes,
            "skipped": dict(self.skipped),
        }


def attribute_auroc(
    activations: object,
    labels: object,
    names: Sequence[str] | None = None,
    uncertain: str = "error",
    on_constant: str = "error",
    owner: str = "attribute_auroc",
) -> AttributeAUROC:
    """Attribute × prototype AUROC: ``AUROC[a, k] = max(AUROC(y_a, s_k), AUROC(y_a, -s_k))``.

    Each attribute uses its labelled samples only (``NaN`` labels left out). The AUROC is the Mann–Whitney
    statistic ``u = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)`` with average ranks for ties (a tied
    positive/negative pair counts 0.5, so a constant prototype gives exactly 0.5), computed for all ``K``
    prototypes at once; it equals ``sklearn.metrics.roc_auc_score``. Any strictly monotone per-prototype
    rescaling of ``s`` (e.g. standardising) leaves it unchanged, and ``max(u, 1 - u)`` makes it invariant to
    negating ``s``.

    Args:
        activations: ``(N, K)`` finite activations (tensor, ndarray or list).
        labels: ``(N,)`` or ``(N, A)`` labels (see :func:`check_labels`).
        names: ``A`` attribute names.
        uncertain: how ``-1`` labels are read (see :func:`check_labels`).
        on_constant: for an attribute with no labelled sample or a single class among them: ``"error"``
            raises, ``"skip"`` drops it from the result, lists it in ``skipped`` and logs a warning on the
            ``monai_patronus.evaluation`` logger.
        owner: the calling function's name, for error messages (for callers such as ``tad``).

    Returns:
        :class:`AttributeAUROC`.

    Raises:
        TypeError / ValueError: for invalid inputs, non-finite activations (naming row and column), a constant
            attribute with ``on_constant="error"``, or no attribute left after skipping.
    """
    _check_choice(owner, "on_constant", on_constant, CONSTANT_POLICIES)
    y, names = check_labels(labels, names=names, owner=owner, uncertain=uncertain)
    s = check_activations(activations, num_samples=y.shape[0], owner=owner)

    rank_cache: dict[bytes, np.ndarray] = {}
    rows, signed, kept, n_lab, n_pos_all = [], [], [], [], []
    skipped: dict[str, str] = {}
    for a, name in enumerate(names):
        labelled = ~np.isnan(y[:, a])
        positive = y[labelled, a] == 1
        n, n_pos = int(labelled.sum()), int(positive.sum())
        if n_pos == 0 or n_pos == n:
            reason = f"{n} labelled samples, {n_pos} positive and {n - n_pos} negative; both classes are needed"
            skip_attribute(owner, on_constant, name, reason, skipped,
                           f"is constant or unlabelled ({reason}); drop it or pass on_constant='skip' to leave it "
                           "out of the result")
            continue
        key = labelled.tobytes()
        if key not in rank_cache:
            rank_cache[key] = rankdata(s[labelled], method="average", axis=0)
        u = _mann_whitney_u(rank_cache[key], positive)
        rows.append(np.maximum(u, 1.0 - u))
        signed.append(u)
        kept.append(name)
        n_lab.append(n)
        n_pos_all.append(n_pos)
    if not kept:
        raise ValueError(f"{owner}: every attribute was skipped ({skipped}); give labels with both classes present.")
    return AttributeAUROC(
        auroc=np.stack(rows).astype(np.float64),
        names=kept,
        num_labelled=np.asarray(n_lab, dtype=np.int64),
        num_positive=np.asarray(n_pos_all, dtype=np.int64),
        skipped=skipped,
        signed=np.stack(signed).astype(np.float64),
    )


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
        raise ValueError(f"attribute_labels: {len(missing)} id(s) are not in {table}, e.g. {missing[:3]}; add their rows.")
    frame = frame.loc[list(map(str, ids))]
    return frame.to_numpy(dtype=np.float32), [str(c) for c in frame.columns]
