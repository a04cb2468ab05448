from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from monai_patronus.evaluation.quality import ProbeResult, TADResult, linear_probe_auroc, mutual_information_matrix, tad

# Two correlated attributes on 8 samples: b = 1 only on row 0, where a = 1 too (b implies a).
A8 = [1, 1, 1, 1, 0, 0, 0, 0]
B8 = [1, 0, 0, 0, 0, 0, 0, 0]
# I(a; b) = 1/8 ln 2 + 3/8 ln(6/7) + 1/2 ln(8/7); H(a) = ln 2; H(b) = 1/8 ln 8 + 7/8 ln(8/7)
MI_AB = math.log(2) / 8 + 3 / 8 * math.log(6 / 7) + 0.5 * math.log(8 / 7)
H_A = math.log(2)
H_B = math.log(8) / 8 + 7 / 8 * math.log(8 / 7)
ER_A = MI_AB / H_A  # 0.138 <= 0.2: kept
ER_B = MI_AB / H_B  # 0.254 > 0.2: filtered
# prototypes: s0 ranks both attributes perfectly (AUROC 1 for a and b);
# s1 for a: positives 4, 1, 5, 6 vs negatives 2, 3, 7, 8 -> 2 + 0 + 2 + 2 = 6 of 16 wins -> max(6/16, 10/16) = 0.625;
# s1 for b: positive 4 vs negatives 1, 5, 6, 2, 3, 7, 8 -> 3 of 7 -> 4/7; s2 constant -> 0.5
S8 = np.array([[8, 7, 6, 5, 4, 3, 2, 1], [4, 1, 5, 6, 2, 3, 7, 8], [0] * 8], dtype=float).T
LABELS8 = np.array([A8, B8], dtype=float).T


@pytest.fixture(scope="module")
def probe_data():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(150, 4))
    separable = (s[:, 0] + 0.2 * s[:, 1] > 0).astype(float)
    noise = (rng.random(150) < 0.5).astype(float)
    return s, np.stack([separable, noise], axis=1)


# ---------------------------------------------------------------------------------------------- linear probe
def test_linear_probe_separable_noise_and_reproducible(probe_data):
    s, labels = probe_data
    result = linear_probe_auroc(s, labels, names=["sep", "noise"], folds=3, seed=0)
    assert isinstance(result, ProbeResult)
    assert result.per_fold.shape == (2, 3) and result.names == ["sep", "noise"]
    assert result.auroc[0] > 0.97
    assert 0.3 < result.auroc[1] < 0.7
    np.testing.assert_allclose(result.auroc, result.per_fold.mean(axis=1))
    assert result.mean == pytest.approx(result.auroc.mean())
    again = linear_probe_auroc(torch.tensor(s), torch.tensor(labels), names=["sep", "noise"], folds=3, seed=0)
    np.testing.assert_array_equal(again.per_fold, result.per_fold)
    other = linear_probe_auroc(s, labels, folds=3, seed=1)
    assert not np.array_equal(other.per_fold, result.per_fold)
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["names"] == ["sep", "noise"] and len(payload["per_fold"][0]) == 3 and payload["folds"] == 3


def test_linear_probe_max_samples_and_nan_labels(probe_data):
    s, labels = probe_data
    labels = labels.copy()
    labels[::4, 1] = np.nan
    labels[140:] = 7  # beyond max_samples: never read
    result = linear_probe_auroc(s, labels, folds=3, max_samples=120)
    assert result.num_labelled.tolist() == [120, 90]
    assert result.num_positive[0] == int(labels[:120, 0].sum())


def test_linear_probe_too_few_samples(probe_data, caplog):
    s, labels = probe_data
    small = labels[:12].copy()
    small[:, 1] = 0
    small[:2, 1] = 1  # 2 positives < 3 folds
    with pytest.raises(
        ValueError,
        match=r"attribute 'rare' has too few samples of a class \(12 labelled "
        r"samples, 2 positive and 10 negative; 3-fold.*on_constant='skip'",
    ):
        linear_probe_auroc(s[:12], small, names=["sep", "rare"], folds=3)
    with caplog.at_level(logging.WARNING, logger="monai_patronus.evaluation"):
        result = linear_probe_auroc(s[:12], small, names=["sep", "rare"], folds=3, on_constant="skip")
    assert result.names == ["sep"] and "rare" in result.skipped and "skipped attribute 'rare'" in caplog.text
    with pytest.raises(ValueError, match=r"attribute 'attr0' has too few.*4 labelled samples"):
        linear_probe_auroc(s[:4], labels[:4], folds=5)
    with pytest.raises(ValueError, match="every attribute was skipped"):
        linear_probe_auroc(s[:4], labels[:4], folds=5, on_constant="skip")


def test_linear_probe_bad_arguments(probe_data):
    s, labels = probe_data
    with pytest.raises(ValueError, match="n_splits=2 or more, got n_splits=1"):
        linear_probe_auroc(s, labels, folds=1)
    with pytest.raises(ValueError, match="activations must have N=149 rows.*got 150"):
        linear_probe_auroc(s, labels[:149])
    with pytest.raises(ValueError, match=r"names must be 2 unique attribute names"):
        linear_probe_auroc(s, labels, names=["a", "b", "c"])
    bad = s.copy()
    bad[7, 3] = -np.inf
    with pytest.raises(ValueError, match=r"activations must be finite, got -inf at row 7, column \(prototype\) 3"):
        linear_probe_auroc(bad, labels)
    unsure = labels.copy()
    unsure[3, 0] = -1
    with pytest.raises(ValueError, match=r"uncertain \(-1\) entries \('attr0': 1\)"):
        linear_probe_auroc(s, unsure, folds=3)
    assert linear_probe_auroc(s, unsure, folds=3, uncertain="ignore").num_labelled.tolist() == [149, 150]
    with pytest.raises(ValueError, match="'nan'.*Available options are"):
        linear_probe_auroc(s, labels, on_constant="nan")


# ---------------------------------------------------------------------------------------------- TAD
def test_mutual_information_hand_computed():
    mi, entropy = mutual_information_matrix(LABELS8)
    assert mi[0, 1] == pytest.approx(MI_AB, abs=1e-12) and mi[1, 0] == pytest.approx(MI_AB, abs=1e-12)
    assert mi[0, 0] == pytest.approx(H_A) and mi[1, 1] == pytest.approx(H_B)
    assert entropy[0, 1] == pytest.approx(H_A) and entropy[1, 0] == pytest.approx(H_B)
    # independent attributes share no information; NaN rows are left out pairwise
    indep = np.array([[1, 1], [1, 0], [0, 1], [0, 0], [np.nan, 1]])
    mi, entropy = mutual_information_matrix(indep)
    assert mi[0, 1] == pytest.approx(0.0, abs=1e-15) and entropy[1, 0] == pytest.approx(H_A)
    assert entropy[1, 1] == pytest.approx(-(0.6 * math.log(0.6) + 0.4 * math.log(0.4)))


def test_tad_hand_computed():
    result = tad(S8, LABELS8, names=["a", "b"])
    assert isinstance(result, TADResult)
    np.testing.assert_allclose(result.entropy_reduction, [ER_A, ER_B], atol=1e-12)
    assert result.filtered.tolist() == [False, True]
    assert result.best_prototype.tolist() == [0, 0]
    np.testing.assert_allclose(result.best_auroc, [1.0, 1.0])
    np.testing.assert_allclose(result.second_auroc, [0.625, 4 / 7], atol=1e-12)
    assert result.captured == ["a"] and result.num_captured == 1
    assert result.tad == pytest.approx(0.375, abs=1e-12)
    # a looser entropy filter keeps b as well: TAD = 0.375 + (1 - 4/7)
    loose = tad(S8, LABELS8, names=["a", "b"], entropy_threshold=0.3)
    assert loose.captured == ["a", "b"] and loose.tad == pytest.approx(0.375 + 3 / 7, abs=1e-12)
    # the AUROC threshold is inclusive; without s0, a's best (0.625) is below it; negating / standardising s
    # changes nothing
    assert tad(S8, LABELS8, auroc_threshold=1.0).tad == pytest.approx(0.375)
    assert tad(S8[:, [1, 2, 1]], LABELS8, auroc_threshold=0.7).num_captured == 0
    std = (S8 - S8.mean(0)) / np.where(S8.std(0) > 0, S8.std(0), 1.0)
    assert tad(-std, LABELS8).tad == pytest.approx(0.375)
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["tad"] == pytest.approx(0.375) and payload["attributes"]["b"]["filtered"] is True
    assert payload["attributes"]["a"]["captured"] is True and payload["num_captured"] == 1


def _reference_tad(s: np.ndarray, y: np.ndarray, thresh: float = 0.75, ent_thresh: float = 0.2) -> tuple[float, int]:
    """Loop-based TAD as described by NashAE/InfoDiffusion (fully labelled data), written independently."""
    num_attr, k = y.shape[1], s.shape[1]
    aur = np.array(
        [
            [max(roc_auc_score(y[:, i], s[:, j]), roc_auc_score(y[:, i], -s[:, j])) for j in range(k)]
            for i in range(num_attr)
        ]
    )
    mi = np.zeros((num_attr, num_attr))
    for i in range(num_attr):
        for j in range(num_attr):
            for u in (0, 1):
                for v in (0, 1):
                    pj = np.mean((y[:, i] == u) & (y[:, j] == v))
                    pu, pv = np.mean(y[:, i] == u), np.mean(y[:, j] == v)
                    if pj > 0:
                        mi[i, j] += pj * math.log(pj / (pu * pv))
    total, count = 0.0, 0
    for i in range(num_attr):
        er = max(mi[i, j] for j in range(num_attr) if j != i) / mi[i, i]
        ordered = np.sort(aur[i])[::-1]
        if ordered[0] >= thresh and er <= ent_thresh:
            total += ordered[0] - ordered[1]
            count += 1
    return total, count


def test_tad_matches_loop_reference_on_random_data():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(120, 5))
    s = z + 0.3 * rng.normal(size=(120, 5))
    y = np.stack([z[:, 0] > 0, z[:, 1] > 0.5, (z[:, 0] > 0) & (z[:, 2] > 0), rng.random(120) < 0.3], axis=1).astype(
        float
    )
    expected, count = _reference_tad(s, y)
    result = tad(s, y)
    assert count >= 1 and result.num_captured == count
    assert result.tad == pytest.approx(expected, abs=1e-12)


def test_tad_bad_inputs(caplog):
    with pytest.raises(ValueError, match=r"tad: TAD compares the best and second-best prototype.*K=1"):
        tad(S8[:, :1], LABELS8)
    constant = np.concatenate([LABELS8, np.zeros((8, 1))], axis=1)
    with pytest.raises(ValueError, match=r"attribute 'c' is constant or unlabelled \(8 labelled samples, 0 positive"):
        tad(S8, constant, names=["a", "b", "c"])
    with caplog.at_level(logging.WARNING, logger="monai_patronus.evaluation"):
        skipped = tad(S8, constant, names=["a", "b", "c"], on_constant="skip")
    assert skipped.names == ["a", "b"] and "c" in skipped.skipped and skipped.tad == pytest.approx(0.375)
    nan_labels = LABELS8.copy()
    nan_labels[5, 0] = np.nan  # leaves 7 rows for a and for the (a, b) pair
    assert tad(S8, nan_labels).best_auroc[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"uncertain \(-1\) entries"):
        tad(S8, np.where(LABELS8 == 0, -1, LABELS8))
    assert tad(S8, np.where(np.arange(8)[:, None] == 7, -1, LABELS8), uncertain="zeros").tad == pytest.approx(0.375)
    bad = S8.copy()
    bad[2, 0] = np.nan
    with pytest.raises(ValueError, match=r"activations must be finite, got nan at row 2, column \(prototype\) 0"):
        tad(bad, LABELS8)
    with pytest.raises(ValueError, match="activations must have N=7 rows.*got 8"):
        tad(S8, LABELS8[:7])
    with pytest.raises(ValueError, match=r"names must be 2 unique attribute names"):
        tad(S8, LABELS8, names=["a"])
    # max_samples keeps the first rows only (a: 4 positives, 2 negatives)
    assert tad(S8, LABELS8, max_samples=6).best_auroc[0] == pytest.approx(1.0)
