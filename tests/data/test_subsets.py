from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from monai_patronus.data import CHEXPERT_LABELS
from monai_patronus.data.subsets import (
    SubsetResult,
    as_table,
    balanced_independent_subset,
    celeba_hair_smiling_subset,
    chexpert_device_finding_subset,
    correlated_subset,
    rule_subset,
)
from tests.data.test_natural import CELEBA_ATTRIBUTES

CELEBA_NAMES = CELEBA_ATTRIBUTES


def random_table(n=120, seed=0, nan_fraction=0.1) -> pd.DataFrame:
    """Binary columns x, y, z (z with NaNs) plus a text column the builders must ignore."""
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 2, size=(n, 3)).astype(float)
    values[rng.random(n) < nan_fraction, 2] = np.nan
    frame = pd.DataFrame(values, columns=["x", "y", "z"])
    frame["path"] = [f"img{i}.png" for i in range(n)]
    return frame


def cell_table(c00: int, c01: int, c10: int, c11: int, seed=0) -> pd.DataFrame:
    """Columns a, b with exactly these cell counts (rows shuffled) and one NaN row."""
    rows = [(0, 0)] * c00 + [(0, 1)] * c01 + [(1, 0)] * c10 + [(1, 1)] * c11 + [(np.nan, 1)]
    order = np.random.default_rng(seed).permutation(len(rows))
    return pd.DataFrame(np.array(rows, dtype=float)[order], columns=["a", "b"])


def matches(row, rule) -> bool:
    return all(row[c] == v for c, v in rule.items())  # NaN == v is False


def brute_force(frame, keep, exclude=()) -> list[int]:
    return [
        i
        for i, row in enumerate(frame.to_dict("records"))
        if any(matches(row, r) for r in keep) and not any(matches(row, r) for r in exclude)
    ]


def fake_celeba(n=200, seed=0):
    """A CelebAReader-like object with the real 40 attribute names (0/1 float32 tensor)."""
    attributes = torch.from_numpy(np.random.default_rng(seed).integers(0, 2, size=(n, 40)).astype(np.float32))
    return SimpleNamespace(
        attributes=attributes, attribute_names=list(CELEBA_NAMES), filenames=[f"{i + 1:06d}.jpg" for i in range(n)]
    )


def fake_datalist(n=80, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=(n, len(CHEXPERT_LABELS))).astype(np.float32)
    labels[rng.random(n) < 0.1, CHEXPERT_LABELS.index("Cardiomegaly")] = np.nan  # uncertain, ignored
    return [{"image": f"/x/p{i}/view1_frontal.jpg", "label": labels[i], "id": f"p{i}"} for i in range(n)]


# ----------------------------------------------------------------------------------------------- as_table


def test_as_table_takes_what_pandas_takes():
    values = np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32)
    expected = pd.DataFrame({"a": [1.0, 0.0, 1.0], "b": [0.0, 1.0, 1.0]})
    kinds = [
        (pd.DataFrame(values, columns=["a", "b"], index=[10, 11, 12]), None),
        ({"a": values[:, 0], "b": values[:, 1]}, None),
        (values, ["a", "b"]),
        (torch.from_numpy(values), ["a", "b"]),
    ]
    for table, columns in kinds:
        pd.testing.assert_frame_equal(as_table(table, columns), expected)
    bools = pd.DataFrame({"a": [True, False], "n": pd.array([1, None], dtype="Int64"), "s": ["u", "v"]})
    out = as_table(bools, select=["n", "a"])
    assert list(out.columns) == ["n", "a"] and out["a"].tolist() == [1.0, 0.0] and math.isnan(out["n"][1])
    with pytest.raises(ValueError, match="img0.png"):  # not numeric
        as_table(random_table(), select=["x", "path"])
    with pytest.raises(ValueError, match=r"\['nope'\] are not in the table; available columns: \['x', 'y'"):
        as_table(random_table(), select=["nope"])


# -------------------------------------------------------------------------------------------- rule_subset


def test_rule_subset_matches_brute_force_and_report_statistics():
    frame = random_table()
    keep = [{"x": 1, "y": 1}, {"x": 0, "z": 0}]
    exclude = [{"y": 0, "z": 1}]
    result = rule_subset(frame, keep, exclude)
    assert result.indices.dtype == np.int64 and not result.indices.flags.writeable
    assert result.indices.tolist() == brute_force(frame, keep, exclude)
    report = result.report
    json.dumps(report, allow_nan=False)  # JSON-serialisable, no NaN
    assert report["source_size"] == len(frame) and report["subset_size"] == len(result)
    assert report["columns"] == ["x", "y", "z"]
    assert [(p["a"], p["b"]) for p in report["pairs"]] == [("x", "y"), ("x", "z"), ("y", "z")]
    subset = frame.iloc[result.indices]
    for pair in report["pairs"]:
        for where, part in (("source", frame), ("subset", subset)):
            known = part[[pair["a"], pair["b"]]].dropna().to_numpy()
            stats = pair[where]
            counts = {f"a{i}_b{j}": 0 for i in (0, 1) for j in (0, 1)}
            for va, vb in known:  # by hand
                counts[f"a{int(va)}_b{int(vb)}"] += 1
            assert stats["counts"] == counts and stats["rows"] == len(known)
            assert stats["p_b1_given_a1"] == pytest.approx(known[known[:, 0] == 1, 1].mean())
            assert stats["p_b1_given_a0"] == pytest.approx(known[known[:, 0] == 0, 1].mean())
            if stats["phi"] is not None:
                assert stats["phi"] == pytest.approx(np.corrcoef(known[:, 0], known[:, 1])[0, 1])
            else:
                assert stats["phi_note"].startswith(f"constant in {where}")
    rules = report["rules"]
    assert [r["in_subset"] for r in rules] == [sum(matches(row, r) for row in subset.to_dict("records")) for r in keep]
    assert report["exclude"][0]["matched"] == len(brute_force(frame, exclude))


def test_rule_subset_constant_column_has_null_phi_and_markdown():
    frame = random_table()
    result = rule_subset(frame, {"x": 1})  # a single mapping is one rule
    pair = result.report["pairs"]
    assert pair == []  # only one column named
    result = rule_subset(frame, [{"x": 1, "y": 0}, {"x": 1, "y": 1}])
    subset_stats = result.report["pairs"][0]["subset"]
    assert subset_stats["phi"] is None and subset_stats["phi_note"] == "constant in subset: x always 1"
    assert subset_stats["p_b1_given_a0"] is None
    json.dumps(result.report, allow_nan=False)
    md = result.to_markdown()
    assert "| x | y | subset |" in md and "constant in subset" in md and "| keep rule |" in md


def test_rule_subset_overlapping_rules_count_once():
    frame = random_table()
    result = rule_subset(frame, [{"x": 1}, {"y": 1}])
    assert result.indices.tolist() == brute_force(frame, [{"x": 1}, {"y": 1}])
    assert len(set(result.indices.tolist())) == len(result)


def test_rule_subset_subsampling_is_seeded():
    frame = random_table(n=200)
    keep = [{"x": 1, "y": 1}, {"x": 0, "y": 0}]
    first = rule_subset(frame, keep, max_rows_per_rule=10, seed=3)
    again = rule_subset(frame, keep, max_rows_per_rule=10, seed=3)
    other = rule_subset(frame, keep, max_rows_per_rule=10, seed=4)
    assert np.array_equal(first.indices, again.indices)
    assert not np.array_equal(first.indices, other.indices)
    assert len(first) == 20 and set(first.indices.tolist()) <= set(brute_force(frame, keep))
    assert [r["selected"] for r in first.report["rules"]] == [10, 10]
    assert np.all(np.diff(first.indices) > 0)


def test_rule_subset_errors():
    frame = random_table()
    with pytest.raises(ValueError, match=r"rule column\(s\) \['X'\] are not in the table; available columns: \['x'"):
        rule_subset(frame, [{"X": 1}])
    with pytest.raises(ValueError, match=r"keep\[0\] requires x=2; rule values must be 0 or 1"):
        rule_subset(frame, [{"x": 2}])
    with pytest.raises(ValueError, match="keep is empty"):
        rule_subset(frame, [])
    with pytest.raises(ValueError, match=r"keep\[0\] is an empty rule"):
        rule_subset(frame, [{}])
    with pytest.raises(TypeError, match="keep must be a list of rules"):
        rule_subset(frame, "x")
    with pytest.raises(ValueError, match=r"keep rule 1 \{'x': 1, 'y': 1, 'z': 1\} matched no rows"):
        rule_subset(frame[(frame.x == 0) | (frame.y == 0)], [{"x": 1}, {"x": 1, "y": 1, "z": 1}])
    with pytest.raises(
        ValueError, match=r"keep rule 0 \{'x': 1\} matched \d+ of 120 row\(s\), all removed by the exclude"
    ):
        rule_subset(frame, [{"x": 1}], exclude=[{"x": 1}])
    bad = frame.assign(x=frame.x * 2 - 1)  # -1/1 like raw CelebA
    with pytest.raises(ValueError, match=r"column 'x' must hold only 0, 1 or NaN.*\(x \+ 1\) / 2"):
        rule_subset(bad, [{"x": 1}])
    with pytest.raises(ValueError, match="max_rows_per_rule must be a positive int or None, got 0"):
        rule_subset(frame, [{"x": 1}], max_rows_per_rule=0)
    with pytest.raises(TypeError, match="SeedSequence"):
        rule_subset(frame, [{"x": 1}], seed="0")


# -------------------------------------------------------------------------------------- correlated_subset


@pytest.mark.parametrize("agreement, phi", [(1.0, 1.0), (0.75, 0.5), (0.5, 0.0), (0.0, -1.0)])
def test_correlated_subset_exact_agreement(agreement, phi):
    frame = cell_table(12, 11, 13, 14)
    result = correlated_subset(frame, "a", "b", agreement=agreement, size=16, seed=1)
    subset = frame.iloc[result.indices].to_numpy()
    assert len(result) == 16 and not np.isnan(subset).any()
    assert (subset[:, 0] == subset[:, 1]).mean() == agreement
    assert result.report["agreement_achieved"] == agreement
    stats = result.report["pairs"][0]["subset"]
    assert stats["phi"] == pytest.approx(phi, abs=1e-12)
    if 0 < agreement < 1:
        assert stats["phi"] == pytest.approx(np.corrcoef(subset[:, 0], subset[:, 1])[0, 1])
    assert result.report["rows_dropped_nan"] == 1
    assert sum(result.report["cells"]["selected"].values()) == 16


def test_correlated_subset_largest_size():
    frame = cell_table(c00=5, c01=3, c10=2, c11=7)
    # agreement 1: a1_b1 and a0_b0 balanced, one extra from the fuller cell -> 2 * 5 + 1
    result = correlated_subset(frame, "a", "b")
    assert len(result) == 11 and result.report["cells"]["selected"] == {"a0_b0": 5, "a0_b1": 0, "a1_b0": 0, "a1_b1": 6}
    # agreement 0.75: at most 11 agreeing and 5 disagreeing (2 * 2 + 1) rows; 15 is feasible with rounding
    # (11 + 4, 0.733) but the largest exact size is 12 (9 agree, 3 disagree; odd rows go to the fuller cells)
    result = correlated_subset(frame, "a", "b", agreement=0.75)
    subset = frame.iloc[result.indices].to_numpy()
    assert len(result) == 12 and (subset[:, 0] == subset[:, 1]).mean() == 0.75
    assert result.report["cells"]["selected"] == {"a0_b0": 4, "a0_b1": 2, "a1_b0": 1, "a1_b1": 5}


def test_correlated_subset_seeded_and_errors():
    frame = cell_table(20, 20, 20, 20)
    first = correlated_subset(frame, "a", "b", 0.75, size=16, seed=0)
    assert np.array_equal(first.indices, correlated_subset(frame, "a", "b", 0.75, size=16, seed=0).indices)
    assert not np.array_equal(first.indices, correlated_subset(frame, "a", "b", 0.75, size=16, seed=1).indices)
    small = cell_table(c00=5, c01=3, c10=2, c11=7)
    infeasible = r"size=20 with agreement=1.0 needs 20 agreeing.*a0_b0=5.*largest size .* is 11"
    with pytest.raises(ValueError, match=infeasible):
        correlated_subset(small, "a", "b", size=20)
    with pytest.raises(ValueError, match=r"agreement must be in \[0, 1\].*got 1.5"):
        correlated_subset(small, "a", "b", agreement=1.5)
    with pytest.raises(ValueError, match="a and b are both 'a'"):
        correlated_subset(small, "a", "a")
    with pytest.raises(ValueError, match="size must be a positive int or None, got 0"):
        correlated_subset(small, "a", "b", size=0)
    with pytest.raises(ValueError, match="no subset reaches agreement=1.0.*a0_b0=0"):
        correlated_subset(cell_table(0, 3, 3, 0), "a", "b")
    with pytest.raises(ValueError, match=r"\['c'\] are not in the table; available columns: \['a', 'b'\]"):
        correlated_subset(small, "a", "c")


def test_balanced_independent_subset():
    frame = cell_table(c00=9, c01=4, c10=6, c11=8)
    result = balanced_independent_subset(frame, "a", "b")
    subset = frame.iloc[result.indices].to_numpy()
    cells = [int(((subset[:, 0] == i) & (subset[:, 1] == j)).sum()) for i in (0, 1) for j in (0, 1)]
    assert cells == [4, 4, 4, 4] and result.report["per_cell"] == 4
    stats = result.report["pairs"][0]["subset"]
    assert stats["phi"] == 0.0 and stats["p_b1_given_a1"] == stats["p_b1_given_a0"] == 0.5
    assert len(balanced_independent_subset(frame, "a", "b", per_cell=2)) == 8
    with pytest.raises(ValueError, match=r"per_cell=5 but the smallest cell has 4 rows.*a0_b1=4"):
        balanced_independent_subset(frame, "a", "b", per_cell=5)
    with pytest.raises(ValueError, match=r"cell\(s\) \['a0_b1', 'a1_b0'\] have no rows"):
        balanced_independent_subset(cell_table(3, 0, 0, 3), "a", "b")


# --------------------------------------------------------------------------------------- CelebA, CheXpert


def test_celeba_hair_smiling_subset():
    reader = fake_celeba()
    result = celeba_hair_smiling_subset(reader)
    frame = pd.DataFrame(reader.attributes.numpy(), columns=CELEBA_NAMES)
    hair = frame[["Black_Hair", "Blond_Hair", "Brown_Hair"]]
    expected = [i for i in range(len(frame)) if hair.iloc[i].sum() == 1 and frame.Smiling[i] == 1 - frame.Black_Hair[i]]
    assert result.indices.tolist() == expected
    subset = frame.iloc[result.indices]
    assert (subset[["Black_Hair", "Blond_Hair", "Brown_Hair"]].sum(axis=1) == 1).all()
    assert result.report["shortcut"]["phi_subset"] == -1.0
    assert result.report["shortcut"]["phi_source"] == pytest.approx(np.corrcoef(frame.Black_Hair, frame.Smiling)[0, 1])
    assert np.corrcoef(subset.Black_Hair, subset.Smiling)[0, 1] == pytest.approx(-1.0)
    assert result.select(reader.filenames) == [reader.filenames[i] for i in expected]
    json.dumps(result.report, allow_nan=False)
    assert "Planted shortcut: Black_Hair -> Smiling" in result.to_markdown()
    # the same from an (N, 40) tensor with names
    same = celeba_hair_smiling_subset(reader.attributes, names=CELEBA_NAMES)
    assert np.array_equal(same.indices, result.indices)
    capped = celeba_hair_smiling_subset(reader, max_rows_per_rule=2, seed=0)
    assert len(capped) == 6 and set(capped.indices.tolist()) <= set(expected)
    with pytest.raises(ValueError, match=r"\['Smiling'\] are not in the table"):
        celeba_hair_smiling_subset(frame.drop(columns="Smiling"))
    with pytest.raises(ValueError, match=r"must hold only 0, 1 or NaN.*\(x \+ 1\) / 2"):
        celeba_hair_smiling_subset(reader.attributes * 2 - 1, names=CELEBA_NAMES)


def test_chexpert_device_finding_subset():
    datalist = fake_datalist()
    d, f = CHEXPERT_LABELS.index("Support Devices"), CHEXPERT_LABELS.index("Cardiomegaly")
    result = chexpert_device_finding_subset(datalist)
    items = result.select(datalist)
    assert len(items) == len(result) > 0
    assert all(item["label"][d] == item["label"][f] for item in items)
    labels = np.stack([item["label"] for item in datalist])
    known = labels[~np.isnan(labels[:, f])]
    n11 = int(((known[:, d] == 1) & (known[:, f] == 1)).sum())
    n00 = int(((known[:, d] == 0) & (known[:, f] == 0)).sum())
    assert len(result) == 2 * min(n11, n00) + (n11 != n00)
    assert result.report["rows_dropped_nan"] == int(np.isnan(labels[:, f]).sum())
    assert result.report["pairs"][0]["a"] == "Support Devices" and result.report["pairs"][0]["subset"]["phi"] == 1.0
    half = chexpert_device_finding_subset(datalist, agreement=0.5, size=12, seed=2)
    chosen = labels[half.indices]
    assert (chosen[:, d] == chosen[:, f]).mean() == 0.5
    unknown = r"device/finding column\(s\) \['Pacemaker'\] are not in .*columns: \['No Finding'"
    with pytest.raises(ValueError, match=unknown):
        chexpert_device_finding_subset(datalist, device="Pacemaker")
    with pytest.raises(ValueError, match=r"datalist\[0\]\['label'\] has 14 values but label_columns has 2"):
        chexpert_device_finding_subset(datalist, label_columns=["Support Devices", "Cardiomegaly"])
    with pytest.raises(ValueError, match=r"datalist\[1\] has no 'label' entry"):
        chexpert_device_finding_subset([datalist[0], {"image": "x"}])
    with pytest.raises(ValueError, match="items has 3 entries but the source table had 80 rows"):
        result.select(datalist[:3])


def test_subset_result_is_frozen():
    result = SubsetResult(np.array([3, 1]), {"source_size": 4})
    with pytest.raises(AttributeError):
        result.indices = np.array([0])  # type: ignore[misc]
    assert result.indices.dtype == np.int64 and result.indices.tolist() == [1, 3]
    assert result.select("abcd") == ["b", "d"]


def test_pair_statistics_by_hand():
    from monai_patronus.data.subsets import pair_statistics

    a = np.array([1, 1, 0, 0, 1, np.nan])
    b = np.array([1, 0, 0, 0, 1, 1])
    st = pair_statistics(a, b)  # the NaN row is dropped: a1b1 = 2, a1b0 = 1, a0b0 = 2, a0b1 = 0
    assert st["rows"] == 5 and st["counts"] == {"a0_b0": 2, "a0_b1": 0, "a1_b0": 1, "a1_b1": 2}
    assert st["phi"] == pytest.approx((2 * 2 - 1 * 0) / np.sqrt(3 * 2 * 2 * 3))
    assert st["phi"] == pytest.approx(np.corrcoef(a[:5], b[:5])[0, 1])
    assert st["p_b1_given_a1"] == pytest.approx(2 / 3) and st["p_b1_given_a0"] == 0.0 and st["agreement"] == 0.8
    constant = pair_statistics(np.ones(4), np.array([0, 1, 0, 1]), "device", "finding", "held-out")
    assert constant["phi"] is None and constant["p_b1_given_a0"] is None and constant["p_b1_given_a1"] == 0.5
    assert constant["phi_note"] == "constant in held-out: device always 1"
