from __future__ import annotations

import pytest
import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from monai_patronus.inferers import DenoisingStep, PatronusInferer
from tests._helpers import randomize_zero_init, tiny_patronus

pytestmark = pytest.mark.usefixtures("one_thread")


def _net(spatial_dims=2):
    return randomize_zero_init(tiny_patronus(spatial_dims, num_prototypes=5), std=0.05).eval()


class _Recorder(torch.nn.Module):
    """Wraps a model and records the timesteps it is called with."""

    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, []

    def condition_vector(self, *args, **kwargs):
        return self.net.condition_vector(*args, **kwargs)

    def forward(self, x, timesteps, context=None):
        self.calls.append(int(timesteps[0]))
        return self.net(x, timesteps, context=context)


def _ddim(**kw):
    return DDIMScheduler(**(dict(num_train_timesteps=1000, clip_sample=False) | kw))


class _Cheap(torch.nn.Module):
    """A network-free stand-in (ε = 0.1 x + 0.01 t / T) that records its timesteps: for long grids."""

    def __init__(self, T=1000):
        super().__init__()
        self.T, self.calls = T, []

    def condition_vector(self, x, context):
        return context

    def forward(self, x, timesteps, context=None):
        self.calls.append(int(timesteps[0]))
        return 0.1 * x + 0.01 * timesteps.view(-1, *[1] * (x.ndim - 1)) / self.T


MONAI_GRID_10 = [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]  # round(linspace(999, 0, 10))


def test_training_forward_is_noise_prediction_on_clean_image_condition():
    net, inf = _net(), PatronusInferer(_ddim())
    x0, noise, t = torch.rand(3, 1, 16, 16) * 2 - 1, torch.randn(3, 1, 16, 16), torch.tensor([0, 400, 999])
    x_t = inf.scheduler.add_noise(x0, noise, t)
    expected = net(x_t, t, image=x0)
    torch.testing.assert_close(inf(x0, net, noise, t), expected)
    torch.testing.assert_close(inf(x0, net, noise, t, condition=net.encode(x0)), expected)
    with pytest.raises(ValueError, match="mode"):
        inf(x0, net, noise, t, mode="concat")


def test_ddim_grid_shared_by_sampling_inversion_and_reconstruction():
    rec, inf = _Recorder(_net()), PatronusInferer(_ddim())
    x = torch.randn(2, 1, 16, 16)
    inf.sample(x, rec, x, num_inference_steps=10)
    assert rec.calls == MONAI_GRID_10
    rec.calls.clear()
    latents = inf.invert(x, rec, num_inference_steps=10)
    assert rec.calls == MONAI_GRID_10[:0:-1]
    rec.calls.clear()
    inf.reconstruct(latents, rec, x, num_inference_steps=10)
    assert rec.calls == MONAI_GRID_10[:-1]


def test_every_grid_spans_the_whole_chain():
    """A3: for every N in [2, T] the grid is DDIMScheduler.set_timesteps(N)'s, from T - 1 down to 0."""
    inf, T = PatronusInferer(_ddim()), 1000
    monai = _ddim()
    for n in range(2, T + 1):
        grid = inf._grid(n)
        monai.set_timesteps(n)
        assert torch.equal(grid, monai.timesteps.flip(0)), n
        assert len(grid) == n and grid[0] == 0 and grid[-1] == T - 1 and bool((grid.diff() > 0).all()), n
    for T_small in (2, 3, 10, 97):  # other T: still strictly increasing from 0 to T - 1
        small = PatronusInferer(_ddim(num_train_timesteps=T_small))
        for n in range(2, T_small + 1):
            grid = small._grid(n)
            assert grid[0] == 0 and grid[-1] == T_small - 1 and bool((grid.diff() > 0).all()), (T_small, n)
    x, s = torch.randn(1, 1, 2, 2), torch.rand(1, 5)
    for n in (2, 3, 7, 50, 334, 501, 600, 999, 1000):
        net = _Cheap(T)
        out = inf.sample(x, net, s, num_inference_steps=n)
        assert net.calls == inf._grid(n).flip(0).tolist() and net.calls[0] == T - 1 and bool(out.isfinite().all()), n
        assert net.calls[-1] == 0 and len(set(net.calls)) == n
        net.calls.clear()
        inf.invert(x, net, s, num_inference_steps=n)
        assert net.calls == inf._grid(n)[:-1].tolist(), n  # evaluated at 0 .. t_{N-2}; the result is at T - 1
    assert inf.scheduler.num_inference_steps == T  # the inferer never re-grids the scheduler


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("clip_sample", [False, True])
def test_steps_match_monai_where_its_stride_is_the_grid(prediction_type, clip_sample):
    """Where MONAI's fixed stride T // N is the step taken, every move equals DDIMScheduler.step / reversed_step."""
    inf = PatronusInferer(_ddim(prediction_type=prediction_type, clip_sample=clip_sample))
    monai = _ddim(prediction_type=prediction_type, clip_sample=clip_sample)
    g = torch.Generator().manual_seed(0)
    x, out = torch.randn(2, 1, 4, 4, generator=g), torch.randn(2, 1, 4, 4, generator=g)
    for n in (4, 7, 50, 1000):
        monai.set_timesteps(n)
        stride = 1000 // n
        for t in (0, stride - 1, stride, 500, 999):
            for eta in (0.0, 1.0):
                ours = inf._ddim_step(out, t, t - stride, x, eta, torch.Generator().manual_seed(1))
                ref = monai.step(out, t, x, eta=eta, generator=torch.Generator().manual_seed(1))
                for a, b in zip(ours, ref):
                    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
            if t + stride < 1000 and not clip_sample:
                ours = inf._ddim_step(out, t, t + stride, x)
                for a, b in zip(ours, monai.reversed_step(out, t, x)):
                    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_sampling_matches_monai_when_its_grid_and_stride_agree():
    """For N = T, MONAI's grid T-1 .. 0 and its stride T // N = 1 agree: the whole chain must equal MONAI's loop."""
    net, T = _net(), 20
    inf, monai = PatronusInferer(_ddim(num_train_timesteps=T)), _ddim(num_train_timesteps=T)
    noise, s = torch.randn(1, 1, 8, 8), torch.rand(1, 5)
    monai.set_timesteps(T)
    x = noise
    with torch.no_grad():
        for t in monai.timesteps.tolist():
            x, _ = monai.step(net(x, torch.tensor([t]), activations=s), t, x)
    torch.testing.assert_close(inf.sample(noise, net, s, T), x, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("T, n", [(50, 7), (400, 334)])
def test_fixed_point_inversion_is_exact_on_uneven_grids(T, n):
    """The grid's steps differ (e.g. 8 and 9, or 1 and 2): the refined inversion must still be undone exactly."""
    net, inf = _net(), PatronusInferer(_ddim(num_train_timesteps=T))
    x0 = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    errors = {}
    for m in (0, 4):
        latents = inf.invert(x0, net, num_inference_steps=n, fixed_point_iterations=m)
        errors[m] = float((inf.reconstruct(latents, net, x0, num_inference_steps=n) - x0).abs().max())
    assert errors[4] < 1e-3 and errors[4] < 0.1 * errors[0], errors


def test_trajectory_yields_x_t_and_predicted_clean_image():
    net, inf = _net(), PatronusInferer(_ddim())
    noise, s = torch.randn(2, 1, 16, 16), torch.rand(2, 5)
    steps = list(inf.trajectory(noise, net, s, num_inference_steps=8))
    assert len(steps) == 8 and all(isinstance(st, DenoisingStep) for st in steps)
    assert [st.timestep for st in steps] == [999, 856, 714, 571, 428, 285, 143, 0]  # round(linspace(999, 0, 8))
    torch.testing.assert_close(steps[0].sample, noise)
    for prev, nxt in zip(steps, steps[1:]):
        torch.testing.assert_close(prev.prev_sample, nxt.sample)
    # x̂0 = (x_t - sqrt(1 - ᾱ_t) ε) / sqrt(ᾱ_t)
    st = steps[3]
    a = inf.scheduler.alphas_cumprod[st.timestep]
    eps = net(st.sample, torch.full((2,), st.timestep), activations=s)
    torch.testing.assert_close(st.pred_original, (st.sample - (1 - a).sqrt() * eps) / a.sqrt(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(inf.sample(noise, net, s, num_inference_steps=8), steps[-1].prev_sample)


def test_batched_equals_one_by_one():
    net, inf = _net(), PatronusInferer(_ddim())
    noise, s = torch.randn(3, 1, 16, 16), torch.rand(3, 5)
    batched = inf.sample(noise, net, s, num_inference_steps=6)
    singles = torch.cat([inf.sample(noise[i : i + 1], net, s[i : i + 1], num_inference_steps=6) for i in range(3)])
    # atol: the first step, at t = T - 1, divides by sqrt(alpha_bar) = 0.006, amplifying batch-size rounding
    torch.testing.assert_close(batched, singles, atol=1e-4, rtol=1e-5)
    inverted = inf.invert(noise, net, num_inference_steps=6)
    torch.testing.assert_close(inverted[1:2], inf.invert(noise[1:2], net, num_inference_steps=6), atol=1e-5, rtol=1e-5)


def test_eta_noise_is_seeded():
    net, inf = _net(), PatronusInferer(_ddim())
    noise, s = torch.randn(2, 1, 16, 16), torch.rand(2, 5)

    def run(eta, seed):
        return inf.sample(noise, net, s, 5, eta=eta, generator=torch.Generator().manual_seed(seed))

    torch.testing.assert_close(run(1.0, 1), run(1.0, 1))
    assert (run(1.0, 1) - run(1.0, 2)).abs().max() > 1e-3
    torch.testing.assert_close(run(0.0, 1), run(0.0, 2))
    assert (run(0.0, 1) - run(1.0, 1)).abs().max() > 1e-3


def test_conditioning_changes_samples_and_image_conditioning_is_encoded():
    net, inf = _net(), PatronusInferer(_ddim())
    noise, x0 = torch.randn(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    s = net.encode(x0)
    torch.testing.assert_close(inf.sample(noise, net, x0, 5), inf.sample(noise, net, s, 5))
    assert (inf.sample(noise, net, s + 2.0, 5) - inf.sample(noise, net, s, 5)).abs().max() > 1e-4


def test_ddpm_sampling_runs_every_timestep():
    rec = _Recorder(_net())
    inf = PatronusInferer(DDPMScheduler(num_train_timesteps=20))
    noise = torch.randn(1, 1, 16, 16)
    out = inf.sample(noise, rec, torch.rand(1, 5), generator=torch.Generator().manual_seed(0))
    assert rec.calls == list(range(19, -1, -1)) and out.shape == noise.shape
    with pytest.raises(ValueError, match="must be 20"):
        inf.sample(noise, rec, torch.rand(1, 5), num_inference_steps=10)
    with pytest.raises(ValueError, match="takes no eta"):
        inf.sample(noise, rec, torch.rand(1, 5), eta=0.5)
    with pytest.raises(ValueError, match="reversed_step"):
        inf.invert(noise, rec)


def test_inversion_refuses_clipping_scheduler():
    with pytest.raises(ValueError, match="clip_sample=False"):
        PatronusInferer(DDIMScheduler(1000)).invert(torch.randn(1, 1, 16, 16), _net())


def test_inversion_error_shrinks_with_more_steps():
    """DDIM inversion is exact in the limit of small steps: the round-trip error must fall as N grows."""
    net, inf = _net(), PatronusInferer(_ddim())
    with torch.no_grad():  # a smoother random ε-predictor (large random outputs make DDIM unstable)
        for p in net.out.parameters():
            p.mul_(0.1)
    x0 = torch.rand(2, 1, 16, 16) * 2 - 1
    errors = []
    for n in (5, 50, 500):
        recon = inf.reconstruct(inf.invert(x0, net, num_inference_steps=n), net, x0, num_inference_steps=n)
        errors.append(float((recon - x0).abs().max()))
    assert errors[2] < errors[1] < errors[0]
    assert errors[2] < 0.25 * errors[0]


def test_3d_sampling_and_inversion():
    net, inf = _net(spatial_dims=3), PatronusInferer(_ddim())
    x0 = torch.rand(1, 1, 8, 8, 8)
    latents = inf.invert(x0, net, num_inference_steps=4)
    assert latents.shape == x0.shape
    assert inf.reconstruct(latents, net, x0, num_inference_steps=4).shape == x0.shape
    assert len(list(inf.trajectory(latents, net, x0, num_inference_steps=4))) == 4


def test_bf16_autocast_close_to_float32():
    net = _net()
    noise, s = torch.randn(2, 1, 16, 16), torch.rand(2, 5)
    ref = PatronusInferer(_ddim()).sample(noise, net, s, 5)
    bf16 = PatronusInferer(_ddim(), autocast_dtype="bfloat16").sample(noise, net, s, 5)
    assert bf16.dtype == torch.float32
    assert float((bf16 - ref).norm() / ref.norm()) < 0.05
    x0, t = torch.rand(2, 1, 16, 16), torch.tensor([5, 50])
    assert PatronusInferer(_ddim(), autocast_dtype=torch.bfloat16)(x0, net, noise, t).dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    net, inf = _net(), PatronusInferer(_ddim())
    noise, s = torch.randn(2, 1, 16, 16), torch.rand(2, 5)
    cpu = inf.sample(noise, net, s, 5)
    gpu = inf.sample(noise.cuda(), net.cuda(), s.cuda(), 5)
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        (dict(scheduler="ddim"), TypeError, "scheduler must be a MONAI Scheduler"),
        (dict(autocast_dtype="int8"), ValueError, "Unsupported option 'int8'"),
        (dict(autocast_dtype=torch.float64), ValueError, "autocast_dtype"),
    ],
)
def test_invalid_constructor_arguments(kwargs, exc, words):
    with pytest.raises(exc, match=words):
        PatronusInferer(**(dict(scheduler=_ddim()) | kwargs))


def test_invalid_call_arguments():
    net, inf = _net(), PatronusInferer(_ddim())
    noise, s = torch.randn(1, 1, 16, 16), torch.rand(1, 5)
    for n in (1, 1001, 5.0, True):
        with pytest.raises(ValueError, match=f"num_inference_steps must be an int in \\[2, 1000\\], got {n}"):
            inf.sample(noise, net, s, num_inference_steps=n)
    with pytest.raises(ValueError, match="eta must be a float >= 0, got -1"):
        inf.sample(noise, net, s, 5, eta=-1)
    with pytest.raises(ValueError, match="inputs must be a float tensor"):
        inf.invert(noise.numpy(), net)
    with pytest.raises(ValueError, match=r"latents must be a float tensor"):
        inf.reconstruct(torch.zeros(1, 1, 16, 16, dtype=torch.long), net, s)
    with pytest.raises(TypeError, match="PatronusUNet"):
        inf.sample(noise, torch.nn.Identity(), s, 5)


def test_progress_bar(capsys):
    net, inf = _net(), PatronusInferer(_ddim())
    x = torch.randn(1, 1, 16, 16)
    inf.invert(x, net, num_inference_steps=3, verbose=True)
    inf.sample(x, net, x, num_inference_steps=3, verbose=True)
    err = capsys.readouterr().err
    assert "inverting" in err and "denoising" in err


def test_trajectory_checks_arguments_eagerly_and_survives_interleaved_calls():
    net, inf = _net(), PatronusInferer(_ddim())
    x, s = torch.randn(1, 1, 16, 16), torch.rand(1, 5)
    with pytest.raises(ValueError, match="num_inference_steps"):
        inf.trajectory(x, net, s, num_inference_steps=1)  # raised at the call, before any iteration
    for eta in (0.0, 1.0):
        reference = list(inf.trajectory(x, net, s, 8, eta=eta, generator=torch.Generator().manual_seed(0)))
        lazy = inf.trajectory(x, net, s, 8, eta=eta, generator=torch.Generator().manual_seed(0))
        inf.invert(x, net, num_inference_steps=10)  # A4: another grid BEFORE the first step
        first = next(lazy)
        inf.sample(x, net, s, num_inference_steps=3)  # and between steps
        steps = [first, *lazy]
        assert (
            [st.timestep for st in steps] == [st.timestep for st in reference] == [999, 856, 714, 571, 428, 285, 143, 0]
        )
        for a, b in zip(steps, reference):
            assert torch.equal(a.prev_sample, b.prev_sample) and torch.equal(a.pred_original, b.pred_original)
    assert first.prev_sample.requires_grad is False


def test_partial_inversion_retraces_the_same_steps():
    rec, inf = _Recorder(_net()), PatronusInferer(_ddim())
    x = torch.randn(2, 1, 16, 16)
    latents = inf.invert(x, rec, num_inference_steps=10, depth=4)
    assert rec.calls == [0, 111, 222, 333]
    rec.calls.clear()
    out = inf.reconstruct(latents, rec, x, num_inference_steps=10, depth=4)
    assert rec.calls == [444, 333, 222, 111]
    steps = list(inf.trajectory(latents, rec, x, num_inference_steps=10, depth=4))
    torch.testing.assert_close(steps[-1].prev_sample, out)
    # a shallow round trip changes the image less than a full one
    full = inf.reconstruct(inf.invert(x, rec, num_inference_steps=10), rec, x, num_inference_steps=10)
    assert float((out - x).abs().mean()) <= float((full - x).abs().mean()) + 1e-6
    for bad in (0, 10, 2.5):
        with pytest.raises(ValueError, match=f"depth must be an int in \\[1, 9\\].*got {bad}"):
            inf.invert(x, rec, num_inference_steps=10, depth=bad)


def test_inversion_iterations_default_and_validation():
    rec = _Recorder(_net())
    inf = PatronusInferer(_ddim(), inversion_iterations=2)
    x = torch.randn(1, 1, 16, 16)
    inf.invert(x, rec, num_inference_steps=4)
    assert rec.calls == [0, 333, 333, 333, 666, 666, 666, 999, 999]  # each step: 1 call + 2 refinements at its end
    rec.calls.clear()
    inf.invert(x, rec, num_inference_steps=4, fixed_point_iterations=0)
    assert rec.calls == [0, 333, 666]
    with pytest.raises(ValueError, match="inversion_iterations must be an int >= 0, got -1"):
        PatronusInferer(_ddim(), inversion_iterations=-1)


# ---------------------------------------------------------------- classifier-free guidance and sample_clip
from monai_patronus.networks import PatronusUNet  # noqa: E402
from tests._helpers import tiny_encoder  # noqa: E402


def _guided_net(condition_dropout: float = 0.1) -> PatronusUNet:
    """The tiny net (K = 5) with a null condition, its zero-initialised convs randomised (so that ``ε(s)`` and
    ``ε(∅)`` differ visibly) and a random null condition, in eval mode."""
    net = PatronusUNet(
        2,
        1,
        tiny_encoder(2, 5),
        channels=(8, 16),
        num_res_blocks=1,
        norm_num_groups=4,
        dropout=0.0,
        condition_dropout=condition_dropout,
    )
    randomize_zero_init(net, std=0.05)
    if net.null_condition is not None:
        with torch.no_grad():
            net.null_condition.normal_()
    return net.eval()


def _psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0) -> float:
    return float(10 * torch.log10(data_range**2 / (a - b).square().mean()))


@torch.no_grad()
def test_guided_prediction_equals_brute_force():
    net = _guided_net()
    x, s, t = torch.randn(3, 1, 16, 16), torch.rand(3, 5) * 4, 400
    timesteps = torch.full((3,), t)
    cond = net(x, timesteps, context=s)
    uncond = net(x, timesteps, context=s, unconditional=torch.ones(3, dtype=torch.bool))
    assert (cond - uncond).abs().max() > 1e-2  # the two predictions differ, so the weighting is visible
    assert torch.equal(PatronusInferer(_ddim())._predict(net, x, t, s), cond)  # w = 1: the conditional output as is
    for w in (0.0, 0.5, 2.0, 7.5):
        guided = PatronusInferer(_ddim(), guidance_scale=w)._predict(net, x, t, s)
        torch.testing.assert_close(guided, uncond + w * (cond - uncond), atol=1e-5, rtol=1e-5)
    # one (1, K) vector for the whole batch
    guided = PatronusInferer(_ddim(), guidance_scale=3.0)._predict(net, x, t, s[:1])
    c1 = net(x, timesteps, context=s[:1])
    u1 = net(x, timesteps, context=s[:1], unconditional=torch.ones(3, dtype=torch.bool))
    torch.testing.assert_close(guided, u1 + 3.0 * (c1 - u1), atol=1e-5, rtol=1e-5)


class _CountingNet(torch.nn.Module):
    """Records the batch size of every network call (guidance makes one call of 2N)."""

    def __init__(self, net):
        super().__init__()
        self.net, self.batches = net, []

    def condition_vector(self, *args, **kwargs):
        return self.net.condition_vector(*args, **kwargs)

    def forward(self, x, timesteps, context=None, unconditional=None):
        self.batches.append(x.shape[0])
        return self.net(x, timesteps, context=context, unconditional=unconditional)


def test_guidance_applies_to_sampling_in_one_batched_call_per_step():
    counting = _CountingNet(_guided_net())
    noise, s = torch.randn(2, 1, 16, 16), torch.rand(2, 5)
    guided = PatronusInferer(_ddim(), guidance_scale=3.0).sample(noise, counting, s, 4)
    assert counting.batches == [4] * 4
    plain = PatronusInferer(_ddim()).sample(noise, counting.net, s, 4)
    assert (guided - plain).abs().max() > 1e-3
    # w != 1 needs a null condition
    with pytest.raises(ValueError, match="condition_dropout"):
        PatronusInferer(_ddim(), guidance_scale=2.0).sample(noise, _guided_net(condition_dropout=0.0), s, 4)


def test_guided_inversion_is_undone_by_guided_reconstruction():
    """Inversion and reconstruction use the same guided prediction, so the fixed-point round trip is exact with
    guidance too; undoing a guided inversion with the unguided prediction is not."""
    net = _guided_net()
    with torch.no_grad():  # a smoother random ε-predictor (large random outputs make DDIM unstable)
        for p in net.out.parameters():
            p.mul_(0.1)
    x0 = torch.rand(2, 1, 16, 16) * 2 - 1
    # guidance roughly doubles the step map's Lipschitz constant, so the fixed point converges more slowly than
    # unguided (here 43 dB after 5 iterations, 60 dB after 10; unguided: 59 dB after 5)
    guided = PatronusInferer(_ddim(), guidance_scale=2.0, inversion_iterations=10)
    latents = guided.invert(x0, net, num_inference_steps=10)
    recon = guided.reconstruct(latents, net, x0, num_inference_steps=10)
    psnr = _psnr(recon, x0)
    assert psnr > 50.0, psnr
    mismatched = PatronusInferer(_ddim()).reconstruct(latents, net, x0, num_inference_steps=10)
    assert _psnr(mismatched, x0) < psnr - 10.0, (_psnr(mismatched, x0), psnr)
    # the latents themselves depend on the guidance
    plain_latents = PatronusInferer(_ddim(), inversion_iterations=10).invert(x0, net, num_inference_steps=10)
    assert (plain_latents - latents).abs().max() > 1e-3


def test_sample_clip_bounds_predicted_clean_images_when_sampling_from_noise():
    net = _net()
    noise, s = torch.randn(2, 1, 16, 16), torch.rand(2, 5)
    free = list(PatronusInferer(_ddim()).trajectory(noise, net, s, 10))
    clipped = list(PatronusInferer(_ddim(), sample_clip=1.0).trajectory(noise, net, s, 10))
    assert max(float(st.pred_original.abs().max()) for st in free) > 1.0  # without clipping x̂0 leaves [-1, 1]
    assert all(float(st.pred_original.abs().max()) <= 1.0 for st in clipped)
    # the first step sees the same x_T: its x̂0 is the unclipped one, clamped
    torch.testing.assert_close(clipped[0].pred_original, free[0].pred_original.clamp(-1, 1))
    assert (clipped[-1].prev_sample - free[-1].prev_sample).abs().max() > 1e-3
    # the last step goes to alpha = 1, so the sample is x̂0 itself: inside the range
    sample = PatronusInferer(_ddim(), sample_clip=1.0).sample(noise, net, s, 10)
    torch.testing.assert_close(sample, clipped[-1].prev_sample)
    assert float(sample.abs().max()) <= 1.0 + 1e-6
    half = list(PatronusInferer(_ddim(), sample_clip=0.5).trajectory(noise, net, s, 10))
    assert all(float(st.pred_original.abs().max()) <= 0.5 for st in half)


def test_sample_clip_never_touches_inversion_or_reconstruction():
    net = _net()
    x0 = torch.rand(2, 1, 16, 16) * 2 - 1
    plain, clip = (
        PatronusInferer(_ddim(), inversion_iterations=2),
        PatronusInferer(_ddim(), sample_clip=1.0, inversion_iterations=2),
    )
    latents = plain.invert(x0, net, num_inference_steps=10)
    assert torch.equal(clip.invert(x0, net, num_inference_steps=10), latents)
    for depth in (9, 4):
        a = list(plain.trajectory(latents, net, x0, 10, depth=depth))
        b = list(clip.trajectory(latents, net, x0, 10, depth=depth))
        assert len(a) == len(b) == depth
        for u, v in zip(a, b):
            assert torch.equal(u.pred_original, v.pred_original) and torch.equal(u.prev_sample, v.prev_sample)
    # the setting is such that clipping would have mattered: x̂0 leaves [-1, 1] on the reconstruction path
    assert (
        max(float(st.pred_original.abs().max()) for st in a + list(plain.trajectory(latents, net, x0, 10, depth=9)))
        > 1.0
    )
    assert torch.equal(clip.reconstruct(latents, net, x0, 10), plain.reconstruct(latents, net, x0, 10))


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(guidance_scale=-1), "guidance_scale must be a float >= 0.*got -1"),
        (dict(guidance_scale=float("nan")), "guidance_scale"),
        (dict(sample_clip=0), "sample_clip must be a float > 0.*got 0"),
        (dict(sample_clip=-1), "sample_clip.*got -1"),
    ],
)
def test_invalid_guidance_and_clip_arguments(kwargs, words):
    with pytest.raises(ValueError, match=words):
        PatronusInferer(_ddim(), **kwargs)
    inf = PatronusInferer(_ddim(), guidance_scale=0, sample_clip=2)  # the limits: 0 is allowed for w, ints are fine
    assert inf.guidance_scale == 0.0 and inf.sample_clip == 2.0
