"""Data loading against training throughput for the bundles' pipelines, measured in one run.

    python benchmarks/bench_data.py [--steps 5]

For each pipeline: images/s that the DataLoader delivers (MONAI ``Dataset`` re-reading files every
epoch vs the cache holding the deterministic transforms' output: ``CacheDataset`` for the demo, the chest
X-ray bundle's own ``PersistentDataset`` on disk), and images/s that one training step consumes on this
machine. The loader is not the bottleneck when its rate is well above
the training rate.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from _demo_model import ROOT, demo_config  # noqa: E402
from monai.bundle import ConfigParser
from monai.data import CacheDataset, DataLoader, Dataset


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
    parser = demo_config(str(tmp / "mni"), {"output_dir": str(tmp / "out")})
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
        "cached": _loader_rate(cached, batch_size, 4),
        "cache note": f"CacheDataset; built in {cache_s:.1f} s",
        "training": _train_rate(parser, batch, steps),
    }


def chest_xray_pipeline(steps: int, tmp: Path, n: int = 16, side: int = 1024) -> dict:
    """Synthetic 1024-px radiographs, half 8-bit PNG and half 16-bit DICOM, through the bundle's pipeline."""
    import csv

    import numpy as np
    from monai.data import PersistentDataset
    from PIL import Image
    from pydicom.dataset import Dataset as DicomDataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

    from monai_patronus.data import CHEXPERT_LABELS

    root = tmp / "cxr"
    root.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        image = rng.integers(0, 4096, (side, side), dtype=np.uint16)
        if i % 2:
            ds = DicomDataset()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
            ds.SOPClassUID, ds.Modality = SecondaryCaptureImageStorage, "DX"
            ds.set_pixel_data(image, "MONOCHROME2", 12)
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            name = f"img{i}.dcm"
            ds.save_as(str(root / name), enforce_file_format=True)
        else:
            name = f"img{i}.png"
            Image.fromarray((image >> 4).astype(np.uint8)).save(root / name)
        rows.append([name, "Female", 50, "Frontal", "PA", *([""] * 14)])
    with open(root / "train.csv", "w", newline="") as f:
        csv.writer(f).writerows([["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS], *rows])
    parser = ConfigParser()
    parser.read_config(
        [str(ROOT / "bundles" / "patronus_chest_xray" / "configs" / c) for c in ("common.json", "train.json")]
    )
    parser.update(
        {
            "bundle_root": str(ROOT / "bundles" / "patronus_chest_xray"),
            "dataset_dir": str(root),
            "output_dir": str(tmp / "cxr_out"),
        }
    )
    datalist = parser.get_parsed_content("train#datalist")
    transform = parser.get_parsed_content("train#preprocessing")
    persistent = parser.get_parsed_content("train#dataset")  # the bundle's own PersistentDataset
    assert isinstance(persistent, PersistentDataset)
    start = time.perf_counter()
    _ = [persistent[i] for i in range(len(persistent))]  # first epoch: decode and write the cache
    first_epoch = len(persistent) / (time.perf_counter() - start)
    batch = torch.stack([persistent[i]["image"] for i in range(2)])
    return {
        "pipeline": f"chest X-ray ({n} files {side}px PNG+DICOM -> 224, batch 2)",
        "Dataset (re-read)": _loader_rate(Dataset(datalist, transform), 2, n // 2),
        "cached": _loader_rate(persistent, 2, n // 2),
        "cache note": f"PersistentDataset; first epoch {first_epoch:.0f} img/s",
        "training": _train_rate(parser, batch, steps),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [demo_pipeline(args.steps, Path(tmp)), chest_xray_pipeline(max(1, args.steps // 2), Path(tmp))]
    print(f"threads={torch.get_num_threads()}; rates in images/s")
    print(
        f"| {'pipeline':<54} | {'Dataset':>8} | {'cached':>8} | {'cache':<40} | {'training':>8} | {'Dataset/train':>13} |"
    )
    print(f"|{'-' * 56}|{'-' * 10}|{'-' * 10}|{'-' * 42}|{'-' * 10}|{'-' * 15}|")
    for r in rows:
        print(
            f"| {r['pipeline']:<54} | {r['Dataset (re-read)']:>8.1f} | {r['cached']:>8.0f} | {r['cache note']:<40} "
            f"| {r['training']:>8.2f} | {r['Dataset (re-read)'] / r['training']:>13.1f} |"
        )


if __name__ == "__main__":
    main()
