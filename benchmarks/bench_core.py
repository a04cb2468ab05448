"""Cost of the Patronus core against a same-size plain MONAI DDPM U-Net, measured in one run.

    python benchmarks/bench_core.py [--size 32] [--batch 8] [--repeats 5]

Prints a table of median times; ratios are taken within this run (the machine is shared and noisy),
with the measured variants interleaved so that load changes hit them alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from monai.networks.nets import DiffusionModelUNet
from monai.networks.schedulers import DDIMScheduler

from monai_patronus.demo import build_tiny_patronus
from monai_patronus.inferers import PatronusInferer
from monai_patronus.networks import PatronusUNet, PrototypeEncoder


def _train_step(net, x, t, noise, cond, autocast):
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else torch.autocast("cpu", enabled=False)
    with ctx:
        out = net(x, t, image=cond) if cond is not None else net(x, t)
    loss = ((out.float() - noise) ** 2).mean()
    loss.backward()
    net.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    shape = (args.batch, 3, args.size, args.size)
    x, noise = torch.randn(shape), torch.randn(shape)
    t = torch.randint(0, 1000, (args.batch,))
    paper = dict(channels=(64, 128, 256, 256), num_res_blocks=2, norm_num_groups=8)
    patronus = PatronusUNet(2, 3, PrototypeEncoder(2, 3, num_prototypes=100, preset="small"), dropout=0.1, **paper)
    plain = DiffusionModelUNet(2, 3, 3, attention_levels=(False,) * 4, **paper)
    plain.middle_block.attention = torch.nn.Identity()  # same attention-free U-Net as the paper's
    tiny = build_tiny_patronus(2, 1).eval()
    inferer = PatronusInferer(DDIMScheduler(1000, clip_sample=False))
    x_tiny = torch.rand(8, 1, 16, 16) * 2 - 1

    cases = {
        "plain U-Net train step (fp32)": lambda: _train_step(plain, x, t, noise, None, False),
        "Patronus train step (fp32)": lambda: _train_step(patronus, x, t, noise, x, False),
        "Patronus train step (bf16 autocast)": lambda: _train_step(patronus, x, t, noise, x, True),
        "encoder forward only (fp32)": lambda: patronus.prototype_encoder(x),
        "tiny: invert+reconstruct 8 imgs, 50 steps": lambda: inferer.reconstruct(
            inferer.invert(x_tiny, tiny, num_inference_steps=50), tiny, x_tiny, num_inference_steps=50
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():  # warm-up
        fn()
    for _ in range(args.repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(v) for name, v in times.items()}
    base = med["plain U-Net train step (fp32)"]
    n_plain = sum(p.numel() for p in plain.parameters())
    n_pat = sum(p.numel() for p in patronus.parameters())
    print(f"threads={torch.get_num_threads()} batch={args.batch} size={args.size} repeats={args.repeats}")
    print(f"params: plain {n_plain / 1e6:.2f} M, Patronus {n_pat / 1e6:.2f} M (+{(n_pat - n_plain) / 1e3:.0f} k)")
    print(f"| {'case':<44} | {'median s':>9} | {'vs plain fp32':>13} |")
    print(f"|{'-' * 46}|{'-' * 11}|{'-' * 15}|")
    for name, value in med.items():
        print(f"| {name:<44} | {value:>9.4f} | {value / base:>13.3f} |")


if __name__ == "__main__":
    main()
