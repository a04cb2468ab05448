from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
from torch.utils.data import DataLoader

from monai_patronus.interpret.provenance import PatchMatch, crop_patch, find_nearest_patches
from tests._helpers import tiny_encoder


def _brute_force(enc, images, ids, k, unique_images, prototypes=None):
    """Full sort over every cell of every image, ties by (distance, image, cell), one image at a time."""
    protos = list(range(enc.num_prototypes)) if prototypes is None else list(prototypes)
    result = {}
    with torch.no_grad():
        maps = [enc(img[None], return_maps=True).distance_maps[0] for img in images]  # (K, *feat) each
    for proto in protos:
        entries = []
        for i, m in enumerate(maps):
            cells = list(itertools.product(*[range(n) for n in m.shape[1:]]))
            dists = [(float(m[(proto, *c)]), i, j, c) for j, c in enumerate(cells)]
            entries += [min(dists)] if unique_images else dists
        entries.sort()
        result[proto] = [
            PatchMatch(
                proto,
                r,
                d,
                ids[i],
                i,
                c,
                tuple(tuple(b) for b in enc.boxes(torch.tensor(c), images[i].shape[1:]).tolist()),
            )
            for r, (d, i, _, c) in enumerate(entries[:k])
        ]
    return result


def _assert_same(found, expected):
    assert list(found) == list(expected)
    for proto in expected:
        assert len(found[proto]) == len(expected[proto])
        for got, want in zip(found[proto], expected[proto]):
            assert dataclasses.replace(got, distance=0.0) == dataclasses.replace(want, distance=0.0)
            assert got.distance == pytest.approx(want.distance, rel=1e-5, abs=1e-6)


def _batches(images, ids, batch_size):
    return [
        {"image": images[i : i + batch_size], "id": ids[i : i + batch_size]} for i in range(0, len(images), batch_size)
    ]


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("unique_images", [True, False])
def test_equals_brute_force_for_any_batch_size(spatial_dims, unique_images):
    enc = tiny_encoder(spatial_dims, 4, 1)
    shape = (12, 13) if spatial_dims == 2 else (9, 8, 10)
    images = torch.randn(7, 1, *shape)
    ids = [f"img{i}" for i in range(7)]
    k = 5
    expected = _brute_force(enc, images, ids, k, unique_images)
    if unique_images:
        for matches in expected.values():
            assert len({m.image_index for m in matches}) == k
    else:  # the test is only meaningful if some image gives several of the top cells
        assert any(len({m.image_index for m in ms}) < k for ms in expected.values())
    results = [
        find_nearest_patches(enc, _batches(images, ids, bs), k=k, unique_images=unique_images) for bs in (1, 2, 3, 7)
    ]
    for found in results:
        _assert_same(found, expected)
        for proto, matches in found.items():
            assert [m.rank for m in matches] == list(range(k))
            assert all(m.prototype == proto for m in matches)
            assert [m.distance for m in matches] == sorted(m.distance for m in matches)
    for found in results[1:]:  # identical but for float rounding of the distances (convolutions differ per batch)
        _assert_same(found, results[0])


def test_boxes_equal_encoder_boxes_and_crops_match():
    enc = tiny_encoder(2, 3, 2)
    images = torch.randn(4, 2, 14, 11)
    found = find_nearest_patches(enc, [images], k=2, unique_images=False)
    for matches in found.values():
        for m in matches:
            box = enc.boxes(torch.tensor([m.cell]), images.shape[2:])[0]
            assert m.box == tuple(tuple(b) for b in box.tolist())
            patch = crop_patch(images[m.image_index], m.box)
            (r0, r1), (c0, c1) = m.box
            assert torch.equal(patch, images[m.image_index, :, r0:r1, c0:c1])
            assert crop_patch(images[m.image_index], box).data_ptr() == patch.data_ptr()


def test_unique_image_match_is_the_encoders_argmin_cell():
    enc = tiny_encoder(2, 4, 1)
    images = torch.randn(3, 1, 12, 12)
    with torch.no_grad():
        out = enc(images, return_maps=True)
    found = find_nearest_patches(enc, [images], k=3)
    for proto, matches in found.items():
        for m in matches:
            assert m.cell == tuple(out.locations[m.image_index, proto].tolist())
            assert m.distance == pytest.approx(float(out.min_distances[m.image_index, proto]))


def test_exact_ties_break_by_image_then_cell():
    enc = tiny_encoder(2, 2, 1)
    images = torch.zeros(3, 1, 10, 10)  # zero input, zero biases: every feature is 0, every distance ||p||^2
    cells = [(0, c) for c in itertools.product(range(3), range(3))] + [(1, (0, 0)), (1, (0, 1))]  # 3x3 feature map
    for bs in (1, 2, 3):
        many = find_nearest_patches(enc, [images[i : i + bs] for i in range(0, 3, bs)], k=11, unique_images=False)
        assert [(m.image_index, m.cell) for m in many[0]] == cells
        assert len({m.distance for m in many[0]}) == 1
        one = find_nearest_patches(enc, [images[i : i + bs] for i in range(0, 3, bs)], k=5)
        assert [(m.image_index, m.cell) for m in one[1]] == [(0, (0, 0)), (1, (0, 0)), (2, (0, 0))]


def test_ids_tensor_batches_subsets_and_mixed_shapes():
    enc = tiny_encoder(2, 4, 1)
    a, b = torch.randn(2, 1, 12, 12), torch.randn(1, 1, 16, 10)
    # plain tensors: running indices as ids; shapes may differ between batches
    found = find_nearest_patches(enc, iter([a, b]), k=3, prototypes=[2, 0])
    assert list(found) == [2, 0]
    for matches in found.values():
        assert sorted(m.image_id for m in matches) == ["0", "1", "2"]
        for m in matches:
            shape = (12, 12) if m.image_index < 2 else (16, 10)
            assert m.box == tuple(tuple(x) for x in enc.boxes(torch.tensor(m.cell), shape).tolist())
    # dict batches: list ids, a single str id for a batch of one, tensor ids, missing ids, id_key=None
    batches = [{"image": a, "id": ["x", "y"]}, {"image": b, "id": "z"}]
    assert sorted(m.image_id for m in find_nearest_patches(enc, batches, k=3)[0]) == ["x", "y", "z"]
    batches = [{"image": a, "case": torch.tensor([7, 8])}, {"image": b, "case": torch.tensor([9])}]
    assert sorted(m.image_id for m in find_nearest_patches(enc, batches, k=3, id_key="case")[0]) == ["7", "8", "9"]
    batches = [{"img": a}, {"img": b, "id": ["ignored"]}]
    assert sorted(m.image_id for m in find_nearest_patches(enc, batches, k=3, image_key="img", id_key=None)[1]) == [
        "0",
        "1",
        "2",
    ]
    assert sorted(m.image_id for m in find_nearest_patches(enc, [{"image": a}], k=3)[1]) == ["0", "1"]
    # a single batch (tensor or dict) and torchvision-style (images, labels) batches give the same matches
    expected = find_nearest_patches(enc, [a], k=2)
    for data in (a, {"image": a}, [(a, torch.tensor([0, 1]))], [[a]]):
        assert find_nearest_patches(enc, data, k=2) == expected


def test_fewer_candidates_than_k_and_dataloader():
    enc = tiny_encoder(2, 2, 1)
    data = [{"image": torch.randn(1, 12, 12), "id": f"case{i}"} for i in range(3)]
    found = find_nearest_patches(enc, DataLoader(data, batch_size=2), k=10)
    assert [len(v) for v in found.values()] == [3, 3]
    assert sorted(m.image_id for m in found[0]) == ["case0", "case1", "case2"]
    found = find_nearest_patches(enc, DataLoader(data, batch_size=2), k=10, unique_images=False, device="cpu")
    assert [len(v) for v in found.values()] == [10, 10]


def test_patch_match_is_frozen():
    m = PatchMatch(0, 0, 1.0, "a", 0, (1, 2), ((0, 3), (1, 4)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.rank = 1  # type: ignore[misc]


def test_crop_patch_3d_and_errors():
    image = torch.arange(2 * 4 * 5 * 6.0).view(2, 4, 5, 6)
    assert torch.equal(crop_patch(image, ((1, 3), (0, 5), (2, 4))), image[:, 1:3, 0:5, 2:4])
    assert torch.equal(crop_patch(image, torch.tensor([[1, 3], [0, 5], [2, 4]])), image[:, 1:3, 0:5, 2:4])
    cases = [
        (torch.zeros(3), ((0, 1),), ValueError, r"image \(3,\); pass one image \(C, \*spatial\)"),
        (image, ((0, 1), (0, 1)), ValueError, "box"),
        (image[None], ((0, 1),) * 3, ValueError, "not a batch"),
        (image, ((0, 5), (0, 1), (0, 1)), ValueError, r"0 <= start < stop <= size"),
        (image, ((2, 2), (0, 1), (0, 1)), ValueError, "start < stop"),
        (image, ((-1, 2), (0, 1), (0, 1)), ValueError, "0 <= start"),
    ]
    for img, box, error, match in cases:
        with pytest.raises(error, match=match):
            crop_patch(img, box)


class _FakeNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.prototype_encoder = tiny_encoder(2, 2, 1)


_X = torch.zeros(2, 1, 12, 12)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"encoder": _FakeNet()}, TypeError, "net.prototype_encoder"),
        ({"k": 0}, ValueError, "k must be >= 1"),
        ({"prototypes": [4]}, ValueError, r"in \[0, 4\)"),
        ({"data": 3}, TypeError, "iterable of batches"),
        ({"data": []}, ValueError, "yielded no images"),
        ({"data": [[]]}, TypeError, "batch 0 must be a tensor"),
        ({"data": [{"img": _X}]}, ValueError, r"no key 'image'.*\['img'\]"),
        ({"data": [{"image": _X.numpy()}]}, TypeError, "images must be a torch.Tensor"),
        ({"data": [_X, _X.long()]}, TypeError, "batch 1 images must be floating point"),
        ({"data": [_X[0]]}, ValueError, r"batch 0 images must have shape \(N >= 1, 1"),
        ({"data": [torch.zeros(1, 1, 4, 4)]}, ValueError, "too small"),
        ({"data": [{"image": _X, "id": ["a"]}]}, ValueError, r"one id per image \(2\)"),
        ({"data": [{"image": _X, "id": "a"}]}, ValueError, "id_key=None"),
        ({"data": [{"image": _X, "id": torch.zeros(2, 1)}]}, ValueError, "one id per image"),
        ({"data": [{"image": _X, "id": object()}]}, ValueError, "one id per image"),
        ({"data": [_X, _X * float("nan")]}, ValueError, "batch 1 holds NaN"),
    ],
)
def test_errors(kwargs, error, match):
    args = {"encoder": tiny_encoder(2, 4, 1), "data": [_X]} | kwargs
    with pytest.raises(error, match=match):
        find_nearest_patches(**args)
