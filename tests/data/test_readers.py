from __future__ import annotations

import logging
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from monai.data import PydicomReader
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged
from PIL import Image

from monai_patronus.data.readers import DICOM_TECHNICAL_TAGS, DicomReader, MedicalImageReader, SimpleITKReader
from tests.data._files import (
    PATIENT_ID,
    PATIENT_NAME,
    mni_template,
    pydicom_test_file,
    write_dicom,
    write_png,
    write_sitk,
)

AFFINE = np.array([[0.0, 0.0, 2.0, 10.0], [1.5, 0.0, 0.0, -3.0], [0.0, -1.0, 0.0, 4.0], [0.0, 0.0, 0.0, 1.0]])
IDENTIFYING_KEYS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "OtherPatientIDs",
    "InstitutionName",
    "ReferringPhysicianName",
    "AccessionNumber",
    "StudyInstanceUID",
    "00100010",
    "00100020",
    "00100030",
    "00080080",
    "00080090",
    "00080050",
)


def load(path, reader=None):
    return Compose([LoadImaged("image", reader=reader), EnsureChannelFirstd("image")])({"image": path})["image"]


def assert_no_identifiers(meta: dict, *values: str):
    assert not set(IDENTIFYING_KEYS) & {str(k) for k in meta}
    text = repr(meta)
    for value in values:
        assert value not in text


# ---------------------------------------------------------------------------------------------------- SimpleITK


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_sitk_file_loads_like_the_same_array_written_as_nifti(tmp_path, suffix):
    array = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    nifti = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(array, AFFINE), nifti)
    other = write_sitk(tmp_path / f"vol{suffix}", array, AFFINE)

    by_nibabel = load(str(nifti))  # MONAI's NibabelReader
    by_sitk = load(other, SimpleITKReader())
    assert by_sitk.shape == (1, 4, 5, 6)
    np.testing.assert_array_equal(by_sitk.numpy(), by_nibabel.numpy())
    np.testing.assert_array_equal(by_sitk.numpy()[0], array)
    np.testing.assert_allclose(by_sitk.affine.numpy(), AFFINE, atol=1e-6)
    np.testing.assert_allclose(by_sitk.affine.numpy(), by_nibabel.affine.numpy(), atol=1e-6)
    assert list(by_sitk.meta["spatial_shape"]) == [4, 5, 6]
    np.testing.assert_allclose(by_sitk.meta["spacing"], [1.5, 1.0, 2.0])


def test_sitk_reads_nifti_like_nibabel():
    ref = LoadImaged("image")({"image": mni_template()})["image"]
    got = LoadImaged("image", reader=SimpleITKReader())({"image": mni_template()})["image"]
    assert got.shape == ref.shape == (197, 233, 189)
    np.testing.assert_array_equal(got.numpy(), ref.numpy())
    np.testing.assert_allclose(got.affine.numpy(), ref.affine.numpy(), atol=1e-4)


def test_sitk_2d_matches_pil_orientation_and_vector_pixels_become_channels(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20  # (rows, columns)
    png = write_png(tmp_path / "g.png", grey)
    mha = tmp_path / "g.mha"
    sitk.WriteImage(sitk.GetImageFromArray(grey), str(mha))  # numpy (rows, columns) = SimpleITK (y, x)
    by_pil, by_sitk = load(png), load(str(mha), SimpleITKReader())
    assert by_sitk.shape == by_pil.shape == (1, 4, 3)
    np.testing.assert_array_equal(by_sitk.numpy(), by_pil.numpy())
    np.testing.assert_array_equal(by_sitk.numpy()[0], grey.T)
    assert by_sitk.affine.shape == (3, 3)

    rgb = np.stack([grey, grey + 1, grey + 2], axis=-1)
    vec = tmp_path / "rgb.mha"
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(vec))
    img = load(str(vec), SimpleITKReader())
    assert img.shape == (3, 4, 3)
    np.testing.assert_array_equal(img.numpy(), np.moveaxis(rgb, -1, 0).transpose(0, 2, 1))


def test_sitk_stacks_files_as_channels_and_drops_dicom_tag_keys(tmp_path):
    a, b = np.zeros((3, 4, 5), np.float32), np.ones((3, 4, 5), np.float32)
    pa, pb = write_sitk(tmp_path / "a.mha", a), write_sitk(tmp_path / "b.mha", b)
    stacked = LoadImaged("image", reader=SimpleITKReader())({"image": [pa, pb]})["image"]
    assert stacked.shape == (2, 3, 4, 5) and stacked.meta["original_channel_dim"] == 0
    np.testing.assert_array_equal(stacked.numpy()[1], b)

    image = sitk.GetImageFromArray(a)
    image.SetMetaData("0010|0010", PATIENT_NAME)
    image.SetMetaData("Comment", "kept")
    sitk.WriteImage(image, str(tmp_path / "tagged.nrrd"))
    meta = LoadImaged("image", reader=SimpleITKReader())({"image": str(tmp_path / "tagged.nrrd")})["image"].meta
    assert meta["Comment"] == "kept"
    assert_no_identifiers(meta, PATIENT_NAME)
    assert "0010|0010" not in meta


def test_sitk_verify_suffix():
    reader = SimpleITKReader()
    assert reader.verify_suffix("a.MHA") and reader.verify_suffix(["a.nrrd", "b.nii.gz"])
    assert not reader.verify_suffix("a.png") and not reader.verify_suffix(["a.mha", "b.dcm"])


# ---------------------------------------------------------------------------------------------------- DICOM


def test_monai_pydicom_reader_gaps_that_dicom_reader_fills(tmp_path):
    """Documents MONAI 1.6's PydicomReader: rescale yes, MONOCHROME1 no, identifiers with prune_metadata=False."""
    raw = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 300).astype(np.uint16)
    m1 = write_dicom(tmp_path / "m1.dcm", raw, "MONOCHROME1")
    monai_img = LoadImaged("image", reader=PydicomReader())({"image": m1})["image"]
    np.testing.assert_array_equal(monai_img.numpy(), raw.T)  # not inverted
    full = LoadImaged("image", reader=PydicomReader(prune_metadata=False))({"image": m1})["image"].meta
    assert "00100010" in full and PATIENT_NAME in repr(full)  # PatientName reaches the meta dict
    rescaled = write_dicom(tmp_path / "r.dcm", raw, slope=2.0, intercept=-100.0)
    np.testing.assert_array_equal(
        LoadImaged("image", reader=PydicomReader())({"image": rescaled})["image"].numpy(), 2.0 * raw.T - 100.0
    )


@pytest.mark.parametrize(
    "photometric, slope, intercept, expected",
    [
        ("MONOCHROME2", None, None, lambda r: r),
        ("MONOCHROME1", None, None, lambda r: 4095.0 - r),
        ("MONOCHROME2", 2.0, -100.0, lambda r: 2.0 * r - 100.0),
        ("MONOCHROME1", 2.0, -100.0, lambda r: 2.0 * (4095.0 - r) - 100.0),
    ],
)
def test_dicom_reader_pixel_math(tmp_path, photometric, slope, intercept, expected):
    raw = np.array([[0, 1, 2, 4095], [7, 100, 2048, 4000], [3, 5, 8, 13]], dtype=np.uint16)
    path = write_dicom(tmp_path / "x.dcm", raw, photometric, bits_stored=12, slope=slope, intercept=intercept)
    img = load(path, DicomReader())
    assert img.shape == (1, 4, 3)  # swap_ij: (columns, rows), like PILReader
    np.testing.assert_array_equal(img.numpy()[0], expected(raw.astype(np.float64)).T)
    assert img.meta["PhotometricInterpretation"] == photometric


def test_dicom_reader_inverts_signed_monochrome1(tmp_path):
    raw = np.array([[-2048, -1, 0], [1, 100, 2047]], dtype=np.int16)
    path = write_dicom(tmp_path / "s.dcm", raw, "MONOCHROME1", bits_stored=12)
    img = LoadImaged("image", reader=DicomReader())({"image": path})["image"]
    np.testing.assert_array_equal(img.numpy(), (-1.0 - raw.astype(np.float64)).T)  # lo + hi = -2048 + 2047


def test_dicom_reader_meta_is_a_whitelist(tmp_path):
    raw = np.full((3, 4), 7, dtype=np.uint16)
    path = write_dicom(tmp_path / "p.dcm", raw, "MONOCHROME1", slope=2.0, intercept=-100.0)
    meta = load(path, DicomReader()).meta
    assert_no_identifiers(meta, PATIENT_NAME, PATIENT_ID, "OTHER-0815", "St. Example", "House^Gregory", "ACC-999")
    dicom_keys = {k for k in meta if isinstance(k, str) and (k[:1].isupper() or k[:1].isdigit())}
    assert dicom_keys == {
        "Modality",
        "PhotometricInterpretation",
        "Rows",
        "Columns",
        "SamplesPerPixel",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "ImagerPixelSpacing",
        "RescaleSlope",
        "RescaleIntercept",
        "ViewPosition",
    }
    assert (meta["Modality"], meta["ViewPosition"], meta["Rows"], meta["RescaleSlope"]) == ("DX", "PA", 3, 2.0)
    np.testing.assert_array_equal(meta["ImagerPixelSpacing"], [0.143, 0.143])


@pytest.mark.parametrize("name, ct_values", [("CT_small.dcm", True), ("MR_small.dcm", False)])
def test_dicom_reader_on_pydicom_test_files(name, ct_values):
    path = pydicom_test_file(name)
    ds = pydicom.dcmread(path)
    img = load(path, DicomReader())
    expected = ds.pixel_array.astype(np.float64) + (-1024.0 if ct_values else 0.0)  # CT: slope 1, intercept -1024
    np.testing.assert_array_equal(img.numpy()[0], expected.T)
    assert_no_identifiers(img.meta, str(ds.PatientName), str(ds.PatientID))
    assert {"00200037", "00200032", "00280030"} <= set(img.meta)  # geometry for the affine, as PydicomReader
    np.testing.assert_allclose(img.meta["PixelSpacing"], [float(v) for v in ds.PixelSpacing])
    reference = LoadImaged("image", reader=PydicomReader())({"image": path})["image"]
    np.testing.assert_allclose(img.affine.numpy(), reference.affine.numpy())


@pytest.mark.parametrize(
    "tags, words",
    [
        (("PatientName",), "PatientName"),
        (("PatientID",), "PatientID"),
        (("OtherPatientIDs",), "OtherPatientIDs"),
        (("StudyInstanceUID",), "StudyInstanceUID"),
        (("InstitutionName",), "InstitutionName"),
        (("AccessionNumber",), "AccessionNumber"),
        (("StudyDate",), "StudyDate"),
        (("SeriesDescription",), "SeriesDescription"),
        (("NotAKeyword",), "not a DICOM keyword"),
    ],
)
def test_dicom_reader_refuses_identifying_tags(tags, words):
    with pytest.raises(ValueError, match=words):
        DicomReader(keep_tags=tags)


def test_dicom_reader_arguments_and_suffix(tmp_path):
    reader = DicomReader(keep_tags=DICOM_TECHNICAL_TAGS + ("WindowCenter", "ImageOrientationPatient"))
    assert "WindowCenter" in reader.keep_tags
    with pytest.raises(ValueError, match="prune_metadata"):
        DicomReader(prune_metadata=False)
    with pytest.raises(TypeError, match="keep_tags"):
        DicomReader(keep_tags=(1,))
    no_suffix = tmp_path / "IM0001"
    shutil.copy(pydicom_test_file("CT_small.dcm"), no_suffix)
    assert reader.verify_suffix("x.dcm") and reader.verify_suffix(str(no_suffix))
    assert reader.verify_suffix(str(tmp_path))  # a directory: a DICOM series
    assert not reader.verify_suffix(write_png(tmp_path / "a.png", np.zeros((2, 2), np.uint8)))


# ---------------------------------------------------------------------------------------------------- dispatcher


def test_medical_image_reader_picks_by_type(tmp_path):
    reader = MedicalImageReader()
    no_suffix = tmp_path / "IM0001"
    shutil.copy(pydicom_test_file("CT_small.dcm"), no_suffix)
    cases = {
        "a.dcm": DicomReader,
        str(no_suffix): DicomReader,
        "a.nii.gz": "NibabelReader",
        "a.NII": "NibabelReader",
        "a.mha": SimpleITKReader,
        "a.nrrd": SimpleITKReader,
        "a.png": "PILReader",
        "a.JPG": "PILReader",
        "a.npy": "NumpyReader",
    }
    for name, expected in cases.items():
        got = reader.reader_for(name)
        assert (type(got).__name__ == expected) if isinstance(expected, str) else isinstance(got, expected), name
    img = load(str(no_suffix), reader)
    np.testing.assert_array_equal(img.numpy()[0], pydicom.dcmread(no_suffix).pixel_array.T - 1024.0)
    assert reader.verify_suffix(["a.png", "b.png"]) and not reader.verify_suffix(["a.png", "b.mha"])


def test_medical_image_reader_errors(tmp_path):
    reader = MedicalImageReader()
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(ValueError, match=r"cannot tell the image type of .*notes\.txt.*\.png"):
        reader.reader_for(str(text))
    with pytest.raises(ValueError, match=r"ghost\.xyz does not exist"):
        reader.reader_for(str(tmp_path / "ghost.xyz"))
    with pytest.raises(ValueError, match="different readers"):
        reader.reader_for(["a.png", "b.mha"])
    with pytest.raises(TypeError, match="MedicalImageReader.get_data"):
        reader.get_data(object())


def test_palette_png_loads_as_colours(tmp_path):
    palette = Image.new("P", (2, 1))
    palette.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette.putdata([0, 1])
    palette.save(tmp_path / "p.png")
    img = load(str(tmp_path / "p.png"), MedicalImageReader())
    assert img.shape == (3, 2, 1)
    np.testing.assert_array_equal(img.numpy()[:, :, 0], [[10, 200], [20, 100], [30, 50]])


def test_dicom_reader_affine_for_projection_radiographs(tmp_path, recwarn):
    path = write_dicom(tmp_path / "dx.dcm", np.zeros((3, 4), np.uint16))  # no ImageOrientationPatient/Position
    img = LoadImaged("image", reader=DicomReader())({"image": path})["image"]
    np.testing.assert_allclose(img.meta["spacing"], [0.143, 0.143])
    np.testing.assert_allclose(img.affine.numpy(), np.diag([-0.143, -0.143, 1.0, 1.0]))  # RAS of LPS axes
    assert not [w for w in recwarn if "ImageOrientationPatient" in str(w.message)]


# ---------------------------------------------------------------------------------------------------- DICOM layouts


def frames_file(tmp_path, frames=3, rows=20, columns=30) -> tuple[str, np.ndarray]:
    raw = np.random.default_rng(0).integers(0, 4096, (frames, rows, columns)).astype(np.uint16)
    return write_dicom(tmp_path / "mf.dcm", raw), raw


def test_monai_pydicom_reader_permutes_multi_frame_files(tmp_path):
    """Documents MONAI 1.6's PydicomReader: a (frames, rows, columns) file comes out (rows, frames, columns)."""
    path, raw = frames_file(tmp_path)
    img = LoadImaged("image", reader=PydicomReader())({"image": path})["image"]
    assert img.shape == (20, 3, 30)
    np.testing.assert_array_equal(img.numpy(), np.swapaxes(raw, 0, 1))


def test_multi_frame_dicom_frames_are_the_last_axis(tmp_path):
    path, raw = frames_file(tmp_path)
    pixel_array = pydicom.dcmread(path).pixel_array  # (frames, rows, columns)
    img = load(path, DicomReader())
    assert img.shape == (1, 30, 20, 3)  # (channel, x = columns, y = rows, frames)
    got = img.numpy()[0]
    for i in range(30):
        for j in range(20):
            for k in range(3):
                assert got[i, j, k] == pixel_array[k, j, i], (i, j, k)
    assert img.meta["NumberOfFrames"] == 3 and tuple(img.meta["spatial_shape"]) == (30, 20, 3)
    # the same convention as a single-frame file of one frame and as a series directory of the frames
    single = load(write_dicom(tmp_path / "one.dcm", raw[1]), DicomReader())
    np.testing.assert_array_equal(single.numpy()[0], got[..., 1])
    series = tmp_path / "series"
    series.mkdir()
    for k in (2, 0, 1):  # written out of order: the reader sorts by InstanceNumber
        write_dicom(
            series / f"s{k}.dcm",
            raw[k],
            InstanceNumber=k + 1,
            ImagePositionPatient=[0.0, 0.0, float(k)],
            ImageOrientationPatient=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            PixelSpacing=[1.0, 1.0],
        )
    by_series = load(str(series), DicomReader())
    assert by_series.shape == img.shape
    np.testing.assert_array_equal(by_series.numpy(), img.numpy())


@pytest.mark.parametrize("name, channels", [("rtdose.dcm", 1), ("SC_rgb_rle_2frame.dcm", 3)])
def test_multi_frame_pydicom_test_files(name, channels):
    path = pydicom_test_file(name)
    ds = pydicom.dcmread(path)
    pixel_array = ds.pixel_array.astype(np.float64)  # (frames, rows, columns[, samples])
    if channels == 1:
        pixel_array = pixel_array[..., None]
    img = load(path, DicomReader())
    frames, rows, columns = int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns)
    assert img.shape == (channels, columns, rows, frames) and img.meta["NumberOfFrames"] == frames
    got = img.numpy()
    for c in range(channels):
        for k in range(frames):
            for j in range(rows):
                np.testing.assert_array_equal(got[c, :, j, k], pixel_array[k, j, :, c])


@pytest.mark.parametrize("name", ["SC_rgb_rle.dcm", "SC_rgb_small_odd.dcm", "written"])
def test_rgb_dicom_loads_with_channels(tmp_path, name):
    if name == "written":
        rgb = np.random.default_rng(1).integers(0, 256, (5, 7, 3)).astype(np.uint8)
        path = write_dicom(tmp_path / "rgb.dcm", rgb, "RGB", bits_stored=8)
    else:
        path = pydicom_test_file(name)
    pixel_array = pydicom.dcmread(path).pixel_array  # (rows, columns, 3)
    rows, columns = pixel_array.shape[:2]
    img = load(path, DicomReader())
    assert img.shape == (3, columns, rows)
    assert img.meta["original_channel_dim"] == -1 and tuple(img.meta["spatial_shape"]) == (columns, rows)
    assert len(img.meta["spacing"]) == 2
    np.testing.assert_array_equal(img.numpy(), np.transpose(pixel_array, (2, 1, 0)))
    # MONAI's PydicomReader takes the samples for a spatial axis (no channel)
    monai_img = load(path, PydicomReader())
    assert monai_img.shape == (1, columns, rows, 3)


def test_colour_dicom_cannot_be_stacked_as_channels(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    a = write_dicom(tmp_path / "a.dcm", rgb, "RGB", bits_stored=8)
    b = write_dicom(tmp_path / "b.dcm", rgb, "RGB", bits_stored=8)
    with pytest.raises(ValueError, match=r"SamplesPerPixel=3\) cannot be stacked .* one colour file"):
        LoadImaged("image", reader=DicomReader())({"image": [a, b]})
    grey = [write_dicom(tmp_path / f"g{i}.dcm", np.full((4, 5), i, np.uint16)) for i in range(2)]
    stacked = LoadImaged("image", reader=DicomReader())({"image": grey})["image"]
    assert stacked.shape == (2, 5, 4)  # grey files still stack as channels


@pytest.mark.parametrize(
    "compressed, reference",
    [
        ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),  # JPEG-LS lossless (pylibjpeg-libjpeg)
        ("MR_small_jp2klossless.dcm", "MR_small.dcm"),  # JPEG 2000 lossless (pylibjpeg-openjpeg)
        ("SC_rgb_jpeg_gdcm.dcm", "SC_rgb_rle.dcm"),  # JPEG Lossless process 14, RGB (pylibjpeg-libjpeg)
    ],
)
def test_compressed_dicom_matches_its_uncompressed_counterpart(compressed, reference, caplog):
    with caplog.at_level(logging.DEBUG):
        got = load(pydicom_test_file(compressed), DicomReader())
    expected = load(pydicom_test_file(reference), DicomReader())
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got.numpy(), expected.numpy())
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_lossy_12_bit_jpeg_extended_decodes():
    path = pydicom_test_file("JPGExtended.dcm")  # JPEG Extended (process 2 and 4), 12-bit
    img = load(path, DicomReader())
    np.testing.assert_array_equal(img.numpy()[0], pydicom.dcmread(path).pixel_array.T)
    assert img.shape == (1, 256, 1024) and float(img.max()) > float(img.min())


# ---------------------------------------------------------------------------------------------------- alpha


def composite_reference(array: np.ndarray) -> np.ndarray:
    """Brute force: every colour value times alpha / 255 (alpha last), rounded half up, as uint8."""
    out = np.zeros(array.shape[:-1] + (array.shape[-1] - 1,), np.uint8)
    for y in range(array.shape[0]):
        for x in range(array.shape[1]):
            alpha = int(array[y, x, -1])
            for c in range(array.shape[-1] - 1):
                out[y, x, c] = int(np.floor(int(array[y, x, c]) * alpha / 255 + 0.5))
    return out


@pytest.mark.parametrize("channels", [4, 2])  # RGBA, LA
def test_alpha_is_composited_over_black(tmp_path, channels):
    array = np.random.default_rng(2).integers(0, 256, (5, 6, channels)).astype(np.uint8)
    array[0, :, -1] = 0  # fully transparent: black
    array[1, :, -1] = 255  # opaque: unchanged
    img = load(write_png(tmp_path / "a.png", array), MedicalImageReader())
    expected = composite_reference(array)
    assert img.shape == (channels - 1, 6, 5)
    np.testing.assert_array_equal(img.numpy(), np.transpose(expected, (2, 1, 0)))
    assert not img.numpy()[:, :, 0].any()
    np.testing.assert_array_equal(img.numpy()[:, :, 1], np.transpose(array[1, :, :-1], (1, 0)))


def test_opaque_alpha_just_disappears_and_transparent_palette_is_composited(tmp_path):
    rgb = np.random.default_rng(3).integers(0, 256, (4, 5, 3)).astype(np.uint8)
    opaque = np.concatenate([rgb, np.full((4, 5, 1), 255, np.uint8)], axis=-1)
    by_rgba = load(write_png(tmp_path / "o.png", opaque), MedicalImageReader())
    by_rgb = load(write_png(tmp_path / "c.png", rgb), MedicalImageReader())
    np.testing.assert_array_equal(by_rgba.numpy(), by_rgb.numpy())

    palette = Image.new("P", (2, 1))
    palette.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette.putdata([0, 1])
    palette.info["transparency"] = 1  # palette index 1 is transparent
    palette.save(tmp_path / "t.png", transparency=1)
    img = load(str(tmp_path / "t.png"), MedicalImageReader())
    np.testing.assert_array_equal(img.numpy()[:, :, 0], [[10, 0], [20, 0], [30, 0]])
