import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor

from monai_patronus.data import gather_images, iter_batches, pick_images, unpack_batch


def test_unpack_batch_forms_give_plain_images_and_extras():
    x = torch.rand(3, 1, 4, 4)
    for batch in (x, {"image": x}, (x, torch.zeros(3)), [MetaTensor(x), "labels"], {"image": MetaTensor(x)}):
        images, extras = unpack_batch(batch)
        assert type(images) is torch.Tensor and torch.equal(images, x) and extras == {}
    images, extras = unpack_batch(
        {"img": x, "id": ["a", "b", "c"], "y": 1}, image_key="img", keys=("y",), optional_keys=("id", "absent")
    )
    assert torch.equal(images, x) and extras == {"y": 1, "id": ["a", "b", "c"]}
    assert unpack_batch(x, optional_keys=("id",))[1] == {}  # optional keys of a non-mapping batch: absent


@pytest.mark.parametrize(
    "batch, kwargs, error, match",
    [
        (3, {}, TypeError, r"batch 2 must be a tensor \(B, C, \*spatial\), a dict with 'image'"),
        ([], {}, TypeError, "got list"),
        ({"img": torch.rand(1, 1, 4, 4)}, {}, ValueError, r"batch 2 has no key 'image' \(its keys: \['img'\]\)"),
        ({"image": torch.rand(1, 1, 4, 4)}, {"keys": ("label",)}, ValueError, "no key 'label'"),
        (torch.rand(1, 1, 4, 4), {"keys": ("label",)}, TypeError, r"entries \['label'\] were asked for"),
        ({"image": torch.rand(1, 1, 4, 4).numpy()}, {}, TypeError, "images must be a torch.Tensor, got ndarray"),
        (torch.zeros(1, 1, 4, 4, dtype=torch.long), {}, TypeError, "floating point"),
        (torch.rand(2, 4), {}, ValueError, r"\(B, C, \*spatial\), got \(2, 4\)"),
    ],
)
def test_unpack_batch_errors_name_batch_and_fix(batch, kwargs, error, match):
    with pytest.raises(error, match=match):
        unpack_batch(batch, 2, **kwargs)


def test_iter_batches_offsets_skip_empty_and_single_batch():
    data = [
        {"image": torch.rand(2, 1, 4, 4), "id": ["a", "b"]},
        {"image": torch.rand(0, 1, 4, 4), "id": []},
        {"image": torch.rand(3, 1, 4, 4), "id": ["c", "d", "e"]},
    ]
    got = list(iter_batches(data, keys=("id",)))
    assert [o for o, _, _ in got] == [0, 2] and [e["id"] for _, _, e in got] == [["a", "b"], ["c", "d", "e"]]
    loader = DataLoader(Dataset([{"image": torch.full((1, 4, 4), float(i))} for i in range(5)]), batch_size=2)
    got = list(iter_batches(loader))
    assert [o for o, _, _ in got] == [0, 2, 4]
    assert torch.cat([im for _, im, _ in got])[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4]
    x = torch.rand(2, 1, 4, 4)
    assert [o for o, _, _ in iter_batches(x)] == [0]  # one tensor: one batch, not one per image
    assert [o for o, _, _ in iter_batches({"image": x})] == [0]
    for bad in (5, "images"):
        with pytest.raises(TypeError, match="loader must be an iterable of batches"):
            list(iter_batches(bad, name="loader"))


def test_pick_images_spreads_evenly_and_skips_none():
    items = [{"image": torch.full((1, 2, 2), float(i))} for i in range(10)]
    got = pick_images(items, 4)
    assert got[:, 0, 0, 0].tolist() == [0, 3, 6, 9] and type(got) is torch.Tensor
    items[3] = None  # a file dropped by SkipNoneCompose: the next valid unchosen item stands in
    assert pick_images(items, 4)[:, 0, 0, 0].tolist() == [0, 1, 6, 9]
    assert pick_images([torch.zeros(1, 2, 2)] * 3, 3).shape == (3, 1, 2, 2)  # tensor items
    assert pick_images(items, 9)[:, 0, 0, 0].tolist() == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    with pytest.raises(ValueError, match="9 valid items of 10, fewer than num=12"):
        pick_images(items, 12)
    assert pick_images(items, 12, allow_fewer=True).shape[0] == 9
    with pytest.raises(ValueError, match="0 valid items of 1"):
        pick_images([None], 2, allow_fewer=True)


@pytest.mark.parametrize(
    "data, num, error, match",
    [
        ([None, {"image": torch.zeros(1, 2, 2)}], 2, ValueError, "1 valid items of 2, fewer than num=2"),
        ([], 1, ValueError, "0 valid items of 0"),
        ([{"image": torch.zeros(1, 2, 2)}], 0, ValueError, "num must be >= 1"),
        ([{"img": torch.zeros(1, 2, 2)}], 1, ValueError, r"item 0 has no key 'image' \(its keys: \['img'\]\)"),
        ([{"image": "x"}], 1, TypeError, "item 0 must be a dict holding 'image'"),
        ([torch.zeros(1, 2, 2), torch.zeros(1, 3, 3)], 2, ValueError, "differ in shape"),
    ],
)
def test_pick_images_errors(data, num, error, match):
    with pytest.raises(error, match=match):
        pick_images(data, num)


def test_gather_images_keeps_only_the_asked_rows():
    data = [torch.arange(3.0).view(3, 1, 1, 1), torch.arange(3.0, 5.0).view(2, 1, 1, 1)]
    got = gather_images(data, [4, 1])
    assert sorted(got) == [1, 4] and float(got[1]) == 1.0 and float(got[4]) == 4.0
    assert gather_images(data, []) == {}
    with pytest.raises(ValueError, match=r"gather_images: indices \[5, 9\] lie beyond the data's 5 images"):
        gather_images(data, [0, 5, 9])


def test_a_batch_of_only_skipped_samples_is_skipped():
    """DropNoneCollate(on_empty="none") gives None for a batch whose every sample was skipped (a corrupt study folder
    in an unshuffled pass); every streaming pass skips it instead of failing."""
    from monai_patronus.data import DropNoneCollate

    collate = DropNoneCollate(on_empty="none")
    good = [{"image": torch.full((1, 2, 2), float(i)), "id": f"x{i}"} for i in range(3)]
    batches = [collate(good[:2]), collate([None, None]), collate([good[2], None])]
    assert batches[1] is None and collate.num_dropped == 3
    seen = [
        (offset, images[:, 0, 0, 0].tolist(), extras["id"])
        for offset, images, extras in iter_batches(batches, keys=("id",))
    ]
    assert seen == [(0, [0.0, 1.0], ["x0", "x1"]), (2, [2.0], ["x2"])]
