"""Data loading against training throughput for the bundles' pipelines, measured in one run.

    python benchmarks/bench_data.py [--steps 5]

For each pipeline: images/s that the DataLoader delivers (MONAI ``Dataset`` re-reading files every
epoch vs ``CacheDataset`` holding the deterministic transforms' output), and images/s that one
training step consumes on this machine. The loader is not the bottleneck when its rate is well above
the training rate.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from monai.bundle import ConfigParser
from monai.data import CacheDataset, DataLoader, Dataset

ROOT = Path(__file__).resolve().parents[1]


def _loader_rate(dataset, batch_size: int, batches: int) -> float:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0)
    seen, start = 0, time.perf_counter()
    while seen < batches * batch_size:
        for batch in loader:
            seen += batch["image"].shape[0]
            if seen >= batches * batch_size:
                break
    return seen / (time.perf_counter() - start)


def _train_rate(parser: ConfigParser, batch: torch.Tensor, steps: int) -> float:
    net, inferer, opt = (parser.get_parsed_content(k) for k in ("network", "inferer", "optimizer"))
    net.train()
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()
        noise = torch.randn_like(batch)
        t = torch.randint(0, 1000, (batch.shape[0],))
        loss = ((inferer(batch, net, noise, t) - noise) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * batch.shape[0] / (time.perf_counter() - start)


def demo_pipeline(steps: int, tmp: Path) -> dict:
    parser = ConfigParser()
    parser.read_config(str(ROOT / "bundles" / "patronus_demo" / "configs" / "train.json"))
    parser.update({"bundle_root": str(ROOT / "bundles" / "patronus_demo"), "dataset_dir": str(tmp / "mni"), "output_dir": str(tmp / "out")})
    datalist = parser.get_parsed_content("train#datalist")
    transform = parser.get_parsed_content("train#preprocessing")
    batch_size = parser.get_parsed_content("batch_size")
    start = time.perf_counter()
    cached = CacheDataset(datalist, transform, cache_rate=1.0, num_workers=0, progress=False)
    cache_s = time.perf_counter() - start
    batch = torch.stack([cached[i]["image"] for i in range(batch_size)])
    return {
        "pipeline": f"demo (MNI152 PNG slices, {len(datalist)} files, batch {batch_size})",
        "Dataset (re-read)": _loader_rate(Dataset(datalist, transform), batch_size, 4),
        "CacheDataset": _loader_rate(cached, batch_size, 4),
        "cache build s": cache_s,
        "training": _train_rate(parser, batch, steps),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [demo_pipeline(args.steps, Path(tmp))]
    print(f"threads={torch.get_num_threads()}; rates in images/s")
    print(f"| {'pipeline':<48} | {'Dataset':>9} | {'Cache':>9} | {'cache build s':>13} | {'training':>9} | {'Cache/training':>14} |")
    print(f"|{'-' * 50}|{'-' * 11}|{'-' * 11}|{'-' * 15}|{'-' * 11}|{'-' * 16}|")
    for r in rows:
        print(
            f"| {r['pipeline']:<48} | {r['Dataset (re-read)']:>9.0f} | {r['CacheDataset']:>9.0f} | {r['cache build s']:>13.2f} "
            f"| {r['training']:>9.1f} | {r['CacheDataset'] / r['training']:>14.0f} |"
        )


if __name__ == "__main__":
    main()
