"""Run bundles from the tests the way the model zoo does: ``ConfigWorkflow`` with overrides."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from monai.bundle import ConfigWorkflow

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


def run_bundle(bundle: str, configs: list[str], **overrides) -> ConfigWorkflow:
    """initialize / run / finalize a bundle's configs (merged in order, over ``common.json`` when it is not
    listed) with ``overrides``.

    MLflow tracking is off unless a test asks for it (``tracking_enabled=True``): the tracking tests cover it,
    and a tracked run costs a store, a provenance pass and a logged model."""
    overrides.setdefault("tracking_enabled", False)
    root = BUNDLES / bundle
    configs = configs if "common.json" in configs else ["common.json", *configs]
    workflow = ConfigWorkflow(
        config_file=[str(root / "configs" / c) for c in configs],
        meta_file=str(root / "configs" / "metadata.json"),
        workflow_type="train",
        bundle_root=str(root),
        **overrides,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return workflow


def run_cli(bundle: str, args: list[str], nproc: int | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run`` (or under ``torchrun`` with ``nproc`` processes) in the bundle folder;
    MLflow tracking is off unless ``args`` turn it on (``--tracking_enabled true``)."""
    if "--tracking_enabled" not in args:
        args = [*args, "--tracking_enabled", "false"]
    launcher = [sys.executable, "-m"]
    if nproc:
        launcher += ["torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc_per_node={nproc}", "-m"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run(
        [*launcher, "monai.bundle", "run", *args],
        cwd=BUNDLES / bundle,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
