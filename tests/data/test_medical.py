from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.data import CacheDataset, DataLoader, Dataset, MetaTensor
from monai.transforms import Lambdad

from monai_patronus.data.medical import (
    AntialiasResized,
    CheckImaged,
    DropNoneCollate,
    LoadMedicalImaged,
    SkipNoneCompose,
    ToChannelsd,
    medical_image_transforms,
)
from tests.data._files import (
    PATIENT_ID,
    PATIENT_NAME,
    mni_template,
    pydicom_test_file,
    write_dicom,
    write_png,
    write_sitk,
)


def root_cause(exc: BaseException) -> BaseException:
    """MONAI's Compose/Dataset re-raise transform errors as RuntimeError("applying transform ...") from the
    transform's error: the first non-RuntimeError in the chain."""
    while isinstance(exc, RuntimeError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def gradient_png(tmp_path, name="g.png", shape=(16, 16)) -> str:
    return write_png(tmp_path / name, (np.arange(np.prod(shape)) % 256).astype(np.uint8).reshape(shape))


# ---------------------------------------------------------------------------------------------------- pipeline


def test_png_exact_scaling(tmp_path):
    grey = np.array([[0, 51, 102], [153, 204, 255]], dtype=np.uint8)  # (rows, columns)
    path = write_png(tmp_path / "g.png", grey)
    out = medical_image_transforms(image_size=(3, 2), percentiles=(0, 100))({"image": path, "id": "a"})
    img = out["image"]
    assert img.shape == (1, 3, 2) and img.dtype == torch.float32 and out["id"] == "a"
    np.testing.assert_allclose(img.numpy()[0], (grey.T / 255.0) * 2 - 1, atol=1e-6)  # same size: no resampling


def test_robust_percentiles_ignore_outliers(tmp_path):
    grey = np.full((20, 20), 100, dtype=np.uint8)
    grey[:10] = 50
    grey[0, 0], grey[0, 1] = 0, 255  # 2 outlier pixels of 400 (0.5 %)
    path = write_png(tmp_path / "o.png", grey)
    out = medical_image_transforms(image_size=20, percentiles=(1, 99))({"image": path})["image"]
    img = out.numpy()[0].T  # back to (rows, columns)
    assert img[0, 0] == -1.0 and img[0, 1] == 1.0  # outliers clipped
    np.testing.assert_allclose(img[5], -1.0, atol=1e-6)  # the two tissue levels span [-1, 1]
    np.testing.assert_allclose(img[15], 1.0, atol=1e-6)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_dicom_pipeline(name):
    out = medical_image_transforms(image_size=32)({"image": pydicom_test_file(name)})
    img = out["image"]
    assert img.shape == (1, 32, 32) and img.dtype == torch.float32
    assert float(img.min()) == -1.0 and float(img.max()) == 1.0
    ds = pydicom.dcmread(pydicom_test_file(name))
    assert "PatientName" not in img.meta and "00100010" not in img.meta
    assert str(ds.PatientName) not in repr(img.meta) and str(ds.PatientID) not in repr(img.meta)


def test_monochrome1_comes_out_brighter_for_lower_stored_values(tmp_path):
    raw = np.array([[0, 1000], [3000, 4095]], dtype=np.uint16)
    m1 = write_dicom(tmp_path / "m1.dcm", raw, "MONOCHROME1")
    m2 = write_dicom(tmp_path / "m2.dcm", raw, "MONOCHROME2")
    tf = medical_image_transforms(image_size=2, percentiles=(0, 100))
    inv, plain = tf({"image": m1})["image"].numpy()[0], tf({"image": m2})["image"].numpy()[0]
    np.testing.assert_allclose(plain, (raw.T / 4095.0) * 2 - 1, atol=1e-6)
    np.testing.assert_allclose(inv, -plain, atol=1e-6)
    assert inv[0, 0] == 1.0  # stored 0 is white in MONOCHROME1
    meta = repr(tf({"image": m1})["image"].meta)
    assert PATIENT_NAME not in meta and PATIENT_ID not in meta


def test_rgb_to_grey_and_grey_to_rgb(tmp_path):
    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 100, 50, 200
    rgb[1, 2] = (0, 0, 0)
    path = write_png(tmp_path / "c.png", rgb)
    loaded = SkipNoneCompose([LoadMedicalImaged("image"), Lambdad("image", lambda x: x.permute(2, 0, 1))])
    grey = ToChannelsd("image", channels=1)(loaded({"image": path}))["image"]
    assert grey.shape == (1, 3, 2) and isinstance(grey, MetaTensor) and grey.meta["filename_or_obj"] == path
    np.testing.assert_allclose(grey.numpy()[0, 0, 0], 0.299 * 100 + 0.587 * 50 + 0.114 * 200, rtol=1e-6)  # 82.05
    out = medical_image_transforms(image_size=(3, 2), percentiles=(0, 100))({"image": path})["image"]
    np.testing.assert_allclose(out.numpy()[0], [[1, 1], [1, 1], [1, -1]], atol=1e-6)
    three = medical_image_transforms(image_size=4, channels=3)({"image": gradient_png(tmp_path)})["image"]
    assert three.shape == (3, 4, 4)
    np.testing.assert_array_equal(three[0].numpy(), three[2].numpy())


def test_3d_volumes(tmp_path):
    tf = medical_image_transforms(spatial_dims=3, image_size=16)
    mni = tf({"image": mni_template()})["image"]
    assert mni.shape == (1, 16, 16, 16) and mni.dtype == torch.float32
    assert float(mni.min()) == -1.0 and float(mni.max()) == 1.0
    vol = np.random.default_rng(0).random((6, 7, 8)).astype(np.float32)
    nii, mha = tmp_path / "v.nii.gz", tmp_path / "v.mha"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), nii)
    write_sitk(mha, vol, np.eye(4))
    small = medical_image_transforms(spatial_dims=3, image_size=(3, 4, 5))
    a, b = small({"image": str(nii)})["image"], small({"image": str(mha)})["image"]
    assert a.shape == (1, 3, 4, 5)
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


def test_upsampling_small_images(tmp_path):
    out = medical_image_transforms(image_size=24)({"image": gradient_png(tmp_path, shape=(4, 6))})["image"]
    assert out.shape == (1, 24, 24) and float(out.min()) >= -1.0 and float(out.max()) <= 1.0


def test_batches_collate_with_monai_dataloader():
    data = [{"image": pydicom_test_file("CT_small.dcm")}, {"image": pydicom_test_file("CT_small.dcm")}]
    loader = DataLoader(Dataset(data, medical_image_transforms(image_size=8)), batch_size=2)
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 1, 8, 8)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(spatial_dims=1), "spatial_dims"),
        (dict(image_size=0), "image_size"),
        (dict(image_size=(8, 8, 8)), "image_size"),
        (dict(channels=2), "channels"),
        (dict(on_error="ignore"), "on_error"),
        (dict(percentiles=(90, 10)), "percentiles"),
    ],
)
def test_pipeline_arguments(kwargs, words):
    with pytest.raises(ValueError, match=words):
        medical_image_transforms(**kwargs)


# ---------------------------------------------------------------------------------------------------- errors


def test_truncated_dicom_names_the_file():
    path = pydicom_test_file("MR_truncated.dcm")
    with pytest.raises(ValueError, match=r"MR_truncated\.dcm.*less than expected.*on_error='skip'"):
        LoadMedicalImaged("image")({"image": path})
    with pytest.raises(RuntimeError) as info:
        medical_image_transforms()({"image": path})
    assert isinstance(root_cause(info.value), ValueError) and "MR_truncated.dcm" in str(root_cause(info.value))


def test_missing_corrupt_and_unknown_files_name_the_file(tmp_path):
    noise = write_png(tmp_path / "noise.png", np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8))
    corrupt = tmp_path / "half.png"
    corrupt.write_bytes(open(noise, "rb").read()[:500])  # of ~1.1 kB: IDAT cut short
    unknown = tmp_path / "notes.txt"
    unknown.write_text("text")
    for path, words in [
        (tmp_path / "ghost.png", r"ghost\.png"),
        (corrupt, r"half\.png"),
        (unknown, r"notes\.txt.*cannot tell the image type"),
    ]:
        with pytest.raises(ValueError, match=words):
            LoadMedicalImaged("image")({"image": str(path)})
    with pytest.raises(TypeError, match="reader"):
        LoadMedicalImaged("image", reader="PILReader")


def test_nonfinite_and_wrong_dims_name_the_file(tmp_path):
    vol = np.ones((4, 4, 4), np.float32)
    vol[1, 2, 3] = np.nan
    nan_file = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), nan_file)
    with pytest.raises(RuntimeError) as info:
        medical_image_transforms(spatial_dims=3, image_size=4)({"image": str(nan_file)})
    assert re_search(r"nan\.nii\.gz has 1 non-finite values \(NaN/inf\) of 64", str(root_cause(info.value)))
    with pytest.raises(RuntimeError) as info:
        medical_image_transforms(spatial_dims=2)({"image": str(nan_file)})
    assert re_search(r"nan\.nii\.gz has 3 spatial axes .* expected 2", str(root_cause(info.value)))


def re_search(pattern: str, text: str) -> bool:
    import re

    return re.search(pattern, text) is not None


def test_check_imaged_direct():
    meta = {"filename_or_obj": "/data/x/img01.png"}
    good = {"image": MetaTensor(torch.zeros(1, 4, 4), meta=dict(meta))}
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
    [(dict(expected_channels=0), "expected_channels"), (dict(spatial_dims=True), "spatial_dims"),
     (dict(on_error="warn"), "on_error")],
)
def test_check_imaged_arguments(kwargs, words):
    with pytest.raises(ValueError, match=words):
        CheckImaged("image", **kwargs)


def test_small_transform_arguments():
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        ToChannelsd("image", channels=2)
    with pytest.raises(ValueError, match="spatial_size"):
        AntialiasResized("image", spatial_size=(0, 4))
    with pytest.raises(ValueError, match="on_empty"):
        DropNoneCollate(on_empty="skip")
    with pytest.raises(ValueError, match="on_error"):
        LoadMedicalImaged("image", on_error="warn")


# ---------------------------------------------------------------------------------------------------- skipping


def test_skip_returns_none_counts_and_logs(tmp_path, caplog):
    check = CheckImaged("image", expected_channels=1, on_error="skip")
    bad = {"image": MetaTensor(torch.full((1, 2, 2), float("nan")), meta={"filename_or_obj": "/d/bad.nii"})}
    with caplog.at_level(logging.WARNING, logger="monai_patronus.data"):
        assert check(bad) is None
        load = LoadMedicalImaged("image", on_error="skip")
        assert load({"image": pydicom_test_file("MR_truncated.dcm")}) is None
    assert check.num_skipped == 1 and load.num_skipped == 1
    assert "bad.nii has 4 non-finite" in caplog.text and "MR_truncated.dcm" in caplog.text
    ours = [r for r in caplog.records if r.name == "monai_patronus.data"]
    assert len(ours) == 2 and all(r.levelno == logging.WARNING for r in ours)


def test_skip_none_compose_stops_and_keeps_start_end(tmp_path):
    calls = []
    tf = SkipNoneCompose([Lambdad("x", lambda v: calls.append(v) or v), Lambdad("x", lambda v: v + 1)])
    assert tf({"x": 1}) == {"x": 2} and tf({"x": 1}, start=1) == {"x": 2} and tf({"x": 1}, end=1) == {"x": 1}
    stopper = SkipNoneCompose([lambda d: None, Lambdad("x", lambda v: calls.append("after") or v)])
    assert stopper({"x": 1}) is None and "after" not in calls
    assert tf(None) is None
    with pytest.raises(ValueError, match="start"):
        tf({"x": 1}, start=3)


def make_mixed_datalist(tmp_path) -> list[dict]:
    good = [gradient_png(tmp_path, f"g{i}.png") for i in range(4)]
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full((16, 16), np.nan, np.float32))
    files = [good[0], pydicom_test_file("MR_truncated.dcm"), good[1], good[2], str(nan), good[3]]
    return [{"image": f, "id": f"s{i}"} for i, f in enumerate(files)]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataloader_drops_skipped_samples(tmp_path, caplog, num_workers):
    data = make_mixed_datalist(tmp_path)
    collate = DropNoneCollate()
    loader = DataLoader(
        Dataset(data, medical_image_transforms(image_size=8, on_error="skip")),
        batch_size=3, num_workers=num_workers, collate_fn=collate,
    )
    with caplog.at_level(logging.WARNING, logger="monai_patronus.data"):
        batches = list(loader)
    assert [b["image"].shape[0] for b in batches] == [2, 2]
    assert [i for b in batches for i in b["id"]] == ["s0", "s2", "s3", "s5"]
    assert collate.num_dropped == 2  # counted in shared memory, also from worker processes
    if num_workers == 0:
        assert "MR_truncated.dcm" in caplog.text and "nan.npy has 256 non-finite" in caplog.text
        assert "dropped 1 skipped sample(s) from a batch of 3" in caplog.text
    collate.reset()
    assert collate.num_dropped == 0


def test_cache_dataset_caches_the_skip(tmp_path):
    data = make_mixed_datalist(tmp_path)
    ds = CacheDataset(data, medical_image_transforms(image_size=8, on_error="skip"), num_workers=0, progress=False)
    items = [ds[i] for i in range(len(ds))]
    assert [i is None for i in items] == [False, True, False, False, True, False]
    batch = DropNoneCollate()(items)
    assert batch["image"].shape == (4, 1, 8, 8)


def test_all_skipped_batch(tmp_path):
    with pytest.raises(ValueError, match="every sample of a batch of 2 was skipped"):
        DropNoneCollate()([None, None])
    collate = DropNoneCollate(on_empty="none")
    assert collate([None, [None]]) is None and collate.num_dropped == 2
    multi_sample = [[{"a": torch.zeros(1)}, None], None]  # lists come from multi-sample transforms
    assert collate(multi_sample)["a"].shape == (1, 1)
    assert collate.num_dropped == 4
