from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from monai.networks.schedulers import DDIMScheduler
from torch import nn

from monai_patronus.evaluation.generation import (
    FeatureExtractor,
    conditional_fid,
    extract_features,
    fid,
    image_similarity,
    load_feature_extractor,
    reconstruction_metrics,
    unconditional_fid,
)
from monai_patronus.inferers.patronus_inferer import PatronusInferer
from monai_patronus.interpret.prior import fit_activation_prior
from monai_patronus.utils import psnr
from tests._helpers import randomize_zero_init, tiny_patronus

pytestmark = pytest.mark.usefixtures("one_thread")


class _ConvFeatures(nn.Module):
    """A small 2-D feature network taking 3-channel inputs and returning spatial maps (N, 6, h, w)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3)
        self.conv2 = nn.Conv2d(8, 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x)))


def _reference_fid(x: np.ndarray, y: np.ndarray) -> float:
    """Brute force: ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2))."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = randomize_zero_init(tiny_patronus(num_prototypes=6)).eval()
    inferer = PatronusInferer(DDIMScheduler(num_train_timesteps=1000, clip_sample=False))
    return net, inferer


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(1)
    return torch.rand(6, 1, 16, 16, generator=g) * 2 - 1


# ---------------------------------------------------------------------------------------------- FID
def test_fid_identical_is_zero():
    x = torch.randn(40, 5, dtype=torch.float64)
    assert fid(x, x) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_fid_matches_bruteforce_reference(seed):
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(30, 4))
    fake = rng.normal(size=(25, 4)) @ rng.normal(size=(4, 4)) + 0.7
    expected = _reference_fid(real, fake)
    assert fid(torch.from_numpy(real), torch.from_numpy(fake)) == pytest.approx(expected, rel=1e-6)
    assert fid(real.astype(np.float32), fake) == pytest.approx(expected, rel=1e-4)  # numpy inputs too
    assert fid(fake, real) == pytest.approx(expected, rel=1e-6)


def test_fid_grows_with_shift():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(50, 4, generator=g)
    other = torch.randn(50, 4, generator=g)
    values = [fid(real, other + shift) for shift in (0.0, 0.5, 2.0)]
    assert values[0] < values[1] < values[2]


def test_fid_errors():
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match=r"fake_features must be finite features of shape \(N, F\) with N >= 2"):
        fid(x, x[:1])
    with pytest.raises(ValueError, match=r"real_features must .* F >= 2 features.*got shape \(10, 1\)"):
        fid(x[:, :1], x[:, :1])
    with pytest.raises(ValueError, match=r"real_features has F=3 features but fake_features F=2"):
        fid(x, x[:, :2])
    with pytest.raises(ValueError, match=r"real_features must be finite features of shape \(N, F\)"):
        fid(x[None], x)
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="fake_features must be finite"):
        fid(x, bad)


# ---------------------------------------------------------------------------------------------- extractors
def test_feature_extractor_range_and_grey_to_rgb_exact():
    x = torch.tensor([-1.0, 0.0, 0.5, 1.0]).view(1, 1, 2, 2).repeat(2, 1, 1, 1)
    fx = FeatureExtractor(lambda t: t, channels=3, pool="flatten")
    adapted = fx.adapt(x)
    expected01 = torch.tensor([0.0, 0.5, 0.75, 1.0]).view(1, 1, 2, 2).repeat(2, 3, 1, 1)
    assert torch.equal(adapted, expected01)
    assert torch.equal(fx(x), expected01.flatten(1))
    # byte range, identity range, per-channel normalisation
    assert torch.equal(
        FeatureExtractor(lambda t: t, input_range=(0, 255)).adapt(x),
        torch.tensor([0.0, 127.5, 191.25, 255.0]).view(1, 1, 2, 2).repeat(2, 1, 1, 1),
    )
    assert torch.equal(FeatureExtractor(lambda t: t, input_range=(-1, 1)).adapt(x), x)
    norm = FeatureExtractor(lambda t: t, channels=3, mean=(0.5, 0.0, 1.0), std=(0.5, 1.0, 0.25)).adapt(x)
    assert torch.equal(norm[:, 0], (expected01[:, 0] - 0.5) / 0.5)
    assert torch.equal(norm[:, 2], (expected01[:, 2] - 1.0) / 0.25)
    # avg pooling of spatial outputs gives (N, C)
    assert torch.equal(fx.__class__(lambda t: t, channels=3)(x), expected01.mean(dim=(2, 3)))


def test_feature_extractor_resize_and_3d():
    x = torch.full((2, 1, 4, 4), 0.2)
    out = FeatureExtractor(lambda t: t, channels=3, size=8).adapt(x)
    assert out.shape == (2, 3, 8, 8)
    torch.testing.assert_close(out, torch.full_like(out, 0.6))  # constant image stays constant
    vol = torch.zeros(1, 1, 4, 4, 4)
    out3 = FeatureExtractor(lambda t: t, channels=3, size=(6, 5, 4)).adapt(vol)
    assert out3.shape == (1, 3, 6, 5, 4)
    assert FeatureExtractor(lambda t: t)(vol).shape == (1, 1)


def test_feature_extractor_errors():
    with pytest.raises(ValueError, match=r"input_range must be \(low, high\) with low < high"):
        FeatureExtractor(lambda t: t, input_range=(1, 0))
    with pytest.raises(ValueError, match="'max' is not a valid value"):
        FeatureExtractor(lambda t: t, pool="max")
    with pytest.raises(TypeError, match="network must be an nn.Module or a callable"):
        FeatureExtractor(3)
    with pytest.raises(ValueError, match="images have 2 channels but channels=3"):
        FeatureExtractor(lambda t: t, channels=3)(torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match=r"the network returned shape \(3,\)"):
        FeatureExtractor(lambda t: torch.zeros(3))(torch.zeros(2, 1, 4, 4))


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_torchscript_round_trip(tmp_path, images):
    module = _ConvFeatures().eval()
    path = tmp_path / "extractor.pt"
    torch.jit.script(module).save(str(path))
    loaded = load_feature_extractor(path)
    assert isinstance(loaded, torch.jit.ScriptModule) and not loaded.training
    batches = [{"image": images[:4]}, {"image": images[4:]}]
    direct = extract_features(FeatureExtractor(module, channels=3), batches)
    scripted = extract_features(FeatureExtractor(loaded, channels=3), batches, batch_size=3)
    assert direct.shape == (6, 6) and direct.dtype == torch.float64 and direct.device.type == "cpu"
    torch.testing.assert_close(scripted, direct)
    # a plain module is wrapped with the defaults (channels kept: here a 1-channel network)
    one = nn.Conv2d(1, 4, 3)
    torch.testing.assert_close(
        extract_features(one, images), one((images + 1) / 2).mean(dim=(2, 3)).double(), rtol=1e-6, atol=1e-6
    )


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_torch_export_archive_round_trip(tmp_path, images):
    module = _ConvFeatures().eval()
    example = torch.zeros(2, 3, 16, 16)
    program = torch.export.export(module, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    path = tmp_path / "extractor.pt2"
    torch.export.save(program, str(path))
    loaded = load_feature_extractor(path)  # torch.jit.load is tried first, then torch.export.load
    direct = extract_features(FeatureExtractor(module, channels=3), images)
    exported = extract_features(FeatureExtractor(loaded, channels=3), images, batch_size=4)
    torch.testing.assert_close(exported, direct)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_load_feature_extractor_errors(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_feature_extractor(missing)
    pickled = tmp_path / "state.pt"
    torch.save(_ConvFeatures().state_dict(), pickled)
    with pytest.raises(ValueError, match=r"state\.pt.*is not a TorchScript archive"):
        load_feature_extractor(pickled)
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    with pytest.raises(ValueError, match="not a TorchScript archive"):
        load_feature_extractor(text)
    with pytest.raises(FileNotFoundError, match="no feature extractor file"):
        load_feature_extractor(tmp_path)
    with pytest.raises(TypeError, match="load a file with load_feature_extractor"):
        extract_features(str(text), torch.zeros(2, 1, 4, 4))


def test_extract_features_errors():
    with pytest.raises(ValueError, match="data yielded no images"):
        extract_features(lambda t: t, [])


# ---------------------------------------------------------------------------------------------- end to end
def test_conditional_fid_end_to_end(model, images):
    net, inferer = model
    fx = FeatureExtractor(_ConvFeatures(), channels=3)
    batches = [{"image": images[:3]}, {"image": images[3:]}]
    value = conditional_fid(net, inferer, batches, fx, num_inference_steps=2, seed=0)
    assert isinstance(value, float) and math.isfinite(value) and value >= 0
    assert conditional_fid(net, inferer, batches, fx, num_inference_steps=2, seed=0) == value  # seeded
    assert not net.training


def test_unconditional_fid_end_to_end(model, images):
    net, inferer = model
    s = net.encode(images).detach()
    prior, _ = fit_activation_prior(s, epochs=1, batch_size=6, channels=(8,), norm_num_groups=4, num_train_timesteps=10)
    fx = FeatureExtractor(_ConvFeatures(), channels=3)
    settings = dict(num_samples=4, num_inference_steps=2, prior_inference_steps=2, generation_batch_size=3)
    value = unconditional_fid(net, inferer, prior, fx, images, **settings)
    assert isinstance(value, float) and math.isfinite(value) and value >= 0
    real = extract_features(fx, images)
    assert unconditional_fid(net, inferer, prior, fx, images, real_features=real, **settings) == value
    # a one-shot iterator of batches is read once (shape from its first batch, features from all)
    once = unconditional_fid(
        net,
        inferer,
        prior,
        fx,
        iter([images[:3], images[3:]]),
        num_samples=4,
        num_inference_steps=2,
        prior_inference_steps=2,
    )
    assert once == pytest.approx(value, rel=1e-6)
    with pytest.raises(ValueError, match="fake_features must be finite features of shape"):
        unconditional_fid(net, inferer, prior, fx, images, num_samples=1)
    other, _ = fit_activation_prior(
        torch.randn(6, 3), epochs=1, channels=(8,), norm_num_groups=4, num_train_timesteps=10
    )
    with pytest.raises(ValueError, match=r"prior models K=3 activations but the network has num_prototypes=6"):
        unconditional_fid(net, inferer, other, fx, images, num_samples=4)


def test_reconstruction_metrics_2d_and_psnr_reference(model, images):
    net, inferer = model
    out = reconstruction_metrics(
        net, inferer, [images[:4], images[4:]], num_inference_steps=3, return_reconstructions=True
    )
    assert out["num_images"] == 6 and out["ssim_win_size"] == (11, 11)
    assert math.isfinite(out["psnr"]) and -1.0 <= out["ssim"] <= 1.0
    recon = out["reconstructions"]
    assert recon.shape == images.shape and recon.abs().max() <= 1.0
    # MONAI's PSNR (mean over images) equals the package's brute-force psnr on the same tensors
    assert out["psnr"] == pytest.approx(float(psnr(recon, images).mean()), rel=1e-5)
    assert image_similarity(recon, images)["psnr"] == pytest.approx(out["psnr"], rel=1e-6)


def test_reconstruction_metrics_3d():
    torch.manual_seed(0)
    net = randomize_zero_init(tiny_patronus(spatial_dims=3, num_prototypes=4)).eval()
    inferer = PatronusInferer(DDIMScheduler(num_train_timesteps=1000, clip_sample=False))
    vol = torch.rand(2, 1, 8, 8, 8) * 2 - 1
    out = reconstruction_metrics(net, inferer, vol, num_inference_steps=2)
    assert out["ssim_win_size"] == (7, 7, 7) and out["num_images"] == 2
    assert math.isfinite(out["psnr"]) and math.isfinite(out["ssim"])


def test_image_similarity_identity_and_window(images):
    same = image_similarity(images, images)
    assert same["ssim"] == pytest.approx(1.0, abs=1e-6) and same["psnr"] == math.inf
    small = torch.rand(3, 1, 6, 5) * 2 - 1
    res = image_similarity(small, small.flip(-1))
    assert res["ssim_win_size"] == (5, 5) and res["ssim"] < 1.0
    with pytest.raises(ValueError, match="SSIM needs win_size >= 3 and every spatial size >= 3"):
        image_similarity(torch.zeros(1, 1, 2, 8), torch.zeros(1, 1, 2, 8))
    with pytest.raises(ValueError, match=r"targets must lie in \[-1, 1\]"):
        image_similarity(images, images * 3)
    with pytest.raises(ValueError, match="SSIM needs win_size >= 3"):
        image_similarity(images, images, win_size=1)
