from __future__ import annotations

import itertools

import pytest
import torch

from monai_patronus.networks import ENCODER_PRESETS, PrototypeEncoder, ReceptiveField

# (spatial_dims, input spatial shape, kernel_sizes, strides, paddings); every kernel >= its stride,
# so the gradient support of a cell is the whole (clipped) box.
CASES = [
    (2, (16, 16), [3, 3, 3, 3], [2, 1, 1, 1], [1, 0, 0, 0]),  # the paper's small encoder
    (2, (64, 64), [5, 5, 5, 5, 5], [2, 2, 1, 1, 1], [1, 1, 0, 0, 0]),  # the paper's X-ray encoder
    (2, (13, 17), [(3, 5), 2, (4, 3)], [(1, 2), 2, (3, 1)], [(2, 0), 1, (0, 2)]),  # anisotropic, odd sizes
    (2, (9, 9), [1, 3], [1, 3], [0, 2]),
    (3, (9, 10, 11), [3, 3, 3], [2, 1, 1], [1, 0, 0]),
    (3, (12, 8, 10), [(3, 1, 5), (2, 3, 3)], [(2, 1, 2), (2, 1, 1)], [(1, 0, 2), (0, 1, 1)]),
]


def _positive_encoder(spatial_dims, kernels, strides, paddings):
    enc = PrototypeEncoder(
        spatial_dims,
        1,
        num_prototypes=2,
        channels=[2] * len(kernels),
        kernel_sizes=kernels,
        strides=strides,
        paddings=paddings,
        preset=None,
    ).double()
    with torch.no_grad():  # positive weights and inputs keep every ReLU active, so no gradient is lost
        for m in enc.features:
            if hasattr(m, "weight"):
                m.weight.uniform_(0.1, 1.0)
                m.bias.fill_(0.1)
    return enc


@pytest.mark.parametrize("spatial_dims, shape, kernels, strides, paddings", CASES)
def test_box_equals_gradient_support(spatial_dims, shape, kernels, strides, paddings):
    enc = _positive_encoder(spatial_dims, kernels, strides, paddings)
    x = torch.rand(1, 1, *shape, dtype=torch.float64) + 0.1
    x.requires_grad_(True)
    z = enc.features(x)
    assert tuple(z.shape[2:]) == enc.receptive_field.output_shape(shape)
    cells = list(itertools.product(*[range(n) for n in z.shape[2:]]))
    boxes = enc.receptive_field.boxes(torch.tensor(cells), shape)
    for cell, box in zip(cells, boxes):
        (grad,) = torch.autograd.grad(z[(0, 0, *cell)], x, retain_graph=True)
        expected = torch.zeros(shape, dtype=torch.bool)
        expected[tuple(slice(int(a), int(b)) for a, b in box)] = True
        assert torch.equal(grad[0, 0] != 0, expected), f"cell {cell}: box {box.tolist()}"


def test_paper_presets_match_method_numbers():
    small = PrototypeEncoder(2, 3, preset="small").receptive_field
    assert small.output_shape((64, 64)) == (26, 26)
    assert small.size == (15, 15)
    cxr = PrototypeEncoder(2, 1, preset="cxr224").receptive_field
    assert cxr.output_shape((224, 224)) == (43, 43)
    assert cxr.size == (61, 61)
    assert ENCODER_PRESETS["cxr224"]["channels"][-1] == 128


def test_unclipped_boxes_and_brute_force_arithmetic():
    rf = ReceptiveField(2, [3, 3], [2, 2], [1, 1])
    # brute force: layer-by-layer interval propagation
    for i in range(4):
        lo, hi = i, i  # inclusive interval in the last feature map
        for k, s, p in reversed(list(zip([3, 3], [2, 2], [1, 1]))):
            lo, hi = lo * s - p, hi * s - p + k - 1
        box = rf.boxes(torch.tensor([[i, i]]), (16, 16), clip=False)[0, 0]
        assert box.tolist() == [lo, hi + 1]


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        (dict(spatial_dims=0), ValueError, "spatial_dims"),
        (dict(kernel_sizes=[]), ValueError, "kernel_sizes"),
        (dict(strides=[1]), ValueError, "strides"),
        (dict(strides=[1, 0]), ValueError, "strides"),
        (dict(paddings=[-1, 0]), ValueError, "paddings"),
        (dict(kernel_sizes=[3, 2.5]), TypeError, "kernel_sizes"),
        (dict(kernel_sizes=[3, (3, 3, 3)]), ValueError, "kernel_sizes"),
    ],
)
def test_invalid_arguments(kwargs, exc, words):
    args = dict(spatial_dims=2, kernel_sizes=[3, 3], strides=[1, 1], paddings=[0, 0]) | kwargs
    with pytest.raises(exc, match=words):
        ReceptiveField(**args)


def test_invalid_box_queries():
    rf = ReceptiveField(2, [3], [1], [0])
    with pytest.raises(ValueError, match="cells"):
        rf.boxes(torch.zeros(1, 2), (8, 8))
    with pytest.raises(ValueError, match="cells"):
        rf.boxes(torch.zeros(1, 3, dtype=torch.long), (8, 8))
    with pytest.raises(ValueError, match="input_shape"):
        rf.boxes(torch.zeros(1, 2, dtype=torch.long), (8,))
    with pytest.raises(ValueError, match="too small"):
        rf.output_shape((2, 8))
