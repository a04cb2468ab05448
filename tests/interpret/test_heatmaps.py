from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from monai_patronus.interpret.heatmaps import similarity_heatmaps
from monai_patronus.networks import PrototypeEncoder
from tests._helpers import tiny_encoder


def _aniso_encoder(spatial_dims: int) -> PrototypeEncoder:
    """Per-axis kernels/strides/paddings; every receptive-field size is odd, so every box centre is a pixel."""
    k2 = (3, 5) if spatial_dims == 2 else (3, 5, 3)
    s1 = (2, 1) if spatial_dims == 2 else (2, 1, 2)
    return PrototypeEncoder(
        spatial_dims,
        1,
        num_prototypes=3,
        channels=(4, 8),
        kernel_sizes=(3, k2),
        strides=(s1, 1),
        paddings=(1, 0),
        preset=None,
    )


def _encoders(spatial_dims):
    return [tiny_encoder(spatial_dims, 4, 1), _aniso_encoder(spatial_dims)]


def _shape(spatial_dims):
    return (17, 14) if spatial_dims == 2 else (11, 10, 13)


def _centres(enc, feat_shape):
    rf = enc.receptive_field
    return [[i * rf.jump[a] + rf.offset[a] + (rf.size[a] - 1) // 2 for i in range(n)] for a, n in enumerate(feat_shape)]


def _similarity(enc, x):
    with torch.no_grad():
        d = enc(x, return_maps=True).distance_maps
    return torch.log((d + 1.0) / (d + enc.epsilon))


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_values_at_box_centres_are_cell_similarities_exactly(spatial_dims, mode):
    for enc in _encoders(spatial_dims):
        assert all(s % 2 == 1 for s in enc.receptive_field.size)
        x = torch.randn(2, 1, *_shape(spatial_dims))
        sim = _similarity(enc, x)
        heat = similarity_heatmaps(enc, x, mode=mode)
        assert heat.shape == (2, 4 if enc.num_prototypes == 4 else 3, *_shape(spatial_dims))
        assert not heat.requires_grad
        centres = _centres(enc, sim.shape[2:])
        for cell in itertools.product(*[range(n) for n in sim.shape[2:]]):
            pixel = tuple(centres[a][i] for a, i in enumerate(cell))
            assert all(0 <= p < n for p, n in zip(pixel, x.shape[2:]))
            assert torch.equal(heat[(slice(None), slice(None), *pixel)], sim[(slice(None), slice(None), *cell)])


def _reference(sim, centres, out_shape, mode):
    """Brute force: interpolate along one axis after the other with numpy (np.interp clamps outside)."""
    ref = sim.double().numpy()
    for a, n_out in enumerate(out_shape):
        xp = np.asarray(centres[a], dtype=np.float64)
        pos = np.arange(n_out, dtype=np.float64)
        axis = a + 2
        moved = np.moveaxis(ref, axis, -1)
        if mode == "bilinear":
            new = np.apply_along_axis(lambda v: np.interp(pos, xp, v), -1, moved)
        else:
            # nearest centre; a pixel halfway between two centres takes the later one
            nearest = np.array([max(range(len(xp)), key=lambda i: (-abs(p - xp[i]), i)) for p in pos])
            new = moved[..., nearest]
        ref = np.moveaxis(new, -1, axis)
    return torch.from_numpy(ref)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_matches_brute_force_interpolation_between_centres(spatial_dims, mode):
    for enc in _encoders(spatial_dims):
        x = torch.randn(2, 1, *_shape(spatial_dims))
        sim = _similarity(enc, x)
        heat = similarity_heatmaps(enc, x, mode=mode)
        ref = _reference(sim, _centres(enc, sim.shape[2:]), x.shape[2:], mode)
        torch.testing.assert_close(heat.double(), ref, rtol=1e-5, atol=1e-5)


def test_clamps_outside_centres_and_averages_at_midpoints_2d():
    enc = tiny_encoder(2, 4, 1)  # jump 2, offset -1, size 7: centres at 2, 4, ..., 12 for a 16-px image
    x = torch.randn(1, 1, 16, 16)
    sim = _similarity(enc, x)
    heat = similarity_heatmaps(enc, x)
    assert sim.shape[2:] == (6, 6)
    for p in (0, 1):  # before the first centre: the first cell's value
        torch.testing.assert_close(heat[:, :, p, 2], sim[:, :, 0, 0], rtol=0, atol=0)
    for p in (13, 14, 15):  # after the last centre: the last cell's value
        torch.testing.assert_close(heat[:, :, 12, p], sim[:, :, 5, 5], rtol=0, atol=0)
    torch.testing.assert_close(heat[:, :, 3, 6], (sim[:, :, 0, 2] + sim[:, :, 1, 2]) / 2)
    near = similarity_heatmaps(enc, x, mode="nearest")
    torch.testing.assert_close(near[:, :, 3, 6], sim[:, :, 1, 2], rtol=0, atol=0)  # halfway: rounds up


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_peak_sits_in_argmin_box(spatial_dims):
    for enc in _encoders(spatial_dims):
        x = torch.randn(3, 1, *_shape(spatial_dims))
        with torch.no_grad():
            out = enc(x, return_maps=True)
        boxes = enc.boxes(out.locations, x.shape[2:])
        heat = similarity_heatmaps(enc, x)
        flat = heat.flatten(2)
        torch.testing.assert_close(flat.max(dim=2).values, out.activations)
        peaks = torch.stack(torch.unravel_index(flat.argmax(dim=2), heat.shape[2:]), dim=-1)
        inside = (peaks >= boxes[..., 0]) & (peaks < boxes[..., 1])
        assert inside.all()


def test_prototype_subset_and_order():
    enc = tiny_encoder(2, 4, 1)
    x = torch.randn(2, 1, 12, 12)
    full = similarity_heatmaps(enc, x)
    sub = similarity_heatmaps(enc, x, prototypes=[3, 1, 3])
    assert torch.equal(sub, full[:, [3, 1, 3]])
    assert torch.equal(similarity_heatmaps(enc, x, prototypes=torch.tensor([2])), full[:, [2]])


def test_feature_map_of_one_cell_is_constant():
    enc = tiny_encoder(2, 2, 1)
    x = torch.randn(1, 1, 7, 7)  # 4x4 after the stride-2 layer, 2x2 after the 3x3 one
    enc2 = PrototypeEncoder(2, 1, num_prototypes=2, channels=(4,), kernel_sizes=7, preset=None)
    heat = similarity_heatmaps(enc2, x)
    assert heat.shape == (1, 2, 7, 7)
    assert torch.equal(heat, heat[:, :, :1, :1].expand_as(heat))
    assert similarity_heatmaps(enc, x).shape == (1, 2, 7, 7)


class _FakeNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.prototype_encoder = tiny_encoder(2, 2, 1)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"encoder": torch.nn.Conv2d(1, 1, 1)}, TypeError, "encoder must be a PrototypeEncoder"),
        ({"encoder": _FakeNet()}, TypeError, "net.prototype_encoder"),
        ({"images": torch.zeros(1, 12, 12)}, ValueError, r"images must have shape \(N >= 1, 1"),
        ({"images": torch.zeros(1, 2, 12, 12)}, ValueError, r"got \(1, 2, 12, 12\)"),
        ({"images": torch.zeros(0, 1, 12, 12)}, ValueError, "N >= 1"),
        ({"images": torch.zeros(1, 1, 4, 4)}, ValueError, "too small"),
        ({"prototypes": [0, 4]}, ValueError, r"in \[0, 4\).*\[0, 4\]"),
        ({"prototypes": [-1]}, ValueError, r"\[-1\]"),
        ({"prototypes": []}, ValueError, r"got \[\]"),
        ({"prototypes": torch.tensor([[5]])}, ValueError, r"got \[5\]"),
        ({"mode": "bicubic"}, ValueError, "bicubic"),
    ],
)
def test_errors(kwargs, error, match):
    args = {"encoder": tiny_encoder(2, 4, 1), "images": torch.zeros(1, 1, 12, 12)} | kwargs
    with pytest.raises(error, match=match):
        similarity_heatmaps(**args)
