from __future__ import annotations

import hashlib
import shutil

import pytest

from monai_patronus.tracking import dataset_fingerprint


def _files(root, contents):
    root.mkdir(parents=True, exist_ok=True)
    items = []
    for i, data in enumerate(contents):
        path = root / f"img{i}.png"
        path.write_bytes(data)
        items.append({"image": str(path), "label": i % 2, "id": f"p{i}"})
    return items


def test_fingerprint_matches_a_brute_force_digest(tmp_path):
    contents = [b"alpha", b"beta" * 1000, b"gamma"]
    items = _files(tmp_path / "a", contents)
    fp = dataset_fingerprint(items)
    expected = hashlib.sha256("".join(hashlib.sha256(c).hexdigest() for c in contents).encode()).hexdigest()
    assert fp["files_sha256"] == expected
    assert (fp["num_items"], fp["num_files"], fp["num_bytes"]) == (3, 3, sum(map(len, contents)))
    assert not any(str(tmp_path) in str(v) or "p1" == v for v in fp.values())  # digests and counts only


def test_fingerprint_follows_content_not_location(tmp_path):
    items = _files(tmp_path / "a", [b"x", b"y"])
    moved = tmp_path / "elsewhere" / "b"
    shutil.copytree(tmp_path / "a", moved)
    moved_items = [dict(it, image=str(moved / f"img{i}.png")) for i, it in enumerate(items)]
    assert dataset_fingerprint(items) == dataset_fingerprint(moved_items)
    (moved / "img1.png").write_bytes(b"changed")  # one byte of data changes the files digest only
    changed = dataset_fingerprint(moved_items)
    assert changed["files_sha256"] != dataset_fingerprint(items)["files_sha256"]
    assert changed["datalist_sha256"] == dataset_fingerprint(items)["datalist_sha256"]
    relabelled = [dict(it, label=1 - it["label"]) for it in items]
    assert dataset_fingerprint(relabelled)["datalist_sha256"] != dataset_fingerprint(items)["datalist_sha256"]


def test_folder_fingerprint_and_series_folders(tmp_path):
    _files(tmp_path / "root" / "series1", [b"s1", b"s2"])
    by_folder = dataset_fingerprint(tmp_path / "root")
    assert by_folder["num_files"] == 2
    series = dataset_fingerprint([{"image": str(tmp_path / "root" / "series1")}])  # a DICOM series folder
    assert series["num_files"] == 2 and series["num_items"] == 1


def test_bad_data_is_named(tmp_path):
    with pytest.raises(ValueError, match="item 1 names no existing file"):
        dataset_fingerprint([{"image": __file__}, {"image": str(tmp_path / "gone.png")}])
    with pytest.raises(ValueError, match="not a folder"):
        dataset_fingerprint(tmp_path / "nope")
    with pytest.raises(TypeError, match="datalist"):
        dataset_fingerprint(42)
