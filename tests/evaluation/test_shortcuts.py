from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.networks.schedulers import DDIMScheduler
from sklearn.metrics import roc_auc_score

from monai_patronus.evaluation.attributes import attribute_auroc
from monai_patronus.evaluation.shortcuts import (
    rank_shortcut_pairs,
    shortcut_report,
    write_shortcut_report,
)
from monai_patronus.inferers import PatronusInferer
from tests._helpers import randomize_zero_init, tiny_patronus


def _table(seed=0, n=400, sign=1.0, heldout=False):
    """x and y perfectly correlated (independent when heldout), z independent; s0 depicts x, s1 depicts z."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, n).astype(float)
    y = rng.integers(0, 2, n).astype(float) if heldout else x.copy()
    z = rng.integers(0, 2, n).astype(float)
    s = rng.normal(0, 1, (n, 5))
    s[:, 0] += sign * 3 * x
    s[:, 1] += 3 * z
    return s, np.stack([x, y, z], 1)


def test_ranking_finds_the_correlated_pair_and_the_attribute_its_prototype_depicts():
    s, y = _table()
    names = ["x", "y", "z"]
    auroc = attribute_auroc(s, y, names)
    pairs = rank_shortcut_pairs(auroc, y, top_n=2)
    first = pairs[0]
    assert set(first.attributes) == {"x", "y"} and first.shared_prototypes[0] == 0 and first.prototype == 0
    brute = [max(roc_auc_score(y[:, i], s[:, 0]), 1 - roc_auc_score(y[:, i], s[:, 0])) for i in (0, 1)]
    assert first.score == pytest.approx(min(brute))
    assert first.cooccurrence["phi"] == pytest.approx(1.0) and first.direction == 1
    assert all(p.score <= first.score for p in pairs)
    # held-out data where x and y are independent: s0 keeps its AUROC for x only, so x is what it depicts
    hs, hy = _table(seed=1, heldout=True)
    held = attribute_auroc(hs, hy, names)
    pair = rank_shortcut_pairs(auroc, y, top_n=2, heldout=held, heldout_labels=hy)[0]
    assert pair.attributes == ("x", "y")
    assert pair.heldout_auroc["x"][0] > 0.9 and abs(pair.heldout_auroc["y"][0] - 0.5) < 0.1
    assert abs(pair.heldout_cooccurrence["phi"]) < 0.2
    # a prototype that falls with x points the other way
    s_neg, _ = _table(sign=-1.0)
    assert rank_shortcut_pairs(attribute_auroc(s_neg, y, names), y, top_n=2)[0].direction == -1


def test_ranking_errors():
    s, y = _table()
    auroc = attribute_auroc(s, y, ["x", "y", "z"])
    with pytest.raises(ValueError, match="labels have 2 columns but auroc covers 3"):
        rank_shortcut_pairs(auroc, y[:, :2])
    with pytest.raises(ValueError, match="heldout and heldout_labels together"):
        rank_shortcut_pairs(auroc, y, heldout=auroc)
    other = attribute_auroc(s, y, ["x", "y", "w"])
    with pytest.raises(ValueError, match="held-out attributes"):
        rank_shortcut_pairs(auroc, y, heldout=other, heldout_labels=y)
    with pytest.raises(ValueError, match="top_n must be an int >= 1"):
        rank_shortcut_pairs(auroc, y, top_n=0)


def test_report_end_to_end_on_a_tiny_model(tmp_path):
    """The whole report path (probes, counterfactual + control edits, JSON, Markdown, PNGs) on an untrained
    tiny model; the planted-shortcut test checks that the numbers mean something."""
    torch.manual_seed(0)
    net = randomize_zero_init(tiny_patronus(num_prototypes=5)).eval()
    inferer = PatronusInferer(DDIMScheduler(num_train_timesteps=1000, clip_sample=False))
    s, y = _table(n=60)
    images = torch.rand(6, 1, 12, 12) * 2 - 1
    image_labels = np.array([[0, 0, 0], [0, 0, 1], [1, 1, 0], [0, 0, 0], [1, 0, 0], [0, 0, 1]], dtype=float)
    report = shortcut_report(net, inferer, torch.as_tensor(s, dtype=torch.float32), y, ["x", "y", "z"], top_n=2,
                             images=images, image_labels=image_labels, num_pairs=1, num_counterfactual=3,
                             num_inference_steps=3)
    cf = report.pairs[0].counterfactual
    assert cf["prototype"] == 0 and cf["num_images"] == 3 and cf["image_rows"] == [0, 1, 3]  # neither x nor y
    assert cf["control_prototype"] not in (0, 1)  # s0 and s1 depict x/y and z
    assert cf["control_auroc"]["x"] < 0.75 and cf["control_auroc"]["y"] < 0.75
    maximum, extrapolated = cf["edits"]
    assert maximum["label"] == "plausible maximum" and maximum["target"] == pytest.approx(float(s[:, 0].max()))
    assert extrapolated["label"] == "extrapolated to 3" and extrapolated["target"] == 3.0
    assert extrapolated["control"]["prototype"] == cf["control_prototype"] and extrapolated["control"]["target"] == 3.0
    for e in cf["edits"]:
        assert set(e["attributes"]) == {"x", "y"}
        for r in (*e["attributes"].values(), *e["control"]["attributes"].values()):
            assert 0.0 <= r["flip_rate"] <= 1.0 and r["judge"] == "linear probe on s"
    # images as a stream of dict batches: only the chosen rows are gathered, with the same result
    streamed = shortcut_report(net, inferer, torch.as_tensor(s, dtype=torch.float32), y, ["x", "y", "z"], top_n=2,
                               images=[{"image": images[:4]}, {"image": images[4:]}], image_labels=image_labels,
                               num_pairs=1, num_counterfactual=3, num_inference_steps=3)
    assert streamed.pairs[0].counterfactual == cf
    paths = write_shortcut_report(report, tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["pairs"][0]["attributes"] == list(report.pairs[0].attributes)
    assert data["top_prototypes"]["x"][0][0] == 0
    text = paths["markdown"].read_text()
    assert "## 1. " in text and "Counterfactual" in text and "counterfactual_1.png" in text
    for key in ("heatmap", "counterfactual_1"):
        assert paths[key].stat().st_size > 1000
    # a user classifier on images replaces the probe for its attribute
    judge = lambda imgs: (imgs.mean(dim=(1, 2, 3)) > 10).double()  # noqa: E731  always "absent"
    report = shortcut_report(net, inferer, torch.as_tensor(s, dtype=torch.float32), y, ["x", "y", "z"], top_n=2,
                             images=images, image_labels=image_labels, num_pairs=1, num_counterfactual=3,
                             num_inference_steps=3, image_judges={"y": judge})
    y_scores = report.pairs[0].counterfactual["edits"][-1]["attributes"]["y"]
    assert y_scores["judge"] == "image classifier" and y_scores["flip_rate"] == 0.0 and y_scores["p_after"] == 0.0


def test_report_input_errors():
    net = tiny_patronus(num_prototypes=5).eval()
    inferer = PatronusInferer(DDIMScheduler(num_train_timesteps=1000, clip_sample=False))
    s, y = _table(n=40)
    s = torch.as_tensor(s, dtype=torch.float32)
    with pytest.raises(ValueError, match="images and image_labels together"):
        shortcut_report(net, inferer, s, y, images=torch.zeros(2, 1, 12, 12))
    with pytest.raises(ValueError, match="num_counterfactual must be an int >= 1"):
        shortcut_report(net, inferer, s, y, num_counterfactual=0)
    bad = y.copy()
    bad[0, 1] = -1
    with pytest.raises(ValueError, match="uncertain"):
        shortcut_report(net, inferer, s, bad)
    constant = y.copy()
    constant[:, 2] = 1
    with pytest.raises(ValueError, match="constant"):
        shortcut_report(net, inferer, s, constant)
    report = shortcut_report(net, inferer, s, constant, ["x", "y", "z"], on_constant="skip")
    assert report.auroc.names == ["x", "y"] and "z" in report.auroc.skipped
