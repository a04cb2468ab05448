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
        expected = next(
            i for i in range(4) if i == 3 or (curves[i, k] - curves[0, k]) * torch.sign(total) >= 0.5 * total.abs()
        )
        assert int(emergence_times(curves)[k]) == expected
    with pytest.raises(ValueError, match="fraction"):
        emergence_times(curves, fraction=0.0)


def test_emergence_run_matches_plain_sampling(trained_digits):
    images, net, inferer, _ = trained_digits
    noise = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    s = net.encode(images[:3])
    result = prototype_emergence(inferer, net, noise, s, num_inference_steps=10)
    torch.testing.assert_close(result.final, inferer.sample(noise, net, s, 10))
    # the inferer's own grid, in generation order (decreasing, ending at 0)
    grid = [step.timestep for step in inferer.trajectory(noise, net, s, 10)]
    assert result.timesteps.tolist() == grid and len(grid) == 10 and grid[-1] == 0 and grid == sorted(grid)[::-1]
    assert result.activations.shape == (10, 3, net.num_prototypes)
    # the last x̂0 is (almost) the final image, so the last curve point is its encoding (within the data range)
    torch.testing.assert_close(result.activations[-1], net.encode(result.final.clamp(-1, 1)), atol=1e-3, rtol=1e-3)
    assert torch.equal(result.emergence_step, emergence_times(result.activations))
    assert torch.equal(result.emergence_timestep, result.timesteps[result.emergence_step])
    # during an edit: from an inverted latent, partway
    latents = inferer.invert(images[:3], net, s, 10, depth=4)
    edit = prototype_emergence(inferer, net, latents, s, num_inference_steps=10, depth=4)
    assert edit.timesteps.tolist() == [step.timestep for step in inferer.trajectory(latents, net, s, 10, depth=4)]
    assert edit.timesteps.tolist() == grid[-5:-1]  # t_4 .. t_1 of the same grid
    torch.testing.assert_close(edit.final, inferer.reconstruct(latents, net, s, 10, depth=4))


def _untrained_patronus_and_inferer():
    """Randomly initialised network (zero-init layers randomised, so ε̂ is far from the true noise) and the bundles'
    no-clip DDIM scheduler: x̂0 at high t leaves [-1, 1] by a wide margin."""
    from monai.networks.schedulers import DDIMScheduler

    from monai_patronus.inferers import PatronusInferer
    from tests._helpers import randomize_zero_init, tiny_patronus

    torch.manual_seed(0)
    net = randomize_zero_init(tiny_patronus(num_prototypes=5), std=0.3).eval()
    inferer = PatronusInferer(DDIMScheduler(num_train_timesteps=1000, clip_sample=False))
    return net, inferer


@pytest.mark.usefixtures("one_thread")
def test_emergence_reencodes_clamped_prediction():
    net, inferer = _untrained_patronus_and_inferer()
    noise = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    s = torch.rand(2, net.num_prototypes, generator=torch.Generator().manual_seed(2))
    x0s = [step.pred_original.clone() for step in inferer.trajectory(noise, net, s, 8)]
    assert max(float(x0.abs().max()) for x0 in x0s) > 3.0  # the predicted clean image itself leaves [-1, 1]

    seen: list[torch.Tensor] = []
    hook = net.prototype_encoder.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    try:
        result = prototype_emergence(inferer, net, noise, s, num_inference_steps=8)
        assert len(seen) == 8  # one encoding per step, nothing else (the conditioning is a vector)
        for x_in, x0 in zip(seen, x0s):
            assert float(x_in.min()) >= -1.0 and float(x_in.max()) <= 1.0
            torch.testing.assert_close(x_in, x0.clamp(-1, 1))
        assert seen[0].abs().max() == 1.0  # the clamp was active, not vacuous
        seen.clear()
        narrow = prototype_emergence(inferer, net, noise, s, num_inference_steps=8, data_range=(-0.5, 0.25))
        assert all(float(x.min()) >= -0.5 and float(x.max()) <= 0.25 for x in seen)
        seen.clear()
        raw = prototype_emergence(inferer, net, noise, s, num_inference_steps=8, data_range=None)
        assert max(float(x.abs().max()) for x in seen) > 3.0  # data_range=None: the old, unclamped encoding
    finally:
        hook.remove()
    # the curves are the encodings of the clamped x̂0, and they differ from the unclamped ones
    torch.testing.assert_close(result.activations, torch.stack([net.encode(x0.clamp(-1, 1)) for x0 in x0s]))
    assert not torch.allclose(result.activations, raw.activations)
    assert raw.clamped_fraction is None
    outside = torch.stack([((x0 < -1) | (x0 > 1)).float().mean() for x0 in x0s])
    torch.testing.assert_close(result.clamped_fraction, outside)
    assert result.clamped_fraction[0] > 0.5
    # generation is untouched: the final images are those of plain sampling, whatever the range
    plain = inferer.sample(noise, net, s, 8)
    for r in (result, narrow, raw):
        assert torch.equal(r.final, plain)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("bad", [(1.0, -1.0), (0.0, 0.0), (-1.0,), (-1.0, float("inf"))])
def test_emergence_data_range_errors(bad):
    net, inferer = _untrained_patronus_and_inferer()
    with pytest.raises(ValueError, match="data_range must be"):
        prototype_emergence(
            inferer, net, torch.randn(1, 1, 16, 16), torch.rand(1, net.num_prototypes), 4, data_range=bad
        )
