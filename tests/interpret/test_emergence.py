from __future__ import annotations

import pytest
import torch

from monai_patronus.interpret import emergence_times, prototype_emergence


def test_emergence_times_brute_force():
    curves = torch.tensor([[0.0, 5.0, 1.0], [0.2, 4.0, 1.0], [0.6, 2.0, 1.0], [1.0, 1.0, 1.0]])  # (S=4, K=3)
    # prototype 0 rises 0 -> 1 (half at step 2: 0.6 >= 0.5), 1 falls 5 -> 1 (half = 3 at step 2: 2.0 <= 3),
    # 2 never changes (step 0)
    assert emergence_times(curves).tolist() == [2, 2, 0]
    assert emergence_times(curves, fraction=1.0).tolist() == [3, 3, 0]
    for k in range(3):  # brute force: scan the steps for the first that reaches half the total change
        total = curves[-1, k] - curves[0, k]
        expected = next(i for i in range(4) if i == 3 or (curves[i, k] - curves[0, k]) * torch.sign(total) >= 0.5 * total.abs())
        assert int(emergence_times(curves)[k]) == expected
    with pytest.raises(ValueError, match="fraction"):
        emergence_times(curves, fraction=0.0)


def test_emergence_run_matches_plain_sampling(trained_digits):
    images, net, inferer, _ = trained_digits
    noise = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    s = net.encode(images[:3])
    result = prototype_emergence(inferer, net, noise, s, num_inference_steps=10)
    torch.testing.assert_close(result.final, inferer.sample(noise, net, s, 10))
    assert result.timesteps.tolist() == list(range(900, -1, -100))
    assert result.activations.shape == (10, 3, net.num_prototypes)
    # the last x̂0 is (almost) the final image, so the last curve point is its encoding
    torch.testing.assert_close(result.activations[-1], net.encode(result.final), atol=1e-3, rtol=1e-3)
    assert torch.equal(result.emergence_step, emergence_times(result.activations))
    assert torch.equal(result.emergence_timestep, result.timesteps[result.emergence_step])
    # during an edit: from an inverted latent, partway
    latents = inferer.invert(images[:3], net, s, 10, depth=4)
    edit = prototype_emergence(inferer, net, latents, s, num_inference_steps=10, depth=4)
    assert edit.timesteps.tolist() == [400, 300, 200, 100]
    torch.testing.assert_close(edit.final, inferer.reconstruct(latents, net, s, 10, depth=4))
