from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest

from monai_patronus.data.chexpert import (
    CHEXPERT_LABELS,
    CHEXPERT_METADATA,
    chexpert_label_columns,
    load_chexpert_datalist,
)

HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS]
# (path, sex, age, view, ap/pa, {label column: CSV text}); unlisted labels are blank
ROWS = [
    (
        "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg",
        "Female",
        "68",
        "Frontal",
        "AP",
        {"No Finding": "1.0", "Support Devices": "1.0"},
    ),
    (
        "CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg",
        "Female",
        "87",
        "Frontal",
        "AP",
        {"Cardiomegaly": "-1.0", "Edema": "1.0", "Fracture": "0.0"},
    ),
    (
        "CheXpert-v1.0-small/train/patient00002/study1/view2_lateral.jpg",
        "Male",
        "83",
        "Lateral",
        "",
        {"Lung Opacity": "1.0", "Pneumonia": "-1.0"},
    ),
    (
        "CheXpert-v1.0-small/train/patient00003/study1/view1_frontal.jpg",
        "Unknown",
        "",
        "Frontal",
        "PA",
        {"Edema": "-1.0", "Pleural Effusion": "0.0"},
    ),
]


def write_chexpert(root: Path, rows=ROWS, header=HEADER, make_images=True) -> Path:
    """``root/CheXpert-v1.0-small/train.csv`` listing ``CheXpert-v1.0-small/train/...`` (the real layout)."""
    folder = root / "CheXpert-v1.0-small"
    folder.mkdir(parents=True, exist_ok=True)
    lines = [",".join(header)]
    for path, sex, age, view, appa, labels in rows:
        values = {"Path": path, "Sex": sex, "Age": age, "Frontal/Lateral": view, "AP/PA": appa, **labels}
        lines.append(",".join(values.get(column, "") for column in header))
        if make_images:
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_bytes(b"jpg")
    csv = folder / "train.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv


def label(values: dict[str, float]) -> np.ndarray:
    out = np.zeros(len(CHEXPERT_LABELS), dtype=np.float32)
    for column, value in values.items():
        out[CHEXPERT_LABELS.index(column)] = value
    return out


def test_datalist_items(tmp_path):
    csv = write_chexpert(tmp_path)
    items = load_chexpert_datalist(csv, frontal_only=False, extra_columns=CHEXPERT_METADATA)
    assert len(items) == 4
    first = items[0]
    assert set(first) == {"image", "label", "id", "row", "sex", "age", "frontal_lateral", "ap_pa"}
    assert first["image"] == str(tmp_path / ROWS[0][0]) and Path(first["image"]).is_absolute()
    assert first["id"] == "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal"
    assert first["row"] == 2 and items[3]["row"] == 5
    assert first["label"].dtype == np.float32 and first["label"].shape == (14,)
    np.testing.assert_array_equal(first["label"], label({"No Finding": 1, "Support Devices": 1}))
    assert (first["sex"], first["age"], first["frontal_lateral"], first["ap_pa"]) == ("Female", 68.0, "Frontal", "AP")
    assert items[2]["ap_pa"] == "" and math.isnan(items[3]["age"])  # blanks: "" for text, NaN for numbers


@pytest.mark.parametrize("policy, uncertain_value", [("ones", 1.0), ("zeros", 0.0), ("ignore", float("nan"))])
def test_uncertain_policies(tmp_path, policy, uncertain_value):
    items = load_chexpert_datalist(write_chexpert(tmp_path), uncertain=policy, frontal_only=False)
    expected = label({"Cardiomegaly": uncertain_value, "Edema": 1, "Fracture": 0})
    np.testing.assert_array_equal(items[1]["label"], expected)  # equal_nan by default
    np.testing.assert_array_equal(items[3]["label"], label({"Edema": uncertain_value}))


def test_uncertain_error_and_per_column_policy(tmp_path):
    csv = write_chexpert(tmp_path)
    with pytest.raises(ValueError, match=r"row 3, column 'Cardiomegaly' is uncertain"):
        load_chexpert_datalist(csv, uncertain="error")
    policies = dict.fromkeys(CHEXPERT_LABELS, "zeros") | {"Edema": "ones", "Pneumonia": "ignore"}
    items = load_chexpert_datalist(csv, uncertain=policies, frontal_only=False)
    np.testing.assert_array_equal(items[1]["label"], label({"Edema": 1}))
    np.testing.assert_array_equal(items[2]["label"], label({"Lung Opacity": 1, "Pneumonia": float("nan")}))
    np.testing.assert_array_equal(items[3]["label"], label({"Edema": 1}))
    with pytest.raises(ValueError, match=r"no policy for label columns \['No Finding'"):
        load_chexpert_datalist(csv, uncertain={"Edema": "ones"})
    with pytest.raises(ValueError, match="Unsupported option 'maybe'"):
        load_chexpert_datalist(csv, uncertain="maybe")


def test_label_columns_frontal_only_and_extras(tmp_path):
    csv = write_chexpert(tmp_path)
    items = load_chexpert_datalist(
        csv, label_columns=["Edema", "Cardiomegaly"], uncertain="zeros", frontal_only=True, extra_columns=()
    )
    assert [i["row"] for i in items] == [2, 3, 5]
    assert set(items[0]) == {"image", "label", "id", "row"}
    np.testing.assert_array_equal(np.stack([i["label"] for i in items]), [[0, 0], [1, 0], [0, 0]])


def test_image_root_and_absolute_paths(tmp_path):
    root = tmp_path / "elsewhere"
    rows = [
        ("train/p1/view1_frontal.jpg", "Male", "50", "Frontal", "PA", {"Edema": "1"}),
        (str(tmp_path / "abs.png"), "Male", "51", "Frontal", "PA", {}),
    ]
    csv = write_chexpert(tmp_path / "csvdir", rows=rows, make_images=False)
    (root / "train/p1").mkdir(parents=True)
    (root / "train/p1/view1_frontal.jpg").write_bytes(b"x")
    (tmp_path / "abs.png").write_bytes(b"x")
    items = load_chexpert_datalist(csv, image_root=root)
    assert [i["image"] for i in items] == [str(root / rows[0][0]), str(tmp_path / "abs.png")]
    assert items[0]["label"][CHEXPERT_LABELS.index("Edema")] == 1.0  # "1" parses like "1.0"
    with pytest.raises(ValueError, match=r"train\.csv row 2: the image file in column 'Path' does not exist") as info:
        load_chexpert_datalist(csv)  # default root: the CSV's folder, which does not hold the images
    assert "p1" not in str(info.value) and "view1_frontal" not in str(info.value)  # rows, never paths


def test_missing_images_raise_or_skip(tmp_path, caplog):
    csv = write_chexpert(tmp_path)
    (tmp_path / ROWS[1][0]).unlink()
    (tmp_path / ROWS[3][0]).unlink()
    with pytest.raises(ValueError, match=r"row 3: the image file in column 'Path' does not exist") as info:
        load_chexpert_datalist(csv, frontal_only=False)
    assert "patient" not in str(info.value) and str(tmp_path) not in str(info.value)
    with caplog.at_level(logging.WARNING, logger="monai_patronus.data"):
        items = load_chexpert_datalist(csv, on_missing="skip", frontal_only=False)
    assert [i["row"] for i in items] == [2, 4]
    assert "skipped 2 of 4 rows of train.csv whose image file does not exist (rows 3, 5)" in caplog.text
    assert "patient" not in caplog.text and str(tmp_path) not in caplog.text
    with pytest.raises(ValueError, match="Unsupported option 'ignore'"):
        load_chexpert_datalist(csv, on_missing="ignore")


def test_empty_datalist(tmp_path):
    csv = write_chexpert(tmp_path, make_images=False)
    with pytest.raises(ValueError, match=r"no images left .* 4 rows, 0 dropped by frontal_only, 4 skipped"):
        load_chexpert_datalist(csv, on_missing="skip", frontal_only=False)
    only_lateral = write_chexpert(tmp_path / "b", rows=[ROWS[2]])
    with pytest.raises(ValueError, match="1 dropped by frontal_only"):
        load_chexpert_datalist(only_lateral, frontal_only=True)
    header_only = write_chexpert(tmp_path / "c", rows=[])
    with pytest.raises(ValueError, match="no images left"):
        load_chexpert_datalist(header_only)


def test_csv_errors(tmp_path):
    with pytest.raises(ValueError, match=r"CSV file .*nope\.csv does not exist"):
        load_chexpert_datalist(tmp_path / "nope.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"cannot parse .*empty\.csv"):
        load_chexpert_datalist(empty)
    no_path = write_chexpert(tmp_path / "a", header=[c for c in HEADER if c != "Path"])
    with pytest.raises(ValueError, match=r"no path column\(s\) \['Path'\]; available columns: \['Sex', 'Age'"):
        load_chexpert_datalist(no_path)
    no_label = write_chexpert(tmp_path / "b", header=[c for c in HEADER if c != "Edema"])
    with pytest.raises(ValueError, match=r"no label column\(s\) \['Edema'\]; available columns: \['Path'"):
        load_chexpert_datalist(no_label, label_columns=CHEXPERT_LABELS)
    with pytest.raises(ValueError, match=r"no extra column\(s\) \['Race'\]"):
        load_chexpert_datalist(write_chexpert(tmp_path / "c"), extra_columns=("Race",))
    with pytest.raises(ValueError, match="label_columns is empty"):
        load_chexpert_datalist(write_chexpert(tmp_path / "c"), label_columns=[])
    only_metadata = write_chexpert(tmp_path / "d", header=["Path", "Sex", "Age"])
    with pytest.raises(ValueError, match=r"train\.csv has no label column: its columns \['Path', 'Sex', 'Age'\]"):
        load_chexpert_datalist(only_metadata)


@pytest.mark.parametrize("bad", ["2.0", "yes", "nan", "0.5"])
def test_invalid_label_value_names_row_and_column(tmp_path, bad):
    rows = [ROWS[0], (ROWS[1][0], "Male", "1", "Frontal", "AP", {"Pneumothorax": bad})]
    csv = write_chexpert(tmp_path, rows=rows)
    with pytest.raises(ValueError, match=rf"row 3, column 'Pneumothorax': label '{bad}' is not 1.0, 0.0, -1.0"):
        load_chexpert_datalist(csv)


def test_blank_path_names_row(tmp_path):
    csv = write_chexpert(tmp_path, rows=[ROWS[0], ("", "Male", "1", "Frontal", "AP", {})], make_images=False)
    with pytest.raises(ValueError, match="row 3 has a blank 'Path'"):
        load_chexpert_datalist(csv)


def test_frontal_only_needs_the_view_column(tmp_path):
    csv = write_chexpert(tmp_path, header=[c for c in HEADER if c != "Frontal/Lateral"])
    with pytest.raises(ValueError, match=r"no view column\(s\) \['Frontal/Lateral'\]"):
        load_chexpert_datalist(csv, frontal_only=True, extra_columns=())


def _write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_users_csv_needs_only_path_and_label_columns(tmp_path):
    """A CSV with a path column and finding columns, nothing else: the findings are the labels, every row kept."""
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(b"x")
    csv = _write_csv(tmp_path / "mine.csv", ["Path,Cardiomegaly,Pacemaker", "a.png,1,1", "b.png,0,", "c.png,-1,0"])
    assert chexpert_label_columns(csv) == ["Cardiomegaly", "Pacemaker"]
    items = load_chexpert_datalist(csv)
    assert [set(i) for i in items] == [{"image", "label", "id", "row"}] * 3
    np.testing.assert_array_equal(np.stack([i["label"] for i in items]), [[1, 1], [0, 0], [1, 0]])  # U-Ones
    assert [i["id"] for i in items] == ["a", "b", "c"]
    # a metadata column is asked for explicitly, and then it must exist
    with pytest.raises(ValueError, match=r"mine\.csv has no view column\(s\) \['Frontal/Lateral'\]"):
        load_chexpert_datalist(csv, frontal_only=True)
    with pytest.raises(ValueError, match=r"no extra column\(s\) \['Sex'\]"):
        load_chexpert_datalist(csv, extra_columns=["Sex"])
    # a non-label column that is not CheXpert metadata is named with the fix
    wide = _write_csv(tmp_path / "wide.csv", ["Path,Site,Cardiomegaly", "a.png,north,1"])
    with pytest.raises(ValueError, match=r"row 2, column 'Site': label 'north' is not .* pass label_columns"):
        load_chexpert_datalist(wide)
    assert load_chexpert_datalist(wide, extra_columns=["Site"])[0]["site"] == "north"


def test_frontal_only_auto_keeps_frontal_rows_when_the_column_exists(tmp_path):
    csv = write_chexpert(tmp_path)
    assert [i["row"] for i in load_chexpert_datalist(csv)] == [2, 3, 5]  # row 4 is lateral
    assert [i["row"] for i in load_chexpert_datalist(csv, frontal_only=False)] == [2, 3, 4, 5]
    assert chexpert_label_columns(csv) == list(CHEXPERT_LABELS)


def test_trailing_commas_and_long_rows(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    trailing = _write_csv(tmp_path / "t.csv", ["Path,Edema,Fracture", "a.png,1,0,", "a.png,0,1,"])
    items = load_chexpert_datalist(trailing)
    np.testing.assert_array_equal(np.stack([i["label"] for i in items]), [[1, 0], [0, 1]])
    assert items[0]["image"] == str(tmp_path / "a.png")
    long = _write_csv(tmp_path / "l.csv", ["Path,Edema,Fracture", "a.png,Female,0,1"])  # a value shifts the row
    with pytest.raises(ValueError, match=r"l\.csv row 2 has 4 fields but the header has 3"):
        load_chexpert_datalist(long)
    later = _write_csv(tmp_path / "m.csv", ["Path,Edema,Fracture", "a.png,1,0", "a.png,Female,0,1"])
    with pytest.raises(ValueError, match=r"cannot parse m\.csv .*Expected 3 fields in line 3, saw 4"):
        load_chexpert_datalist(later)
