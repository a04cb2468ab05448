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
    with pytest.raises(ValueError, match=r"activations_a must have shape \(N, K\).*N >= 2, got \(1, 3\)"):
        match_prototypes(a[:1], a[:1])
    with pytest.raises(ValueError, match="activations_b must have N=5 rows.*got 4"):
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
    with pytest.raises(ValueError, match=r"activations_a must have shape \(N, K\).*got \(5, 0\)"):
        match_prototypes(a[:, :0], a)
    with pytest.raises(TypeError, match="activations_a must hold real numbers"):
        match_prototypes("s", a)


def test_seed_stability_errors():
    net = tiny_patronus(num_prototypes=3)
    images = torch.rand(4, 1, 16, 16)
    with pytest.raises(TypeError, match="data is a one-shot iterator"):
        seed_stability(net, net, iter([images]))
    with pytest.raises(ValueError, match="shuffle=True"):
        seed_stability(net, net, DataLoader(TensorDataset(images), batch_size=2, shuffle=True))
    with pytest.raises(ValueError, match=r"activations_a must have shape \(N, K\).*N >= 2"):
        seed_stability(net, net, images[:1])


# ---------------------------------------------------------------------------------------------- chance baseline
@pytest.fixture(scope="module")
def digits64():
    from monai_patronus.data import load_digits_images

    return load_digits_images(size=16, num_images=64)[0]


def test_untrained_models_score_their_baseline(digits64):
    """Two untrained, independently initialised models share nothing, yet their mean matched correlation is far
    from 0 (Hungarian max over K! matchings plus a shared feature-norm component); it is the chance level the
    baseline estimates. The chance level varies a lot from one random pair to another (measured: sd ~0.19 of
    the mean over pairs of these K=8 encoders on 64 digits), so single pairs are compared loosely and the
    average over 40 pairs tightly (measured: above_baseline +0.002, standard error 0.038)."""
    from tests._helpers import tiny_encoder

    above, means = [], []
    for seed in range(40):
        torch.manual_seed(1000 + seed)
        net_a, net_b = tiny_encoder(num_prototypes=8), tiny_encoder(num_prototypes=8)
        res = seed_stability(net_a, net_b, digits64, baseline_seeds=3, baseline_seed=seed)
        assert len(res.baseline_correlations) == 3
        assert res.baseline_mean_correlation == pytest.approx(np.mean(res.baseline_correlations))
        assert res.baseline_std_correlation == pytest.approx(np.std(res.baseline_correlations, ddof=1))
        assert res.above_baseline == pytest.approx(res.mean_correlation - res.baseline_mean_correlation)
        assert abs(res.above_baseline) < 0.6  # a single pair: within the (wide) chance spread
        above.append(res.above_baseline)
        means.append(res.mean_correlation)
    assert np.mean(means) > 0.15  # the bare number is not ~0 for unrelated models (measured 0.226)...
    assert abs(np.mean(above)) < 0.1  # ...but it is the baseline (measured +0.002)


def test_untrained_patronus_unet_baseline_uses_its_encoder(digits64):
    torch.manual_seed(0)
    net_a, net_b = tiny_patronus(num_prototypes=6), tiny_patronus(num_prototypes=6)
    res = seed_stability(net_a, net_b, [digits64[:32], digits64[32:]])
    direct = seed_stability(net_a.prototype_encoder, net_b.prototype_encoder, digits64)
    assert res.mean_correlation == pytest.approx(direct.mean_correlation, abs=1e-12)
    assert res.baseline_correlations == pytest.approx(direct.baseline_correlations, abs=1e-12)


class _Affine(torch.nn.Module):
    """A model whose activations are an increasing affine map of another encoder's."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def encode(self, images):
        return 2.5 * self.inner(images) + 3.0


def test_identical_and_affine_copies_score_one_far_above_baseline(digits64):
    from tests._helpers import tiny_encoder

    torch.manual_seed(0)
    net = tiny_encoder(num_prototypes=8)
    same = seed_stability(net, net, digits64)
    assert same.mean_correlation == pytest.approx(1.0, abs=1e-6)
    assert same.baseline_mean_correlation < 0.6
    assert same.above_baseline > 0.4
    affine = seed_stability(net, _Affine(copy.deepcopy(net)), digits64)
    assert affine.pairs == [(k, k) for k in range(8)]
    assert affine.mean_correlation == pytest.approx(1.0, abs=1e-6)
    assert affine.above_baseline > 0.4
    # the affine wrapper's PrototypeEncoder is found and re-initialised inside it: the same baseline
    assert affine.baseline_correlations == pytest.approx(same.baseline_correlations, abs=1e-5)  # float32 rounding


def test_permuted_noisy_prototypes_score_far_above_baseline(digits64):
    from tests._helpers import tiny_encoder

    torch.manual_seed(0)
    net_a = tiny_encoder(num_prototypes=8)
    net_b = copy.deepcopy(net_a)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        noise = 0.02 * torch.randn(8, net_a.prototype_dim, generator=torch.Generator().manual_seed(2))
        net_b.prototypes.copy_(net_a.prototypes[perm] + noise)
    res = seed_stability(net_a, net_b, digits64)
    assert res.permutation == {int(perm[j]): j for j in range(8)}
    assert res.mean_correlation > 0.9
    assert res.above_baseline > 0.4
    assert res.above_baseline > 3 * res.baseline_std_correlation


def test_baseline_is_deterministic_and_leaves_models_and_rng_alone(digits64):
    torch.manual_seed(0)
    net_a, net_b = tiny_patronus(num_prototypes=5), tiny_patronus(num_prototypes=5)
    before = [p.clone() for p in itertools.chain(net_a.parameters(), net_b.parameters())]
    rng = torch.get_rng_state()
    first = seed_stability(net_a, net_b, digits64, baseline_seed=7)
    assert torch.equal(torch.get_rng_state(), rng)  # fresh inits use their own generators
    torch.manual_seed(123)  # the global seed does not matter
    second = seed_stability(net_a, net_b, digits64, baseline_seed=7)
    assert first.baseline_correlations == second.baseline_correlations
    other = seed_stability(net_a, net_b, digits64, baseline_seed=8)
    assert other.baseline_correlations != first.baseline_correlations
    more = seed_stability(net_a, net_b, digits64, baseline_seeds=5, baseline_seed=7)
    assert len(more.baseline_correlations) == 5
    after = list(itertools.chain(net_a.parameters(), net_b.parameters()))
    assert all(torch.equal(x, y) for x, y in zip(before, after))
    # skipping the baseline
    for skip in (None, 0):
        res = seed_stability(net_a, net_b, digits64, baseline_seeds=skip)
        assert res.baseline_correlations == [] and res.baseline_mean_correlation is None
        assert res.baseline_std_correlation is None and res.above_baseline is None
        assert res.mean_correlation == first.mean_correlation
    single = seed_stability(net_a, net_b, digits64, baseline_seeds=1)
    assert single.baseline_std_correlation is None and single.above_baseline is not None


def test_reinitialisation_matches_the_encoder_init():
    from monai_patronus.evaluation.stability import _reinitialised
    from tests._helpers import tiny_encoder

    torch.manual_seed(0)
    enc = tiny_encoder(num_prototypes=6)
    with torch.no_grad():  # pretend it was trained
        for p in enc.parameters():
            p.add_(1.0)
    fresh = _reinitialised(enc, seed=3, device=None)
    convs = [m for m in fresh.modules() if isinstance(m, torch.nn.Conv2d)]
    weights = torch.cat([m.weight.detach().flatten() for m in convs])
    assert abs(float(weights.mean())) < 0.02 and abs(float(weights.std()) - 0.1) < 0.02  # N(0, 0.1)
    assert all(not m.bias.any() for m in convs)
    assert float(fresh.prototypes.detach().min()) >= 0.0 and float(fresh.prototypes.detach().max()) < 1.0  # rand
    assert float(enc.prototypes.detach().min()) >= 1.0  # the original is untouched
    again = _reinitialised(enc, seed=3, device=None)
    assert all(torch.equal(x, y) for x, y in zip(fresh.parameters(), again.parameters()))


class _LinearEncoder(torch.nn.Module):
    def __init__(self, k=4):
        super().__init__()
        self.proj = torch.nn.Linear(256, k)

    def encode(self, images):
        return self.proj(images.flatten(1)).relu()


class _Frozen(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(256, 3))

    def encode(self, images):
        return images.flatten(1) @ self.w


def test_generic_encoder_baseline_uses_reset_parameters(digits64):
    torch.manual_seed(0)
    a, b = _LinearEncoder(), _LinearEncoder()
    rng = torch.get_rng_state()
    res = seed_stability(a, b, digits64, baseline_seed=1)
    assert torch.equal(torch.get_rng_state(), rng)
    assert res.baseline_correlations == seed_stability(a, b, digits64, baseline_seed=1).baseline_correlations
    assert len(set(res.baseline_correlations)) == 3
    with pytest.raises(ValueError, match="no PrototypeEncoder and no submodule with reset_parameters"):
        seed_stability(_Frozen(), _Frozen(), digits64)
    assert seed_stability(_Frozen(), _Frozen(), digits64, baseline_seeds=None).baseline_mean_correlation is None


def test_to_dict_carries_the_baseline(digits64):
    torch.manual_seed(0)
    res = seed_stability(tiny_patronus(num_prototypes=4), tiny_patronus(num_prototypes=6), digits64[:16])
    d = json.loads(json.dumps(res.to_dict()))
    assert d["baseline_mean_correlation"] == pytest.approx(res.baseline_mean_correlation)
    assert d["baseline_std_correlation"] == pytest.approx(res.baseline_std_correlation)
    assert d["baseline_correlations"] == pytest.approx(res.baseline_correlations)
    assert d["above_baseline"] == pytest.approx(d["mean_correlation"] - d["baseline_mean_correlation"])
    skipped = json.loads(json.dumps(match_prototypes(np.eye(3), np.eye(3)).to_dict()))
    assert skipped["baseline_mean_correlation"] is None and skipped["above_baseline"] is None
    assert skipped["baseline_correlations"] == []
