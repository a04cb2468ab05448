from __future__ import annotations

import pytest
import torch
from monai.networks.schedulers import DDIMScheduler

from monai_patronus.inferers import PatronusInferer
from monai_patronus.interpret import (
    edit_activations,
    edit_images,
    extrapolate,
    interpolate,
    plausible_maximum,
    slerp,
    variations,
)
from tests._helpers import randomize_zero_init, tiny_patronus

N = 10  # DDIM steps: enough to exercise every path, CI-sized


def test_edit_activations_exact():
    s = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    out = edit_activations(s, set={0: 9.0}, scale={1: 2.0}, add={2: 0.5}, suppress=[0])
    assert torch.equal(out, torch.tensor([[0.0, 4.0, 3.5], [0.0, 10.0, 6.5]]))
    assert torch.equal(s, torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))  # a copy
    assert torch.equal(edit_activations(s, set={1: torch.tensor([7.0, 8.0])})[:, 1], torch.tensor([7.0, 8.0]))
    assert torch.equal(plausible_maximum(s), torch.tensor([4.0, 5.0, 6.0]))
    with pytest.raises(ValueError, match=r"set prototype index must be an int in \[0, 3\), got 3"):
        edit_activations(s, set={3: 1.0})
    with pytest.raises(ValueError, match="activations must be a float tensor"):
        edit_activations(torch.ones(3), set={0: 1.0})


def test_slerp_endpoints_and_norm():
    a, b = torch.zeros(1, 4), torch.zeros(1, 4)
    a[0, 0], b[0, 1] = 2.0, 2.0
    torch.testing.assert_close(slerp(a, b, 0.0), a)
    torch.testing.assert_close(slerp(a, b, 1.0), b)
    mid = slerp(a, b, 0.5)
    assert float(mid.norm()) == pytest.approx(2.0)  # stays on the sphere, unlike linear interpolation
    torch.testing.assert_close(slerp(a, 2 * a, 0.5), 1.5 * a)  # parallel: linear fallback


def test_edits_on_trained_model(trained_digits):
    images, net, inferer, _ = trained_digits
    x = images[:4]
    same = edit_images(inferer, net, x, edited_activations=net.encode(x), num_inference_steps=N)
    torch.testing.assert_close(same.edited, same.reconstructed)  # the unedited vector reproduces the reconstruction
    s = net.encode(x)
    raised = edit_images(inferer, net, x, set={3: float(s[:, 3].max()) + 1.0}, num_inference_steps=N)
    assert torch.equal(raised.edited_activations[:, 3], torch.full((4,), float(s[:, 3].max()) + 1.0))
    assert (raised.edited - raised.reconstructed).abs().max() > 1e-4  # the condition changed the output
    with pytest.raises(ValueError, match="not both"):
        edit_images(inferer, net, x, edited_activations=s, suppress=[0], num_inference_steps=N)

    path = interpolate(inferer, net, x[:1], x[1:2], steps=4, num_inference_steps=N)
    assert path.shape == (4, 1, 16, 16)
    ends = inferer.reconstruct(inferer.invert(x[:2], net, s[:2], N), net, s[:2], N)
    torch.testing.assert_close(path[[0, -1]], ends, atol=1e-5, rtol=1e-5)

    sweep = extrapolate(inferer, net, x[:1], prototype=2, values=[0.0, 1.5, 3.0], num_inference_steps=N)
    assert sweep.shape == (3, 1, 16, 16)
    g = torch.Generator().manual_seed(0)
    v1 = variations(inferer, net, x[:1], num=3, num_inference_steps=N, generator=g)
    v2 = variations(inferer, net, x[:1], num=3, num_inference_steps=N, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(v1, v2)
    assert (v1[0] - v1[1]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="steps must be an int >= 2"):
        interpolate(inferer, net, x[:1], x[1:2], steps=1)
    with pytest.raises(ValueError, match="num must be a positive int"):
        variations(inferer, net, x[:1], num=0)


def test_partial_edit_of_a_3d_volume_end_to_end():
    net = randomize_zero_init(tiny_patronus(spatial_dims=3, num_prototypes=4), std=0.02).eval()
    inferer = PatronusInferer(DDIMScheduler(1000, clip_sample=False))
    volumes = torch.rand(2, 1, 8, 8, 8) * 2 - 1
    result = edit_images(inferer, net, volumes, scale={1: 3.0}, num_inference_steps=N, depth=5)
    assert result.edited.shape == volumes.shape and result.latents.shape == volumes.shape
    assert result.edited_encoded.shape == (2, 4)
    assert (result.edited - result.reconstructed).abs().max() > 0
    # a partial inversion keeps the edit closer to the input than a full one
    full = edit_images(inferer, net, volumes, scale={1: 3.0}, num_inference_steps=N)
    assert float((result.reconstructed - volumes).abs().mean()) <= float((full.reconstructed - volumes).abs().mean()) + 1e-6
