from __future__ import annotations

import copy
import itertools
import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from monai_patronus.evaluation.stability import StabilityResult, match_prototypes, seed_stability
from tests._helpers import tiny_patronus


pytestmark = pytest.mark.usefixtures("one_thread")


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(x, y)[0, 1])


# ---------------------------------------------------------------------------------------------- matching
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hungarian_matches_bruteforce_over_permutations(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(20, 4))
    b = a[:, rng.permutation(4)] * 0.3 + rng.normal(size=(20, 4))  # partially shared, with anticorrelations possible
    b[:, 0] = -b[:, 0]
    res = match_prototypes(a, b)
    corr = np.array([[_pearson(a[:, i], b[:, j]) for j in range(4)] for i in range(4)])
    np.testing.assert_allclose(res.correlation_matrix, corr, atol=1e-12)
    best = max(sum(corr[i, p[i]] for i in range(4)) for p in itertools.permutations(range(4)))
    assert res.total_correlation == pytest.approx(best, abs=1e-12)
    assert res.mean_correlation == pytest.approx(best / 4, abs=1e-12)
    assert sorted(k for k, _ in res.pairs) == [0, 1, 2, 3] and sorted(k for _, k in res.pairs) == [0, 1, 2, 3]
    assert [k for k, _ in res.pairs] == [0, 1, 2, 3]  # sorted by k_a
    assert res.correlations == [res.correlation_matrix[i, j] for i, j in res.pairs]
    assert res.unmatched_a == [] and res.unmatched_b == [] and res.constant_a == [] and res.constant_b == []


def test_signed_correlation_is_matched():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(30, 2))
    b = np.stack([-a[:, 0], a[:, 1] + 0.01 * rng.normal(size=30)], axis=1)
    res = match_prototypes(a, b)
    # column 0 of b is the exact negative of a's column 0: still the only remaining partner, correlation -1
    assert res.pairs == [(0, 0), (1, 1)]
    assert res.correlations[0] == pytest.approx(-1.0) and res.correlations[1] > 0.99


def test_permuted_copy_of_model_is_recovered():
    torch.manual_seed(0)
    net_a = tiny_patronus(num_prototypes=6).eval()
    net_b = copy.deepcopy(net_a)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    with torch.no_grad():
        net_b.prototype_encoder.prototypes.copy_(net_a.prototype_encoder.prototypes[perm])
    images = torch.rand(12, 1, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    batches = [{"image": images[:5]}, {"image": images[5:]}]
    res = seed_stability(net_a, net_b, batches)
    # prototype j of B is prototype perm[j] of A
    assert res.permutation == {int(perm[j]): j for j in range(6)}
    np.testing.assert_allclose(res.correlations, 1.0, atol=1e-6)
    assert res.mean_correlation == pytest.approx(1.0, abs=1e-6)
    assert res.num_images == 12
    # the matching is not trivial: off-pair correlations are clearly below 1
    mask = np.ones((6, 6), dtype=bool)
    for i, j in res.pairs:
        mask[i, j] = False
    assert res.correlation_matrix[mask].max() < 0.999
    # a loader without shuffling works too, and gives the same result
    loader = DataLoader(TensorDataset(images), batch_size=4, shuffle=False)
    assert seed_stability(net_a, net_b, loader).pairs == res.pairs


def test_different_numbers_of_prototypes():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(25, 5))
    b = a[:, [4, 1, 2]] + 0.05 * rng.normal(size=(25, 3))
    res = match_prototypes(a, b)
    assert res.correlation_matrix.shape == (5, 3)
    assert res.pairs == [(1, 1), (2, 2), (4, 0)]
    assert res.unmatched_a == [0, 3] and res.unmatched_b == []
    flipped = match_prototypes(b, a)
    assert flipped.pairs == [(0, 4), (1, 1), (2, 2)] and flipped.unmatched_b == [0, 3] and flipped.unmatched_a == []
    assert flipped.mean_correlation == pytest.approx(res.mean_correlation)

    torch.manual_seed(0)
    res_nets = seed_stability(
        tiny_patronus(num_prototypes=4), tiny_patronus(num_prototypes=6), torch.rand(8, 1, 16, 16)
    )
    assert len(res_nets.pairs) == 4 and len(res_nets.unmatched_b) == 2 and res_nets.correlation_matrix.shape == (4, 6)


def test_constant_columns_are_zero_and_listed():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(10, 3))
    a[:, 1] = 2.5
    b = np.concatenate([a[:, [0, 2]], np.zeros((10, 1))], axis=1)
    b32 = torch.from_numpy(b).float()
    res = match_prototypes(a, b32)
    assert res.constant_a == [1] and res.constant_b == [2]
    assert np.isfinite(res.correlation_matrix).all()
    assert (res.correlation_matrix[1] == 0).all() and (res.correlation_matrix[:, 2] == 0).all()
    assert res.pairs == [(0, 0), (1, 2), (2, 1)]
    assert res.correlations[1] == 0.0
    assert res.mean_correlation == pytest.approx((res.correlations[0] + res.correlations[2]) / 3)
    # float32 rounding of a constant column counts as constant; a column with real variation does not
    c = np.full((10, 2), 3.0)
    c[:, 0] += np.float32(1e-7) * rng.normal(size=10)
    c[:, 1] += 1e-3 * rng.normal(size=10)
    assert match_prototypes(c, a).constant_a == [0]


def test_to_dict_is_json_serialisable():
    rng = np.random.default_rng(3)
    res = match_prototypes(torch.from_numpy(rng.normal(size=(6, 3))), rng.normal(size=(6, 2)))
    assert isinstance(res, StabilityResult)
    d = json.loads(json.dumps(res.to_dict()))
    assert d["pairs"] == [list(p) for p in res.pairs]
    assert len(d["correlation_matrix"]) == 3 and len(d["correlation_matrix"][0]) == 2
    assert d["unmatched_a"] == res.unmatched_a and len(d["unmatched_a"]) == 1
    assert d["num_images"] == 6 and d["mean_correlation"] == pytest.approx(res.mean_correlation)


# ---------------------------------------------------------------------------------------------- errors
def test_match_errors():
    a = np.random.default_rng(0).normal(size=(5, 3))
    with pytest.raises(ValueError, match=r"activations_a has N=1 rows; at least 2 are needed \(N >= 2\)"):
        match_prototypes(a[:1], a[:1])
    with pytest.raises(ValueError, match="activations_a has N=5 images but activations_b N=4"):
        match_prototypes(a, a[:4])
    bad = a.copy()
    bad[2, 1] = np.inf
    with pytest.raises(ValueError, match=r"activations_b must be finite, got inf at row 2, column \(prototype\) 1"):
        match_prototypes(a, bad)
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="activations_a must be finite, got nan"):
        match_prototypes(torch.from_numpy(bad), a)
    with pytest.raises(ValueError, match=r"activations_b must have shape \(N, K\).*got \(5,\)"):
        match_prototypes(a, a[:, 0])
    with pytest.raises(ValueError, match=r"activations_a must have shape \(N, K\).*got \(1, 5, 3\)"):
        match_prototypes(a[None], a)
    with pytest.raises(ValueError, match=r"activations_a must have shape \(N, K\) with N, K >= 1"):
        match_prototypes(a[:, :0], a)
    with pytest.raises(TypeError, match="activations_a must be prototype activations"):
        match_prototypes("s", a)
    with pytest.raises(TypeError, match="activations_b must be real-valued"):
        match_prototypes(a, torch.ones(5, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="constant_tol must be a finite float >= 0"):
        match_prototypes(a, a, constant_tol=-1.0)


def test_seed_stability_errors():
    net = tiny_patronus(num_prototypes=3)
    images = torch.rand(4, 1, 16, 16)
    with pytest.raises(TypeError, match="network_b must be a PatronusUNet or PrototypeEncoder"):
        seed_stability(net, "net", images)
    with pytest.raises(TypeError, match="data is a one-shot iterator"):
        seed_stability(net, net, iter([images]))
    with pytest.raises(ValueError, match="shuffle=True"):
        seed_stability(net, net, DataLoader(TensorDataset(images), batch_size=2, shuffle=True))
    with pytest.raises(ValueError, match=r"activations_a has N=1 rows"):
        seed_stability(net, net, images[:1])
