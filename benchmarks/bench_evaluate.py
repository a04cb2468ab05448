"""Encoding throughput of the attribute analysis and the evaluation report's wall time, on the demo model.

    python benchmarks/bench_evaluate.py [--checkpoints bundles/patronus_demo/output/checkpoints] [--batch-size 64]

The demo data (MNI152 T1 slices) has no clinical labels, so the benchmark derives three from the slice ids:
the slicing axis (sagittal / coronal / axial, one-vs-rest) and whether the slice lies in the central third of
its axis. They are real attributes of real images, enough to time the whole ``evaluate`` workflow:
encoding, attribute AUROC, 5-fold linear probes, TAD, the shortcut report with counterfactual edits (3 pairs,
16 images, 50 DDIM steps) and reconstruction PSNR/SSIM of one batch.

Seed stability: two tiny Patronus models trained on the same 256 scikit-learn digits with seeds 0 and 1
(``--stability-steps`` optimiser steps each), their prototypes matched by activation correlation.
"""

from __future__ import annotations

import re
import tempfile
import time

import torch
from _demo_model import load_demo_model, model_arg_parser  # noqa: E402
from monai.data import DataLoader

from monai_patronus.data import load_digits_images
from monai_patronus.demo import train_tiny_patronus
from monai_patronus.evaluation import encode_labelled, evaluate, seed_stability

NAMES = ["sagittal", "coronal", "axial", "central"]
SIZES = {0: 197, 1: 233, 2: 189}  # MNI152 2 mm template shape per axis


def _labelled(dataset):
    """The demo items with a ``label`` derived from their id ``mni152_t1_ax{axis}_{index}``."""
    items = []
    for i in range(len(dataset)):
        item = dict(dataset[i])
        axis, index = (int(v) for v in re.match(r"mni152_t1_ax(\d)_(\d+)", item["id"]).groups())
        centre = SIZES[axis] / 3 <= index < 2 * SIZES[axis] / 3
        item["label"] = torch.tensor([axis == 0, axis == 1, axis == 2, centre], dtype=torch.float32)
        items.append(item)
    return items


def main() -> None:
    parser = model_arg_parser()
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stability-steps", type=int, default=300, help="0 skips the seed-stability run")
    args = parser.parse_args()
    torch.manual_seed(0)
    net, inferer, dataset = load_demo_model(args.checkpoints, args.dataset_dir)
    items = _labelled(dataset)
    loader = DataLoader(items, batch_size=args.batch_size, shuffle=False)
    rates = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        encoded = encode_labelled(net, loader, names=NAMES)
        rates.append(len(encoded) / (time.perf_counter() - start))
    rates.sort()
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = evaluate(
            net,
            inferer,
            loader,
            out,
            names=NAMES,
            num_pairs=3,
            num_counterfactual=16,
            num_inference_steps=50,
            title="demo",
        )
        total = time.perf_counter() - start
    print(f"demo model, {len(items)} slices of 32x32, batch {args.batch_size}, threads={torch.get_num_threads()}")
    print("| measure | value |")
    print("|---|---|")
    print(f"| encoding throughput (median of {args.repeats}) | {rates[len(rates) // 2]:.0f} images/s |")
    for part, seconds in result["timings_s"].items():
        print(f"| evaluate: {part} | {seconds:.1f} s |")
    print(f"| evaluate: total wall time | {total:.1f} s |")
    print(f"| linear-probe AUROC (mean) | {result['linear_probe_auroc']['mean']:.3f} |")
    print(f"| TAD / captured | {result['tad']['tad']:.3f} / {len(result['tad']['captured'])} |")
    pairs = [f"{a}<->{b} ({p['score']:.2f})" for p in result["shortcuts"] for a, b in [p["attributes"]]]
    print(f"| shortcut pairs | {', '.join(pairs) or 'none'} |")
    if args.stability_steps:
        digits, _ = load_digits_images(size=16, num_images=256)
        start = time.perf_counter()
        net_a, _, _ = train_tiny_patronus(digits, steps=args.stability_steps, seed=0)
        net_b, _, _ = train_tiny_patronus(digits, steps=args.stability_steps, seed=1)
        stability = seed_stability(net_a, net_b, [digits])
        corr = sorted(stability.correlations)
        print(
            f"| seed stability: 2 x {args.stability_steps} steps on 256 digits, 16 prototypes | mean matched "
            f"correlation {stability.mean_correlation:.3f} (min {corr[0]:.3f}, median {corr[len(corr) // 2]:.3f}) "
            f"[{time.perf_counter() - start:.0f} s] |"
        )


if __name__ == "__main__":
    main()
