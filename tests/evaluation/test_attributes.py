from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from monai_patronus.evaluation.attributes import (
    AttributeAUROC,
    LabelledActivations,
    attribute_auroc,
    check_activations,
    check_labels,
    encode_labelled,
)
from tests._helpers import tiny_patronus

# 6 samples, 3 prototypes; hand-computed AUROC for y = [0, 0, 1, 1, 1, 0]
# column 0: positives 0.35, 0.8, 0.4 vs negatives 0.1, 0.4, 0.2 -> wins 2 + 3 + (2 + 0.5 tie) = 7.5 of 9 -> 5/6
# column 1: positives 2, 0, 0 vs negatives 3, 1, 5 -> 1 win of 9 -> u = 1/9 -> max(u, 1 - u) = 8/9
# column 2: constant -> 0.5
S6 = np.array([[0.1, 3, 0], [0.4, 1, 0], [0.35, 2, 0], [0.8, 0, 0], [0.4, 0, 0], [0.2, 5, 0]])
Y6 = np.array([0, 0, 1, 1, 1, 0])


def brute_force_auroc(scores: np.ndarray, y: np.ndarray) -> float:
    """P(pos > neg) + 0.5 P(pos == neg) over all positive/negative pairs."""
    pos, neg = scores[y == 1], scores[y == 0]
    total = 0.0
    for p in pos:
        for n in neg:
            total += 1.0 if p > n else 0.5 if p == n else 0.0
    return total / (len(pos) * len(neg))


# ---------------------------------------------------------------------------------------------- check_labels
def test_check_labels_shapes_types_and_names():
    out, names = check_labels(torch.tensor([1, 0, 1]))
    assert out.dtype == np.float64 and out.shape == (3, 1) and names == ["attr0"]
    out, names = check_labels([[True, False], [False, True]], names=("a", "b"))
    np.testing.assert_array_equal(out, [[1, 0], [0, 1]])
    assert names == ["a", "b"]
    labels = np.array([[1.0, np.nan]])
    out, _ = check_labels(labels)
    assert out is not labels  # never modifies the input
    with pytest.raises(ValueError, match=r"labels must have shape \(N,\) or \(N, A\).*\(2, 2, 2\)"):
        check_labels(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match=r"shape \(N,\) or \(N, A\) with N, A >= 1, got \(0,\)"):
        check_labels([])
    with pytest.raises(TypeError, match="labels must hold real numbers"):
        check_labels("0101")
    with pytest.raises(TypeError, match=r"must hold real numbers.*use NaN, not None"):
        check_labels([1, None])
    with pytest.raises(ValueError, match=r"N=4 \(one row per sample\), got \(3,\)"):
        check_labels([1, 0, 1], num_samples=4)
    with pytest.raises(ValueError, match=r"names must be 2 unique attribute names, one per label column, got \['a'\]"):
        check_labels(np.zeros((3, 2)), names=["a"])
    with pytest.raises(ValueError, match=r"names must be 2 unique attribute names.*\['a', 'a'\]"):
        check_labels(np.zeros((3, 2)), names=["a", "a"])


@pytest.mark.parametrize("bad", [2.0, 0.5, np.inf, -2.0])
def test_check_labels_rejects_other_values(bad):
    labels = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, bad]])
    with pytest.raises(ValueError, match=rf"attribute 'smile' must be 1 .*got {bad!r} at row 2"):
        check_labels(labels, names=["hair", "smile"])


def test_check_labels_uncertain_policies():
    labels = np.array([[1, -1], [-1, 0], [0, -1], [np.nan, 1]])
    with pytest.raises(ValueError, match=r"uncertain \(-1\) entries \('a': 1, 'b': 2\); pass uncertain='ignore'"):
        check_labels(labels, names=["a", "b"])
    ignore, _ = check_labels(labels, uncertain="ignore")
    np.testing.assert_array_equal(ignore, [[1, np.nan], [np.nan, 0], [0, np.nan], [np.nan, 1]])
    ones, _ = check_labels(labels, uncertain="ones")
    np.testing.assert_array_equal(ones, [[1, 1], [1, 0], [0, 1], [np.nan, 1]])
    zeros, _ = check_labels(labels, uncertain="zeros")
    np.testing.assert_array_equal(zeros, [[1, 0], [0, 0], [0, 0], [np.nan, 1]])
    with pytest.raises(ValueError, match=r"'drop'(.|\n)*Available options are"):
        check_labels(labels, uncertain="drop")


def test_check_activations():
    out = check_activations(torch.ones(2, 3, dtype=torch.float16))
    assert out.dtype == np.float64 and out.shape == (2, 3)
    bad = np.zeros((4, 3))
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"must be finite, got nan at row 2, column \(prototype\) 1"):
        check_activations(bad)
    with pytest.raises(ValueError, match=r"activations must have shape \(N, K\).*got \(4,\)"):
        check_activations(np.zeros(4))
    with pytest.raises(ValueError, match="activations must have N=5 rows.*got 4"):
        check_activations(np.zeros((4, 2)), num_samples=5)


# ---------------------------------------------------------------------------------------------- AUROC
def test_attribute_auroc_hand_computed_with_tie():
    result = attribute_auroc(S6, Y6, names=["smile"])
    assert isinstance(result, AttributeAUROC)
    np.testing.assert_allclose(result.auroc, [[5 / 6, 8 / 9, 0.5]], rtol=0, atol=1e-12)
    assert result.auroc[0, 2] == 0.5  # a constant prototype gives exactly 0.5
    top = result.top("smile")
    assert [k for k, _ in top] == [1, 0, 2]
    assert [v for _, v in top] == pytest.approx([8 / 9, 5 / 6, 0.5])
    assert result.top(0, n=1) == result.top("smile", n=1)
    assert result.num_labelled.tolist() == [6] and result.num_positive.tolist() == [3]
    assert result.num_prototypes == 3
    # the pairwise reference agrees, and the signed AUROC keeps the direction
    for k in range(3):
        u = brute_force_auroc(S6[:, k], Y6)
        assert result.auroc[0, k] == pytest.approx(max(u, 1 - u), abs=1e-12)
        assert result.signed[0, k] == pytest.approx(u, abs=1e-12)
    np.testing.assert_allclose(attribute_auroc(-S6, Y6).signed, 1 - result.signed, atol=1e-12)


def test_attribute_auroc_matches_brute_force_and_is_symmetric():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(40, 7))
    s[:, 3] = np.round(s[:, 3])  # many ties
    s[:, 5] = 1.0  # constant
    y = (rng.random((40, 4)) < 0.4).astype(float)
    y[rng.random((40, 4)) < 0.2] = np.nan
    result = attribute_auroc(s, y)
    for a in range(4):
        keep = ~np.isnan(y[:, a])
        assert result.num_labelled[a] == keep.sum()
        for k in range(7):
            u = brute_force_auroc(s[keep, k], y[keep, a])
            assert result.auroc[a, k] == pytest.approx(max(u, 1 - u), abs=1e-12)
    np.testing.assert_array_equal(result.auroc[:, 5], 0.5)
    np.testing.assert_allclose(attribute_auroc(-s, y).auroc, result.auroc, atol=1e-12)
    # standardising (or any positive affine map) of s leaves it unchanged
    np.testing.assert_allclose(attribute_auroc(3 * s - 7, y).auroc, result.auroc, atol=1e-12)
    assert result.top(2, n=100) == sorted(result.top(2, n=100), key=lambda t: (-t[1], t[0]))
    assert len(result.top(2, n=100)) == 7


def test_attribute_auroc_nan_and_uncertain_labels():
    labels = np.stack([Y6.astype(float), [1, np.nan, 0, 1, -1, 0]], axis=1)
    with pytest.raises(ValueError, match=r"labels hold uncertain \(-1\) entries \('b': 1\)"):
        attribute_auroc(S6, labels, names=["a", "b"])
    result = attribute_auroc(S6, labels, names=["a", "b"], uncertain="ignore")
    assert result.num_labelled.tolist() == [6, 4] and result.num_positive.tolist() == [3, 2]
    keep = np.array([0, 2, 3, 5])
    for k in range(3):
        u = brute_force_auroc(S6[keep, k], np.array([1, 0, 1, 0]))
        assert result.auroc[1, k] == pytest.approx(max(u, 1 - u))
    ones = attribute_auroc(S6, labels, uncertain="ones")
    assert ones.num_labelled.tolist() == [6, 5] and ones.num_positive.tolist() == [3, 3]


def test_attribute_auroc_constant_attribute(caplog):
    labels = np.stack([Y6, np.ones(6), [np.nan] * 6], axis=1)
    with pytest.raises(
        ValueError,
        match=r"attribute 'bald' is constant or unlabelled \(6 labelled samples, 6 positive "
        r"and 0 negative.*on_constant='skip'",
    ):
        attribute_auroc(S6, labels, names=["smile", "bald", "none"])
    with caplog.at_level(logging.WARNING, logger="monai_patronus.evaluation"):
        result = attribute_auroc(S6, labels, names=["smile", "bald", "none"], on_constant="skip")
    assert result.names == ["smile"] and result.auroc.shape == (1, 3)
    assert set(result.skipped) == {"bald", "none"} and "0 labelled samples" in result.skipped["none"]
    assert "skipped attribute 'bald'" in caplog.text
    with pytest.raises(ValueError, match=r"unknown attribute 'bald' \(skipped: 6 labelled"):
        result.top("bald")
    with pytest.raises(ValueError, match="every attribute was skipped"):
        attribute_auroc(S6, labels[:, 1:], on_constant="skip")
    with pytest.raises(ValueError, match=r"'drop'(.|\n)*Available options are"):
        attribute_auroc(S6, Y6, on_constant="drop")


def test_attribute_auroc_bad_inputs_and_to_dict():
    s = S6.copy()
    s[4, 2] = np.inf
    with pytest.raises(ValueError, match=r"activations must be finite, got inf at row 4, column \(prototype\) 2"):
        attribute_auroc(s, Y6)
    with pytest.raises(ValueError, match="activations must have N=6 rows.*got 5"):
        attribute_auroc(S6[:5], Y6)
    with pytest.raises(ValueError, match="names must be 1 unique attribute names"):
        attribute_auroc(S6, Y6, names=["a", "b"])
    result = attribute_auroc(torch.tensor(S6), torch.tensor(Y6), names=["smile"])
    with pytest.raises(IndexError):
        result.top(3)
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["names"] == ["smile"] and payload["auroc"][0][1] == pytest.approx(8 / 9)
    assert payload["num_positive"] == [3] and payload["skipped"] == {}


# ---------------------------------------------------------------------------------------------- encoding


def test_encode_labelled_matches_encode(one_thread):
    torch.manual_seed(0)
    net = tiny_patronus(num_prototypes=6).train()
    images = torch.rand(5, 1, 12, 12) * 2 - 1
    labels = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0], [1, float("nan")]])
    batches = [
        {"image": images[:3], "label": labels[:3], "id": [0, 1, 2]},
        {"image": images[3:], "label": labels[3:].numpy()},
    ]
    out = encode_labelled(net, batches, names=["a", "b"])
    assert isinstance(out, LabelledActivations) and len(out) == 5
    assert net.training  # mode restored
    net.eval()
    with torch.no_grad():
        expected = net.encode(images)
    torch.testing.assert_close(out.activations, expected.float())
    assert out.activations.dtype == torch.float32 and out.activations.device.type == "cpu"
    np.testing.assert_array_equal(out.labels, labels.double().numpy())
    assert out.labels.dtype == np.float64 and out.names == ["a", "b"]

    # list labels, 1-D labels, custom keys
    one_d = [{"img": images[:2], "y": [1, 0]}, {"img": images[2:], "y": [0, 1, -1]}]
    out = encode_labelled(net, one_d, label_key="y", image_key="img", uncertain="zeros")
    assert out.labels.shape == (5, 1) and out.names == ["attr0"]
    np.testing.assert_array_equal(out.labels[:, 0], [1, 0, 0, 1, 0])


def test_encode_labelled_errors(one_thread):
    net = tiny_patronus(num_prototypes=6)
    images = torch.rand(4, 1, 12, 12)
    with pytest.raises(ValueError, match=r"batch 1 has no key 'label'"):
        encode_labelled(net, [{"image": images[:2], "label": [1, 0]}, {"image": images[2:]}])
    with pytest.raises(ValueError, match=r"batch 0 'label' must have shape \(B,\) or \(B, A\) with B=4"):
        encode_labelled(net, [{"image": images, "label": [1, 0]}])
    with pytest.raises(ValueError, match=r"batch 1 'label' must have .* the A of earlier batches, got \(2,\)"):
        encode_labelled(net, [{"image": images[:2], "label": [[1, 0], [0, 1]]}, {"image": images[2:], "label": [1, 0]}])
    with pytest.raises(ValueError, match=r"labels of attribute 'attr0' must be 1.*got 3.0 at row 1"):
        encode_labelled(net, [{"image": images[:2], "label": [1, 3]}])
    with pytest.raises(TypeError, match="entries \\['label'\\] were asked for"):
        encode_labelled(net, [(images, torch.tensor([1, 0, 1, 0]))])
    with pytest.raises(ValueError, match="data yielded no"):
        encode_labelled(net, [])


def test_one_hot_classes_and_class_labels_in_encode_labelled(one_thread):
    from monai_patronus.evaluation.attributes import one_hot_classes

    onehot, names = one_hot_classes(torch.tensor([2, 0, 1, 2]), ["a", "b", "c"])
    assert names == ["a", "b", "c"] and onehot.tolist() == [[0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]]
    for bad, match in (
        (torch.tensor([3]), r"integer indices in \[0, 3\).*value 3.0 at row 0"),
        (np.array([0.5]), "value 0.5 at row 0"),
        (np.zeros((2, 2)), r"shape \(N,\)"),
    ):
        with pytest.raises(ValueError, match=match):
            one_hot_classes(bad, ["a", "b", "c"])
    net = tiny_patronus(num_prototypes=4)
    images = torch.rand(4, 1, 12, 12)
    batches = [
        {"image": images[:2], "label": torch.tensor([1, 0])},
        {"image": images[2:], "label": torch.tensor([2, 1])},
    ]
    out = encode_labelled(net, batches, classes=["x", "y", "z"])
    assert out.names == ["x", "y", "z"] and out.labels.tolist() == [[0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0]]
    with pytest.raises(ValueError, match="names .* or classes .*, not both"):
        encode_labelled(net, batches, classes=["x", "y", "z"], names=["x", "y", "z"])


def test_attribute_labels_from_a_csv_the_demo_ids_or_none(tmp_path):
    from monai_patronus.evaluation import attribute_labels

    table = tmp_path / "labels.csv"
    table.write_text("id,pacemaker,cardiomegaly\np1,1,0\np2,0,\np3,-1,1\n")
    labels, names = attribute_labels(["p3", "p1"], table)  # rows follow the ids, not the file
    assert names == ["pacemaker", "cardiomegaly"]
    assert labels.tolist() == [[-1.0, 1.0], [1.0, 0.0]]
    assert np.isnan(attribute_labels(["p2"], table)[0][0, 1])
    assert attribute_labels(["mni152_t1_ax2_150"], "mni152")[1][2] == "axial"
    assert attribute_labels(["x"], None) == (None, [])
    with pytest.raises(ValueError, match=r"1 id\(s\) are not in .*'p9'"):
        attribute_labels(["p1", "p9"], table)
    (tmp_path / "noid.csv").write_text("name,a\np1,1\n")
    with pytest.raises(ValueError, match="no 'id' column"):
        attribute_labels(["p1"], tmp_path / "noid.csv")
