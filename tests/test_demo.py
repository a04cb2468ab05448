from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from monai_patronus.demo import build_tiny_patronus, main
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
    reconstruction PSNR proves nothing. What training changes is where inversion lands: a trained
    ε-predictor maps images to latents with the statistics of the noise it was trained on; an untrained one
    (zero-initialised output: ε = 0) only rescales the image by sqrt(alpha_bar) and lands near 0."""
    images, net, inferer, _ = trained
    x0 = images[:8]
    untrained = build_tiny_patronus().eval()
    stds = {}
    for name, model in (("trained", net), ("untrained", untrained)):
        latents = inferer.invert(x0, model, num_inference_steps=50)
        stds[name] = float(latents.std())
        correlation = float(torch.corrcoef(torch.stack([latents.flatten(), x0.flatten()]))[0, 1])
        print(f"{name}: inverted latents std {stds[name]:.3f}, correlation with the image {correlation:.3f}")
        if name == "trained":
            assert 0.6 < stds[name] < 1.4 and abs(correlation) < 0.5  # noise-like, not the image
    assert stds["untrained"] < 0.1


def test_demo_writes_grid_and_summary(tmp_path):
    summary = main(["--steps", "3", "--num-images", "8", "--inference-steps", "4", "--output-dir", str(tmp_path)])
    grid = Image.open(tmp_path / "patronus_demo.png")
    assert grid.size == ((8 * 17 + 1) * 4, (4 * 17 + 1) * 4)  # 8 columns, 4 rows of 16-px tiles, 1-px gaps, x4
    assert json.loads((tmp_path / "summary.json").read_text()) == pytest.approx(summary)
    assert set(summary) >= {"inversion_psnr_db", "semantic_gap_psnr_db", "train_seconds"}


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
    with pytest.raises(ValueError, match="fixed_point_iterations must be an int >= 0, got -1"):
        inferer.invert(x0, net, s, 10, fixed_point_iterations=-1)
