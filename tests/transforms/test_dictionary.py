from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Lambdad

from monai_patronus.data import CheckImaged as DataCheckImaged
from monai_patronus.data import DropNoneCollate as DataDropNoneCollate
from monai_patronus.transforms import (
    LUMA_BT601,
    AntialiasResized,
    CheckImaged,
    DropNoneCollate,
    SkipNoneCompose,
    ToChannelsd,
    to_channels,
)


def test_data_namespace_re_exports_the_transforms():
    assert DataCheckImaged is CheckImaged and DataDropNoneCollate is DropNoneCollate


def test_to_channels_luma_and_repeat():
    rgb = torch.zeros(3, 2, 2)
    rgb[0, 0, 0], rgb[1, 0, 1], rgb[2, 1, 0] = 1.0, 1.0, 1.0
    grey = to_channels(rgb, 1)
    assert grey.shape == (1, 2, 2)
    assert torch.allclose(grey[0], torch.tensor([[LUMA_BT601[0], LUMA_BT601[1]], [LUMA_BT601[2], 0.0]]))
    assert torch.equal(to_channels(grey, 3), grey.repeat(3, 1, 1))
    assert to_channels(torch.zeros(4, 2, 2), 1).shape == (4, 2, 2)  # other channel counts: unchanged


def test_antialias_resized_shrinks_by_area_and_grows_linearly():
    ramp = torch.arange(16.0).reshape(1, 4, 4)
    small = AntialiasResized("image", (2, 2))({"image": ramp})["image"]
    assert torch.allclose(torch.as_tensor(small), torch.tensor([[[2.5, 4.5], [10.5, 12.5]]]))  # 2x2 block means
    assert AntialiasResized("image", (8, 8))({"image": ramp})["image"].shape == (1, 8, 8)
    assert AntialiasResized("image", 4)(None) is None


def test_check_imaged_direct():
    meta = {"filename_or_obj": "/data/x/img01.png"}
    good = {"image": MetaTensor(torch.arange(16.0).reshape(1, 4, 4), meta=dict(meta))}
    assert CheckImaged("image", expected_channels=1, spatial_dims=2)(good)["image"] is good["image"]
    nan = {"image": MetaTensor(torch.tensor([[[0.0, float("inf")], [float("nan"), 1.0]]]), meta=dict(meta))}
    with pytest.raises(ValueError, match=r"'image' of /data/x/img01\.png has 2 non-finite values \(NaN/inf\) of 4"):
        CheckImaged("image")(nan)
    assert CheckImaged("image", allow_nonfinite=True)(nan) is not None
    rgb = {"image": MetaTensor(torch.zeros(3, 4, 4), meta=dict(meta))}
    with pytest.raises(ValueError, match=r"img01\.png has 3 channels \(shape \(3, 4, 4\), channel first\), expected 1"):
        CheckImaged("image", expected_channels=1)(rgb)
    with pytest.raises(ValueError, match=r"sample id 'p7' .* is empty"):
        CheckImaged("image")({"image": torch.zeros(1, 0, 4), "id": "p7"})
    with pytest.raises(ValueError, match="channel-first"):
        CheckImaged("image")({"image": torch.zeros(4)})
    with pytest.raises(TypeError, match="torch.Tensor or numpy"):
        CheckImaged("image")({"image": "not loaded"})
    assert CheckImaged("image")(None) is None


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(expected_channels=0), "expected_channels"),
        (dict(spatial_dims=0), "spatial_dims"),
        (dict(on_error="warn"), "Unsupported option 'warn'"),
    ],
)
def test_check_imaged_arguments(kwargs, words):
    with pytest.raises(ValueError, match=words):
        CheckImaged("image", **kwargs)


def test_skip_none_compose_stops_and_keeps_start_end(tmp_path):
    calls = []
    tf = SkipNoneCompose([Lambdad("x", lambda v: calls.append(v) or v), Lambdad("x", lambda v: v + 1)])
    assert tf({"x": 1}) == {"x": 2} and tf({"x": 1}, start=1) == {"x": 2} and tf({"x": 1}, end=1) == {"x": 1}
    stopper = SkipNoneCompose([lambda d: None, Lambdad("x", lambda v: calls.append("after") or v)])
    assert stopper({"x": 1}) is None and "after" not in calls
    assert tf(None) is None
    with pytest.raises(ValueError, match="start"):
        tf({"x": 1}, start=3)


def test_all_skipped_batch(tmp_path):
    with pytest.raises(ValueError, match="every sample of a batch of 2 was skipped"):
        DropNoneCollate()([None, None])
    collate = DropNoneCollate(on_empty="none")
    assert collate([None, [None]]) is None and collate.num_dropped == 2
    multi_sample = [[{"a": torch.zeros(1)}, None], None]  # lists come from multi-sample transforms
    assert collate(multi_sample)["a"].shape == (1, 1)
    assert collate.num_dropped == 4


def test_four_channel_arrays_are_not_taken_for_rgba():
    four = {"image": MetaTensor(torch.arange(64.0).reshape(4, 4, 4))}
    assert ToChannelsd("image", channels=1)(four)["image"].shape == (4, 4, 4)  # left alone ...
    with pytest.raises(ValueError, match=r"has 4 channels .* expected 1"):  # ... and reported
        CheckImaged("image", expected_channels=1)(four)


def test_row_formats():
    check = CheckImaged("image")
    for row, shown in [(3, "row 3"), (np.int64(4), "row 4"), (torch.tensor(5), "row 5"), (6.0, "row 6")]:
        with pytest.raises(ValueError, match=f"'image' of datalist {shown} is constant"):
            check({"image": MetaTensor(torch.zeros(1, 2, 2), meta={"filename_or_obj": "/p/PIDQX7731.png"}), "row": row})


def test_small_transform_arguments():
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        ToChannelsd("image", channels=2)
    with pytest.raises(ValueError, match="spatial_size"):
        AntialiasResized("image", spatial_size=(0, 4))
    with pytest.raises(ValueError, match="Unsupported option 'skip'"):
        DropNoneCollate(on_empty="skip")
