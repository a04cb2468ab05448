"""End to end: a marker planted on real digits stands in for a label in training; the report must say so, and
must not say so when the marker is planted independently of the label.

Training set: 160 16-px digits, half "low" (0-4). Correlated case: a bright 3x3 marker in the top-left corner
exactly when the digit is low (phi = 1). Independent case: the same digits, the marker on a random half of the
low and a random half of the high ones (phi = 0). Held-out set (both cases, ``balanced_independent_subset``):
marker and label independent; it supplies the held-out AUROC, the counterfactual's judges (linear probes
fitted there, so the "low" judge cannot read the marker) and the counterfactual's images.

:func:`_shortcut_verdict` says what "the report found the planted shortcut" means; it must fail for the
independent model and hold for the correlated one, including the matched control. The judged digit label is
printed, not asserted: with independent judges the edit draws the marker but need not change the digit.

The model is ``train_tiny_patronus`` with the training recipe (prototypes initialised on feature cells of the
training images, standardised ``s``, condition dropout, v-prediction, guidance 1.5), 600 steps (about 1.5
minutes per model on 2 free cores). Measured: the marker prototype's held-out AUROC 1.0; raised to its plausible
maximum it shows 84% of the intended change on average, at least half of it in every image, and the judged marker
appears in 16 of 16 images against 0 of 16 for the matched control. With the paper's plain recipe (1,000 steps)
every prototype depicted the marker (AUROC 1.0 for all 16: a bright patch at a fixed place is the nearest patch
to every uniformly initialised prototype) and the control drew the marker as often as the test edit.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from monai_patronus.data import balanced_independent_subset, correlated_subset, load_digits_images
from monai_patronus.demo import train_tiny_patronus
from monai_patronus.evaluation import evaluate

pytestmark = pytest.mark.slow  # trains a model or runs a CLI / notebook kernel

NAMES = ["marker", "low", "even"]
TRAIN_STEPS = 600
STRONG = 0.95  # AUROC of a prototype that tells an attribute apart
MOST = 0.8  # "most edited images" (the edit plants the marker)
FEW = 0.1  # "few": the matched control plants it in at most this share


def _plant(images: torch.Tensor, marked: np.ndarray) -> torch.Tensor:
    out = images.clone()
    out[torch.as_tensor(marked, dtype=torch.bool), :, 1:4, 1:4] = 1.0  # where digits are background
    return out


def _batches(images: torch.Tensor, labels: np.ndarray, size: int = 32) -> list[dict]:
    y = torch.as_tensor(labels, dtype=torch.float32)
    return [{"image": images[i : i + size], "label": y[i : i + size]} for i in range(0, len(images), size)]


def _shortcut_verdict(result: dict) -> tuple[bool, list[str]]:
    """Did the report find the planted marker <-> low shortcut? ``(found, reasons)``; ``reasons`` lists every
    criterion that failed as ``"<criterion>: <numbers>"`` (empty when found). All must hold:

    - ``ranking``: the first pair is (marker, low), its representative prototype depicting the marker;
    - ``strength``: that prototype is strong for both on the analysed data (AUROC > ``STRONG`` for each);
    - ``heldout``: on held-out data it keeps its marker AUROC (> ``STRONG``) and loses its label AUROC (within
      0.15 of 0.5);
    - ``judges``: the counterfactual ran with independent judges: probes fitted on the held-out data, |phi| <= 0.2;
    - ``efficacy``: its strongest edit raised s_k (efficacy > 0 and s_k after > before);
    - ``marker``: raising it to its plausible maximum turned the judged marker on in most edited images
      (positive before <= 0.25, after >= ``MOST``), and re-encoded ``s_k`` rose by at least half the intended
      change in ``MOST`` of them;
    - ``control``: the matched control edit (the same kind of edit on the prototype least associated with either
      attribute) turned it on in at most ``FEW`` of them.
    """
    reasons: list[str] = []
    pairs = result["shortcuts"]
    if not pairs:
        return False, ["ranking: no attribute pair shares a top prototype"]
    first = pairs[0]
    if first["attributes"] != ["marker", "low"]:
        return False, [
            f"ranking: the first pair is {first['attributes']} (score {first['score']:.3f}), not ['marker', 'low']"
        ]
    k = first["prototype"]
    i = first["shared_prototypes"].index(k)
    if not (first["auroc"]["marker"][i] > STRONG and first["auroc"]["low"][i] > STRONG):
        reasons.append(
            f"strength: prototype {k} is not strong for both: AUROC marker {first['auroc']['marker'][i]:.3f}, "
            f"low {first['auroc']['low'][i]:.3f}"
        )
    held = first["heldout_auroc"]
    if not (held["marker"][i] > STRONG and abs(held["low"][i] - 0.5) < 0.15):
        reasons.append(
            f"heldout: held-out AUROC of prototype {k}: marker {held['marker'][i]:.3f}, low "
            f"{held['low'][i]:.3f} (a shortcut keeps the marker and loses the label)"
        )
    cf = first["counterfactual"]
    if cf is None:
        reasons.append(f"judges: counterfactual not run: {first['counterfactual_skipped']}")
        return False, reasons
    for name, judge in first["judges"].items():
        if judge["fitted_on"] != "held-out data" or judge["phi"] is None or abs(judge["phi"]) > 0.2:
            reasons.append(f"judges: the judge of {name} is not independent: {judge}")
    e = cf["edits"][0]  # raised to the plausible maximum
    marker, control = e["attributes"]["marker"], e["control"]["attributes"]["marker"]
    if not (e["efficacy"] is not None and e["efficacy"] > 0 and e["activation_after"] > e["activation_before"]):
        reasons.append(
            f"efficacy: the edit did not raise s_{k}: {e['activation_before']:.3f} -> "
            f"{e['activation_after']:.3f}, efficacy {e['efficacy']}"
        )
    if not (
        marker["positive_before"] <= 0.25
        and marker["positive_after"] >= MOST
        and (e["efficacy_at_least_half"] or 0.0) >= MOST
    ):
        reasons.append(
            f"marker: the edit did not plant the marker in most images: judged positive "
            f"{marker['positive_before']:.2f} -> {marker['positive_after']:.2f}, s_k rose by at least half "
            f"the intended change in {e['efficacy_at_least_half']} of them"
        )
    if not control["positive_after"] <= FEW:
        reasons.append(
            f"control: the control edit (prototype {cf['control_prototype']}, {e['control']['label']}; its "
            f"AUROC marker {cf['control_auroc']['marker']:.3f}, low {cf['control_auroc']['low']:.3f}) turned "
            f"the marker on in {control['positive_after']:.2f} of the images, the test edit in "
            f"{marker['positive_after']:.2f}"
        )
    return not reasons, reasons


def _print_numbers(case: str, result: dict, train_s: tuple[float, float]) -> None:
    print(
        f"\n[{case}] training {TRAIN_STEPS} steps: {train_s[0]:.0f} s wall, {train_s[1]:.0f} s CPU; pairs: "
        + ", ".join(f"{p['attributes']} {p['score']:.3f}" for p in result["shortcuts"])
    )
    for pair in result["shortcuts"][:1]:
        print(
            f"[{case}] first pair {pair['attributes']}, prototype {pair['prototype']}, shared {pair['shared_prototypes']}, "
            f"AUROC {pair['auroc']}, held-out {pair['heldout_auroc']}"
        )
        print(f"[{case}] judges: {pair['judges']}; skipped: {pair['counterfactual_skipped']}")
        cf = pair["counterfactual"]
        if not cf:
            continue
        print(f"[{case}] images: {cf['image_choice']['description']} ({cf['num_images']})")
        for e in cf["edits"]:
            c = e["control"]
            flips = ", ".join(
                f"{n} flip {r['flip_rate']:.2f} (+ {r['positive_before']:.2f} -> {r['positive_after']:.2f}, "
                f"control flip {c['attributes'][n]['flip_rate']:.2f}, + -> {c['attributes'][n]['positive_after']:.2f})"
                for n, r in e["attributes"].items()
            )
            print(
                f"[{case}] prototype {e['prototype']} {e['label']} ({e['target']:.3f}): s_k {e['activation_before']:.3f} -> "
                f"{e['activation_after']:.3f}, efficacy {e['efficacy']} (at least half in {e['efficacy_at_least_half']}); control {c['prototype']} {c['label']} "
                f"({c['target']:.3f}): s {c['activation_before']:.3f} -> {c['activation_after']:.3f}, efficacy "
                f"{c['efficacy']}; {flips}"
            )


@pytest.mark.parametrize("planting", ["correlated", "independent"])
def test_report_finds_the_planted_shortcut_only_when_the_marker_stands_in_for_the_label(planting, tmp_path):
    images, digits = load_digits_images(size=16)
    digits = digits.numpy()
    rng = np.random.default_rng(0)
    table = {
        "marker": rng.integers(0, 2, len(digits)).astype(float),
        "low": (digits < 5).astype(float),
        "even": (digits % 2 == 0).astype(float),
    }
    train = correlated_subset(table, "marker", "low", agreement=1.0, size=160, seed=0)
    rest = np.setdiff1d(np.arange(len(digits)), train.indices)
    held = balanced_independent_subset({k: v[rest] for k, v in table.items()}, "marker", "low", per_cell=24, seed=0)
    assert held.report["pairs"][0]["subset"]["phi"] == 0.0
    held_rows = rest[held.indices]
    labels = np.stack([table[n] for n in NAMES], axis=1)

    train_labels = labels[train.indices].copy()
    if planting == "independent":  # the same digits; the marker on a random half of the low and of the high ones
        marker = np.zeros(len(train_labels))
        for value in (0.0, 1.0):
            rows = np.flatnonzero(train_labels[:, 1] == value)
            marker[rng.choice(rows, len(rows) // 2, replace=False)] = 1.0
        train_labels[:, 0] = marker
    phi = np.corrcoef(train_labels[:, 0], train_labels[:, 1])[0, 1]
    assert phi == pytest.approx(1.0 if planting == "correlated" else 0.0, abs=0.03)

    x_train = _plant(images[train.indices], train_labels[:, 0])
    x_held = _plant(images[held_rows], labels[held_rows, 0])
    start, cpu = time.perf_counter(), time.process_time()
    net, inferer, _ = train_tiny_patronus(x_train, steps=TRAIN_STEPS, seed=0)
    train_s = (time.perf_counter() - start, time.process_time() - cpu)

    result = evaluate(
        net,
        inferer,
        _batches(x_train, train_labels),
        tmp_path,
        names=NAMES,
        heldout_data=_batches(x_held, labels[held_rows]),
        top_n=3,
        num_pairs=1,
        num_counterfactual=16,
        folds=3,
        num_inference_steps=20,
        num_reconstruction_batches=0,
        seed=0,
    )
    _print_numbers(planting, result, train_s)
    found, reasons = _shortcut_verdict(result)
    print(f"[{planting}] verdict: {found}; failed criteria: {reasons}")
    if planting == "independent":
        assert not found
        # and for the reason that matters: no prototype is strong for both the marker and the label
        assert any(r.startswith(("ranking:", "strength:")) for r in reasons), reasons
        return
    cf = result["shortcuts"][0]["counterfactual"]
    assert cf is not None, reasons
    rows = np.asarray(cf["image_rows"])
    # images without the marker and, as phi(marker, low) = 1 > 0, without "low": can the edit add the label?
    assert len(rows) == 16 and (labels[held_rows[rows], :2] == 0).all()
    assert cf["image_choice"]["b_value"] == 0 and cf["control_prototype"] != cf["prototype"]
    written = json.loads((tmp_path / "evaluation.json").read_text())
    assert written["shortcuts"][0]["attributes"] == ["marker", "low"] and written["num_images"] == 160
    assert "marker <-> low" in (tmp_path / "evaluation.md").read_text()
    assert (tmp_path / "shortcuts.md").is_file() and (tmp_path / "counterfactual_1.png").stat().st_size > 1000
    assert found, reasons
