"""Does the demo model's generation use ``s``? Conditioning metrics against two untrained controls.

    python benchmarks/bench_conditioning.py [--checkpoints bundles/patronus_demo/output/checkpoints]
        [--num-images 16] [--num-inference-steps 50] [--num-prototypes 4] [--seed 0] [--json PATH]

On one fixed set of demo slices (spread evenly over the dataset), three networks of the bundle's architecture:

- ``untrained``: fresh from the bundle config. MONAI zero-initialises every res-block's second conv and the
  output conv, so it predicts ε = 0 whatever ``s`` is: the chance row.
- ``untrained, zero-init convs randomised``: the same with those convs given PyTorch's default init; an
  untrained net whose output does depend on ``s``.
- ``trained``: the demo bundle's checkpoint.

"inversion PSNR" is DDIM inversion + reconstruction (``reconstruction_metrics``): it measures inversion
error only (the untrained ε = 0 network inverts exactly and scores highest). The other columns are ``conditioning_metrics`` (chance levels: gaps 0,
win rate 0.5, efficacy 0, in-box ratio 1, gain 0).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from monai.bundle import ConfigParser
from torch import nn

from monai_patronus.data import pick_images
from monai_patronus.evaluation import conditioning_metrics, reconstruction_metrics

from _demo_model import DEFAULT_CHECKPOINTS, DEFAULT_DATASET_DIR, DEMO, load_demo_model  # noqa: E402


def _fresh_network(dataset_dir: str, seed: int, randomise_zero_convs: bool) -> nn.Module:
    """The bundle's network as its config builds it (untrained), optionally with the all-zero convs re-initialised."""
    config = ConfigParser()
    config.read_config(str(DEMO / "configs" / "train.json"))
    config.update({"bundle_root": str(DEMO), "dataset_dir": dataset_dir})
    torch.manual_seed(seed)
    net = config.get_parsed_content("network")
    if randomise_zero_convs:
        zeroed = [m for m in net.modules() if isinstance(m, nn.modules.conv._ConvNd) and not m.weight.any()]
        for module in zeroed:
            module.reset_parameters()
        print(f"randomised {len(zeroed)} zero-initialised convs")
    return net.eval()


def _measure(net, inferer, images, args) -> dict:
    start = time.perf_counter()
    inversion = reconstruction_metrics(net, inferer, images, num_inference_steps=args.num_inference_steps)
    metrics = conditioning_metrics(net, inferer, images, num_inference_steps=args.num_inference_steps,
                                   num_prototypes=args.num_prototypes, seed=args.seed)
    return {"inversion_psnr": inversion["psnr"], "inversion_ssim": inversion["ssim"], **metrics,
            "wall_s": time.perf_counter() - start}


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _row(name: str, r: dict) -> str:
    sem, edit = r["semantic_reconstruction"], r["edit_efficacy"]["invert"]
    gain, san = r["conditioning_gain"], r["sample_sanity"]
    box = edit["in_box_ratio"]
    cells = [
        name,
        f"{r['inversion_psnr']:.1f}",
        f"{sem['psnr']['own']:.2f} / {sem['psnr']['other']:.2f} / {sem['psnr']['gap']:+.2f}",
        f"{sem['ssim']['gap']:+.3f}",
        f"{sem['win_rate']:.2f}",
        f"{_fmt(edit['raise']['median'], '.1%')} ({edit['raise']['count']})",
        f"{_fmt(edit['suppress']['median'], '.1%')} ({edit['suppress']['count']})",
        f"{_fmt(box['median'], '.2f')} ({box['count']})",
        f"{gain['mean_gain']:+.1%}",
        " / ".join(f"{g:+.1%}" for g in gain["gain"]),
        f"{san['samples']['saturated']:.0%} / {san['data']['saturated']:.0%} "
        f"({san['samples']['out_of_range']:.0%} / {san['data']['out_of_range']:.0%}, max abs {max(-san['samples']['min'], san['samples']['max']):.1f})",
        f"{r['wall_s']:.1f}",
    ]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoints", default=DEFAULT_CHECKPOINTS)
    parser.add_argument("--dataset-dir", default=DEFAULT_DATASET_DIR)
    parser.add_argument("--num-images", type=int, default=16)
    parser.add_argument("--num-inference-steps", type=int, default=50)
    parser.add_argument("--num-prototypes", type=int, default=4, help="prototypes edited for edit efficacy")
    parser.add_argument("--seed", type=int, default=0, help="init of the untrained nets and all noise")
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args()
    trained, inferer, dataset = load_demo_model(args.checkpoints, args.dataset_dir)
    device = next(trained.parameters()).device
    images = pick_images(dataset, args.num_images).to(device)
    networks = {
        "untrained (chance)": lambda: _fresh_network(args.dataset_dir, args.seed, False),
        "untrained, zero-init convs randomised": lambda: _fresh_network(args.dataset_dir, args.seed, True),
        "trained demo": lambda: trained,
    }
    results = {}
    for name, build in networks.items():
        results[name] = _measure(build(), inferer, images, args)
        print(f"{name}: {results[name]['summary']}", flush=True)
    bands = " / ".join(f"[{a},{b})" for a, b in results["trained demo"]["conditioning_gain"]["bands"])
    print(f"\n{len(images)} demo slices of {tuple(images.shape[2:])} (evenly spread over {len(dataset)}), "
          f"{args.num_inference_steps} DDIM steps, {args.num_prototypes} edited prototypes, seed {args.seed}, "
          f"device {device}, threads={torch.get_num_threads()}")
    print("| network | inversion PSNR (dB) | semantic PSNR own / other / gap (dB) | SSIM gap | win rate "
          "| edit raise median (n) | edit suppress median (n) | in-box ratio median (n) | cond. gain mean "
          f"| gain per band {bands} | saturated samples / data (beyond ±1 samples / data, max abs) | wall (s) |")
    print("|---" * 12 + "|")
    print("| chance | - | gap 0 | 0 | 0.50 | 0% | 0% | 1 | 0% | 0% | - | - |")
    for name, r in results.items():
        print(_row(name, r))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "num_dataset_images": len(dataset), "results": results}, f, indent=2)
        print("wrote", args.json)


if __name__ == "__main__":
    main()
