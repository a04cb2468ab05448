from __future__ import annotations

import json

import pytest
from monai.bundle import ConfigParser
from PIL import Image

from monai_patronus.tracking import pseudonymizer_for
from tests.bundles._workflow import BUNDLES, run_bundle

pytestmark = pytest.mark.slow  # runs bundle configs (training, CLI, torchrun)


@pytest.fixture(scope="module")
def trained_bundle(tmp_path_factory, dataset_dir):
    """The demo bundle trained for one iteration (2-D and 3-D): what the explanation configs load."""
    root = tmp_path_factory.mktemp("interpret")
    data = dataset_dir
    common = dict(dataset_dir=data, max_epochs=1, epoch_length=1, grid_interval=100)
    run_bundle("patronus_demo", ["common.json", "train.json"], output_dir=str(root / "2d"), **common)
    run_bundle("patronus_demo", ["common.json", "train.json", "train_3d.json"], output_dir=str(root / "3d"), **common)
    return root, data


FAST = dict(num_inference_steps=3)


def parser_datalist(output_dir, data, extra):
    """The bundle's datalist, read from its configs without running anything."""
    parser = ConfigParser()
    parser.read_config([str(BUNDLES / "patronus_demo" / "configs" / c) for c in ["common.json", "train.json", *extra]])
    parser.update({"bundle_root": str(BUNDLES / "patronus_demo"), "output_dir": str(output_dir), "dataset_dir": data})
    return parser.get_parsed_content("train#datalist")


def _png(path):
    with Image.open(path) as image:
        assert image.size[0] > 50 and image.size[1] > 50


@pytest.mark.parametrize("dims", ["2d", "3d"])
def test_explain_emergence_and_edit_configs(trained_bundle, dims):
    root, data = trained_bundle
    extra = ["train_3d.json"] if dims == "3d" else []
    common = dict(output_dir=str(root / dims), dataset_dir=data, weights="$@ckpt_dir", **FAST)
    run_bundle(
        "patronus_demo",
        ["common.json", *extra, "explain.json"],
        interpret_num_images=3,
        explain_prototypes=[0, 2],
        provenance_top_k=3,
        **common,
    )
    out = root / dims / "interpret"
    _png(out / "gallery.png")
    summary = json.loads((out / "explain.json").read_text())
    assert [p["prototype"] for p in summary["prototypes"]] == [0, 2]
    assert all(len(p["nearest_real_patches"]) == 3 for p in summary["prototypes"])
    # explain.json names images as MLflow does, by pseudonym; the key in the output folder maps them back
    shown = [m["image_id"] for p in summary["prototypes"] for m in p["nearest_real_patches"]]
    assert all(i.startswith("img-") for i in shown)
    ids = [d["id"] for d in parser_datalist(root / dims, data, extra)]
    real = pseudonymizer_for(root / dims).map_back(shown, ids)
    assert all(i.startswith("mni152_") for i in real.values())

    run_bundle("patronus_demo", ["common.json", *extra, "emergence.json"], interpret_num_images=2, **common)
    _png(out / "emergence.png")
    emergence = json.loads((out / "emergence.json").read_text())
    assert len(emergence["timesteps"]) == 3

    run_bundle(
        "patronus_demo", ["common.json", *extra, "edit.json"], edit_values=[0.0, 3.0], interpolation_steps=3, **common
    )
    _png(out / "extrapolation.png")
    _png(out / "interpolation.png")


def test_prior_then_unconditional_samples(trained_bundle):
    root, data = trained_bundle
    common = dict(output_dir=str(root / "2d"), dataset_dir=data, weights="$@ckpt_dir", **FAST)
    run_bundle("patronus_demo", ["common.json", "train_prior.json"], prior_epochs=2, **common)
    assert (root / "2d" / "prior" / "activation_prior.pt").is_file()
    run_bundle("patronus_demo", ["common.json", "sample.json"], num_samples=3, **common)
    _png(root / "2d" / "interpret" / "samples.png")
