from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from monai_patronus.networks import PrototypeActivations, PrototypeEncoder
from tests._helpers import tiny_encoder

CASES = [  # spatial_dims, input spatial shape
    (2, (12, 10)),
    (3, (9, 8, 10)),
]


def _encoder(spatial_dims, k=7):
    return tiny_encoder(spatial_dims, num_prototypes=k, in_channels=2)


def _brute_force_distances(z: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Explicit ||z_u - p_k||^2 for every cell and prototype, in float64: (N, K, *spatial)."""
    n, c = z.shape[:2]
    cells = z.double().flatten(2).transpose(1, 2)  # (N, L, C)
    diff = cells[:, :, None, :] - prototypes.double()[None, None]  # (N, L, K, C)
    d = (diff**2).sum(-1).transpose(1, 2)  # (N, K, L)
    return d.reshape(n, prototypes.shape[0], *z.shape[2:])


@pytest.mark.parametrize("spatial_dims, shape", CASES)
def test_distances_equal_brute_force(spatial_dims, shape):
    enc = _encoder(spatial_dims)
    x = torch.randn(3, 2, *shape)
    with torch.no_grad():
        out = enc(x, return_maps=True)
    assert isinstance(out, PrototypeActivations)
    with torch.no_grad():
        expected = _brute_force_distances(enc.features(x), enc.prototypes)
    assert out.distance_maps.shape == expected.shape
    torch.testing.assert_close(out.distance_maps.double(), expected, atol=1e-5, rtol=1e-5)
    # min, argmin and log similarity against the brute force
    dmin = expected.flatten(2).min(2).values
    torch.testing.assert_close(out.min_distances.double(), dmin, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.activations.double(), torch.log((dmin + 1) / (dmin + 1e-4)), atol=1e-4, rtol=1e-5)
    for b in range(3):
        for k in range(enc.num_prototypes):
            loc = tuple(out.locations[b, k].tolist())
            assert expected[(b, k, *loc)] == pytest.approx(float(dmin[b, k]), abs=1e-5)
    torch.testing.assert_close(enc(x), out.activations)


def test_unfold_reference_for_single_layer_2d():
    """With one 1x1-free layer the features are a linear map of unfolded patches: check that route too."""
    enc = PrototypeEncoder(2, 1, num_prototypes=5, channels=(4,), kernel_sizes=3, strides=1, paddings=0, preset=None)
    x = torch.randn(2, 1, 7, 7)
    patches = F.unfold(x, kernel_size=3)  # (N, 9, L)
    conv = enc.features[0]
    z = torch.relu(torch.einsum("oc,ncl->nol", conv.weight.flatten(1), patches) + conv.bias[None, :, None])
    dist = torch.cdist(z.transpose(1, 2).double(), enc.prototypes.double()[None]).pow(2)  # (N, L, K)
    out = enc(x, return_maps=True)
    torch.testing.assert_close(out.distance_maps.flatten(2).double(), dist.transpose(1, 2), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_clamped_at_zero_and_exact_match_gives_max_similarity():
    enc = _encoder(2, k=3)
    x = torch.randn(1, 2, 12, 10)
    z = enc.features(x)
    enc.prototypes[1] = z[0, :, 2, 1]  # a prototype equal to one feature cell
    out = enc(x, return_maps=True)
    assert (out.distance_maps >= 0).all()
    assert out.min_distances[0, 1] == pytest.approx(0.0, abs=1e-5)
    assert out.locations[0, 1].tolist() == [2, 1]
    assert out.activations[0, 1] == pytest.approx(torch.log(torch.tensor(1 / 1e-4)).item(), rel=1e-3)


@pytest.mark.parametrize("spatial_dims, shape", CASES)
def test_locations_map_to_boxes_inside_image(spatial_dims, shape):
    enc = _encoder(spatial_dims)
    out = enc(torch.randn(2, 2, *shape), return_maps=True)
    assert out.locations.shape == (2, enc.num_prototypes, spatial_dims)
    boxes = enc.boxes(out.locations, shape)
    assert boxes.shape == (2, enc.num_prototypes, spatial_dims, 2)
    assert (boxes[..., 0] >= 0).all() and (boxes[..., 1] <= torch.tensor(shape)).all()
    assert (boxes[..., 1] > boxes[..., 0]).all()


def test_paper_init_and_gradients_reach_prototypes():
    enc = PrototypeEncoder(2, 3, num_prototypes=100, preset="small")
    assert enc.prototypes.shape == (100, 128)
    assert 0 <= float(enc.prototypes.detach().min()) and float(enc.prototypes.detach().max()) < 1
    assert float(enc.features[0].weight.detach().std()) == pytest.approx(0.1, rel=0.2)
    s = enc(torch.randn(2, 3, 32, 32))
    s.sum().backward()
    assert enc.prototypes.grad.abs().sum() > 0 and enc.features[0].weight.grad.abs().sum() > 0


def test_bf16_autocast_keeps_float32_distances():
    enc = _encoder(2)
    x = torch.randn(2, 2, 12, 10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = enc(x, return_maps=True)
    assert out.distance_maps.dtype == torch.float32
    ref = enc(x, return_maps=True)
    torch.testing.assert_close(out.activations, ref.activations, atol=0.05, rtol=0.05)


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        (dict(spatial_dims=4), ValueError, "spatial_dims"),
        (dict(in_channels=0), ValueError, "in_channels"),
        (dict(in_channels=1.5), TypeError, "in_channels"),
        (dict(num_prototypes=0), ValueError, "num_prototypes"),
        (dict(num_prototypes=True), TypeError, "num_prototypes"),
        (dict(preset="large"), ValueError, "preset"),
        (dict(preset=None), ValueError, "channels"),
        (dict(channels=[]), ValueError, "channels"),
        (dict(channels=[8, -1]), ValueError, "channels"),
        (dict(epsilon=0.0), ValueError, "epsilon"),
        (dict(init_std=-1.0), ValueError, "init_std"),
        (dict(strides=[1, 2]), ValueError, "strides"),
    ],
)
def test_invalid_arguments(kwargs, exc, words):
    args = dict(spatial_dims=2, in_channels=1) | kwargs
    with pytest.raises(exc, match=words):
        PrototypeEncoder(**args)


def test_invalid_inputs():
    enc = _encoder(2)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        enc([[1.0]])
    with pytest.raises(ValueError, match=r"got \(2, 3, 12, 10\)"):
        enc(torch.randn(2, 3, 12, 10))
    with pytest.raises(ValueError, match=r"got \(2, 2, 12\)"):
        enc(torch.randn(2, 2, 12))
    with pytest.raises(ValueError, match="too small"):
        enc(torch.randn(1, 2, 3, 3))
