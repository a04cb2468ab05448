"""Prototype visualisation ("what and where"): raising ``s_k`` must raise it and draw the pattern where the
prototype's box lands, for a network that uses ``s`` (the parts toy: prototype ``k`` is shape ``k``, drawn in
quadrant ``k``), and must not for the same network with its condition replaced by a fixed vector."""

from __future__ import annotations

import pytest
import torch
from monai.networks.schedulers import DDIMScheduler

from monai_patronus.inferers import PatronusInferer
from monai_patronus.interpret import visualize_prototypes
from tests._helpers import IgnoresS, quadrant, randomize_zero_init, shows, tiny_patronus

STEPS = 20


@pytest.mark.parametrize("uses_s", [True, False], ids=["uses_s", "ignores_s"])
def test_visualisation_raises_the_prototype_in_its_quadrant(parts_toy, one_thread, uses_s):
    images, net, inferer, _ = parts_toy
    with torch.no_grad():
        s = net.encode(images)
    if not uses_s:
        net = IgnoresS(net, s.mean(0, keepdim=True)).eval()
    span = s.max(0).values - s.min(0).values
    results = visualize_prototypes(inferer, net, images, num_inference_steps=STEPS)
    assert [r.prototype for r in results] == [0, 1, 2, 3]
    raised, placed = [], []
    for r in results:
        k = r.prototype
        # internal consistency
        assert r.image_index == int(r.gains.argmax()) and r.gains.shape == (16,)
        assert torch.equal(r.original, images[r.image_index])
        assert r.target == pytest.approx(float(s[:, k].max()))  # the plausible maximum
        assert r.activation_original == pytest.approx(float(s[r.image_index, k]))
        assert r.activation_after - r.activation_before == pytest.approx(float(r.gains.max()), abs=1e-5)
        maps = net.prototype_encoder(r.regenerated[None], return_maps=True)
        assert r.activation_after == pytest.approx(float(maps.activations[0, k]), rel=1e-4)  # batched vs single
        expected_box = net.prototype_encoder.boxes(maps.locations[0, k], (16, 16)).tolist()
        assert [list(b) for b in r.box] == expected_box
        assert tuple(r.patch.shape[1:]) == tuple(b - a for a, b in r.box)
        # did raising s_k raise it? on the images lacking shape k (those showing it are at the target already)
        lacking = r.gains[shows(k, False)]
        rise = (r.activation_after - r.activation_before) / float(span[k])
        raised.append((round(rise, 3), round(float(lacking.median() / span[k]), 3)))
        # where: the box of the chosen image lies in shape k's quadrant, and that image lacked shape k
        box = torch.zeros(16, 16, dtype=torch.bool)
        box[r.box[0][0] : r.box[0][1], r.box[1][0] : r.box[1][1]] = True
        placed.append(bool((box & ~quadrant(k)).sum() == 0 and not r.image_index >> k & 1))
    report = (
        f"(rise of the chosen image, median gain of the images lacking the shape) / range of s_k: {raised}; "
        f"box in the right quadrant on an image lacking the shape: {placed}; boxes {[r.box for r in results]}"
    )
    print(report)
    assert all(rise > 0.3 and median > 0.15 for rise, median in raised) == uses_s, report
    assert all(placed) == uses_s, report
    if not uses_s:  # ~0: the regenerated images differ from the originals only by the inversion error
        assert all(abs(rise) < 0.1 and abs(median) < 0.1 for rise, median in raised), report


def test_visualisation_3d_and_errors():
    net = randomize_zero_init(tiny_patronus(spatial_dims=3, num_prototypes=3), std=0.02).eval()
    inferer = PatronusInferer(DDIMScheduler(1000, clip_sample=False))
    volumes = torch.rand(3, 1, 8, 8, 8) * 2 - 1
    (r,) = visualize_prototypes(inferer, net, volumes, prototypes=[2], num_inference_steps=4, batch_size=2)
    assert len(r.box) == 3 and r.patch.ndim == 4
    with pytest.raises(ValueError, match=r"prototypes must be indices in \[0, 3\) .*got \[5\]"):
        visualize_prototypes(inferer, net, volumes, prototypes=[5])
    with pytest.raises(ValueError, match=r"images must have shape \(N >= 1, 1, \*3 spatial dims\)"):
        visualize_prototypes(inferer, net, volumes[0])
