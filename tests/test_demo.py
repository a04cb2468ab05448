from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from monai_patronus.demo import main
from monai_patronus.utils import psnr


@pytest.fixture
def trained(trained_digits):
    return trained_digits


def test_training_reduces_the_denoising_loss(trained):
    _, _, _, losses = trained
    assert len(losses) == 300
    assert sum(losses[-50:]) / 50 < 0.35 * sum(losses[:50]) / 50


def test_inversion_reconstructs_far_better_than_fresh_noise(trained):
    images, net, inferer, _ = trained
    x0 = images[:8]
    with torch.no_grad():
        s = net.encode(x0)
    latents = inferer.invert(x0, net, num_inference_steps=50)
    recon = inferer.reconstruct(latents, net, s, num_inference_steps=50)
    fresh = inferer.sample(torch.randn(x0.shape, generator=torch.Generator().manual_seed(1)), net, s, 50)
    # compare images as displayed: clamp to the data range [-1, 1]
    psnr_recon = float(psnr(recon.clamp(-1, 1), x0).mean())
    psnr_fresh = float(psnr(fresh.clamp(-1, 1), x0).mean())
    print(f"PSNR reconstruction {psnr_recon:.2f} dB, fresh-noise sample {psnr_fresh:.2f} dB")
    assert psnr_recon > 25.0
    assert psnr_recon > psnr_fresh + 10.0
    # the inverted latents look like noise, not like the image
    assert 0.6 < float(latents.std()) < 1.4


def test_demo_writes_grid_and_summary(tmp_path):
    summary = main(["--steps", "3", "--num-images", "8", "--inference-steps", "4", "--output-dir", str(tmp_path)])
    grid = Image.open(tmp_path / "patronus_demo.png")
    assert grid.size == ((8 * 17 + 1) * 4, (4 * 17 + 1) * 4)  # 8 columns, 4 rows of 16-px tiles, 1-px gaps, x4
    assert json.loads((tmp_path / "summary.json").read_text()) == pytest.approx(summary)
    assert set(summary) >= {"psnr_reconstruction_db", "psnr_fresh_noise_sample_db", "train_seconds"}


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
