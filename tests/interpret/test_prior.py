from __future__ import annotations

import io

import pytest
import torch
from monai.data import MetaTensor

from monai_patronus.interpret.prior import ActivationPrior, ActivationPriorUNet, encode_dataset, fit_activation_prior
from tests._helpers import tiny_encoder, tiny_patronus

SMALL = {"channels": (16, 32, 64), "norm_num_groups": 8}
TINY = {"channels": (8, 16), "norm_num_groups": 4}


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------- network
@pytest.mark.parametrize("k", [1, 5, 30, 100])
def test_unet_shapes_for_any_k(k):
    net = ActivationPriorUNet(**SMALL)
    t = torch.tensor([0, 50, 99])
    x = torch.randn(3, k)
    out = net(x, t)
    assert out.shape == (3, k) and torch.isfinite(out).all()
    assert net(x[:, None], t).shape == (3, 1, k)
    torch.testing.assert_close(net(x[:, None], t)[:, 0], out)


@pytest.mark.parametrize("kwargs", [{}, {"channels": (8,), "norm_num_groups": 4}, {**TINY, "num_res_blocks": 2}])
def test_unet_configurations(kwargs):
    net = ActivationPriorUNet(**kwargs)
    for k in (1, 7):
        assert net(torch.randn(2, k), torch.tensor([3, 4])).shape == (2, k)
    if not kwargs:
        assert net.channels == (64, 128, 256) and net.num_res_blocks == 1 and net.norm_num_groups == 8


def test_unet_depends_on_timestep_and_input():
    net = ActivationPriorUNet(**TINY).eval()
    x = torch.randn(4, 6)
    t = torch.full((4,), 10)
    out = net(x, t)
    torch.testing.assert_close(net(x.clone(), t.clone()), out)
    assert (net(x, torch.full((4,), 90)) - out).abs().max() > 1e-3
    x2 = x.clone()
    x2[:, 2] += 1.0
    assert (net(x2, t) - out).abs().max() > 1e-3
    # each row is processed on its own
    torch.testing.assert_close(net(x[:1], t[:1]), out[:1], atol=1e-5, rtol=1e-5)
    # a scalar timestep (tensor or int) applies to the whole batch
    torch.testing.assert_close(net(x, torch.tensor(10)), out)
    torch.testing.assert_close(net(x, 10), out)


# ---------------------------------------------------------------------------------------------- standardisation
def test_standardisation_round_trip_brute_force():
    g = torch.Generator().manual_seed(3)
    data = torch.randn(37, 5, generator=g) * torch.tensor([0.01, 1.0, 5.0, 100.0, 2.0]) + torch.tensor(
        [3.0, -2, 0, 50, 1]
    )
    data[:, 4] = 1.5  # a constant dimension
    prior = ActivationPrior(5, **TINY)
    prior.set_statistics(data)
    rows = data.tolist()
    for j in range(5):
        col = [r[j] for r in rows]
        mean = sum(col) / len(col)
        std = (sum((c - mean) ** 2 for c in col) / len(col)) ** 0.5
        assert abs(prior.mean[j].item() - mean) <= 1e-5 * max(1.0, abs(mean))
        assert abs(prior.std[j].item() - max(std, prior.min_std)) <= 1e-4 * max(std, prior.min_std)
    z = prior.standardize(data)
    for i in range(37):
        for j in range(4):
            expected = (rows[i][j] - prior.mean[j].item()) / prior.std[j].item()
            assert abs(z[i, j].item() - expected) < 1e-3
    torch.testing.assert_close(z[:, :4].mean(0), torch.zeros(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(z[:, :4].std(0, correction=0), torch.ones(4), atol=1e-4, rtol=0)
    assert z[:, 4].abs().max() < 1e-5
    torch.testing.assert_close(prior.destandardize(z), data, atol=1e-4, rtol=1e-5)
    # the statistics are buffers, so they are saved
    sd = prior.state_dict()
    assert torch.equal(sd["mean"], prior.mean) and torch.equal(sd["std"], prior.std)


# ---------------------------------------------------------------------------------------------- distribution fit
TRUE_MEAN = torch.tensor([2.0, -1.0, 0.0, 1.0])
TRUE_STD = torch.tensor([0.5, 0.1, (1 + 0.01) ** 0.5, (0.25 + 0.01 + 0.01) ** 0.5])


def _toy(m: int, seed: int) -> torch.Tensor:
    """K = 4: N(2, 0.5), N(-1, 0.1), a ±1 mixture (σ = 0.1 per mode), and d0 + d1 + N(0, 0.1)."""
    g = torch.Generator().manual_seed(seed)
    d0 = 2 + 0.5 * torch.randn(m, generator=g)
    d1 = -1 + 0.1 * torch.randn(m, generator=g)
    d2 = torch.where(torch.rand(m, generator=g) < 0.5, -1.0, 1.0) + 0.1 * torch.randn(m, generator=g)
    d3 = d0 + d1 + 0.1 * torch.randn(m, generator=g)
    return torch.stack([d0, d1, d2, d3], 1)


def _fit_failures(s: torch.Tensor) -> list[str]:
    """What is wrong with samples ``s`` (N, 4) of the toy distribution; empty when they match it."""
    fails = []
    mean, std = s.mean(0), s.std(0)
    if not torch.isfinite(s).all():
        return ["non-finite samples"]
    if ((mean - TRUE_MEAN).abs() > 0.35 * TRUE_STD).any():
        fails.append(f"means {mean.tolist()}")
    ratio = std / TRUE_STD
    if ((ratio < 0.7) | (ratio > 1.3)).any():
        fails.append(f"stds {std.tolist()}")
    d2 = s[:, 2]
    if (d2.abs() < 0.5).float().mean() > 0.12:
        fails.append(f"mass near 0 in the bimodal dim: {(d2.abs() < 0.5).float().mean():.3f}")
    for mode in (-1.0, 1.0):
        if ((d2 - mode).abs() < 0.4).float().mean() < 0.3:
            fails.append(f"too little mass near {mode}")
    resid = s[:, 3] - s[:, 0] - s[:, 1]
    if resid.std() > 0.2:
        fails.append(f"dim3 - dim0 - dim1 std {resid.std():.3f}")
    return fails


@pytest.fixture(scope="module")
def fitted():
    data = _toy(2048, seed=0)
    prior, losses = fit_activation_prior(data, epochs=30, batch_size=512, lr=5e-3, seed=0, **SMALL)
    return prior, losses, data


def test_fit_matches_known_distribution(fitted):
    prior, losses, _ = fitted
    assert len(losses) == 30 and sum(losses[-5:]) / 5 < losses[0]
    assert not prior.training and prior.mean.shape == (4,)
    s = prior.sample(1000, generator=torch.Generator().manual_seed(1))  # DDPM over all T = 100 steps
    assert s.shape == (1000, 4) and not s.requires_grad
    assert _fit_failures(s) == []


def test_fit_check_rejects_broken_priors(fitted):
    prior, _, data = fitted
    n = 1000
    g = torch.Generator().manual_seed(5)
    assert _fit_failures(_toy(n, seed=1)) == []  # the true distribution passes
    assert _fit_failures(data.mean(0).expand(n, 4).clone())  # a prior that outputs the mean
    untrained = ActivationPrior(4, **SMALL)
    untrained.set_statistics(data)
    assert _fit_failures(untrained.sample(n, generator=g, num_inference_steps=20))  # untrained network
    independent = torch.stack([c[torch.randperm(len(c), generator=g)] for c in data.T], 1)[:n]
    assert any("dim3" in f for f in _fit_failures(independent))  # right marginals, no correlation
    gaussian = torch.distributions.MultivariateNormal(data.mean(0), torch.cov(data.T)).sample((n,))
    assert any("near 0" in f for f in _fit_failures(gaussian))  # right mean and covariance, not bimodal


def test_ddim_sampling(fitted):
    prior = fitted[0]
    s = prior.sample(1000, generator=torch.Generator().manual_seed(2), num_inference_steps=20)
    assert s.shape == (1000, 4)
    assert _fit_failures(s) == []
    # deterministic DDIM: only the initial noise is random
    s10 = prior.sample(8, generator=torch.Generator().manual_seed(3), num_inference_steps=10)
    torch.testing.assert_close(prior.sample(8, generator=torch.Generator().manual_seed(3), num_inference_steps=10), s10)
    assert prior.sample(3, num_inference_steps=2).shape == (3, 4)


@pytest.mark.parametrize("steps", [None, 2, 20, 55, 99])
def test_sampling_timestep_grid(steps):
    prior = ActivationPrior(2, **TINY)
    seen = []
    prior.net.register_forward_pre_hook(lambda module, args: seen.append(int(args[1][0])))
    prior.sample(1, num_inference_steps=steps)
    n = 100 if steps is None else steps
    # every grid spans the whole schedule (also for n > T / 2, where a stride of T // n = 1 would not)
    assert len(seen) == n and seen[0] == 99 and seen[-1] == 0
    assert all(a > b for a, b in zip(seen, seen[1:]))


def test_seeded_sampling_is_reproducible(fitted):
    prior = fitted[0]
    a = prior.sample(16, generator=torch.Generator().manual_seed(7))
    b = prior.sample(16, generator=torch.Generator().manual_seed(7))
    c = prior.sample(16, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    # chunked sampling gives the right number of rows
    assert prior.sample(10, generator=torch.Generator().manual_seed(7), num_inference_steps=5, batch_size=3).shape == (
        10,
        4,
    )


def test_state_dict_round_trip(fitted):
    prior = fitted[0]
    buffer = io.BytesIO()
    torch.save(prior.state_dict(), buffer)
    buffer.seek(0)
    fresh = ActivationPrior(num_prototypes=4, channels=(16, 32, 64), norm_num_groups=8)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(fresh.mean, prior.mean) and torch.equal(fresh.std, prior.std)
    for steps in (None, 10):
        a = prior.sample(12, generator=torch.Generator().manual_seed(4), num_inference_steps=steps)
        b = fresh.sample(12, generator=torch.Generator().manual_seed(4), num_inference_steps=steps)
        assert torch.equal(a, b)
    rebuilt = ActivationPrior(**prior.config)
    rebuilt.load_state_dict(prior.state_dict())
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(rebuilt.sample(5, generator=g1), prior.sample(5, generator=g2))


def test_fit_is_reproducible_and_leaves_global_rng_alone():
    data = _toy(64, seed=2)
    state = torch.get_rng_state()
    p1, l1 = fit_activation_prior(data, epochs=2, batch_size=16, lr=1e-3, seed=3, **TINY)
    assert torch.equal(torch.get_rng_state(), state)
    p2, l2 = fit_activation_prior(data, epochs=2, batch_size=16, lr=1e-3, seed=3, **TINY)
    p3, l3 = fit_activation_prior(data, epochs=2, batch_size=16, lr=1e-3, seed=4, **TINY)
    assert l1 == l2 and l1 != l3 and len(l1) == 2
    for (k, a), b in zip(p1.state_dict().items(), p2.state_dict().values()):
        assert torch.equal(a, b), k
    # a batch larger than the data set and the plain ε parameterisation
    p4, l4 = fit_activation_prior(data[:5], epochs=1, batch_size=256, seed=0, parameterization="epsilon", **TINY)
    assert p4.parameterization == "epsilon" and len(l4) == 1 and p4.sample(2).shape == (2, 4)


def test_loss_method():
    prior = ActivationPrior(3, **TINY)
    prior.set_statistics(torch.randn(10, 3))
    loss = prior.loss(torch.randn(6, 3), generator=torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and loss.requires_grad
    loss.backward()
    assert prior.net.conv_out.weight.grad is not None
    batch = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    again = prior.loss(batch, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(again)


def test_default_schedule_ends_in_noise():
    prior = ActivationPrior(2)
    assert prior.num_train_timesteps == 100 and prior.config["channels"] == (64, 128, 256)
    ab = prior.scheduler.alphas_cumprod
    assert ab[-1] < 1e-3 and ab[0] > 0.99
    assert prior.config["beta_start"] == pytest.approx(1e-3) and prior.config["beta_end"] == pytest.approx(0.2)
    explicit = ActivationPrior(2, beta_start=1e-4, beta_end=0.02)
    assert explicit.scheduler.betas[-1].item() == pytest.approx(0.02)


# ---------------------------------------------------------------------------------------------- encode_dataset
def test_encode_dataset_batches_and_models():
    net = tiny_patronus(num_prototypes=6).train()
    images = torch.rand(7, 1, 12, 12) * 2 - 1
    expected = net.encode(images).detach()
    as_dicts = [{"image": images[:3], "label": 0}, {"image": images[3:]}]
    s = encode_dataset(net, as_dicts)
    assert s.shape == (7, 6) and not s.requires_grad and s.device.type == "cpu"
    torch.testing.assert_close(s, expected)
    assert net.training  # mode restored
    torch.testing.assert_close(encode_dataset(net, [images[:4], images[4:]]), expected)
    torch.testing.assert_close(encode_dataset(net, [(images[:2], "x"), [images[2:], 1]]), expected)
    torch.testing.assert_close(
        encode_dataset(net, [{"img": MetaTensor(images)}], image_key="img", device="cpu"), expected
    )
    torch.testing.assert_close(encode_dataset(net, images), expected)  # one batch
    loader = torch.utils.data.DataLoader([{"image": im} for im in images], batch_size=3)
    torch.testing.assert_close(encode_dataset(net, loader), expected)
    # a bare PrototypeEncoder is called
    enc = tiny_encoder(num_prototypes=5)
    torch.testing.assert_close(encode_dataset(enc, {"image": images}), enc(images).detach())
    # and the result feeds the prior
    prior, _ = fit_activation_prior(encode_dataset(net, as_dicts), epochs=1, **TINY)
    assert prior.sample(2).shape == (2, 6)


def test_encode_dataset_errors():
    net = tiny_patronus(num_prototypes=6)
    images = torch.rand(2, 1, 12, 12)
    with pytest.raises(TypeError, match="data_iterable"):
        encode_dataset(net, 5)
    with pytest.raises(TypeError, match="data_iterable"):
        encode_dataset(net, "images")
    with pytest.raises(ValueError, match="no batches"):
        encode_dataset(net, [])
    with pytest.raises(ValueError, match="batch 0 has no key 'image'"):
        encode_dataset(net, [{"img": images}])
    with pytest.raises(TypeError, match="batch 0"):
        encode_dataset(net, [{"image": images.numpy()}])
    with pytest.raises(ValueError, match=r"\(B, C, \*spatial\)"):
        encode_dataset(net, [torch.rand(2, 12)])
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        encode_dataset(torch.nn.Identity(), [images])


# ---------------------------------------------------------------------------------------------- argument errors
@pytest.mark.parametrize(
    "kwargs",
    [{"channels": ()}, {"channels": (64, 12)}, {"channels": (0, 8)}, {"num_res_blocks": 0}, {"norm_num_groups": 0}],
)
def test_unet_argument_errors(kwargs):
    with pytest.raises(ValueError, match="ActivationPriorUNet: channels must be positive multiples of norm_num_groups"):
        ActivationPriorUNet(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_prototypes": 0}, "num_prototypes=0"),
        ({"num_prototypes": 4, "num_train_timesteps": 1}, "num_train_timesteps=1"),
        ({"num_prototypes": 4, "beta_start": 0.0}, "beta_start=0.0"),
        ({"num_prototypes": 4, "beta_end": 1.5}, "beta_end=1.5"),
        ({"num_prototypes": 4, "beta_start": 0.1, "beta_end": 0.01}, "beta_start <= beta_end"),
        ({"num_prototypes": 4, "min_std": 0}, "min_std=0"),
        ({"num_prototypes": 4, "parameterization": "x0"}, "x0"),
        ({"num_prototypes": 4, "channels": (8, 10)}, "norm_num_groups"),
    ],
)
def test_prior_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ActivationPrior(**kwargs)


def test_prior_method_errors():
    prior = ActivationPrior(3, **TINY)
    for bad in ([[1.0, 2.0, 3.0]], torch.randn(3), torch.randn(5, 4), torch.randn(1, 3)):
        with pytest.raises(ValueError, match=r"shape \(M >= 2, num_prototypes=3\)"):
            prior.set_statistics(bad)
    with pytest.raises(ValueError, match="NaN or inf"):
        prior.set_statistics(torch.tensor([[0.0, 1.0, float("nan")], [0.0, 1.0, 2.0]]))
    for bad in (1, 101, 0):
        with pytest.raises(ValueError, match=r"num_inference_steps must be None or an int in \[2, 100\]"):
            prior.sample(2, num_inference_steps=bad)


@pytest.mark.parametrize(
    "activations, match",
    [
        (torch.randn(5), r"shape \(M >= 2, num_prototypes=5\)"),
        (torch.randn(1, 3), "got shape \\(1, 3\\)"),
        (torch.tensor([[1.0, float("inf")], [0.0, 0.0]]), "NaN or inf"),
    ],
)
def test_fit_argument_errors(activations, match):
    with pytest.raises(ValueError, match=match):
        fit_activation_prior(activations, **TINY)
    with pytest.raises(ValueError, match="norm_num_groups"):
        fit_activation_prior(torch.randn(4, 2), channels=(8, 12))


class _Payload:
    """Unpickling this runs ``marker.touch()``: what a crafted prior file would do with ``weights_only=False``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_load_prior_reads_a_saved_prior_and_runs_no_code_from_a_crafted_one(fitted, tmp_path):
    from monai_patronus.interpret import load_prior

    prior, losses = fitted[0], fitted[1]
    good = tmp_path / "prior.pt"
    torch.save({"config": prior.config, "state_dict": prior.state_dict(), "losses": losses}, good)  # as train_prior
    loaded = load_prior(good)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(loaded.sample(4, generator=g1), prior.sample(4, generator=g2))

    marker = tmp_path / "pwned"
    crafted = tmp_path / "crafted.pt"
    torch.save({"config": _Payload(marker), "state_dict": prior.state_dict()}, crafted)
    with pytest.raises(ValueError, match=r"crafted\.pt is not an activation prior .* never unpickled"):
        load_prior(crafted)
    assert not marker.exists()
    torch.save({"weights": prior.state_dict()}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="no 'config'/'state_dict'"):
        load_prior(tmp_path / "other.pt")
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"cut\.pt is not an activation prior"):
        load_prior(tmp_path / "cut.pt")
