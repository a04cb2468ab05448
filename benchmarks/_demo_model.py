"""Load the trained demo bundle's network, inferer and dataset for the interpretability benchmarks."""

from __future__ import annotations

from pathlib import Path

from monai.bundle import ConfigParser

from monai_patronus.handlers import load_network_weights

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "bundles" / "patronus_demo"
DEFAULT_CHECKPOINTS = str(DEMO / "output" / "checkpoints")
DEFAULT_DATASET_DIR = str(DEMO / "data")


def load_demo_model(checkpoints: str = DEFAULT_CHECKPOINTS, dataset_dir: str = DEFAULT_DATASET_DIR, image_size: int | None = None):
    """``(network in eval mode, inferer, train dataset)`` of the demo bundle, weights from ``checkpoints``;
    ``image_size`` overrides the bundle's (the size the checkpoint was trained at)."""
    config = ConfigParser()
    config.read_config(str(DEMO / "configs" / "train.json"))
    config.update({"bundle_root": str(DEMO), "dataset_dir": dataset_dir})
    if image_size is not None:
        config.update({"image_size": image_size})
    net = config.get_parsed_content("network")
    print("checkpoint:", load_network_weights(net, checkpoints))
    return net.eval(), config.get_parsed_content("inferer"), config.get_parsed_content("train#dataset")
