"""Prototype quality metrics of the InfoDiffusion protocol: linear-probe AUROC and TAD.

Section 6 of ``METHOD.md`` (Patronus, Weng, Feragen, Bigdeli, ICLR 2026), following InfoDiffusion (Wang et al.,
ICML 2023, ``eval_disentanglement.py`` of https://github.com/isjakewong/InfoDiffusion), which takes TAD from
NashAE (Yeats et al., https://github.com/ericyeats/nashae-beamsynthesis): the first 10,000 training samples,
5-fold cross-validation, standardised activations ``s``,

- :func:`linear_probe_auroc`: a logistic regression per attribute, held-out AUROC averaged over folds;
- :func:`tad`: Total AUROC Difference, how well single prototypes capture single attributes.

Labels follow :func:`monai_patronus.evaluation.attributes.check_labels` (``1``/``0``, ``NaN`` = not labelled,
``-1`` = uncertain, resolved by ``uncertain``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from monai_patronus.evaluation.attributes import (
    check_int,
    skip_attribute,
    CONSTANT_POLICIES,
    attribute_auroc,
    check_activations,
    check_labels,
)

__all__ = ["ProbeResult", "TADResult", "linear_probe_auroc", "mutual_information_matrix", "tad"]


# ---------------------------------------------------------------------------------------------- checks
def _check_unit(owner: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        raise TypeError(f"{owner}: {name} must be a float in [0, 1], got {value!r} ({type(value).__name__}).")
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{owner}: {name} must be a float in [0, 1], got {value!r}.")
    return float(value)


def _first_rows(owner: str, activations: object, labels: object, max_samples: int) -> tuple[object, object]:
    """The first ``max_samples`` rows of both (before any value check, so later rows never raise)."""
    for name, value in (("activations", activations), ("labels", labels)):
        if not hasattr(value, "__len__") or not hasattr(value, "__getitem__") or isinstance(value, (str, bytes, dict)):
            raise TypeError(
                f"{owner}: {name} must be a tensor, ndarray or list with one row per sample, "
                f"got {type(value).__name__}."
            )
    try:
        n_act, n_lab = len(activations), len(labels)  # type: ignore[arg-type]
    except TypeError as e:
        raise ValueError(f"{owner}: activations (N, K) and labels (N,) or (N, A) need a row axis ({e}).") from e
    if n_act != n_lab:
        raise ValueError(
            f"{owner}: activations and labels must have the same number of rows, got {n_act} activation rows and "
            f"{n_lab} label rows; give both for the same samples."
        )
    return activations[:max_samples], labels[:max_samples]  # type: ignore[index]


# ---------------------------------------------------------------------------------------------- linear probe
@dataclass(frozen=True)
class ProbeResult:
    """Cross-validated linear-probe AUROC per attribute (see :func:`linear_probe_auroc`).

    Attributes:
        auroc: ``(A,)`` mean held-out AUROC over the folds.
        per_fold: ``(A, folds)`` held-out AUROC of every fold.
        names: the ``A`` attributes kept (skipped ones are left out).
        num_labelled: ``(A,)`` labelled samples used per attribute.
        num_positive: ``(A,)`` positive samples used per attribute.
        skipped: ``{name: reason}`` of the attributes dropped with ``on_constant="skip"``.
        folds: the number of folds.
        seed: the seed of the fold split and the classifier.
    """

    auroc: np.ndarray
    per_fold: np.ndarray
    names: list[str]
    num_labelled: np.ndarray
    num_positive: np.ndarray
    skipped: dict[str, str] = field(default_factory=dict)
    folds: int = 5
    seed: int = 0

    @property
    def mean(self) -> float:
        """Mean AUROC over the kept attributes."""
        return float(self.auroc.mean())

    def to_dict(self) -> dict:
        """JSON-serialisable summary."""
        return {
            "names": list(self.names),
            "auroc": [float(v) for v in self.auroc],
            "per_fold": self.per_fold.tolist(),
            "mean": self.mean,
            "num_labelled": [int(v) for v in self.num_labelled],
            "num_positive": [int(v) for v in self.num_positive],
            "skipped": dict(self.skipped),
            "folds": self.folds,
            "seed": self.seed,
        }


def linear_probe_auroc(
    activations: object,
    labels: object,
    names: Sequence[str] | None = None,
    folds: int = 5,
    max_samples: int = 10000,
    seed: int = 0,
    uncertain: str = "error",
    on_constant: str = "error",
) -> ProbeResult:
    """Linear-probe AUROC per attribute: how linearly decodable each attribute is from ``s``.

    Protocol (InfoDiffusion, ``METHOD.md`` §6): the first ``max_samples`` rows, in order. For each attribute,
    over its labelled rows only: ``StratifiedKFold(folds, shuffle=True, random_state=seed)``; in each fold a
    ``StandardScaler`` is fitted on the training part only (the held-out part is transformed with the training
    mean/std, so no statistics leak from it), then ``LogisticRegression(max_iter=5000, random_state=seed)``
    (L2, ``C=1``), and ``roc_auc_score`` of its held-out probabilities. The result is the mean over folds.

    Differences from InfoDiffusion's script, which uses one unstratified ``KFold`` over all attributes jointly
    and sklearn's default ``max_iter=100``: stratified folds per attribute (every fold holds both classes, so
    the AUROC is always defined, and ``NaN``-labelled rows can be left out per attribute) and a higher
    iteration cap (converged fits). Results are deterministic for a given ``seed``.

    Args:
        activations: ``(N, K)`` finite activations (tensor, ndarray or list).
        labels: ``(N,)`` or ``(N, A)`` labels (see :func:`~monai_patronus.evaluation.attributes.check_labels`).
        names: ``A`` attribute names.
        folds: number of cross-validation folds (``>= 2``).
        max_samples: use the first ``max_samples`` rows (InfoDiffusion: 10,000).
        seed: seed of the fold shuffling and of the classifier.
        uncertain: how ``-1`` labels are read.
        on_constant: for an attribute with fewer positives or fewer negatives than ``folds`` among its labelled
            rows (so stratified folds cannot all hold both classes; this includes constant and unlabelled
            attributes): ``"error"`` raises naming the attribute and its counts; ``"skip"`` leaves it out of
            the result, lists it in ``skipped`` and logs a warning. No attribute ever gets a silent ``NaN``.

    Returns:
        :class:`ProbeResult`.

    Raises:
        TypeError / ValueError: for invalid inputs or too few samples of a class (with ``on_constant="error"``),
            or when every attribute is skipped.
    """
    owner = "linear_probe_auroc"
    folds = check_int(owner, "folds", folds, 2)
    max_samples = check_int(owner, "max_samples", max_samples, 1)
    seed = check_int(owner, "seed", seed, 0)
    if not isinstance(on_constant, str) or on_constant not in CONSTANT_POLICIES:
        raise ValueError(f"{owner}: on_constant must be one of {list(CONSTANT_POLICIES)}, got {on_constant!r}.")
    activations, labels = _first_rows(owner, activations, labels, max_samples)
    y, names = check_labels(labels, names=names, owner=owner, uncertain=uncertain)
    s = check_activations(activations, num_samples=y.shape[0], owner=owner)

    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    kept, fold_rows, n_lab, n_pos_all = [], [], [], []
    skipped: dict[str, str] = {}
    for a, name in enumerate(names):
        labelled = ~np.isnan(y[:, a])
        x_a, y_a = s[labelled], y[labelled, a].astype(np.int64)
        n, n_pos = int(labelled.sum()), int(y_a.sum())
        if min(n_pos, n - n_pos) < folds:
            reason = (
                f"{n} labelled samples, {n_pos} positive and {n - n_pos} negative; {folds}-fold stratified "
                f"cross-validation needs at least {folds} of each class"
            )
            skip_attribute(owner, on_constant, name, reason, skipped,
                           f"has too few samples of a class ({reason}); lower folds, give more labelled samples, or "
                           "pass on_constant='skip' to leave it out")
            continue
        scores = []
        for train, test in splitter.split(x_a, y_a):
            scaler = StandardScaler().fit(x_a[train])  # training part only: no leakage from the held-out fold
            probe = LogisticRegression(max_iter=5000, random_state=seed)
            probe.fit(scaler.transform(x_a[train]), y_a[train])
            scores.append(roc_auc_score(y_a[test], probe.predict_proba(scaler.transform(x_a[test]))[:, 1]))
        kept.append(name)
        fold_rows.append(scores)
        n_lab.append(n)
        n_pos_all.append(n_pos)
    if not kept:
        raise ValueError(
            f"{owner}: every attribute was skipped ({skipped}); give more labelled samples or lower folds."
        )
    per_fold = np.asarray(fold_rows, dtype=np.float64)
    return ProbeResult(
        auroc=per_fold.mean(axis=1),
        per_fold=per_fold,
        names=kept,
        num_labelled=np.asarray(n_lab, dtype=np.int64),
        num_positive=np.asarray(n_pos_all, dtype=np.int64),
        skipped=skipped,
        folds=folds,
        seed=seed,
    )


# ---------------------------------------------------------------------------------------------- TAD
def mutual_information_matrix(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise mutual information of binary attributes and the entropies it is compared with.

    For every pair ``(i, j)``, over the rows labelled (not ``NaN``) for both, with natural logarithms:
    ``mi[i, j] = I(a_i; a_j) = Σ_{u,v ∈ {0,1}} p(u, v) log(p(u, v) / (p_i(u) p_j(v)))`` (``0 log 0 = 0``) and
    ``entropy[i, j] = H(a_i)`` on those same rows. The diagonal holds ``H(a_i)`` over ``a_i``'s labelled rows.
    Pairs with no row labelled for both get ``0``.

    Args:
        labels: ``(N, A)`` float array of ``0``/``1``/``NaN`` (as returned by ``check_labels``).

    Returns:
        ``(mi, entropy)``, both ``(A, A)`` float64.
    """
    labelled = (~np.isnan(labels)).astype(np.float64)
    pos = np.nan_to_num(labels, nan=0.0) * labelled  # 1 where labelled positive
    neg = labelled - pos  # 1 where labelled negative
    n = labelled.T @ labelled  # rows labelled for both
    counts = {(1, 1): pos.T @ pos, (1, 0): pos.T @ neg, (0, 1): neg.T @ pos, (0, 0): neg.T @ neg}
    row = {1: counts[1, 1] + counts[1, 0], 0: counts[0, 1] + counts[0, 0]}  # a_i's marginal on the joint rows
    col = {1: counts[1, 1] + counts[0, 1], 0: counts[1, 0] + counts[0, 0]}  # a_j's marginal on the joint rows
    mi = np.zeros_like(n)
    entropy = np.zeros_like(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        for (u, v), c in counts.items():
            term = c / n * np.log(c * n / (row[u] * col[v]))
            mi += np.where(c > 0, term, 0.0)
        for u in (0, 1):
            p = row[u] / n
            entropy -= np.where(row[u] > 0, p * np.log(p), 0.0)
    return np.maximum(mi, 0.0), entropy


@dataclass(frozen=True)
class TADResult:
    """Total AUROC Difference and its per-attribute parts (see :func:`tad`).

    Attributes:
        tad: the sum of ``best_auroc - second_auroc`` over the captured attributes.
        captured: names of the captured attributes.
        names: the attributes evaluated (skipped ones left out); the arrays below follow this order.
        best_prototype: ``(A,)`` index of the prototype with the highest AUROC (lowest index on ties).
        best_auroc: ``(A,)`` its AUROC.
        second_auroc: ``(A,)`` the highest AUROC among the other prototypes.
        entropy_reduction: ``(A,)`` ``max_{j != i} I(a_i; a_j) / H(a_i)``.
        filtered: ``(A,)`` whether the entropy filter excluded the attribute (``entropy_reduction > threshold``).
        auroc_threshold: the capture threshold on ``best_auroc``.
        entropy_threshold: the entropy-reduction threshold.
        skipped: ``{name: reason}`` of the attributes dropped with ``on_constant="skip"``.
    """

    tad: float
    captured: list[str]
    names: list[str]
    best_prototype: np.ndarray
    best_auroc: np.ndarray
    second_auroc: np.ndarray
    entropy_reduction: np.ndarray
    filtered: np.ndarray
    auroc_threshold: float = 0.75
    entropy_threshold: float = 0.2
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def num_captured(self) -> int:
        return len(self.captured)

    @property
    def gap(self) -> np.ndarray:
        """``(A,)`` ``best_auroc - second_auroc``."""
        return self.best_auroc - self.second_auroc

    def to_dict(self) -> dict:
        """JSON-serialisable summary, with a per-attribute table keyed by name."""
        per_attribute = {
            name: {
                "best_prototype": int(self.best_prototype[i]),
                "best_auroc": float(self.best_auroc[i]),
                "second_auroc": float(self.second_auroc[i]),
                "entropy_reduction": float(self.entropy_reduction[i]),
                "filtered": bool(self.filtered[i]),
                "captured": name in self.captured,
            }
            for i, name in enumerate(self.names)
        }
        return {
            "tad": float(self.tad),
            "num_captured": self.num_captured,
            "captured": list(self.captured),
            "auroc_threshold": self.auroc_threshold,
            "entropy_threshold": self.entropy_threshold,
            "attributes": per_attribute,
            "skipped": dict(self.skipped),
        }


def tad(
    activations: object,
    labels: object,
    names: Sequence[str] | None = None,
    auroc_threshold: float = 0.75,
    entropy_threshold: float = 0.2,
    max_samples: int = 10000,
    uncertain: str = "error",
    on_constant: str = "error",
) -> TADResult:
    """TAD (Total AUROC Difference, NashAE) of prototype activations, as used by InfoDiffusion and Patronus.

    Follows ``TADMetric.evaluate`` of InfoDiffusion (``eval_disentanglement.py`` / ``metric_utils.py`` of
    https://github.com/isjakewong/InfoDiffusion, taken from NashAE, https://github.com/ericyeats/nashae-beamsynthesis);
    the definition, on the first ``max_samples`` rows:

    1. AUROC matrix ``AUROC[i, k] = max(AUROC(y_i, s_k), AUROC(y_i, -s_k))`` of attribute ``i`` and prototype
       ``k`` (:func:`~monai_patronus.evaluation.attributes.attribute_auroc`, exact rank AUROC over the rows
       labelled for ``i``). ``best_i`` is the row maximum, ``second_i`` the maximum over the other prototypes.
    2. Entropy filter between attributes: ``ER_i = max_{j != i} I(a_i; a_j) / H(a_i)`` (binary labels, natural
       log, both over the rows labelled for ``i`` and ``j``; ``0`` when there is no other attribute or no such
       row, see :func:`mutual_information_matrix`). An attribute largely explained by another one
       (``ER_i > entropy_threshold``) is excluded.
    3. Attribute ``i`` is *captured* when ``best_i >= auroc_threshold`` and ``ER_i <= entropy_threshold``;
       ``TAD = Σ_{captured i} (best_i - second_i)``.

    With fully labelled data this equals the reference. The AUROC is exact, as in InfoDiffusion's
    ``eval_disentanglement.py`` (``roc_auc_score`` of ``s_k`` and ``-s_k``), not the 101-threshold grid
    approximation of the older ``metric_utils.py`` / NashAE code. Differences: the reference (InfoDiffusion) computes
    TAD on the standardised training part of each of 5 ``KFold`` splits and reports the mean over folds; TAD
    involves no fitting, so here it is computed once on all ``max_samples`` rows. AUROC depends only on the
    order of each prototype's values, so standardising ``s`` (or any positive or negative rescaling and shift
    of a prototype) does not change TAD; no standardisation is needed. ``NaN`` labels are left out per
    attribute (AUROC) and per attribute pair (mutual information) — the reference has no missing labels.

    Args:
        activations: ``(N, K)`` finite activations, ``K >= 2``.
        labels: ``(N,)`` or ``(N, A)`` labels (see :func:`~monai_patronus.evaluation.attributes.check_labels`).
        names: ``A`` attribute names.
        auroc_threshold: capture threshold on the best single-prototype AUROC (NashAE / InfoDiffusion: 0.75).
        entropy_threshold: maximum entropy-reduction ratio (NashAE / InfoDiffusion: 0.2).
        max_samples: use the first ``max_samples`` rows (InfoDiffusion: 10,000).
        uncertain: how ``-1`` labels are read.
        on_constant: constant or unlabelled attributes: ``"error"`` raises, ``"skip"`` leaves them out (they
            share no information with any other attribute, so the filter of the others is unchanged).

    Returns:
        :class:`TADResult`.

    Raises:
        TypeError / ValueError: for invalid inputs, ``K < 2`` (no second-best prototype), or a constant
            attribute with ``on_constant="error"``.
    """
    owner = "tad"
    auroc_threshold = _check_unit(owner, "auroc_threshold", auroc_threshold)
    entropy_threshold = _check_unit(owner, "entropy_threshold", entropy_threshold)
    max_samples = check_int(owner, "max_samples", max_samples, 1)
    activations, labels = _first_rows(owner, activations, labels, max_samples)
    y, names = check_labels(labels, names=names, owner=owner, uncertain=uncertain)
    s = check_activations(activations, num_samples=y.shape[0], owner=owner)
    if s.shape[1] < 2:
        raise ValueError(
            f"{owner}: TAD compares the best and second-best prototype, so activations need K >= 2 columns, "
            f"got K={s.shape[1]}."
        )
    result = attribute_auroc(s, y, names=names, on_constant=on_constant, owner=owner)
    y = y[:, [names.index(n) for n in result.names]]

    order = np.argsort(-result.auroc, axis=1, kind="stable")  # descending, lowest index first on ties
    best_prototype = order[:, 0]
    rows = np.arange(len(result.names))
    best = result.auroc[rows, best_prototype]
    second = result.auroc[rows, order[:, 1]]

    mi, entropy = mutual_information_matrix(y)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(entropy > 0, mi / entropy, 0.0)
    np.fill_diagonal(ratio, 0.0)
    entropy_reduction = ratio.max(axis=1) if ratio.shape[0] > 1 else np.zeros(1)
    filtered = entropy_reduction > entropy_threshold
    captured_mask = (best >= auroc_threshold) & ~filtered
    return TADResult(
        tad=float((best - second)[captured_mask].sum()),
        captured=[n for n, c in zip(result.names, captured_mask, strict=True) if c],
        names=list(result.names),
        best_prototype=best_prototype.astype(np.int64),
        best_auroc=best,
        second_auroc=second,
        entropy_reduction=entropy_reduction,
        filtered=filtered,
        auroc_threshold=auroc_threshold,
        entropy_threshold=entropy_threshold,
        skipped=dict(result.skipped),
    )
