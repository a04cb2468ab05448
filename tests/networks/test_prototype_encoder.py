from __future__ import annotations

import copy
import math
import re

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
        (dict(num_prototypes=0), ValueError, "num_prototypes"),
        (dict(preset="large"), ValueError, "Unsupported option 'large'"),
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
    with pytest.raises(ValueError, match=r"got \(2, 3, 12, 10\)"):
        enc(torch.randn(2, 3, 12, 10))
    with pytest.raises(ValueError, match=r"got \(2, 2, 12\)"):
        enc(torch.randn(2, 2, 12))
    with pytest.raises(ValueError, match="too small"):
        enc(torch.randn(1, 2, 3, 3))


# ---------------------------------------------------------------- prototype init from feature cells
from monai_patronus.networks.prototype_encoder import init_prototypes_from_data  # noqa: E402


def _cells(enc: PrototypeEncoder, x: torch.Tensor) -> torch.Tensor:
    """Every feature cell of ``x``, ``(N, L, C)``, in the encoder's grid order."""
    with torch.no_grad():
        return enc.features(x).flatten(2).transpose(1, 2)


@pytest.mark.parametrize("spatial_dims, shape", CASES)
def test_init_from_features_puts_prototypes_on_the_returned_cells(spatial_dims, shape):
    enc = _encoder(spatial_dims, k=7)
    x = torch.randn(3, 2, *shape)
    where = enc.init_prototypes_from_features(x, seed=0)
    assert where.dtype == torch.long and where.shape == (7, 1 + spatial_dims)  # image index, then grid location
    with torch.no_grad():
        z = enc.features(x)
        out = enc(x, return_maps=True)
    grid = z.shape[2:]
    assert (where[:, 0] >= 0).all() and (where[:, 0] < 3).all()
    assert all((where[:, 1 + d] >= 0).all() and (where[:, 1 + d] < grid[d]).all() for d in range(spatial_dims))
    cells = _cells(enc, x).reshape(-1, z.shape[1])  # (N * L, C)
    for k, (n, *loc) in enumerate(where.tolist()):
        p = enc.prototypes[k].detach()
        # brute force: the prototype is a feature cell of the images, and the returned one is such a cell
        assert ((cells - p) ** 2).sum(1).min() < 1e-10
        torch.testing.assert_close(p, z[(n, slice(None), *loc)], atol=0, rtol=0)
        # the source image matches it exactly: d = 0, s = log((0 + 1) / (0 + eps))
        # (up to the float32 cancellation of ||z||^2 - 2 z.p + ||p||^2, ~1e-6 here, which eps = 1e-4 amplifies)
        assert float(out.min_distances[n, k]) == pytest.approx(0.0, abs=1e-5)
        assert float(out.activations[n, k]) == pytest.approx(math.log(1 / enc.epsilon), rel=2e-3)
        assert float(out.activations[n, k]) == pytest.approx(float(out.activations[:, k].max()), rel=2e-3)


def test_init_from_features_picks_distinct_cells_and_is_seeded():
    enc = _encoder(2, k=12)
    x = torch.randn(4, 2, 12, 10)  # 4 x (4 x 3) = 48 cells, nearly all distinct
    assert torch.unique(_cells(enc, x).reshape(-1, 8), dim=0).shape[0] >= 12
    where = enc.init_prototypes_from_features(x, seed=3)
    p = enc.prototypes.detach().clone()
    assert torch.unique(where, dim=0).shape[0] == 12
    off_diagonal = torch.cdist(p.double(), p.double()) + torch.eye(12, dtype=torch.float64)
    assert off_diagonal.min() > 1e-6  # no two prototypes coincide
    # same seed: same cells; another seed: other cells
    torch.testing.assert_close(enc.init_prototypes_from_features(x, seed=3), where, atol=0, rtol=0)
    torch.testing.assert_close(enc.prototypes.detach(), p, atol=0, rtol=0)
    other = enc.init_prototypes_from_features(x, seed=4)
    assert not torch.equal(other, where) and not torch.equal(enc.prototypes.detach(), p)
    # the draw does not touch the global RNG
    torch.manual_seed(0)
    enc.init_prototypes_from_features(x, seed=3)
    after_init = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(after_init, torch.rand(3))


def test_init_from_features_with_fewer_distinct_cells_than_prototypes():
    enc = _encoder(2, k=5)
    x = torch.zeros(2, 2, 12, 10)  # every cell is the same (the biases start at 0: all-zero features)
    where = enc.init_prototypes_from_features(x, seed=0)
    assert where.shape == (5, 3)
    torch.testing.assert_close(enc.prototypes.detach(), _cells(enc, x)[0, :1].expand(5, -1), atol=0, rtol=0)


def test_init_from_data_accepts_tensor_dataset_and_loader():
    from torch.utils.data import DataLoader

    base = _encoder(2, k=6)

    def _copy():  # copies of one encoder: the same features
        return copy.deepcopy(base)

    def _picked_like(images, seed=0):
        enc = _copy()
        enc.init_prototypes_from_features(images, seed=seed)
        return enc.prototypes.detach()

    x = torch.randn(6, 2, 12, 10)
    expected = _picked_like(x)
    enc = _copy()
    assert init_prototypes_from_data(enc, x) is enc
    torch.testing.assert_close(enc.prototypes.detach(), expected, atol=0, rtol=0)
    # num_images: the first images of a tensor
    enc = _copy()
    init_prototypes_from_data(enc, x, num_images=3, seed=1)
    torch.testing.assert_close(enc.prototypes.detach(), _picked_like(x[:3], seed=1), atol=0, rtol=0)
    assert not torch.equal(enc.prototypes.detach(), _picked_like(x, seed=1))  # the subset matters
    # a dataset of {"image": (C, H, W)} items: all of them when num_images covers it
    data = [{"image": img} for img in x]
    enc = _copy()
    init_prototypes_from_data(enc, data)
    torch.testing.assert_close(enc.prototypes.detach(), expected, atol=0, rtol=0)
    # ... and an even spread of it otherwise (items 0, 5 here)
    enc = _copy()
    init_prototypes_from_data(enc, data, num_images=2)
    torch.testing.assert_close(enc.prototypes.detach(), _picked_like(x[[0, 5]]), atol=0, rtol=0)
    assert not torch.equal(enc.prototypes.detach(), _picked_like(x[:2]))
    # a loader of such dicts: its first batches
    enc = _copy()
    init_prototypes_from_data(enc, DataLoader(data, batch_size=4))
    torch.testing.assert_close(enc.prototypes.detach(), expected, atol=0, rtol=0)
    enc = _copy()
    init_prototypes_from_data(enc, DataLoader(data, batch_size=2), num_images=3)
    torch.testing.assert_close(enc.prototypes.detach(), _picked_like(x[:3]), atol=0, rtol=0)


def test_init_from_data_sets_a_patronus_unets_encoder():
    from monai_patronus.networks import PatronusUNet

    x = torch.randn(4, 2, 16, 16)
    net = PatronusUNet(2, 2, _encoder(2, k=6), channels=(8, 16), num_res_blocks=1, norm_num_groups=4, dropout=0.0)
    reference = copy.deepcopy(net.prototype_encoder)
    reference.init_prototypes_from_features(x, seed=2)
    assert init_prototypes_from_data(net, x, seed=2) is net
    torch.testing.assert_close(net.prototype_encoder.prototypes.detach(), reference.prototypes.detach(), atol=0, rtol=0)
    with torch.no_grad():
        s = net.encode(x)
    assert float(s.max()) == pytest.approx(math.log(1 / net.prototype_encoder.epsilon), rel=2e-3)


def test_init_prototypes_invalid_arguments():
    enc = _encoder(2)
    with pytest.raises(TypeError, match="network must be a PatronusUNet or a PrototypeEncoder, got Identity"):
        init_prototypes_from_data(torch.nn.Identity(), torch.randn(2, 2, 12, 10))
    for bad in (torch.randn(2, 3, 12, 10), torch.randn(2, 2, 12), torch.randn(2, 2, 8, 8, 8)):
        with pytest.raises(
            ValueError, match=re.escape(f"images must be a tensor (N, 2, *spatial), got {tuple(bad.shape)}")
        ):
            enc.init_prototypes_from_features(bad)
        with pytest.raises(ValueError, match="images must be a tensor"):
            init_prototypes_from_data(enc, bad)
    with pytest.raises(ValueError, match="num_images"):
        init_prototypes_from_data(enc, torch.randn(2, 2, 12, 10), num_images=0)
