"""Shared code of the demo-bundle benchmarks: the bundle's train config, its trained network, inferer and
dataset, the command-line options that pick them, and the conditioning metrics at the options' settings."""

from __future__ import annotations

import argparse
from pathlib import Path

from monai.bundle import ConfigParser

from monai_patronus.evaluation import conditioning_metrics
from monai_patronus.handlers import load_network_weights

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "bundles" / "patronus_demo"
DEFAULT_CHECKPOINTS = str(DEMO / "output" / "checkpoints")
DEFAULT_DATASET_DIR = str(DEMO / "data")


def demo_config(dataset_dir: str = DEFAULT_DATASET_DIR, overrides: dict | None = None) -> ConfigParser:
    """The demo bundle's training config (``common.json`` + ``train.json``) rooted at the bundle, reading
    ``dataset_dir``, with ``overrides`` (config ids to values) applied last."""
    config = ConfigParser()
    config.read_config([str(DEMO / "configs" / c) for c in ("common.json", "train.json")])
    config.update({"bundle_root": str(DEMO), "dataset_dir": dataset_dir, **(overrides or {})})
    return config


def model_arg_parser() -> argparse.ArgumentParser:
    """A command-line parser with ``--checkpoints`` and ``--dataset-dir``, the arguments of
    :func:`load_demo_model`; a benchmark adds its own options after these."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoints", default=DEFAULT_CHECKPOINTS)
    parser.add_argument("--dataset-dir", default=DEFAULT_DATASET_DIR)
    return parser


def load_demo_model(
    checkpoints: str = DEFAULT_CHECKPOINTS, dataset_dir: str = DEFAULT_DATASET_DIR, image_size: int | None = None
):
    """``(network in eval mode, inferer, train dataset)`` of the demo bundle, weights from ``checkpoints``;
    ``image_size`` overrides the bundle's (the size the checkpoint was trained at)."""
    config = demo_config(dataset_dir, None if image_size is None else {"image_size": image_size})
    net = config.get_parsed_content("network")
    print("checkpoint:", load_network_weights(net, checkpoints))
    return net.eval(), config.get_parsed_content("inferer"), config.get_parsed_content("train#dataset")


def measure_conditioning(net, inferer, images, args: argparse.Namespace) -> dict:
    """``conditioning_metrics`` of ``net`` on ``images`` at the command line's ``--num-inference-steps``,
    ``--num-prototypes`` and ``--seed``."""
    return conditioning_metrics(
        net,
        inferer,
        images,
        num_inference_steps=args.num_inference_steps,
        num_prototypes=args.num_prototypes,
        seed=args.seed,
    )
