"""Prototype quality metrics of the InfoDiffusion protocol: linear-probe AUROC and TAD.

Section 6 of ``docs/method.md`` (Patronus, Weng, Feragen, Bigdeli, ICLR 2026), following InfoDiffusion (Wang et al.,
ICML 2023, ``eval_disentanglement.py`` of https://github.com/isjakewong/InfoDiffusion), which takes TAD from
NashAE (Yeats et al., https://github.com/ericyeats/nashae-beamsynthesis): the first 10,000 training samples,
5-fold cross-validation, standardised activations ``s``. Labels as in
:func:`monai_patronus.evaluation.attributes.check_labels`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from monai.utils import look_up_option
from scipy.stats import entropy as shannon_entropy
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import mutual_info_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from monai_patronus.evaluation.attributes import (
    CONSTANT_POLICIES,
    _skip,
    attribute_auroc,
    check_activations,
    check_labels,
)
from monai_patronus.utils import json_safe

__all__ = ["ProbeResult", "TADResult", "linear_probe_auroc", "mutual_information_matrix", "tad"]


# ---------------------------------------------------------------------------------------------- linear probe
@dataclass(frozen=True)
class ProbeResult:
    """Cross-validated linear-probe AUROC per attribute (see :func:`linear_probe_auroc`).

    Attributes:
        auroc: ``(A,)`` mean held-out AUROC over the folds; ``per_fold``: ``(A, folds)``.
        names: the ``A`` attributes kept; ``skipped``: ``{name: reason}`` of those dropped with ``on_constant="skip"``.
        num_labelled, num_positive: ``(A,)`` labelled and positive samples used per attribute.
        folds, seed: the number of folds and the seed of the split and the classifier.
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
        return json_safe(asdict(self) | {"mean": self.mean})


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

    InfoDiffusion's protocol (``docs/method.md`` §6) on the first ``max_samples`` rows: per attribute, over its labelled
    rows, ``cross_val_score`` of ``StandardScaler`` + ``LogisticRegression(max_iter=5000)`` with ``scoring="roc_auc"``
    and ``StratifiedKFold(folds, shuffle=True, random_state=seed)`` (InfoDiffusion: unstratified ``KFold``,
    ``max_iter=100``).

    Args:
        activations: ``(N, K)`` finite activations (tensor, ndarray or list).
        labels: ``(N,)`` or ``(N, A)`` labels.
        names: ``A`` attribute names.
        folds: number of cross-validation folds (``>= 2``).
        max_samples: use the first ``max_samples`` rows (InfoDiffusion: 10,000).
        seed: seed of the fold shuffling and of the classifier.
        uncertain: how ``-1`` labels are read.
        on_constant: for an attribute with fewer than ``folds`` positives or negatives: ``"error"`` raises naming its
            counts; ``"skip"`` leaves it out, lists it in ``skipped`` and logs a warning.

    Returns:
        :class:`ProbeResult`.
    """
    on_constant = look_up_option(on_constant, CONSTANT_POLICIES)
    y, names = check_labels(labels[:max_samples], names=names, uncertain=uncertain)
    s = check_activations(activations[:max_samples], num_samples=y.shape[0])
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, random_state=seed))
    kept, fold_rows = [], []
    skipped: dict[str, str] = {}
    for a, name in enumerate(names):
        labelled = ~np.isnan(y[:, a])
        x_a, y_a = s[labelled], y[labelled, a].astype(np.int64)
        n, n_pos = int(labelled.sum()), int(y_a.sum())
        if min(n_pos, n - n_pos) < folds:
            reason = f"{n} labelled samples, {n_pos} positive and {n - n_pos} negative; {folds}-fold stratified "
            reason += f"cross-validation needs at least {folds} of each class"
            fix = "lower folds, give more labelled samples, or pass on_constant='skip' to leave it out"
            _skip(on_constant, name, reason, skipped, f"has too few samples of a class ({reason}); {fix}")
            continue
        kept.append((name, n, n_pos))
        fold_rows.append(cross_val_score(probe, x_a, y_a, cv=cv, scoring="roc_auc"))
    if not kept:
        raise ValueError(f"every attribute was skipped ({skipped}); give more labelled samples or lower folds.")
    per_fold = np.asarray(fold_rows, dtype=np.float64)
    kept_names, n_lab, n_pos_all = (list(col) for col in zip(*kept))
    n_lab, n_pos_all = np.asarray(n_lab, dtype=np.int64), np.asarray(n_pos_all, dtype=np.int64)
    return ProbeResult(per_fold.mean(axis=1), per_fold, kept_names, n_lab, n_pos_all, skipped, folds, seed)


# ---------------------------------------------------------------------------------------------- TAD
def mutual_information_matrix(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise ``mi[i, j] = I(a_i; a_j)`` and ``entropy[i, j] = H(a_i)`` (nats) over the rows labelled for both
    attributes; 0 for pairs without such rows.

    Args:
        labels: ``(N, A)`` float array of ``0``/``1``/``NaN`` (as returned by ``check_labels``).

    Returns:
        ``(mi, entropy)``, both ``(A, A)`` float64.
    """
    num = labels.shape[1]
    mi, entropy = np.zeros((num, num)), np.zeros((num, num))
    for i in range(num):
        for j in range(num):
            rows = ~np.isnan(labels[:, i]) & ~np.isnan(labels[:, j])
            if rows.any():
                mi[i, j] = mutual_info_score(labels[rows, i], labels[rows, j])
                entropy[i, j] = shannon_entropy(np.unique(labels[rows, i], return_counts=True)[1])
    return mi, entropy


@dataclass(frozen=True)
class TADResult:
    """Total AUROC Difference and its per-attribute parts (see :func:`tad`).

    Attributes:
        tad: the sum of ``best_auroc - second_auroc`` over the captured attributes, named in ``captured``.
        names: the attributes evaluated (skipped ones left out); the ``(A,)`` arrays follow this order.
        best_prototype, best_auroc: the prototype with the highest AUROC (lowest index on ties) and its AUROC.
        second_auroc: the highest AUROC among the other prototypes.
        entropy_reduction: ``max_{j != i} I(a_i; a_j) / H(a_i)``; ``filtered``: ``entropy_reduction > threshold``.
        auroc_threshold, entropy_threshold: the thresholds used.
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

    def to_dict(self) -> dict:
        """JSON-serialisable summary, with a per-attribute table keyed by name."""
        keys = ("best_prototype", "best_auroc", "second_auroc", "entropy_reduction", "filtered")
        per_attribute = {
            name: {k: getattr(self, k)[i].item() for k in keys} | {"captured": name in self.captured}
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

    ``TADMetric.evaluate`` of InfoDiffusion (``eval_disentanglement.py``), on the first ``max_samples`` rows:

    1. ``AUROC[i, k] = max(AUROC(y_i, s_k), AUROC(y_i, -s_k))`` (:func:`~monai_patronus.evaluation.attribute_auroc`,
       exact rank AUROC); ``best_i`` is the row maximum, ``second_i`` the maximum over the other prototypes.
    2. Entropy filter: ``ER_i = max_{j != i} I(a_i; a_j) / H(a_i)`` (:func:`mutual_information_matrix`; 0 without
       another attribute); an attribute with ``ER_i > entropy_threshold`` is excluded.
    3. Attribute ``i`` is *captured* when ``best_i >= auroc_threshold`` and it is not excluded;
       ``TAD = Σ_{captured i} (best_i - second_i)``.

    With fully labelled data this equals the reference, computed once instead of over the training parts of 5
    ``KFold`` splits (TAD involves no fitting). ``NaN`` labels are left out per attribute and per attribute pair.

    Args:
        activations: ``(N, K)`` finite activations, ``K >= 2``.
        labels: ``(N,)`` or ``(N, A)`` labels.
        names: ``A`` attribute names.
        auroc_threshold: capture threshold on the best single-prototype AUROC (NashAE / InfoDiffusion: 0.75).
        entropy_threshold: maximum entropy-reduction ratio (NashAE / InfoDiffusion: 0.2).
        max_samples: use the first ``max_samples`` rows (InfoDiffusion: 10,000).
        uncertain: how ``-1`` labels are read.
        on_constant: constant or unlabelled attributes: ``"error"`` raises, ``"skip"`` leaves them out.

    Returns:
        :class:`TADResult`.
    """
    y, names = check_labels(labels[:max_samples], names=names, uncertain=uncertain)
    s = check_activations(activations[:max_samples], num_samples=y.shape[0])
    if s.shape[1] < 2:
        raise ValueError(
            f"tad: TAD compares the best and second-best prototype, so activations need K >= 2 columns, "
            f"got K={s.shape[1]}."
        )
    result = attribute_auroc(s, y, names=names, on_constant=on_constant)
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
