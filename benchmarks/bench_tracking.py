"""What MLflow tracking costs a training run: the demo bundle with tracking off and on, in one process.

    python benchmarks/bench_tracking.py [--epochs 10] [--image-size 32]

Both runs train the same demo bundle from the same seed, each in a fresh output folder, one after the other.
The tracked run's end-of-training work (provenance pass and gallery, pyfunc model logging and registration)
is timed separately, from the handler's own methods. Prints a table.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from monai.bundle import ConfigWorkflow  # noqa: E402

from monai_patronus.tracking import PatronusTrackingHandler  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "bundles" / "patronus_demo"


def _train(output_dir: Path, dataset_dir: Path, tracking: bool, epochs: int, image_size: int) -> float:
    workflow = ConfigWorkflow(
        config_file=[str(DEMO / "configs" / c) for c in ("common.json", "train.json")],
        workflow_type="train",
        bundle_root=str(DEMO),
        output_dir=str(output_dir),
        dataset_dir=str(dataset_dir),
        tracking_enabled=tracking,
        max_epochs=epochs,
        image_size=image_size,
        grid_interval=max(1, epochs // 2),
    )
    workflow.initialize()
    start = time.perf_counter()
    workflow.run()
    seconds = time.perf_counter() - start
    workflow.finalize()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=32)
    args = parser.parse_args()
    parts: dict[str, float] = {}

    def timed(name, method):
        def wrapper(self, *a, **k):
            start = time.perf_counter()
            try:
                return method(self, *a, **k)
            finally:
                parts[name] = parts.get(name, 0.0) + time.perf_counter() - start

        return wrapper

    PatronusTrackingHandler.log_provenance = timed(
        "provenance (search, gallery, upload)", PatronusTrackingHandler.log_provenance
    )
    PatronusTrackingHandler.log_model = timed("pyfunc model logging + registration", PatronusTrackingHandler.log_model)
    PatronusTrackingHandler.start = timed("run start (config, fingerprint, tags)", PatronusTrackingHandler.start)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plain = _train(tmp / "plain", tmp / "data", False, args.epochs, args.image_size)
        tracked = _train(tmp / "tracked", tmp / "data", True, args.epochs, args.image_size)
    rows = [("training, tracking off", plain), ("training, tracking on", tracked), *parts.items()]
    print(f"demo bundle, {args.epochs} epochs at {args.image_size} px (188 slices, batch 32)")
    print(f"| {'part':<40} | {'seconds':>8} |")
    print(f"|{'-' * 42}|{'-' * 10}|")
    for name, seconds in rows:
        print(f"| {name:<40} | {seconds:8.2f} |")
    print(f"tracking overhead: {tracked - plain:.2f} s ({tracked / plain:.3f}x the untracked run)")


if __name__ == "__main__":
    main()
