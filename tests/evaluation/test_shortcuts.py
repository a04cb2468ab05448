from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from monai.networks.schedulers import DDIMScheduler
from sklearn.metrics import roc_auc_score
from torch import nn

from monai_patronus.evaluation.attributes import attribute_auroc
from monai_patronus.evaluation.shortcuts import (
    counterfactual_test,
    fit_activation_probes,
    fit_pair_judges,
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


def test_report_end_to_end_on_a_tiny_model(tmp_path):
    """The whole report path (held-out probes, counterfactual + control edits, JSON, Markdown, PNGs) on an
    untrained tiny model; the fake-network tests below check the numbers exactly and the planted-shortcut test
    checks that they mean something on a trained model."""
    torch.manual_seed(0)
    net = randomize_zero_init(tiny_patronus(num_prototypes=5)).eval()
    inferer = PatronusInferer(DDIMScheduler(num_train_timesteps=1000, clip_sample=False))
    s, y = _table(n=60)
    hs, hy = _table(seed=1, n=80, heldout=True)
    held = (torch.as_tensor(hs, dtype=torch.float32), hy)
    images = torch.rand(6, 1, 12, 12) * 2 - 1
    image_labels = np.array([[0, 0, 0], [0, 0, 1], [1, 1, 0], [0, 0, 0], [1, 0, 0], [0, 0, 1]], dtype=float)
    kwargs = dict(
        names=["x", "y", "z"],
        top_n=2,
        heldout=held,
        image_labels=image_labels,
        num_pairs=1,
        num_counterfactual=3,
        num_inference_steps=3,
    )
    report = shortcut_report(net, inferer, torch.as_tensor(s, dtype=torch.float32), y, images=images, **kwargs)
    pair = report.pairs[0]
    cf = pair.counterfactual
    assert pair.counterfactual_skipped is None
    phi = np.corrcoef(hy[:, 0], hy[:, 1])[0, 1]
    for name in ("x", "y"):
        assert pair.judges[name]["kind"] == "linear probe on s" and pair.judges[name]["fitted_on"] == "held-out data"
        assert pair.judges[name]["n"] == 80 and pair.judges[name]["phi"] == pytest.approx(phi)
    # s0 depicts x on the held-out data; nothing depicts y there, so its probe is much weaker (and says so)
    assert pair.judges["x"]["fit_auroc"] > 0.95 and pair.judges["y"]["fit_auroc"] < pair.judges["x"]["fit_auroc"] - 0.1
    # phi(x, y) = 1 > 0 on the analysed data: images lacking x and y
    assert cf["prototype"] == 0 and cf["num_images"] == 3 and cf["image_rows"] == [0, 1, 3]
    assert cf["image_choice"]["b_value"] == 0 and cf["image_choice"]["association"] == "positive"
    assert cf["control_prototype"] not in (0, 1)  # s0 and s1 depict x/y and z
    assert cf["control_auroc"]["x"] < 0.75 and cf["control_auroc"]["y"] < 0.75
    maximum, extrapolated = cf["edits"]
    assert maximum["label"] == "plausible maximum" and maximum["target"] == pytest.approx(float(s[:, 0].max()))
    assert extrapolated["label"] == "extrapolated to 3" and extrapolated["target"] == 3.0
    control_max = float(s[:, cf["control_prototype"]].max())
    assert (
        maximum["control"]["target"] == pytest.approx(control_max)
        and maximum["control"]["label"] == "plausible maximum"
    )
    assert extrapolated["control"]["prototype"] == cf["control_prototype"] and extrapolated["control"]["target"] == 3.0
    for e in cf["edits"]:
        assert set(e["attributes"]) == {"x", "y"}
        for entry in (e, e["control"]):
            assert entry["efficacy_images"] <= 3 and (entry["efficacy"] is None) == (entry["efficacy_images"] == 0)
            for r in entry["attributes"].values():
                assert r["judge"] == "linear probe on s" and r["judge_fitted_on"] == "held-out data"
                # rates over 3 images; the judged-positive share cannot move by more than the flips allow
                assert r["flip_rate"] * 3 == pytest.approx(round(r["flip_rate"] * 3))
                assert abs(r["positive_after"] - r["positive_before"]) <= r["flip_rate"] + 1e-9
    # images as a stream of dict batches: only the chosen rows are gathered, with the same result
    streamed = shortcut_report(
        net,
        inferer,
        torch.as_tensor(s, dtype=torch.float32),
        y,
        images=[{"image": images[:4]}, {"image": images[4:]}],
        **kwargs,
    )
    assert streamed.pairs[0].counterfactual == cf
    paths = write_shortcut_report(report, tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["pairs"][0]["attributes"] == list(report.pairs[0].attributes)
    assert data["pairs"][0]["judges"]["y"]["fitted_on"] == "held-out data" and data["settings"]["max_judge_phi"] == 0.2
    assert data["top_prototypes"]["x"][0][0] == 0
    text = paths["markdown"].read_text()
    assert "## 1. " in text and "Counterfactual" in text and "counterfactual_1.png" in text
    assert "linear probe on s fitted on the held-out data (n = 80" in text and "AUROC on its fitting rows" in text
    assert "efficacy" in text
    for key in ("heatmap", "counterfactual_1"):
        assert paths[key].stat().st_size > 1000
    # a user classifier on images replaces the probe for its attribute
    judge = lambda imgs: (imgs.mean(dim=(1, 2, 3)) > 10).double()  # noqa: E731  always "absent"
    report = shortcut_report(
        net, inferer, torch.as_tensor(s, dtype=torch.float32), y, images=images, image_judges={"y": judge}, **kwargs
    )
    assert report.pairs[0].judges["y"] == {
        "kind": "image classifier",
        "fitted_on": "user-supplied",
        "n": None,
        "phi": None,
        "fit_auroc": None,
    }
    y_scores = report.pairs[0].counterfactual["edits"][-1]["attributes"]["y"]
    assert y_scores["judge"] == "image classifier" and y_scores["flip_rate"] == 0.0 and y_scores["p_after"] == 0.0


# ---------------------------------------------------------------------------------------------------------------
# Exact counterfactual checks with a fake network: an image (N, 1, 1, K) is its own activation vector, inversion is
# the identity and a regeneration moves the image a share ``strength`` of the way to the conditioning s, so an
# edit's efficacy is ``strength`` and the judges see exactly what was edited.


class _IdentityNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1).clone()


class _FakeInferer:
    def __init__(self, strength: float = 1.0):
        self.strength = strength

    def invert(self, images, network, s, num_inference_steps, depth=None):
        return images.clone()

    def reconstruct(self, latents, network, s, num_inference_steps, depth=None):
        return latents + self.strength * (s.view_as(latents) - latents)


def _pair_data(seed: int, n: int, link: str, sign: float = 1.0):
    """Attributes x, y, z. ``link``: "same" (y = x), "opposite" (y = 1 - x) or "independent" (balanced 2x2).
    s0 depicts x (``sign`` 1: rises with it), s2 depicts y (weakly, so s0 stays the pair's prototype), s1
    depicts z, s3 and s4 are noise."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, n).astype(float)
    if link == "same":
        y = x.copy()
    elif link == "opposite":
        y = 1 - x
    else:
        x = np.repeat([0.0, 0.0, 1.0, 1.0], n // 4)
        y = np.tile([0.0, 1.0], n // 2)
    z = rng.integers(0, 2, n).astype(float)
    s = rng.normal(0, 1, (n, 5))
    s[:, 0] = 0.3 * s[:, 0] + sign * 3 * x
    s[:, 2] = (0.3 * s[:, 2] + 3 * y) if link == "independent" else (s[:, 2] + y)
    s[:, 1] = 0.3 * s[:, 1] + 3 * z
    return s, np.stack([x, y, z], 1)


def _run(analysed_link: str, sign: float = 1.0, strength: float = 1.0, heldout: bool = True, **kwargs):
    s, y = _pair_data(0, 200, analysed_link, sign)
    hs, hy = _pair_data(1, 200, "independent", sign)
    images = torch.as_tensor(hs, dtype=torch.float32).reshape(-1, 1, 1, 5)
    report = shortcut_report(
        _IdentityNet(),
        _FakeInferer(strength),
        torch.as_tensor(s, dtype=torch.float32),
        y,
        ["x", "y", "z"],
        top_n=2,
        heldout=(torch.as_tensor(hs, dtype=torch.float32), hy) if heldout else None,
        images=images,
        image_labels=hy,
        num_pairs=1,
        num_counterfactual=10,
        **kwargs,
    )
    return report, s, hs, hy


@pytest.mark.parametrize("link", ["same", "opposite"])
def test_counterfactual_images_follow_the_sign_of_the_association(link):
    report, _, _, hy = _run(link)
    pair = report.pairs[0]
    assert pair.attributes == ("x", "y") and pair.prototype == 0 and pair.direction == 1
    assert pair.cooccurrence["phi"] == pytest.approx(1.0 if link == "same" else -1.0)
    cf = pair.counterfactual
    rows = np.asarray(cf["image_rows"])
    assert len(rows) == 10 and (hy[rows, 0] == 0).all()  # always images lacking A
    shows_b = 1.0 if link == "opposite" else 0.0  # phi < 0: images SHOWING B, so raising A can remove it
    assert (hy[rows, 1] == shows_b).all()
    assert cf["image_choice"]["b_value"] == shows_b and cf["image_choice"]["fallback"] is False
    assert cf["image_choice"]["association"] == ("negative" if link == "opposite" else "positive")
    # the fake regeneration does exactly the edit: x (read from s0) turns on in every image, y (read from s2) stays
    for e in cf["edits"]:
        assert e["efficacy"] == pytest.approx(1.0) and e["efficacy_images"] == 10
        x, y = e["attributes"]["x"], e["attributes"]["y"]
        assert (x["positive_before"], x["positive_after"], x["flip_rate"]) == (0.0, 1.0, 1.0)
        assert y["positive_before"] == shows_b and y["flip_rate"] == 0.0
        assert e["control"]["attributes"]["x"]["flip_rate"] == 0.0  # the control prototype is not read by the judges


def test_counterfactual_images_fall_back_to_lacking_a_when_too_few_show_b():
    s, y = _pair_data(0, 200, "opposite")
    hs, hy = _pair_data(1, 200, "independent")
    hy_few = hy.copy()
    lacking_x_with_y = np.flatnonzero((hy[:, 0] == 0) & (hy[:, 1] == 1))
    hy_few[lacking_x_with_y[1:], 1] = 0  # one image without x shows y
    report = shortcut_report(
        _IdentityNet(),
        _FakeInferer(),
        torch.as_tensor(s, dtype=torch.float32),
        y,
        ["x", "y", "z"],
        top_n=2,
        heldout=(torch.as_tensor(hs, dtype=torch.float32), hy),
        images=torch.as_tensor(hs).reshape(-1, 1, 1, 5).float(),
        image_labels=hy_few,
        num_pairs=1,
        num_counterfactual=200,
    )
    cf = report.pairs[0].counterfactual
    assert cf["image_choice"]["fallback"] is True and cf["image_choice"]["b_value"] is None
    assert cf["image_rows"] == np.flatnonzero(hy_few[:, 0] == 0).tolist()


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_control_gets_the_same_kind_of_edit(sign):
    report, s, _, _ = _run("same", sign=sign, strength=0.5, extrapolate_to=3.0)
    pair = report.pairs[0]
    cf = pair.counterfactual
    k, c = cf["prototype"], cf["control_prototype"]
    assert pair.direction == int(sign) and cf["direction"] == int(sign) and k == 0 and c in (3, 4)
    first, second = cf["edits"]
    if sign > 0:  # raise: plausible maximum, then extrapolate_to, for both
        assert (first["label"], second["label"]) == ("plausible maximum", "extrapolated to 3")
        assert first["target"] == pytest.approx(s[:, k].max()) and second["target"] == 3.0
        assert first["control"]["label"] == "plausible maximum" and second["control"]["label"] == "extrapolated to 3"
        assert first["control"]["target"] == pytest.approx(s[:, c].max()) and second["control"]["target"] == 3.0
    else:  # suppress: plausible minimum, then 0, for both
        assert (first["label"], second["label"]) == ("plausible minimum", "suppressed (0)")
        assert first["target"] == pytest.approx(s[:, k].min()) and second["target"] == 0.0
        assert first["control"]["label"] == "plausible minimum" and second["control"]["label"] == "suppressed (0)"
        assert first["control"]["target"] == pytest.approx(s[:, c].min()) and second["control"]["target"] == 0.0
    # the fake regeneration shows half of each intended change
    for e in (first, second, first["control"], second["control"]):
        assert e["efficacy"] == pytest.approx(0.5) and e["efficacy_images"] == 10
        assert e["activation_after"] - e["activation_before"] == pytest.approx(
            0.5 * (e["target"] - e["activation_before"])
        )
    # x is judged from s0: half-way to the plausible extreme (maximum for sign +1, minimum for -1) turns it on
    assert first["attributes"]["x"]["positive_before"] == 0.0 and first["attributes"]["x"]["positive_after"] == 1.0
    assert first["control"]["attributes"]["x"]["flip_rate"] == 0.0


def test_an_empty_edit_has_zero_efficacy_and_images_already_at_the_target_are_left_out():
    net = _IdentityNet()
    images = torch.tensor([[0.0, 1.0], [2.0, 1.0], [1.0, 1.0]]).reshape(3, 1, 1, 2)
    always = {"a": lambda s: s[:, 0] * 0 + 0.9}
    scores, _ = counterfactual_test(net, _FakeInferer(0.0), images, [(0, 4.0)], always)
    e = scores["edits"][0]
    assert e["efficacy"] == 0.0 and e["efficacy_images"] == 3 and e["activation_after"] == e["activation_before"]
    assert e["efficacy_at_least_half"] == 0.0
    scores, _ = counterfactual_test(net, _FakeInferer(0.25), images, [(0, 1.0)], always)
    e = scores["edits"][0]  # the third image is already at s_0 = 1: no change asked, so it is left out
    assert e["efficacy_images"] == 2 and e["efficacy"] == pytest.approx(0.25) and e["efficacy_at_least_half"] == 0.0
    scores, _ = counterfactual_test(net, _FakeInferer(1.0), images[2:], [(0, 1.0)], always)
    assert scores["edits"][0]["efficacy"] is None and scores["edits"][0]["efficacy_images"] == 0
    assert scores["edits"][0]["efficacy_at_least_half"] is None
    scores, _ = counterfactual_test(net, _FakeInferer(0.5), images, [(0, 4.0)], always)
    assert scores["edits"][0]["efficacy_at_least_half"] == 1.0  # every image shows half the intended change


def test_judges_fitted_where_the_attributes_are_independent_are_different_functions():
    s, y = _pair_data(0, 200, "same")
    hs, hy = _pair_data(1, 200, "independent")
    names = ["x", "y", "z"]
    # the circular judges of the old report: fitted on phi = 1 data, the two probes are one function
    circular = fit_activation_probes(torch.as_tensor(s), y, names)
    probe_inputs = torch.as_tensor(np.random.default_rng(2).normal(0, 3, (50, 5)))
    assert torch.equal(circular["x"](probe_inputs), circular["y"](probe_inputs))
    judges = fit_pair_judges(("x", "y"), s, y, names, heldout=(hs, hy))
    assert judges.refused is None and set(judges.probes) == {"x", "y"} and judges.image_judges == {}
    assert judges.info["x"] == {
        "kind": "linear probe on s",
        "fitted_on": "held-out data",
        "n": 200,
        "phi": 0.0,
        "fit_auroc": 1.0,
    }
    assert judges.info["y"]["fit_auroc"] == 1.0  # s0 and s2 separate x and y perfectly on the held-out data
    only_x = torch.tensor([[3.0, 0, 0, 0, 0]], dtype=torch.float64)  # s0 (x) high, s2 (y) low
    only_y = torch.tensor([[0.0, 0, 3.0, 0, 0]], dtype=torch.float64)
    assert judges.probes["x"](only_x) > 0.9 and judges.probes["y"](only_x) < 0.1
    assert judges.probes["x"](only_y) < 0.1 and judges.probes["y"](only_y) > 0.9
    # no held-out set: a balanced subset of the analysed data (all four cells present) has phi = 0
    partial = y.copy()
    rng = np.random.default_rng(3)
    flip = rng.choice(200, 30, replace=False)
    partial[flip, 1] = 1 - partial[flip, 1]  # phi about 0.7, every (x, y) cell non-empty
    smallest = min(int(((partial[:, 0] == a) & (partial[:, 1] == b)).sum()) for a in (0, 1) for b in (0, 1))
    balanced = fit_pair_judges(("x", "y"), s, partial, names)
    assert balanced.refused is None and balanced.info["y"]["n"] == 4 * smallest and balanced.info["y"]["phi"] == 0.0
    assert balanced.info["y"]["fitted_on"].startswith("balanced subset of the analysed data")
    # an image classifier wins over probes and needs no independent rows
    classifier = lambda imgs: imgs.flatten(1)[:, 2]  # noqa: E731
    mixed = fit_pair_judges(("x", "y"), s, y, names, image_judges={"y": classifier, "z": classifier})
    assert mixed.refused is not None  # x still needs a probe, and there are no independent rows for it
    both = fit_pair_judges(("x", "y"), s, y, names, image_judges={"x": classifier, "y": classifier})
    assert both.refused is None and both.probes == {} and set(both.image_judges) == {"x", "y"}
    assert both.info["x"]["kind"] == "image classifier"


def test_counterfactual_is_refused_with_circular_judges(tmp_path, caplog):
    # phi = 1 on the analysed data, no held-out set and no image classifier: no independent rows to fit judges on
    with caplog.at_level(logging.WARNING, logger="monai_patronus.evaluation"):
        report, _, _, _ = _run("same", heldout=False)
    pair = report.pairs[0]
    assert pair.counterfactual is None and 1 not in report.edits
    assert "no held-out set" in pair.counterfactual_skipped and "x=0 & y=1" in pair.counterfactual_skipped
    assert pair.judges["y"]["fitted_on"] == "balanced subset of the analysed data" and pair.judges["y"]["n"] == 0
    assert "refused" in caplog.text
    paths = write_shortcut_report(report, tmp_path)
    assert json.loads(paths["json"].read_text())["pairs"][0]["counterfactual_skipped"] == pair.counterfactual_skipped
    assert "Counterfactual not run" in paths["markdown"].read_text()
    # the same with image classifiers for both attributes: it runs
    read = {
        "x": lambda imgs: (imgs.flatten(1)[:, 0] > 1.5).double(),
        "y": lambda imgs: (imgs.flatten(1)[:, 2] > 0.5).double(),
    }
    report, _, _, _ = _run("same", heldout=False, image_judges=read)
    assert report.pairs[0].counterfactual_skipped is None
    assert report.pairs[0].counterfactual["edits"][-1]["attributes"]["x"]["flip_rate"] == 1.0
    # a held-out set in which the attributes are associated (|phi| > max_judge_phi) is refused as well
    s, y = _pair_data(0, 200, "same")
    hs, hy = _pair_data(1, 200, "independent")
    hy[:60, 1] = hy[:60, 0]  # phi about 0.6 on the held-out data
    phi = np.corrcoef(hy[:, 0], hy[:, 1])[0, 1]
    assert phi > 0.2
    report = shortcut_report(
        _IdentityNet(),
        _FakeInferer(),
        torch.as_tensor(s, dtype=torch.float32),
        y,
        ["x", "y", "z"],
        top_n=2,
        heldout=(torch.as_tensor(hs, dtype=torch.float32), hy),
        images=torch.as_tensor(hs, dtype=torch.float32).reshape(-1, 1, 1, 5),
        image_labels=hy,
        num_pairs=1,
    )
    pair = report.pairs[0]
    assert (
        pair.counterfactual is None
        and f"phi(x, y) = {phi:.3f} exceeds max_judge_phi = 0.2" in pair.counterfactual_skipped
    )
    assert pair.judges["x"]["phi"] == pytest.approx(phi) and pair.judges["x"]["fitted_on"] == "held-out data"
    # a looser threshold accepts it
    report = shortcut_report(
        _IdentityNet(),
        _FakeInferer(),
        torch.as_tensor(s, dtype=torch.float32),
        y,
        ["x", "y", "z"],
        top_n=2,
        heldout=(torch.as_tensor(hs, dtype=torch.float32), hy),
        images=torch.as_tensor(hs, dtype=torch.float32).reshape(-1, 1, 1, 5),
        image_labels=hy,
        num_pairs=1,
        max_judge_phi=0.9,
    )
    assert report.pairs[0].counterfactual is not None and report.settings["max_judge_phi"] == 0.9


def test_report_input_errors():
    net = tiny_patronus(num_prototypes=5).eval()
    inferer = PatronusInferer(DDIMScheduler(num_train_timesteps=1000, clip_sample=False))
    s, y = _table(n=40)
    s = torch.as_tensor(s, dtype=torch.float32)
    with pytest.raises(ValueError, match="images and image_labels together"):
        shortcut_report(net, inferer, s, y, images=torch.zeros(2, 1, 12, 12))
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
