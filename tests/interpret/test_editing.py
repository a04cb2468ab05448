"""Editing through ``s``: each semantic check must pass for a network that uses ``s`` (the parts toy, where ``s_k``
says whether shape ``k`` is drawn in quadrant ``k``) and fail for the same network with its condition replaced by
a fixed vector (``IgnoresS``), which still inverts and reconstructs every image but cannot follow an edit."""

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
from tests._helpers import IgnoresS, quadrant, randomize_zero_init, shows, tiny_patronus

N = 10  # DDIM steps for the plumbing checks: enough to exercise every path, CI-sized
STEPS = 20  # DDIM steps for the semantic checks (the toy follows an edit at 20; see tests/_helpers.train_parts_toy)


@pytest.fixture(scope="module", params=["uses_s", "ignores_s"])
def model(request, parts_toy, one_thread):
    """``(images, network, inferer, uses_s, s, low, high)``: the parts toy, or the same network ignoring ``s``;
    ``s`` are the 16 images' activations and ``low``/``high`` their per-prototype extremes (the plausible range)."""
    images, net, inferer, _ = parts_toy
    with torch.no_grad():
        s = net.encode(images)
    uses_s = request.param == "uses_s"
    network = net if uses_s else IgnoresS(net, s.mean(0, keepdim=True)).eval()
    return images, network, inferer, uses_s, s, s.min(0).values, s.max(0).values


def where_it_changed(edited: torch.Tensor, unedited: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: is the most-changed pixel in quadrant ``k``, and the share of ``|edited - unedited|`` inside it
    (chance 0.25; 0 where nothing changed)."""
    diff = (edited - unedited).abs()[:, 0]
    mask = quadrant(k)
    total = diff.flatten(1).sum(1)
    share = torch.where(total > 1e-6, diff[:, mask].sum(1) / total.clamp_min(1e-12), torch.zeros_like(total))
    top_in = mask.flatten()[diff.flatten(1).argmax(1)] & (total > 1e-6)
    return top_in, share


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Rank correlation; 0 where ``y`` is flat (a sweep that changed nothing)."""
    if float(y.max() - y.min()) < 1e-3:
        return 0.0
    rx, ry = x.argsort().argsort().double(), y.argsort().argsort().double()
    return float(torch.corrcoef(torch.stack([rx, ry]))[0, 1])


# ---------------------------------------------------------------------------------------------------------------
# exact / argument checks


def test_edit_activations_exact():
    s = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    out = edit_activations(s, set={0: 9.0}, scale={1: 2.0}, add={2: 0.5}, suppress=[0])
    assert torch.equal(out, torch.tensor([[0.0, 4.0, 3.5], [0.0, 10.0, 6.5]]))
    assert torch.equal(s, torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))  # a copy
    assert torch.equal(edit_activations(s, set={1: torch.tensor([7.0, 8.0])})[:, 1], torch.tensor([7.0, 8.0]))
    assert torch.equal(plausible_maximum(s), torch.tensor([4.0, 5.0, 6.0]))
    with pytest.raises(ValueError, match=r"set prototype index must be an int in \[0, 3\), got 3"):
        edit_activations(s, set={3: 1.0})


def test_slerp_endpoints_and_norm():
    a, b = torch.zeros(1, 4), torch.zeros(1, 4)
    a[0, 0], b[0, 1] = 2.0, 2.0
    torch.testing.assert_close(slerp(a, b, 0.0), a)
    torch.testing.assert_close(slerp(a, b, 1.0), b)
    mid = slerp(a, b, 0.5)
    assert float(mid.norm()) == pytest.approx(2.0)  # stays on the sphere, unlike linear interpolation
    torch.testing.assert_close(slerp(a, 2 * a, 0.5), 1.5 * a)  # parallel: linear fallback


def test_editing_plumbing(parts_toy, one_thread):
    """Shapes, identities and argument checks (no claim about whether an edit took: see the tests below)."""
    images, net, inferer, _ = parts_toy
    x = images[[0, 5, 10, 15]]
    s = net.encode(x)
    same = edit_images(inferer, net, x, edited_activations=s, num_inference_steps=N)
    torch.testing.assert_close(same.edited, same.reconstructed)  # the unedited vector reproduces the reconstruction
    torch.testing.assert_close(same.edited_encoded, net.encode(same.edited))
    raised = edit_images(inferer, net, x, set={3: float(s[:, 3].max()) + 1.0}, num_inference_steps=N)
    assert torch.equal(raised.edited_activations[:, 3], torch.full((4,), float(s[:, 3].max()) + 1.0))
    torch.testing.assert_close(raised.edited_encoded, net.encode(raised.edited))
    assert raised.edited.shape == x.shape and raised.latents.shape == x.shape
    with pytest.raises(ValueError, match="not both"):
        edit_images(inferer, net, x, edited_activations=s, suppress=[0], num_inference_steps=N)

    path = interpolate(inferer, net, x[:1], x[1:2], steps=4, num_inference_steps=N)
    assert path.shape == (4, 1, 16, 16)
    ends = inferer.reconstruct(inferer.invert(x[:2], net, s[:2], N), net, s[:2], N)
    torch.testing.assert_close(path[[0, -1]], ends, atol=1e-5, rtol=1e-5)

    sweep = extrapolate(inferer, net, x[:1], prototype=2, values=[0.0, 1.5, 3.0], num_inference_steps=N)
    assert sweep.shape == (3, 1, 16, 16)
    with pytest.raises(ValueError, match="at least one value"):
        extrapolate(inferer, net, x[:1], prototype=2, values=[], num_inference_steps=N)
    v1 = variations(inferer, net, x[:1], num=3, num_inference_steps=N, generator=torch.Generator().manual_seed(0))
    v2 = variations(inferer, net, x[:1], num=3, num_inference_steps=N, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(v1, v2)
    assert (v1[0] - v1[1]).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------------------------------
# does the edit take? (toy: yes; the condition-ignoring control: no)


def test_raising_a_prototype_draws_its_shape_in_its_quadrant(model):
    """``set={k: plausible max}`` on the images lacking shape ``k``: ``edited_encoded[:, k]`` rises well above the
    unedited reconstruction's ``s_k`` (a share of the intended change ``max - s_k(x)``), and the pixels that
    changed most lie in shape ``k``'s quadrant."""
    images, net, inferer, uses_s, s, _, high = model
    efficacy, top_in, share = [], [], []
    for k in range(4):
        idx = shows(k, False)
        r = edit_images(inferer, net, images[idx], set={k: float(high[k])}, num_inference_steps=STEPS)
        assert torch.equal(r.edited_activations[:, k], high[k].expand(len(idx)))
        unedited = net.encode(r.reconstructed)[:, k]
        efficacy.append((r.edited_encoded[:, k] - unedited) / (high[k] - s[idx, k]))
        t, sh = where_it_changed(r.edited, r.reconstructed, k)
        top_in.append(t)
        share.append(sh)
    efficacy, top_in, share = torch.stack(efficacy), torch.stack(top_in), torch.stack(share)  # (4 prototypes, 8)
    report = (
        f"efficacy per prototype (median) {efficacy.median(1).values.tolist()}, min {float(efficacy.min()):.3f}, "
        f"share > 0.3: {float((efficacy > 0.3).float().mean()):.2f}; most-changed pixel in quadrant "
        f"{float(top_in.float().mean()):.2f}; change in quadrant (median share, chance 0.25) "
        f"{float(share.median()):.2f}"
    )
    print(report)
    took = bool(
        (efficacy.median(1).values > 0.2).all() and (efficacy > 0.3).float().mean() >= 0.5 and (efficacy > 0.05).all()
    )
    placed = bool(top_in.float().mean() >= 0.9 and share.median() > 0.35)
    assert took == uses_s, report
    assert placed == uses_s, report
    if not uses_s:  # the control regenerates exactly the unedited reconstruction
        assert float(efficacy.abs().max()) < 1e-3, report


def test_suppressing_a_prototype_removes_its_shape(model):
    """``suppress=[k]`` on the images showing shape ``k`` lowers ``s_k`` of the result below the unedited
    reconstruction's, by a share of the achievable drop ``s_k(x) - min s_k`` (0 is below the plausible range),
    with the change concentrated in shape ``k``'s quadrant."""
    images, net, inferer, uses_s, s, low, _ = model
    efficacy, share = [], []
    for k in range(4):
        idx = shows(k, True)
        r = edit_images(inferer, net, images[idx], suppress=[k], num_inference_steps=STEPS)
        assert torch.equal(r.edited_activations[:, k], torch.zeros(len(idx)))
        unedited = net.encode(r.reconstructed)[:, k]
        efficacy.append((unedited - r.edited_encoded[:, k]) / (s[idx, k] - low[k]))
        share.append(where_it_changed(r.edited, r.reconstructed, k)[1])
    efficacy, share = torch.stack(efficacy), torch.stack(share)
    report = (
        f"drop share per prototype (median) {efficacy.median(1).values.tolist()}, min {float(efficacy.min()):.3f}, "
        f"share > 0.3: {float((efficacy > 0.3).float().mean()):.2f}; change in quadrant (median share, "
        f"chance 0.25) {float(share.median()):.2f}"
    )
    print(report)
    took = bool(
        (efficacy.median(1).values > 0.2).all() and (efficacy > 0.3).float().mean() >= 0.5 and (efficacy > 0.05).all()
    )
    assert took == uses_s, report
    assert bool(share.median() > 0.35) == uses_s, report
    if not uses_s:
        assert float(efficacy.abs().max()) < 1e-3, report


def test_extrapolation_sweeps_the_prototype(model):
    """Sweeping ``s_k`` from 0 to its plausible maximum on an image lacking shape ``k``: ``s_k`` of the outputs
    rises with the value swept (rank correlation, last above first); flat for the control."""
    images, net, inferer, uses_s, _, low, high = model
    rho, rise = [], []
    for k in range(4):
        for i in shows(k, False)[::4]:  # two images per prototype
            values = torch.linspace(0.0, float(high[k]), 7)
            sweep = extrapolate(inferer, net, images[i : i + 1], prototype=k, values=values, num_inference_steps=STEPS)
            assert sweep.shape == (7, 1, 16, 16)
            sk = net.encode(sweep)[:, k]
            rho.append(spearman(values, sk))
            rise.append(float(sk[-1] - sk[0]) / float(high[k] - low[k]))
    rho, rise = torch.tensor(rho), torch.tensor(rise)
    report = (
        f"Spearman {[round(v, 2) for v in rho.tolist()]}; (last - first) / range {[round(v, 2) for v in rise.tolist()]}"
    )
    print(report)
    follows = bool(rho.median() > 0.6 and (rho > 0).all() and rise.median() > 0.2 and (rise > 0.05).all())
    assert follows == uses_s, report
    if not uses_s:
        assert float(rise.abs().max()) < 1e-3, report


def test_interpolation_follows_the_activation_path(model):
    """``interpolate`` is linear in ``s`` and slerp in ``x_T``. The ``x_T`` half alone (same slerped noise,
    ``s`` held at image a's) also moves from a to b through exact inversion, for any network; so the check is that
    the images' ``s`` lies nearer the intended linear ``s`` path than that latent-only path's does. For the control
    the two paths are the same images."""
    images, net, inferer, uses_s, s, _, _ = model
    steps = 5
    weights = torch.linspace(0, 1, steps)
    gained = []
    for a, b in ((0, 15), (0, 1), (4, 12), (9, 11)):
        path = interpolate(inferer, net, images[a : a + 1], images[b : b + 1], steps=steps, num_inference_steps=STEPS)
        pair = images[[a, b]]
        with torch.no_grad():
            latents = inferer.invert(pair, net, s[[a, b]], STEPS)
            noise = torch.cat([slerp(latents[:1], latents[1:], float(w)) for w in weights])
            latent_only = inferer.reconstruct(noise, net, s[a : a + 1].expand(steps, -1), STEPS)
        torch.testing.assert_close(path[0], latent_only[0])  # same start: the reconstruction of a
        intended = (1 - weights[:, None]) * s[a] + weights[:, None] * s[b]
        err_path = (net.encode(path) - intended).abs().mean(1)[1:].sum()
        err_latent_only = (net.encode(latent_only) - intended).abs().mean(1)[1:].sum()
        gained.append(float(err_latent_only - err_path))
    report = f"error to the intended s path removed by the s half (latent-only minus path, summed over w > 0): {gained}"
    print(report)
    assert bool(min(gained) > 0.5) == uses_s, report
    if not uses_s:
        assert max(abs(g) for g in gained) < 1e-3, report


def test_variations_depend_on_the_activations(model):
    """The same noise with two images' ``s`` gives different variations for the toy and the same ones for the
    control. (Only a difference: from fresh noise this toy does not generate in-range images -- its 20-step
    samples reach |x| ~ 40 -- so whether the variations *show* the image's shapes cannot be checked on it.)"""
    images, net, inferer, uses_s, _, _, _ = model
    va = variations(
        inferer, net, images[0:1], num=2, num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0)
    )
    vb = variations(
        inferer, net, images[15:16], num=2, num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0)
    )
    difference = float((va - vb).abs().mean())
    print(f"mean |variations(no shapes) - variations(all shapes)| with the same noise: {difference:.4f}")
    assert (difference > 0.05) == uses_s


# ---------------------------------------------------------------------------------------------------------------
# 3-D


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
    assert (
        float((result.reconstructed - volumes).abs().mean())
        <= float((full.reconstructed - volumes).abs().mean()) + 1e-6
    )
