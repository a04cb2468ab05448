from __future__ import annotations

import math

import pytest
import torch
from monai.networks.layers import GaussianFilter

from monai_patronus.interpret import faithfulness as faith
from monai_patronus.interpret.faithfulness import FaithfulnessResult, blur_images, masking_faithfulness, replace_boxes
from tests._helpers import tiny_encoder

# bright 3x3 squares in a dark 32x32 image; odd corners, so the tiny encoder (jump 2, offset -1, size 7)
# has a cell whose box is centred on each square and sees the same pattern in every image
_CORNERS = [(5, 7), (21, 9), (13, 21), (25, 23)]


def _planted(spatial_dims=2, size=32):
    images = torch.full((len(_CORNERS), 1, *([size] * spatial_dims)), -1.0)
    for i, corner in enumerate(_CORNERS):
        corner = corner + (corner[0],) * (spatial_dims - 2)
        images[(i, 0, *[slice(c, c + 3) for c in corner])] = 1.0
    enc = tiny_encoder(spatial_dims, 4, 1)
    cell = tuple((c + 1 - 2) // 2 for c in _CORNERS[0] + (_CORNERS[0][0],) * (spatial_dims - 2))  # centre 2i+2
    with torch.no_grad():
        enc.prototypes[0] = enc.features(images[:1])[(0, slice(None), *cell)]  # prototype 0 = the square's feature
    return enc, images


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_planted_square_is_faithful(spatial_dims):
    enc, images = _planted(spatial_dims)
    res = masking_faithfulness(enc, images, prototypes=[0], generator=torch.Generator().manual_seed(0))
    assert res.prototypes == (0,)
    assert torch.allclose(res.activation, torch.full_like(res.activation, math.log(1 / enc.epsilon)), atol=1e-2)
    assert (res.drop_boxed > 1.0).all()
    assert res.ratio > 3
    assert res.per_prototype_ratio.shape == (1,) and float(res.per_prototype_ratio[0]) == pytest.approx(res.ratio)
    for i, corner in enumerate(_CORNERS):  # each box holds its square
        square = corner + (corner[0],) * (spatial_dims - 2)
        box = res.boxes[i, 0]
        assert all(int(b[0]) <= c and c + 3 <= int(b[1]) for b, c in zip(box, square))


def test_constant_image_changes_nothing():
    enc = tiny_encoder(2, 4, 1)
    images = torch.full((3, 1, 16, 16), 0.4)
    res = masking_faithfulness(enc, images, num_random=3, generator=torch.Generator().manual_seed(1))
    assert res.drop_boxed.abs().max() < 1e-4
    assert res.drop_random.abs().max() < 1e-4
    assert res.activation.shape == res.drop_boxed.shape == res.drop_random.shape == (3, 4)


def test_shapes_boxes_and_reproducibility_3d():
    enc = tiny_encoder(3, 3, 2)
    images = torch.randn(2, 2, 9, 10, 8)
    a = masking_faithfulness(enc, images, prototypes=[2, 0], num_random=2, generator=torch.Generator().manual_seed(3))
    b = masking_faithfulness(enc, images, prototypes=[2, 0], num_random=2, generator=torch.Generator().manual_seed(3))
    c = masking_faithfulness(enc, images, prototypes=[2, 0], num_random=2, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        out = enc(images, return_maps=True)
    assert a.prototypes == (2, 0) and a.activation.shape == a.drop_boxed.shape == (2, 2)
    assert torch.equal(a.activation, out.activations[:, [2, 0]])
    assert torch.equal(a.boxes, enc.boxes(out.locations[:, [2, 0]], images.shape[2:]))
    assert torch.equal(a.drop_random, b.drop_random) and torch.equal(a.drop_boxed, b.drop_boxed)
    assert not torch.equal(a.drop_random, c.drop_random)
    assert not a.drop_boxed.requires_grad


def test_perturbations_touch_only_the_boxes(monkeypatch):
    """Spy on the masking: argmin box first, then random boxes of the same size fully inside the image,
    and every encoded image equals the original outside its box and the blurred image inside."""
    enc = tiny_encoder(2, 2, 1)
    images = torch.randn(3, 1, 13, 11)
    calls, encoded = [], []
    real = faith.replace_boxes

    def spy(imgs, replacement, boxes):
        calls.append((replacement, boxes.clone()))
        return real(imgs, replacement, boxes)

    monkeypatch.setattr(faith, "replace_boxes", spy)
    enc.register_forward_pre_hook(lambda _, args: encoded.append(args[0].clone()))
    num_random = 5
    res = masking_faithfulness(enc, images, num_random=num_random, blur_sigma=(1.0, 2.0))
    assert len(calls) == 2 * (1 + num_random) and len(encoded) == 1 + len(calls)
    assert torch.equal(encoded[0], images)
    torch.testing.assert_close(calls[0][0], blur_images(images, (1.0, 2.0)))
    for p in range(2):
        group = calls[p * (1 + num_random) : (p + 1) * (1 + num_random)]
        assert torch.equal(group[0][1], res.boxes[:, p])
        size = res.boxes[:, p, :, 1] - res.boxes[:, p, :, 0]
        for _, boxes in group[1:]:
            assert torch.equal(boxes[..., 1] - boxes[..., 0], size)
            assert (boxes[..., 0] >= 0).all() and (boxes[..., 1] <= torch.tensor([13, 11])).all()
    for (blurred, boxes), x in zip(calls, encoded[1:]):
        for i, ((r0, r1), (c0, c1)) in enumerate(boxes.tolist()):
            inside = torch.zeros(13, 11, dtype=torch.bool)
            inside[r0:r1, c0:c1] = True
            assert torch.equal(x[i, 0][~inside], images[i, 0][~inside])
            assert torch.equal(x[i, 0][inside], blurred[i, 0][inside])


def test_random_boxes_cover_all_placements(monkeypatch):
    enc = tiny_encoder(2, 1, 1)
    images = torch.randn(1, 1, 9, 8)
    starts = []

    def spy(imgs, replacement, boxes):
        starts.append(tuple(boxes[0, :, 0].tolist()))
        return imgs

    monkeypatch.setattr(faith, "replace_boxes", spy)
    res = masking_faithfulness(enc, images, num_random=60, generator=torch.Generator().manual_seed(0))
    size = (res.boxes[0, 0, :, 1] - res.boxes[0, 0, :, 0]).tolist()
    placements = {(a, b) for a in range(9 - size[0] + 1) for b in range(8 - size[1] + 1)}
    assert len(placements) > 1
    assert set(starts[1:]) == placements  # uniform over every placement fully inside the image


def test_blur_and_replace_helpers():
    x = torch.randn(2, 3, 12, 14)
    blurred = blur_images(x, 1.5)
    inner = (slice(None), slice(None), slice(6, -6), slice(6, -6))  # away from the padding
    torch.testing.assert_close(blurred[inner], GaussianFilter(2, 1.5)(x)[inner], atol=1e-4, rtol=1e-4)
    const = torch.full((1, 1, 5, 4, 3), -0.7)
    torch.testing.assert_close(blur_images(const, (3.0, 0.5, 9.0)), const, atol=1e-6, rtol=0)
    boxes = torch.tensor([[[1, 4], [0, 14]], [[0, 12], [5, 6]]])
    out = replace_boxes(x, blurred, boxes)
    expected = x.clone()
    expected[0, :, 1:4, 0:14] = blurred[0, :, 1:4, 0:14]
    expected[1, :, 0:12, 5:6] = blurred[1, :, 0:12, 5:6]
    assert torch.equal(out, expected)


def test_ratio_conventions():
    z = torch.zeros(2, 2)
    r = FaithfulnessResult((0, 1), z, torch.tensor([[1.0, 0.0], [3.0, 0.0]]), torch.tensor([[0.5, 0.0], [0.5, 0.0]]), z)
    assert r.ratio == pytest.approx(2.0 / 0.5)
    assert r.per_prototype_ratio[0] == pytest.approx(4.0) and torch.isnan(r.per_prototype_ratio[1])
    assert FaithfulnessResult((0,), z, torch.ones(2, 1), torch.zeros(2, 1), z).ratio == math.inf
    assert math.isnan(FaithfulnessResult((0,), z, torch.zeros(2, 1), torch.zeros(2, 1), z).ratio)
    # random boxes that raise s_k on average: no meaningful ratio of two negatives
    assert FaithfulnessResult((0,), z, torch.ones(2, 1), -torch.ones(2, 1), z).ratio == math.inf
    assert math.isnan(FaithfulnessResult((0,), z, -torch.ones(2, 1), -2 * torch.ones(2, 1), z).ratio)


def test_summary_scores_the_images_where_each_prototype_is_present():
    # 4 images x 2 prototypes; prototype 0 is most active in images 2, 3 and prototype 1 in images 0, 1
    act = torch.tensor([[0.1, 0.9], [0.2, 0.8], [0.7, 0.3], [0.8, 0.1]])
    boxed = torch.tensor([[-0.05, 0.4], [0.0, 0.2], [0.35, -0.1], [0.4, 0.0]])
    rand = torch.tensor([[-0.1, 0.1], [-0.1, 0.3], [0.07, -0.2], [0.1, -0.3]])
    r = FaithfulnessResult((0, 1), act, boxed, rand, torch.zeros(4, 2, 2, 2, dtype=torch.long))
    assert r.present(0.5).tolist() == [[False, True], [False, True], [True, False], [True, False]]
    assert r.present(0.01).sum(0).tolist() == [1, 1] and r.present(1.0).all()
    top = r.summary(0.5)  # pairs (2,0), (3,0), (0,1), (1,1)
    assert top["pairs"] == 4
    assert top["drop_boxed"] == pytest.approx((0.35 + 0.4 + 0.4 + 0.2) / 4)
    assert top["drop_random"] == pytest.approx((0.07 + 0.1 + 0.1 + 0.3) / 4)
    assert top["ratio"] == pytest.approx(1.35 / 0.57)
    assert top["win_rate"] == pytest.approx(3 / 4)  # (1,1): 0.2 < 0.3
    assert top["relative_drop_boxed"] == pytest.approx((0.35 / 0.7 + 0.4 / 0.8 + 0.4 / 0.9 + 0.2 / 0.8) / 4)
    assert top["relative_drop_random"] == pytest.approx((0.07 / 0.7 + 0.1 / 0.8 + 0.1 / 0.9 + 0.3 / 0.8) / 4)
    everything = r.summary()
    assert everything["pairs"] == 8 and everything["ratio"] == pytest.approx(r.ratio)
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match="top_fraction"):
            r.summary(bad)


class _FakeNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.prototype_encoder = tiny_encoder(2, 2, 1)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"encoder": _FakeNet()}, TypeError, "net.prototype_encoder"),
        ({"images": torch.zeros(1, 1, 12)}, ValueError, "images must have shape"),
        ({"images": torch.zeros(1, 1, 4, 4)}, ValueError, "too small"),
        ({"prototypes": [9]}, ValueError, r"in \[0, 4\)"),
        ({"num_random": 0}, ValueError, "num_random must be >= 1"),
        ({"blur_sigma": 0.0}, ValueError, "sigma must be finite and > 0"),
        ({"blur_sigma": -1}, ValueError, "sigma must be finite and > 0"),
        ({"blur_sigma": math.inf}, ValueError, "sigma must be finite"),
        ({"blur_sigma": (1.0, 2.0, 3.0)}, ValueError, "length 2"),
    ],
)
def test_errors(kwargs, error, match):
    args = {"encoder": tiny_encoder(2, 4, 1), "images": torch.zeros(1, 1, 12, 12)} | kwargs
    with pytest.raises(error, match=match):
        masking_faithfulness(**args)


def test_helper_errors():
    x = torch.zeros(2, 1, 6, 6)
    cases = [
        (lambda: blur_images(x, (1.0,)), ValueError, "length 2"),
        (lambda: blur_images(x, 0), ValueError, "sigma must be finite and > 0"),
    ]
    for call, error, match in cases:
        with pytest.raises(error, match=match):
            call()
