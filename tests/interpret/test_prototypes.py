from __future__ import annotations

import pytest
import torch
from monai.networks.schedulers import DDIMScheduler

from monai_patronus.inferers import PatronusInferer
from monai_patronus.interpret import visualize_prototypes
from tests._helpers import randomize_zero_init, tiny_patronus


def test_visualisation_on_trained_model(trained_digits):
    images, net, inferer, _ = trained_digits
    candidates = images[:5]
    results = visualize_prototypes(inferer, net, candidates, prototypes=[0, 3], num_inference_steps=8)
    assert [r.prototype for r in results] == [0, 3]
    s = net.encode(candidates)
    for r in results:
        assert r.image_index == int(r.gains.argmax())
        assert torch.equal(r.original, candidates[r.image_index])
        assert r.target == pytest.approx(float(s[:, r.prototype].max()))  # the plausible maximum
        maps = net.prototype_encoder(r.regenerated[None], return_maps=True)
        assert r.activation_after == pytest.approx(float(maps.activations[0, r.prototype]), abs=1e-6)
        expected_box = net.prototype_encoder.boxes(maps.locations[0, r.prototype], (16, 16)).tolist()
        assert [list(b) for b in r.box] == expected_box
        assert tuple(r.patch.shape[1:]) == tuple(b - a for a, b in r.box)
        assert r.gains.shape == (5,)


def test_visualisation_3d_and_errors():
    net = randomize_zero_init(tiny_patronus(spatial_dims=3, num_prototypes=3), std=0.02).eval()
    inferer = PatronusInferer(DDIMScheduler(1000, clip_sample=False))
    volumes = torch.rand(3, 1, 8, 8, 8) * 2 - 1
    (r,) = visualize_prototypes(inferer, net, volumes, prototypes=[2], num_inference_steps=4, batch_size=2)
    assert len(r.box) == 3 and r.patch.ndim == 4
    with pytest.raises(ValueError, match=r"prototypes must be ints in \[0, 3\), got 5"):
        visualize_prototypes(inferer, net, volumes, prototypes=[5])
    with pytest.raises(ValueError, match="images must be a tensor"):
        visualize_prototypes(inferer, net, volumes[0])
