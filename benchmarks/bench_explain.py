"""The explain workflow (prototype visualisation) with the default DDIM steps against the paper's 1000.

    python benchmarks/bench_explain.py [--prototypes 10] [--images 20] [--size 64] [--steps 50]
        [--checkpoints bundles/patronus_demo/output/checkpoints]

Loads the demo bundle's trained network (run `make demo` first). Its encoder and U-Net are
resolution-agnostic, so --size resamples the demo images (the issue's setting is 64x64). Both runs are
timed in this one process, interleaved, and the reconstruction PSNR of the inversion at each step
count is reported.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from monai_patronus.interpret import visualize_prototypes
from monai_patronus.utils import psnr

from _demo_model import DEFAULT_CHECKPOINTS, DEFAULT_DATASET_DIR, load_demo_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prototypes", type=int, default=10)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--paper-steps", type=int, default=1000)
    parser.add_argument("--inversion-iterations", type=int, default=None, help="default: the bundle's setting")
    parser.add_argument("--checkpoints", default=DEFAULT_CHECKPOINTS)
    parser.add_argument("--dataset-dir", default=DEFAULT_DATASET_DIR)
    args = parser.parse_args()
    torch.manual_seed(0)
    net, inferer, dataset = load_demo_model(args.checkpoints, args.dataset_dir)
    idx = torch.linspace(0, len(dataset) - 1, args.images).long().tolist()
    images = torch.stack([dataset[i]["image"] for i in idx])
    if images.shape[-1] != args.size:
        images = F.interpolate(images, size=(args.size, args.size), mode="bilinear", align_corners=False).clamp(-1, 1)
    protos = list(range(args.prototypes))
    rows = []
    default_iterations = inferer.inversion_iterations if args.inversion_iterations is None else args.inversion_iterations
    for steps in (args.steps, args.paper_steps):
        # the paper inverts with plain reverse DDIM; the default adds fixed-point refinement (bundle config)
        inferer.inversion_iterations = default_iterations if steps == args.steps else 0
        start = time.perf_counter()
        visualize_prototypes(inferer, net, images, protos, num_inference_steps=steps)
        seconds = time.perf_counter() - start
        with torch.no_grad():
            s = net.encode(images)
        recon = inferer.reconstruct(inferer.invert(images, net, s, steps), net, s, steps)
        rows.append((steps, inferer.inversion_iterations, seconds, float(psnr(recon.clamp(-1, 1), images).mean())))
    print(f"explain: {args.prototypes} prototypes x {args.images} images at {args.size}x{args.size}, threads={torch.get_num_threads()}")
    print(f"| {'DDIM steps':>10} | {'fixed-point its':>15} | {'seconds':>9} | {'speed-up':>8} | {'recon PSNR dB':>13} |")
    print(f"|{'-' * 12}|{'-' * 17}|{'-' * 11}|{'-' * 10}|{'-' * 15}|")
    for steps, iterations, seconds, value in rows:
        print(f"| {steps:>10} | {iterations:>15} | {seconds:>9.1f} | {rows[-1][2] / seconds:>8.1f} | {value:>13.2f} |")


if __name__ == "__main__":
    main()
