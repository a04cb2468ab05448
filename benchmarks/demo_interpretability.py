"""Faithfulness and emergence on the trained demo model (run `make demo` first).

    python benchmarks/demo_interpretability.py [--checkpoints bundles/patronus_demo/output/checkpoints] [--out DIR]

Prints the masking-faithfulness ratio (drop of s_k when its boxed patch is blurred / drop for random boxes
of the same size) and the emergence times of the prototypes during generation, and writes
emergence curves (PNG) to --out.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from monai_patronus.interpret import masking_faithfulness, plot_emergence_curves, prototype_emergence

from _demo_model import DEFAULT_CHECKPOINTS, DEFAULT_DATASET_DIR, ROOT, load_demo_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoints", default=DEFAULT_CHECKPOINTS)
    parser.add_argument("--dataset-dir", default=DEFAULT_DATASET_DIR)
    parser.add_argument("--out", default=str(ROOT / "bundles" / "patronus_demo" / "output" / "interpret"))
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    torch.manual_seed(0)
    net, inferer, dataset = load_demo_model(args.checkpoints, args.dataset_dir)
    idx = torch.linspace(0, len(dataset) - 1, args.images).long().tolist()
    images = torch.stack([dataset[i]["image"] for i in idx])

    start = time.perf_counter()
    faith = masking_faithfulness(net.prototype_encoder, images, num_random=8, generator=torch.Generator().manual_seed(0))
    per_proto = faith.per_prototype_ratio
    print(f"faithfulness: mean drop boxed {float(faith.drop_boxed.mean()):.5f}, random {float(faith.drop_random.mean()):.5f}, "
          f"ratio {faith.ratio:.2f} (per-prototype median {float(per_proto.median()):.2f}, "
          f"min {float(per_proto.min()):.2f}, max {float(per_proto.max()):.2f}) [{time.perf_counter() - start:.1f} s]")

    with torch.no_grad():
        s = net.encode(images[:8])
    noise = torch.randn(images[:8].shape, generator=torch.Generator().manual_seed(0))
    result = prototype_emergence(inferer, net, noise, s, num_inference_steps=args.steps)
    mean_t = result.emergence_timestep.float().mean(0)
    order = mean_t.argsort()
    print("emergence timestep (mean over 8 samples) per prototype, earliest-to-latest in generation:")
    print("  " + ", ".join(f"k{int(k)}:{float(mean_t[k]):.0f}" for k in order.flip(0)))
    print(f"  all prototypes: median {float(mean_t.median()):.0f}, range {float(mean_t.min()):.0f}-{float(mean_t.max()):.0f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = order[[0, len(order) // 2, -1]].tolist()
    path = plot_emergence_curves(
        result.timesteps, result.activations[:, :, chosen], prototype_labels=[f"prototype {k}" for k in chosen],
        emergence_times=mean_t[chosen], path=out / "emergence_curves.png",
    )
    print("emergence curves:", path)


if __name__ == "__main__":
    main()
