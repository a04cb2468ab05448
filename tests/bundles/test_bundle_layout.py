"""Model-zoo checks of every bundle (metadata, network in/out) and MONAI's ``--tracking`` convention via the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import mlflow
import pytest
import torch
from monai.bundle import ConfigParser, verify_metadata, verify_net_in_out

from tests.bundles._workflow import BUNDLES

ALL = ["patronus_demo", "patronus_chest_xray", "patronus_natural"]

# what the model zoo's meta_schema_20240725 requires, written here: verify_metadata downloads its schema
# otherwise, and the tests run offline
TENSOR = {"type": "object", "required": ["type", "format", "num_channels", "spatial_shape", "dtype", "value_range"]}
SCHEMA = {
    "type": "object",
    "required": [
        "schema",
        "version",
        "monai_version",
        "pytorch_version",
        "numpy_version",
        "required_packages_version",
        "task",
        "description",
        "authors",
        "copyright",
        "network_data_format",
    ],
    "properties": {
        "network_data_format": {
            "type": "object",
            "required": ["inputs", "outputs"],
            "properties": {
                "inputs": {"type": "object", "additionalProperties": TENSOR},
                "outputs": {"type": "object", "additionalProperties": TENSOR},
            },
        }
    },
}


@pytest.mark.parametrize("bundle", ALL)
def test_metadata_verifies(bundle, tmp_path):
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    meta = BUNDLES / bundle / "configs" / "metadata.json"
    verify_metadata(meta_file=str(meta), filepath=str(schema))  # raises on a missing field
    broken = tmp_path / "metadata.json"
    broken.write_text(json.dumps({k: v for k, v in json.loads(meta.read_text()).items() if k != "version"}))
    with pytest.raises(Exception, match="version"):
        verify_metadata(meta_file=str(broken), filepath=str(schema))


@pytest.mark.parametrize("bundle", ALL)
def test_network_in_out_matches_the_metadata(bundle):
    configs = BUNDLES / bundle / "configs"
    meta = json.loads((configs / "metadata.json").read_text())
    context = meta["network_data_format"]["inputs"]["context"]
    assert context["type"] == "vector" and context["spatial_shape"] == []
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(configs / "metadata.json"),
        config_file=str(configs / "common.json"),
        device="cpu",
        extra_forward_args={"timesteps": torch.tensor([10]), "context": torch.rand(1, context["num_channels"])},
    )


@pytest.mark.parametrize("bundle", ALL)
def test_shared_overlays_merge_over_common_without_training_objects(bundle):
    configs = BUNDLES / bundle / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "common.json"), str(configs / "inference.json")])
    assert "optimizer" not in parser and "handlers" not in parser["train"]
    assert parser["initialize"][1] == "$monai_patronus.handlers.load_network_weights(@network, @weights)"


@pytest.mark.slow
@pytest.mark.parametrize("tracking", [None, "mlflow", "configs/mlflow.json"])
def test_cli_run_gives_one_mlflow_run_in_the_bundle_store(tmp_path, dataset_dir, tracking):
    """The default run (tracking on), ``--tracking mlflow`` and ``--tracking configs/mlflow.json`` of a copy of the
    bundle (symlinked configs copied as files), run from another folder: exactly one run, in the store under the
    bundle's output folder, and nothing written in the working directory."""
    cwd, root = tmp_path / "cwd", tmp_path / "patronus_demo"
    cwd.mkdir()
    shutil.copytree(BUNDLES / "patronus_demo" / "configs", root / "configs")
    args = [
        "--config_file",
        str([str(root / "configs" / c) for c in ("common.json", "train.json")]),
        "--meta_file",
        str(root / "configs" / "metadata.json"),
        "--bundle_root",
        str(root),
        "--dataset_dir",
        dataset_dir,
        "--max_epochs",
        "1",
        "--epoch_length",
        "1",
        "--num_inference_steps",
        "2",
        "--grid_images",
        "2",
        "--provenance_top_k",
        "1",
    ]
    if tracking:
        args += ["--tracking", tracking if tracking == "mlflow" else str(root / tracking)]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=dict(env, OMP_NUM_THREADS="1"),
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert list(cwd.iterdir()) == []
    client = mlflow.MlflowClient(f"sqlite:///{root / 'output' / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.status for r in runs] == ["FINISHED"]
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    assert {"config", "data", "provenance"} <= artifacts, artifacts
    if tracking:  # MONAI's executed config (save_execute_config) is logged too
        assert any(p.startswith("config_") and p.endswith(".json") for p in artifacts), artifacts
