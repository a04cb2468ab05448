"""Faithfulness and emergence on the trained demo model (run `make demo` first).

    python benchmarks/demo_interpretability.py [--checkpoints bundles/patronus_demo/output/checkpoints] [--out DIR]

Prints the masking-faithfulness scores (drop of s_k when its boxed patch is blurred against the drop for
random boxes of the same size) over all training slices and over the slices where each prototype is most
active, and the emergence times of the prototypes during generation, and writes
emergence curves (PNG) to --out.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from _demo_model import ROOT, load_demo_model, model_arg_parser  # noqa: E402

from monai_patronus.data import pick_images
from monai_patronus.evaluation import conditioning_summary, semantic_reconstruction
from monai_patronus.interpret import masking_faithfulness, plot_emergence_curves, prototype_emergence


def main() -> None:
    parser = model_arg_parser()
    parser.add_argument("--out", default=str(ROOT / "bundles" / "patronus_demo" / "output" / "interpret"))
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    torch.manual_seed(0)
    net, inferer, dataset = load_demo_model(args.checkpoints, args.dataset_dir)
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])  # all training slices

    start = time.perf_counter()
    faith = masking_faithfulness(
        net.prototype_encoder, images, num_random=8, generator=torch.Generator().manual_seed(0)
    )
    seconds = time.perf_counter() - start
    print(
        f"faithfulness: {images.shape[0]} images x {len(faith.prototypes)} prototypes, 8 random boxes each [{seconds:.1f} s]"
    )
    print(
        "| images per prototype | pairs | mean drop boxed | mean drop random | ratio | win rate | rel. drop boxed | rel. drop random |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for fraction, label in ((1.0, "all"), (0.25, "top 25% by s_k"), (0.1, "top 10% by s_k")):
        m = faith.summary(fraction)
        print(
            f"| {label} | {m['pairs']} | {m['drop_boxed']:.5f} | {m['drop_random']:.5f} | {m['ratio']:.2f} | "
            f"{m['win_rate']:.2f} | {m['relative_drop_boxed']:.3f} | {m['relative_drop_random']:.3f} |"
        )

    spread = pick_images(dataset, 8)  # emergence: 8 slices spread over the volume
    with torch.no_grad():
        s = net.encode(spread)
    noise = torch.randn(spread.shape, generator=torch.Generator().manual_seed(0))
    result = prototype_emergence(inferer, net, noise, s, num_inference_steps=args.steps)
    mean_t = result.emergence_timestep.float().mean(0)
    order = mean_t.argsort()
    print("emergence timestep (mean over 8 samples) per prototype, earliest-to-latest in generation:")
    print("  " + ", ".join(f"k{int(k)}:{float(mean_t[k]):.0f}" for k in order.flip(0)))
    print(
        f"  all prototypes: median {float(mean_t.median()):.0f}, range {float(mean_t.min()):.0f}-{float(mean_t.max()):.0f}"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = order[[0, len(order) // 2, -1]].tolist()
    semantic = semantic_reconstruction(net, inferer, spread, args.steps)  # the numbers beside the figure
    gap = conditioning_summary({"semantic_reconstruction": semantic})
    print("does generation use s?", gap)
    path = plot_emergence_curves(
        result.timesteps,
        result.activations[:, :, chosen],
        prototype_labels=[f"prototype {k}" for k in chosen],
        emergence_times=mean_t[chosen],
        path=out / "emergence_curves.png",
        title=gap,
    )
    print("emergence curves:", path)


if __name__ == "__main__":
    main()
