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

import json
import time

import torch
from _demo_model import demo_config, load_demo_model, measure_conditioning, model_arg_parser  # noqa: E402
from torch import nn

from monai_patronus.data import pick_images
from monai_patronus.evaluation import conditioning_table, reconstruction_metrics


def _fresh_network(dataset_dir: str, seed: int, randomise_zero_convs: bool) -> nn.Module:
    """The bundle's network as its config builds it (untrained), optionally with the all-zero convs re-initialised."""
    config = demo_config(dataset_dir)
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
    metrics = measure_conditioning(net, inferer, images, args)
    return {
        "inversion_psnr": inversion["psnr"],
        "inversion_ssim": inversion["ssim"],
        **metrics,
        "wall_s": time.perf_counter() - start,
    }


def main() -> None:
    parser = model_arg_parser()
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
    print(
        f"\n{len(images)} demo slices of {tuple(images.shape[2:])} (evenly spread over {len(dataset)}), "
        f"{args.num_inference_steps} DDIM steps, {args.num_prototypes} edited prototypes, seed {args.seed}, "
        f"device {device}, threads={torch.get_num_threads()}"
    )
    print(
        conditioning_table(
            results,
            {
                "inversion PSNR (dB)": lambda r: f"{r['inversion_psnr']:.1f}",
                f"gain per band {bands}": lambda r: " / ".join(f"{g:+.1%}" for g in r["conditioning_gain"]["gain"]),
                "wall (s)": lambda r: f"{r['wall_s']:.1f}",
            },
        )
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "num_dataset_images": len(dataset), "results": results}, f, indent=2)
        print("wrote", args.json)


if __name__ == "__main__":
    main()
