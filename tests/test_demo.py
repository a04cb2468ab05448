from __future__ import annotations

import pytest
import torch

from monai_patronus.demo import build_tiny_patronus
from monai_patronus.utils import psnr


@pytest.fixture
def trained(trained_digits):
    return trained_digits


def test_training_reduces_the_denoising_loss(trained):
    _, _, _, losses = trained
    assert len(losses) == 300
    assert sum(losses[-50:]) / 50 < 0.35 * sum(losses[:50]) / 50


def test_inversion_maps_images_to_noise_only_when_trained(trained):
    """Exact DDIM inversion reconstructs through any network (an untrained one at > 100 dB), so the
    reconstruction PSNR proves nothing. What training changes is where inversion lands: a trained model maps
    images to latents with the statistics of the noise it was trained on; an untrained one (zero-initialised
    output: v = 0, so x̂0 and ε̂ are both multiples of x_t) only rescales the image, step by step."""
    images, net, inferer, _ = trained
    x0 = images[:8]
    untrained = build_tiny_patronus().eval()
    assert inferer.scheduler.prediction_type == "v_prediction"
    for name, model in (("trained", net), ("untrained", untrained)):
        latents = inferer.invert(x0, model, num_inference_steps=50)
        std = float(latents.std())
        correlation = float(torch.corrcoef(torch.stack([latents.flatten(), x0.flatten()]))[0, 1])
        print(f"{name}: inverted latents std {std:.3f}, correlation with the image {correlation:.3f}")
        if name == "trained":
            assert 0.6 < std < 1.4 and abs(correlation) < 0.5  # noise-like, not the image
        else:
            assert correlation > 0.99  # a rescaled copy of the image


def test_fixed_point_inversion_reconstructs_better_with_few_steps(trained):
    images, net, inferer, _ = trained
    x0 = images[:4]
    with torch.no_grad():
        s = net.encode(x0)
    values = []
    for m in (0, 3):
        latents = inferer.invert(x0, net, s, num_inference_steps=10, fixed_point_iterations=m)
        values.append(float(psnr(inferer.reconstruct(latents, net, s, 10), x0).mean()))
    print(f"10-step reconstruction PSNR: plain {values[0]:.2f} dB, 3 fixed-point iterations {values[1]:.2f} dB")
    assert values[1] > values[0] + 3.0
    with pytest.raises(ValueError, match="fixed_point_iterations must be >= 0, got -1"):
        inferer.invert(x0, net, s, 10, fixed_point_iterations=-1)


def test_the_recipe_model_generation_follows_s(trained):
    """The tiny demo model (trained with the recipe, 300 steps on 16 digits) generates nearer an image from the
    image's own s than from another's; the same network with its condition fixed to the mean s scores exactly
    chance (gap 0) on the same images and noise."""
    from monai_patronus.evaluation import semantic_reconstruction
    from tests._helpers import IgnoresS

    images, net, inferer, _ = trained
    with torch.no_grad():
        fixed = net.encode(images).mean(0, keepdim=True)
    uses = semantic_reconstruction(net, inferer, images, 20, seed=0)
    ignores = semantic_reconstruction(IgnoresS(net, fixed).eval(), inferer, images, 20, seed=0)
    print(
        f"recipe model: gap {uses['psnr']['gap']:+.2f} dB, SSIM {uses['ssim']['gap']:+.3f}, win {uses['win_rate']:.2f}; "
        f"condition fixed: gap {ignores['psnr']['gap']:+.2f} dB"
    )
    assert ignores["psnr"]["gap"] == 0.0 and ignores["win_rate"] == 0.5
    assert uses["psnr"]["gap"] > 1.0 and uses["ssim"]["gap"] > 0.05 and uses["win_rate"] > 0.7
