"""End to end: a marker planted on real digits stands in for a label in training; the report must say so.

Training subset (built by ``correlated_subset``): a bright 3x3 marker in the top-left corner exactly when the
digit is 0-4 ("low"). Held-out subset (``balanced_independent_subset``): marker and label independent. After a
CI-sized training run, ``evaluate`` must rank marker <-> low first, see that the shared prototype keeps its
AUROC for the marker but not for the label on held-out data, and the counterfactual (raise the marker
prototype in held-out images without marker and with a high digit) must turn the judged label to "low". 1,000 training steps (about 2 minutes on 2 cores) are the least at which the
model draws the marker into an inverted image; it does so past the plausible maximum, at the paper's
extrapolation value.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from monai_patronus.data import balanced_independent_subset, correlated_subset, load_digits_images
from monai_patronus.demo import train_tiny_patronus
from monai_patronus.evaluation import evaluate

NAMES = ["marker", "low", "even"]


def _plant(images: torch.Tensor, marked: np.ndarray) -> torch.Tensor:
    out = images.clone()
    out[torch.as_tensor(marked, dtype=torch.bool), :, 1:4, 1:4] = 1.0  # where digits are background
    return out


def _batches(images: torch.Tensor, labels: np.ndarray, size: int = 32) -> list[dict]:
    y = torch.as_tensor(labels, dtype=torch.float32)
    return [{"image": images[i : i + size], "label": y[i : i + size]} for i in range(0, len(images), size)]


def test_report_ranks_the_planted_shortcut_first_and_the_counterfactual_shows_it(tmp_path):
    images, digits = load_digits_images(size=16)
    digits = digits.numpy()
    rng = np.random.default_rng(0)
    table = {"marker": rng.integers(0, 2, len(digits)).astype(float), "low": (digits < 5).astype(float),
             "even": (digits % 2 == 0).astype(float)}
    train = correlated_subset(table, "marker", "low", agreement=1.0, size=160, seed=0)
    assert train.report["pairs"][0]["subset"]["phi"] == 1.0
    rest = np.setdiff1d(np.arange(len(digits)), train.indices)
    held_table = {k: v[rest] for k, v in table.items()}
    held = balanced_independent_subset(held_table, "marker", "low", per_cell=24, seed=0)
    assert held.report["pairs"][0]["subset"]["phi"] == 0.0
    held_rows = rest[held.indices]

    labels = np.stack([table[n] for n in NAMES], axis=1)
    x_train = _plant(images[train.indices], labels[train.indices, 0])
    x_held = _plant(images[held_rows], labels[held_rows, 0])
    net, inferer, _ = train_tiny_patronus(x_train, steps=1000, seed=0)

    result = evaluate(
        net, inferer, _batches(x_train, labels[train.indices]), tmp_path, names=NAMES,
        heldout_data=_batches(x_held, labels[held_rows]), top_n=3, num_pairs=1, num_counterfactual=16,
        folds=3, num_inference_steps=20, num_reconstruction_batches=1, seed=0,
    )
    first = result["shortcuts"][0]
    assert first["attributes"] == ["marker", "low"]  # ranked first, and the prototype depicts the marker
    k = first["prototype"]
    i = first["shared_prototypes"].index(k)
    assert first["auroc"]["marker"][i] > 0.95 and first["auroc"]["low"][i] > 0.95
    assert first["heldout_auroc"]["marker"][i] > 0.95 and abs(first["heldout_auroc"]["low"][i] - 0.5) < 0.15
    assert first["cooccurrence"]["phi"] == 1.0 and first["heldout_cooccurrence"]["phi"] == 0.0

    cf = first["counterfactual"]
    rows = np.asarray(cf["image_rows"])
    assert len(rows) == 16 and (labels[held_rows[rows], :2] == 0).all()  # no marker, high digit
    maximum, extrapolated = cf["edits"]
    for e in cf["edits"]:
        print(f"planted shortcut, prototype {k} {e['label']} ({e['target']:.3f}): s_k {e['activation_before']:.3f} -> "
              f"{e['activation_after']:.3f}; flip rates marker {e['attributes']['marker']['flip_rate']:.2f}, label "
              f"{e['attributes']['low']['flip_rate']:.2f} (P {e['attributes']['low']['p_before']:.2f} -> "
              f"{e['attributes']['low']['p_after']:.2f}); control {cf['control_prototype']}: marker "
              f"{e['control']['attributes']['marker']['flip_rate']:.2f}, label {e['control']['attributes']['low']['flip_rate']:.2f}")
    marker, low = extrapolated["attributes"]["marker"], extrapolated["attributes"]["low"]
    assert extrapolated["activation_after"] > extrapolated["activation_before"]  # the edit drew the pattern
    assert marker["flip_rate"] >= 0.75 and low["flip_rate"] >= 0.75  # inserting the marker makes the digit "low"
    assert low["p_before"] <= 0.25 and low["p_after"] >= 0.75
    # dose: at the plausible maximum the inverted image keeps its look; the flips come from the stronger edit
    assert maximum["attributes"]["low"]["flip_rate"] < low["flip_rate"]
    assert cf["control_prototype"] != k and set(cf["control_auroc"]) == {"marker", "low"}

    written = json.loads((tmp_path / "evaluation.json").read_text())
    assert written["shortcuts"][0]["attributes"] == ["marker", "low"] and written["num_images"] == 160
    assert "marker <-> low" in (tmp_path / "evaluation.md").read_text()
    assert (tmp_path / "shortcuts.md").is_file() and (tmp_path / "counterfactual_1.png").stat().st_size > 1000
    assert written["reconstruction"]["psnr"] > 20
