from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.data import CacheDataset, DataLoader, Dataset, MetaTensor, PersistentDataset
from monai.data.utils import pickle_hashing
from monai.transforms import Compose, EnsureTyped, Lambdad, RandFlipd, RandomizableTrait, Transform

from monai_patronus.data.medical import (
    CheckImaged,
    DropNoneCollate,
    LoadMedicalImaged,
    SkipNoneCompose,
    ToChannelsd,
    medical_image_transforms,
)
from monai_patronus.data.readers import MedicalImageReader
from tests.data._files import (
    PACS_IDENTIFIERS,
    PATIENT_ID,
    PATIENT_NAME,
    mni_template,
    pacs_path,
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


def before_ensure_typed(tf: SkipNoneCompose, item: dict) -> dict:
    """The pipeline's output just before its final ``EnsureTyped`` steps (images still MetaTensors)."""
    return tf(item, end=tf.get_index_of_first(lambda t: isinstance(t, EnsureTyped)))


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_dicom_pipeline(name):
    tf = medical_image_transforms(image_size=32)
    out = tf({"image": pydicom_test_file(name)})
    img = out["image"]
    assert img.shape == (1, 32, 32) and img.dtype == torch.float32
    assert type(img) is torch.Tensor  # plain tensor: no meta dict (and no file path) in batches or caches
    assert float(img.min()) == -1.0 and float(img.max()) == 1.0
    ds = pydicom.dcmread(pydicom_test_file(name))
    meta = before_ensure_typed(tf, {"image": pydicom_test_file(name)})["image"].meta
    assert "PatientName" not in meta and "00100010" not in meta
    assert str(ds.PatientName) not in repr(meta) and str(ds.PatientID) not in repr(meta)


def test_monochrome1_comes_out_brighter_for_lower_stored_values(tmp_path):
    raw = np.array([[0, 1000], [3000, 4095]], dtype=np.uint16)
    m1 = write_dicom(tmp_path / "m1.dcm", raw, "MONOCHROME1")
    m2 = write_dicom(tmp_path / "m2.dcm", raw, "MONOCHROME2")
    tf = medical_image_transforms(image_size=2, percentiles=(0, 100))
    inv, plain = tf({"image": m1})["image"].numpy()[0], tf({"image": m2})["image"].numpy()[0]
    np.testing.assert_allclose(plain, (raw.T / 4095.0) * 2 - 1, atol=1e-6)
    np.testing.assert_allclose(inv, -plain, atol=1e-6)
    assert inv[0, 0] == 1.0  # stored 0 is white in MONOCHROME1
    meta = repr(before_ensure_typed(tf, {"image": m1})["image"].meta)
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
        (dict(image_size=(8, 8, 8)), "length 2"),
        (dict(channels=2), "channels"),
        (dict(on_error="ignore"), "Unsupported option 'ignore'"),
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


def test_load_medical_imaged_arguments():
    with pytest.raises(ValueError, match="Unsupported option 'warn'"):
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
        batch_size=3,
        num_workers=num_workers,
        collate_fn=collate,
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


# ---------------------------------------------------------------------------------------------------- DICOM layouts


def test_multi_frame_dicom_is_a_volume_not_a_2d_image(tmp_path):
    raw = np.random.default_rng(0).integers(0, 4096, (3, 20, 30)).astype(np.uint16)  # (frames, rows, columns)
    path = write_dicom(tmp_path / "mf.dcm", raw)
    with pytest.raises(RuntimeError) as info:
        medical_image_transforms(spatial_dims=2, image_size=8)({"image": path})
    message = str(root_cause(info.value))
    assert "is a multi-frame volume with 3 frames" in message and "use spatial_dims=3" in message, message
    assert "3 spatial axes" not in message

    out = medical_image_transforms(spatial_dims=3, image_size=(30, 20, 3), percentiles=(0, 100))({"image": path})
    img = out["image"].numpy()[0]
    lo, hi = float(raw.min()), float(raw.max())
    assert img.shape == (30, 20, 3)
    for i in range(30):
        for j in range(20):
            for k in range(3):
                expected = (raw[k, j, i] - lo) / (hi - lo) * 2 - 1
                assert abs(img[i, j, k] - expected) < 1e-5, (i, j, k)


def test_rgb_dicom_becomes_grey_or_stays_rgb():
    path = pydicom_test_file("SC_rgb_rle.dcm")
    rgb = pydicom.dcmread(path).pixel_array.astype(np.float64)  # (rows, columns, 3)
    luma = rgb @ np.array([0.299, 0.587, 0.114])  # BT.601, as ToChannelsd
    expected = (luma - luma.min()) / (luma.max() - luma.min()) * 2 - 1
    grey = medical_image_transforms(image_size=100, channels=1, percentiles=(0, 100))({"image": path})["image"]
    assert grey.shape == (1, 100, 100)
    np.testing.assert_allclose(grey.numpy()[0], expected.T, atol=1e-5)
    colour = medical_image_transforms(image_size=100, channels=3, percentiles=(0, 100))({"image": path})["image"]
    assert colour.shape == (3, 100, 100)
    for c in range(3):
        channel = rgb[..., c]
        np.testing.assert_allclose(
            colour.numpy()[c], ((channel - channel.min()) / (channel.max() - channel.min()) * 2 - 1).T, atol=1e-5
        )


@pytest.mark.parametrize(
    "compressed, reference",
    [
        ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),
        ("MR_small_jp2klossless.dcm", "MR_small.dcm"),
        ("SC_rgb_jpeg_gdcm.dcm", "SC_rgb_rle.dcm"),
    ],
)
def test_compressed_dicom_through_the_pipeline(compressed, reference, caplog):
    tf = medical_image_transforms(image_size=16)
    with caplog.at_level(logging.DEBUG):
        got = tf({"image": pydicom_test_file(compressed)})["image"]
    expected = tf({"image": pydicom_test_file(reference)})["image"]
    assert torch.equal(got, expected)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


# ---------------------------------------------------------------------------------------------------- image content


def test_constant_image_is_refused_skipped_or_kept(tmp_path, caplog):
    path = write_png(tmp_path / "blank.png", np.full((6, 5), 7, np.uint8))
    with pytest.raises(RuntimeError) as info:
        medical_image_transforms(image_size=4)({"image": path})
    message = str(root_cause(info.value))
    assert re_search(r"blank\.png is constant \(every value 7\).*allow_constant=True", message), message
    with caplog.at_level(logging.WARNING, logger="monai_patronus.data"):
        assert medical_image_transforms(image_size=4, on_error="skip")({"image": path}) is None
    assert "is constant (every value 7)" in caplog.text
    kept = medical_image_transforms(image_size=4, allow_constant=True)({"image": path})["image"]
    assert torch.equal(kept, torch.full((1, 4, 4), -1.0))
    check = CheckImaged("image")
    with pytest.raises(ValueError, match=r"is constant \(every value -2.5\)"):
        check({"image": torch.full((1, 3, 3), -2.5)})
    assert check({"image": torch.tensor([[[0.0, 1.0]]])}) is not None  # two values: fine
    assert CheckImaged("image", allow_constant=True)({"image": torch.zeros(1, 3, 3)}) is not None


def rgba_reference(array: np.ndarray, channels: int) -> np.ndarray:
    """Brute force: composite over black (colour * alpha / 255, rounded half up, 8 bits), then BT.601 luma for
    one channel; scaled min-max to [-1, 1] per channel; channel first, (x, y)."""
    height, width = array.shape[:2]
    out = np.zeros((channels, width, height))
    for y in range(height):
        for x in range(width):
            r, g, b = (np.floor(float(array[y, x, c]) * float(array[y, x, 3]) / 255 + 0.5) for c in range(3))
            values = [0.299 * r + 0.587 * g + 0.114 * b] if channels == 1 else [r, g, b]
            for c, v in enumerate(values):
                out[c, x, y] = v
    for c in range(channels):
        out[c] = (out[c] - out[c].min()) / (out[c].max() - out[c].min()) * 2 - 1
    return out


@pytest.mark.parametrize("channels", [1, 3])
def test_rgba_alpha_composited_over_black_for_both_channel_counts(tmp_path, channels):
    array = np.random.default_rng(4).integers(0, 256, (6, 5, 4)).astype(np.uint8)
    array[0, 0, 3], array[1, 1, 3] = 0, 255
    path = write_png(tmp_path / "rgba.png", array)
    out = medical_image_transforms(image_size=(5, 6), channels=channels, percentiles=(0, 100))({"image": path})
    np.testing.assert_allclose(out["image"].numpy(), rgba_reference(array, channels), atol=1e-5)


# ---------------------------------------------------------------------------------------------------- privacy


def exception_texts(exc: BaseException | None) -> list[str]:
    """Every exception of the chain (causes and contexts), as text and as its repr."""
    texts, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        texts += [str(exc), repr(exc)]
        exc = exc.__cause__ or exc.__context__
    return texts


def pacs_bad_file(tmp_path, kind: str) -> str:
    if kind == "corrupt":
        path = pacs_path(tmp_path, ".dcm")
        path.write_bytes(b"\x00" * 64 + b"not a dicom file at all" * 20)
    elif kind == "missing":
        path = pacs_path(tmp_path, ".dcm")
    elif kind == "nan":
        path = pacs_path(tmp_path, ".nii.gz")
        vol = np.ones((4, 4), np.float32)
        vol[1, 2] = np.nan
        nib.save(nib.Nifti1Image(vol, np.eye(4)), path)
    else:  # constant
        path = pacs_path(tmp_path, ".png")
        write_png(path, np.zeros((4, 4), np.uint8))
    return str(path)


@pytest.mark.parametrize(
    "kind, words",
    [
        ("corrupt", "InvalidDicomError"),
        ("missing", "FileNotFoundError"),
        ("nan", "non-finite"),
        ("constant", "is constant"),
    ],
)
def test_messages_name_the_datalist_row_and_no_path(tmp_path, caplog, kind, words):
    path = pacs_bad_file(tmp_path, kind)
    item = {"image": path, "id": "x", "row": 7}
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(RuntimeError) as info:
            medical_image_transforms(image_size=4)(dict(item))
        skip = medical_image_transforms(image_size=4, on_error="skip")
        assert skip(dict(item)) is None
    error = root_cause(info.value)
    assert isinstance(error, ValueError) and error.__cause__ is None and error.__context__ is None
    texts = exception_texts(info.value)
    assert "datalist row 7" in str(error) and words in str(error), str(error)
    warnings_ = [r.getMessage() for r in caplog.records if r.name == "monai_patronus.data"]
    assert len(warnings_) == 1 and "datalist row 7" in warnings_[0] and words in warnings_[0], warnings_
    everything = "\n".join(texts + [r.getMessage() for r in caplog.records] + [caplog.text])
    for identifier in PACS_IDENTIFIERS:
        assert identifier not in everything, everything
    assert str(tmp_path) not in everything
    # without a "row" key (a user's own datalist) the file is still named
    with pytest.raises(RuntimeError) as info:
        medical_image_transforms(image_size=4)({"image": path})
    assert "1.2.826.0.1.222" in str(root_cause(info.value))


def test_reader_text_is_scrubbed_of_the_path_and_its_components(tmp_path):
    path = pacs_path(tmp_path, ".png")
    path.write_bytes(b"")

    class EchoingReader(MedicalImageReader):
        def read(self, data, **kwargs):
            name = str(path)
            raise OSError(
                f"cannot open {name!r} (folder {path.parent.name}, patient {path.parent.parent.name}, "
                f"file {path.name}, stem {path.name[:-4]}, relative {path.parent.name}/{path.name}); Errno 5 of 7"
            )

    with pytest.raises(ValueError) as info:
        LoadMedicalImaged("image", reader=EchoingReader())({"image": str(path), "row": 12})
    text = str(info.value)
    assert text.startswith("LoadMedicalImaged: cannot load 'image' of datalist row 12 with EchoingReader (OSError: ")
    assert (
        "cannot open '<file>' (folder <file>, patient <file>, file <file>, stem <file>, relative <file>/<file>)" in text
    )
    assert "Errno 5 of 7" in text  # unrelated words and numbers are kept
    assert info.value.__cause__ is None and info.value.__context__ is None and info.value.__suppress_context__
    for identifier in PACS_IDENTIFIERS:
        assert identifier not in text
    with pytest.raises(ValueError) as info:  # no row: the file is named and the reader's error chained
        LoadMedicalImaged("image", reader=EchoingReader())({"image": str(path)})
    assert str(path) in str(info.value) and isinstance(info.value.__cause__, OSError)


# ---------------------------------------------------------------------------------------------------- caching


class CountingReader(MedicalImageReader):
    """Counts its reads (class attribute: the count survives copies of the transforms)."""

    reads = 0

    def read(self, data, **kwargs):
        type(self).reads += 1
        return super().read(data, **kwargs)


def labelled_datalist(tmp_path) -> list[dict]:
    rng = np.random.default_rng(5)
    items = []
    for i in range(4):
        path = pacs_path(tmp_path / f"s{i}", ".png")
        write_png(path, rng.integers(0, 256, (12, 10)).astype(np.uint8))
        items.append({"image": str(path), "label": np.array([i, 1 - i % 2], np.float32), "id": f"s{i}", "row": i + 2})
    corrupt = pacs_path(tmp_path / "bad", ".dcm")
    corrupt.write_bytes(b"junk" * 50)
    items.append({"image": str(corrupt), "label": np.array([9, 9], np.float32), "id": "bad", "row": 6})
    return items


def test_pipeline_is_flat_and_ends_with_plain_float32_tensors(tmp_path):
    tf = medical_image_transforms(image_size=8)
    assert not any(isinstance(t, Compose) for t in tf.transforms)
    assert tf.get_index_of_first(lambda t: isinstance(t, RandomizableTrait) or not isinstance(t, Transform)) is None
    item = labelled_datalist(tmp_path)[0]
    out = tf(dict(item))
    assert type(out["image"]) is torch.Tensor and out["image"].dtype == torch.float32
    assert type(out["label"]) is torch.Tensor and out["label"].dtype == torch.float32
    np.testing.assert_array_equal(out["label"].numpy(), item["label"])
    assert (out["id"], out["row"]) == ("s0", 2)
    no_label = medical_image_transforms(image_size=8)({"image": item["image"]})  # label keys may be missing
    assert set(no_label) == {"image"}
    untouched = medical_image_transforms(image_size=8, label_keys=None)(dict(item))
    assert isinstance(untouched["label"], np.ndarray)
    with pytest.raises(ValueError, match="label_keys"):
        medical_image_transforms(label_keys=("label", "image"))


def test_persistent_dataset_caches_the_final_tensors(tmp_path, caplog):
    data = labelled_datalist(tmp_path / "data")
    tf = medical_image_transforms(image_size=8, reader=CountingReader(), on_error="skip")
    CountingReader.reads = 0
    ds = PersistentDataset(data, tf, cache_dir=tmp_path / "cache")
    first = ds[0]
    assert CountingReader.reads == 1
    again = ds[0]
    assert CountingReader.reads == 1  # from the cache file: the reader is not called
    torch.testing.assert_close(again["image"], first["image"], rtol=0, atol=0)
    for item in (first, again):
        assert type(item["image"]) is torch.Tensor and type(item["label"]) is torch.Tensor
        assert item["label"].dtype == torch.float32
    # a new dataset over the same cache folder (the next run) reads nothing either
    assert PersistentDataset(data, tf, cache_dir=tmp_path / "cache")[0]["id"] == "s0" and CountingReader.reads == 1

    with caplog.at_level(logging.WARNING, logger="monai_patronus.data"):
        assert ds[4] is None and CountingReader.reads == 2  # the skipped sample is cached as None ...
        assert ds[4] is None and CountingReader.reads == 2  # ... and skipped again without reading
    assert len([r for r in caplog.records if "skipped a sample" in r.getMessage()]) == 1

    ds[1]  # cached: items 0 and 1; fresh: 2 and 3 (and the cached None)
    assert CountingReader.reads == 3
    collate = DropNoneCollate()
    batch = next(iter(DataLoader(ds, batch_size=5, shuffle=False, num_workers=0, collate_fn=collate)))
    assert CountingReader.reads == 5 and collate.num_dropped == 1
    assert batch["image"].shape == (4, 1, 8, 8) and type(batch["image"]) is torch.Tensor
    assert batch["label"].dtype == torch.float32
    np.testing.assert_array_equal(batch["label"].numpy(), np.stack([d["label"] for d in data[:4]]))
    assert list(batch["id"]) == ["s0", "s1", "s2", "s3"]
    for cache_file in (tmp_path / "cache").iterdir():  # no file path (patient id, UIDs) in the cache
        blob = cache_file.read_bytes()
        assert all(identifier.encode() not in blob for identifier in PACS_IDENTIFIERS), cache_file


def test_random_transforms_appended_run_after_the_cache(tmp_path):
    data = labelled_datalist(tmp_path / "data")
    base = medical_image_transforms(image_size=8, reader=CountingReader(), on_error="skip")
    tf = SkipNoneCompose([*base.transforms, RandFlipd("image", prob=1.0, spatial_axis=0)])
    CountingReader.reads = 0
    ds = PersistentDataset(data, tf, cache_dir=tmp_path / "cache")
    flipped = [ds[0], ds[0]]
    assert CountingReader.reads == 1
    expected = torch.flip(base(dict(data[0]))["image"], dims=(1,))
    for item in flipped:
        torch.testing.assert_close(item["image"], expected, rtol=0, atol=0)
    assert ds[4] is None and ds[4] is None and CountingReader.reads == 3  # base(...) above read once more


def test_persistent_dataset_transform_hash_follows_the_arguments():
    """What the docstring recommends for a PersistentDataset whose pipeline arguments change between runs."""

    def transform_hash(**kwargs) -> str:
        ds = PersistentDataset([], medical_image_transforms(**kwargs), cache_dir=None, hash_transform=pickle_hashing)
        return ds.transform_hash

    assert transform_hash(image_size=8) == transform_hash(image_size=8)
    assert transform_hash(image_size=8) != transform_hash(image_size=16)
    assert transform_hash(image_size=8) != transform_hash(image_size=8, channels=3)


# ---------------------------------------------------------------------------------------------------- fault matrix
def test_junk_and_pixelless_dicom_name_the_row_and_are_skipped(tmp_path, caplog):
    """Fault-matrix rows 2 and 4: a .dcm of junk bytes, and a valid header without PixelData."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

    junk = pacs_path(tmp_path / "a")
    junk.write_bytes(b"\x00\x17 not a DICOM file at all " * 10)
    header_only = pacs_path(tmp_path / "b")
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.PatientID, ds.Modality = PACS_IDENTIFIERS[0], "DX"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.222"
    ds.save_as(str(header_only), enforce_file_format=True)
    for row, path in ((7, junk), (8, header_only)):
        with pytest.raises(RuntimeError) as info:  # MONAI's Compose wraps the transform's error
            medical_image_transforms(image_size=8)({"image": str(path), "id": "x", "row": row})
        cause = root_cause(info.value)
        assert isinstance(cause, ValueError) and f"datalist row {row}" in str(cause), cause
        assert not any(i in str(cause) for i in PACS_IDENTIFIERS), str(cause)
        with caplog.at_level(logging.WARNING, logger="monai_patronus.data"):
            assert medical_image_transforms(image_size=8, on_error="skip")({"image": str(path), "row": row}) is None
    assert "datalist row 7" in caplog.text and "datalist row 8" in caplog.text
    assert not any(i in caplog.text for i in PACS_IDENTIFIERS), caplog.text


def test_16_bit_png_keeps_its_full_range(tmp_path):
    """Fault-matrix row 8: a 16-bit PNG (mode I;16) is read with all its grey levels, not cut to 8 bits."""
    from PIL import Image

    raw = np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000 + 1000  # 1000 ... 56000: needs all 16 bits
    Image.fromarray(raw).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    out = medical_image_transforms(image_size=(4, 3), percentiles=(0, 100))({"image": str(tmp_path / "deep.png")})
    expected = (raw.T - 1000.0) / 55000.0 * 2 - 1  # MONAI's axis 0 is x (columns)
    np.testing.assert_allclose(out["image"].numpy()[0], expected, atol=1e-6)
    assert len(np.unique(out["image"].numpy())) == 12
