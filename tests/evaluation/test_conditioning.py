"""Conditioning metrics: each must score chance for a network that ignores ``s`` and well above it for one that
uses it (the parts toy, where ``s`` decides which shapes an image shows)."""

from __future__ import annotations

import json

import pytest
import torch

from monai_patronus.evaluation import (
    compare_conditioning,
    conditioning_gain,
    conditioning_metrics,
    conditioning_summary,
    edit_efficacy,
    sample_sanity,
    semantic_reconstruction,
)
from monai_patronus.networks import PatronusUNet, PrototypeEncoder
from tests._helpers import IgnoresS, tiny_patronus

STEPS = 20


@pytest.fixture(scope="module")
def ignoring(parts_toy):
    images, net, inferer, _ = parts_toy
    with torch.no_grad():
        fixed = net.encode(images).mean(0, keepdim=True)
    return images, IgnoresS(net, fixed).eval(), inferer


def test_a_network_that_ignores_s_scores_exactly_chance(ignoring):
    images, net, inferer = ignoring
    m = conditioning_metrics(net, inferer, images[:8], num_inference_steps=STEPS, edit_modes=("invert", "sample"))
    sem = m["semantic_reconstruction"]
    assert sem["psnr"]["gap"] == 0.0 and sem["ssim"]["gap"] == 0.0 and sem["win_rate"] == 0.5
    for mode in ("invert", "sample"):
        eff = m["edit_efficacy"][mode]
        assert eff["raise"]["count"] > 0 and eff["raise"]["median"] == 0.0 and eff["suppress"]["median"] == 0.0
        assert eff["in_box_ratio"]["count"] == 0  # nothing changed, nothing to locate
    assert m["conditioning_gain"]["gain"] == [0.0] * 4
    print("ignores s:", m["summary"])


def test_an_untrained_network_scores_chance():
    torch.manual_seed(0)
    net = tiny_patronus(num_prototypes=4).eval()  # MONAI zero-initialises the output conv: eps = 0
    from monai.networks.schedulers import DDIMScheduler

    from monai_patronus.inferers import PatronusInferer

    inferer = PatronusInferer(DDIMScheduler(num_train_timesteps=1000, clip_sample=False))
    images = torch.rand(4, 1, 16, 16) * 2 - 1
    sem = semantic_reconstruction(net, inferer, images, num_inference_steps=5)
    assert sem["psnr"]["gap"] == 0.0 and sem["win_rate"] == 0.5
    eff = edit_efficacy(net, inferer, images, num_prototypes=2, num_inference_steps=5)
    assert eff["invert"]["raise"]["median"] == 0.0
    assert conditioning_gain(net, inferer, images, num_bands=2, repeats=1)["mean_gain"] == 0.0


def test_a_network_that_uses_s_scores_well_above_chance(parts_toy):
    images, net, inferer, losses = parts_toy
    m = conditioning_metrics(net, inferer, images, num_inference_steps=STEPS, num_prototypes=4)
    print("uses s:", m["summary"])
    sem, eff, gain = m["semantic_reconstruction"], m["edit_efficacy"]["invert"], m["conditioning_gain"]
    # generating from noise given s(x) lands nearer x than given another image's s
    assert sem["psnr"]["gap"] > 1.0 and sem["ssim"]["gap"] > 0.05 and sem["win_rate"] > 0.55
    # raising / suppressing a shape's prototype draws / removes most of that shape, in the shape's box
    assert eff["raise"]["median"] > 0.3 and eff["suppress"]["median"] > 0.3
    assert eff["in_box_ratio"]["median"] > 2.0
    # knowing the right s removes a large share of the denoising loss at high and middle noise
    assert gain["mean_gain"] > 0.2 and max(gain["gain"]) > 0.5
    assert "s->image gap +" in m["summary"] and "(chance 0)" in m["summary"]


def test_edit_efficacy_targets_the_plausible_range(parts_toy):
    images, net, inferer, _ = parts_toy
    with pytest.raises(ValueError, match="modes"):
        edit_efficacy(net, inferer, images[:2], modes=("draw",))
    with pytest.raises(ValueError, match="reference"):
        edit_efficacy(net, inferer, images[:2], reference=torch.zeros(3, 7))
    with pytest.raises(ValueError, match="at least 2"):
        semantic_reconstruction(net, inferer, images[:1])
    # images already at the target are left out: shape 0 is present in images 1 and 3 (s_0 at its maximum)
    # and absent in 0 and 2 (s_0 within 5% of the range of its minimum)
    eff = edit_efficacy(net, inferer, images[:4], prototypes=[0], reference=net.encode(images), num_inference_steps=5)
    assert eff["invert"]["raise"]["count"] == 2 and eff["invert"]["suppress"]["count"] == 2


def test_sample_sanity_counts_saturation_and_range():
    data = torch.tensor([-1.0, -1.0, 0.0, 0.5]).view(1, 1, 2, 2)
    samples = torch.tensor([-3.0, 0.99, 0.2, 2.0]).view(1, 1, 2, 2)
    r = sample_sanity(samples, data)
    assert r["samples"]["saturated"] == 0.75 and r["samples"]["out_of_range"] == 0.5
    assert r["data"]["saturated"] == 0.5 and r["samples"]["min"] == -3.0 and r["samples"]["max"] == 2.0


def test_summary_names_each_metric_with_its_chance_level():
    line = conditioning_summary(
        {
            "semantic_reconstruction": {"psnr": {"gap": 1.234}, "ssim": {"gap": 0.05}},
            "edit_efficacy": {"invert": {"raise": {"median": 0.25}}},
            "conditioning_gain": {"mean_gain": 0.1},
        }
    )
    assert line == (
        "s->image gap +1.23 dB PSNR, +0.050 SSIM (chance 0); edit efficacy 25.0% (chance 0); "
        "conditioning gain 10.0% (chance 0)"
    )


def _parts_toy_shaped(num_prototypes: int = 4) -> PatronusUNet:
    """An untrained network of the parts toy's architecture (``tests/_helpers.train_parts_toy``)."""
    encoder = PrototypeEncoder(
        2, 1, num_prototypes=num_prototypes, channels=(8, 16), kernel_sizes=3, strides=1, paddings=(1, 0), preset=None
    )
    return PatronusUNet(2, 1, encoder, channels=(16, 32), num_res_blocks=1, norm_num_groups=8, dropout=0.0)


def test_compare_conditioning_measures_both_models_on_the_same_images(parts_toy, tmp_path):
    """The end-of-training comparison (``make demo``: this run against the shipped model): the trained toy
    against an untrained (zero-initialised, so s-ignoring) network of its architecture as the reference."""
    images, net, inferer, _ = parts_toy
    torch.save({"network": _parts_toy_shaped().state_dict()}, tmp_path / "reference.pt")
    out = compare_conditioning(
        net,
        inferer,
        images,
        str(tmp_path / "reference.pt"),
        str(tmp_path / "cmp.json"),
        num_inference_steps=STEPS,
        num_prototypes=1,
        names=("trained", "untrained"),
    )
    trained, reference = out["results"]["trained"], out["results"]["untrained"]
    assert reference["semantic_reconstruction"]["psnr"]["gap"] == 0.0  # ε = 0 whatever s is: chance
    assert trained["semantic_reconstruction"]["psnr"]["gap"] > 1.0
    lines = out["table"].splitlines()
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| chance", "| trained", "| untrained"]
    assert json.loads((tmp_path / "cmp.json").read_text())["results"].keys() == {"trained", "untrained"}


def test_compare_conditioning_without_a_usable_reference_measures_the_run_alone(parts_toy, tmp_path):
    images, net, inferer, _ = parts_toy
    missing = compare_conditioning(
        net, inferer, images[:4], str(tmp_path / "nothing.pt"), num_inference_steps=4, num_prototypes=1
    )
    assert list(missing["results"]) == ["this run"] and "nothing.pt" in missing["reference_skipped"]
    torch.save({"network": _parts_toy_shaped(num_prototypes=3).state_dict()}, tmp_path / "other.pt")
    mismatch = compare_conditioning(
        net, inferer, images[:4], str(tmp_path / "other.pt"), num_inference_steps=4, num_prototypes=1
    )
    assert list(mismatch["results"]) == ["this run"] and mismatch["reference_skipped"].startswith(
        "reference not compared"
    )
