from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from monai_patronus.data import mni152_template_path, prepare_mni152_slices, prepare_mni152_volumes


def test_slices_are_the_template_pixels(tmp_path):
    datalist = prepare_mni152_slices(tmp_path, axes=(2,), step=20)
    volume = np.asarray(nib.load(str(mni152_template_path("t1"))).dataobj)
    assert datalist and all(item["id"].startswith("mni152_t1_ax2_") for item in datalist)
    item = datalist[len(datalist) // 2]
    index = int(item["id"].rsplit("_", 1)[1])
    assert np.array_equal(np.asarray(Image.open(item["image"])), volume[:, :, index])
    # a second call reuses the manifest and the files
    assert prepare_mni152_slices(tmp_path, axes=(2,), step=20) == datalist
    assert not list(tmp_path.glob(".tmp_*"))


def test_volumes_are_copied(tmp_path):
    datalist = prepare_mni152_volumes(tmp_path, kinds=("gm",))
    assert [d["id"] for d in datalist] == ["mni152_gm"]
    assert (tmp_path / "mni152_gm.nii.gz").read_bytes() == mni152_template_path("gm").read_bytes()


@pytest.mark.parametrize(
    "kwargs, words", [(dict(step=0), "step"), (dict(axes=(3,)), "axes"), (dict(min_foreground=1.0), "min_foreground")]
)
def test_invalid_arguments(tmp_path, kwargs, words):
    with pytest.raises(ValueError, match=words):
        prepare_mni152_slices(tmp_path, **kwargs)
    with pytest.raises(ValueError, match="'t2'"):
        mni152_template_path("t2")


def test_slice_attributes_from_ids():
    import nibabel as nib

    from monai_patronus.data import MNI152_SLICE_ATTRIBUTES, mni152_slice_attributes, mni152_template_path

    shape = nib.load(str(mni152_template_path("t1"))).shape  # the grid the attribute thresholds assume
    assert shape == (197, 233, 189)
    labels, names = mni152_slice_attributes(
        ["mni152_t1_ax0_040", "mni152_t1_ax1_118", "mni152_t1_ax2_094", "mni152_t1_ax2_095"]
    )
    assert names == list(MNI152_SLICE_ATTRIBUTES)
    assert labels.tolist() == [[1, 0, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0], [0, 0, 1, 1]]
    with pytest.raises(ValueError, match="not a demo slice id"):
        mni152_slice_attributes(["patient1/view1"])
