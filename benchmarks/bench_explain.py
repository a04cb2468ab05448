"""The explain workflow (prototype visualisation) with the default DDIM steps against the paper's 1000.

    python benchmarks/bench_explain.py [--prototypes 10] [--images 20] [--size 64] [--steps 50] [--checkpoints DIR]

Loads the demo bundle's network trained at --size and its images at that size. The issue's setting is
64x64; train that model first (its checkpoints are the default for --size 64):

    cd bundles/patronus_demo && python -m monai.bundle run --config_file "['configs/common.json','configs/train.json']" \
        --image_size 64 --output_dir output_64 --max_epochs 40

Both runs are timed in this one process, one after the other, by wall clock and by this process's CPU
time (less sensitive to other load on a shared machine), and the reconstruction PSNR of the inversion at
each step count is reported.
"""

from __future__ import annotations

import argparse
import time

import torch
from _demo_model import DEFAULT_CHECKPOINTS, DEFAULT_DATASET_DIR, DEMO, load_demo_model  # noqa: E402

from monai_patronus.data import pick_images
from monai_patronus.interpret import visualize_prototypes
from monai_patronus.utils import psnr


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prototypes", type=int, default=10)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--paper-steps", type=int, default=1000)
    parser.add_argument("--inversion-iterations", type=int, default=None, help="default: the bundle's setting")
    parser.add_argument("--checkpoints", default=None, help="default: output/ at 32 px, output_<size>/ otherwise")
    parser.add_argument("--dataset-dir", default=DEFAULT_DATASET_DIR)
    args = parser.parse_args()
    torch.manual_seed(0)
    checkpoints = args.checkpoints or (
        DEFAULT_CHECKPOINTS if args.size == 32 else str(DEMO / f"output_{args.size}" / "checkpoints")
    )
    net, inferer, dataset = load_demo_model(checkpoints, args.dataset_dir, image_size=args.size)
    images = pick_images(dataset, args.images)
    protos = list(range(args.prototypes))
    rows = []
    default_iterations = (
        inferer.inversion_iterations if args.inversion_iterations is None else args.inversion_iterations
    )
    for steps in (args.steps, args.paper_steps):
        # the paper inverts with plain reverse DDIM; the default adds fixed-point refinement (bundle config)
        inferer.inversion_iterations = default_iterations if steps == args.steps else 0
        start, cpu_start = time.perf_counter(), time.process_time()
        visualize_prototypes(inferer, net, images, protos, num_inference_steps=steps)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        with torch.no_grad():
            s = net.encode(images)
        recon = inferer.reconstruct(inferer.invert(images, net, s, steps), net, s, steps)
        rows.append((steps, inferer.inversion_iterations, seconds, cpu, float(psnr(recon.clamp(-1, 1), images).mean())))
        # each row as soon as it is measured: the paper's 1000 steps take hours on a CPU
        print(
            "measured:",
            dict(zip(("steps", "fixed_point_its", "wall_s", "cpu_s", "recon_psnr_db"), rows[-1])),
            flush=True,
        )
    print(
        f"explain: {args.prototypes} prototypes x {args.images} images at {args.size}x{args.size}, threads={torch.get_num_threads()}"
    )
    print("| DDIM steps | fixed-point its | wall s | speed-up (wall) | CPU s | speed-up (CPU) | recon PSNR dB |")
    print("|---|---|---|---|---|---|---|")
    for steps, iterations, seconds, cpu, value in rows:
        print(
            f"| {steps} | {iterations} | {seconds:.1f} | {rows[-1][2] / seconds:.1f} | {cpu:.1f} | {rows[-1][3] / cpu:.1f} | {value:.2f} |"
        )


if __name__ == "__main__":
    main()
