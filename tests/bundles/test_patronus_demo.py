from __future__ import annotations

import json

import pytest
import torch

from monai_patronus.handlers import latest_checkpoint
from monai_patronus.networks import PatronusUNet
from tests.bundles._workflow import BUNDLES, run_bundle, run_cli

pytestmark = pytest.mark.slow  # runs bundle configs (training, CLI, torchrun)

FAST = dict(max_epochs=1, epoch_length=1, num_inference_steps=3, grid_images=2, grid_interval=1)


def test_train_one_iteration_writes_checkpoint_and_grid(tmp_path, dataset_dir):
    wf = run_bundle(
        "patronus_demo", ["common.json", "train.json"], output_dir=str(tmp_path), dataset_dir=dataset_dir, **FAST
    )
    assert wf.check_properties() == []
    handlers = {type(h).__name__ for h in wf.parser.get_parsed_content("train#handlers")}
    assert "PrototypeDistinctLossHandler" not in handlers and "ProgressBar" not in handlers  # off by default here
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.iteration == 1
    assert isinstance(trainer.state.metrics["inversion_psnr"], float)
    assert isinstance(trainer.state.metrics["semantic_gap_psnr"], float)
    assert (tmp_path / "checkpoints" / "checkpoint_epoch=1.pt").is_file()
    assert (tmp_path / "grids" / "grid_epoch0001.png").is_file()
    datalist = wf.parser.get_parsed_content("train#datalist")
    assert len(datalist) > 100 and all(item["image"].endswith(".png") for item in datalist)
    batch = next(iter(wf.parser.get_parsed_content("train#dataloader")))
    assert batch["image"].shape == (32, 1, 32, 32)
    assert -1.0 <= float(batch["image"].min()) and float(batch["image"].max()) <= 1.0


def test_resume_continues_from_last_checkpoint(tmp_path, dataset_dir):
    common = dict(output_dir=str(tmp_path), dataset_dir=dataset_dir, epoch_length=1, grid_interval=100)
    run_bundle("patronus_demo", ["common.json", "train.json"], max_epochs=1, **common)
    first = torch.load(latest_checkpoint(tmp_path / "checkpoints"), weights_only=True)
    wf = run_bundle("patronus_demo", ["common.json", "train.json"], max_epochs=2, resume=True, **common)
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert (trainer.state.epoch, trainer.state.iteration) == (2, 2)  # one more epoch, not two
    assert latest_checkpoint(tmp_path / "checkpoints").endswith("checkpoint_epoch=2.pt")
    assert first["trainer"]["iteration"] == 1


def test_inference_after_training(tmp_path, dataset_dir):
    common = dict(output_dir=str(tmp_path), dataset_dir=dataset_dir)
    run_bundle(
        "patronus_demo", ["common.json", "train.json"], max_epochs=1, epoch_length=1, grid_interval=100, **common
    )
    run_bundle(
        "patronus_demo",
        ["common.json", "inference.json"],
        num_inference_steps=3,
        grid_images=2,
        weights="$@ckpt_dir",
        **common,
    )
    assert (tmp_path / "inference" / "inference_grid.png").is_file()
    (record,) = [json.loads(line) for line in (tmp_path / "inference" / "conditioning.jsonl").read_text().splitlines()]
    assert record["semantic_reconstruction"]["num_images"] == 2 and "edit efficacy" in record["summary"]


def test_3d_configuration_trains_on_mni152_volumes(tmp_path, dataset_dir):
    wf = run_bundle(
        "patronus_demo",
        ["common.json", "train.json", "train_3d.json"],
        output_dir=str(tmp_path),
        dataset_dir=dataset_dir,
        **FAST,
    )
    net = wf.parser.get_parsed_content("network")
    assert isinstance(net, PatronusUNet) and net.spatial_dims == 3
    batch = next(iter(wf.parser.get_parsed_content("train#dataloader")))
    assert batch["image"].shape == (3, 1, 32, 32, 32)
    assert (tmp_path / "checkpoints" / "checkpoint_epoch=1.pt").is_file()
    assert (tmp_path / "grids" / "grid_epoch0001.png").is_file()


def test_distinct_loss_and_bf16_options(tmp_path, dataset_dir):
    wf = run_bundle(
        "patronus_demo",
        ["common.json", "train.json"],
        output_dir=str(tmp_path),
        dataset_dir=dataset_dir,
        max_epochs=1,
        epoch_length=1,
        grid_interval=100,
        distinct_loss_weight=0.5,
        autocast_dtype="bfloat16",
        progress_bar=True,
    )
    output = wf.parser.get_parsed_content("train#trainer").state.output
    assert "distinct_loss" in output and torch.isfinite(output["loss"])
    handlers = {type(h).__name__ for h in wf.parser.get_parsed_content("train#handlers")}
    assert {"ProgressBar", "PrototypeDistinctLossHandler"} <= handlers


def test_torchrun_two_processes_gloo(tmp_path, dataset_dir):
    result = run_cli(
        "patronus_demo",
        [
            "--config_file",
            "['configs/common.json','configs/train.json','configs/multi_gpu_train.json']",
            "--logging_file",
            "configs/logging.conf",
            "--output_dir",
            str(tmp_path),
            "--dataset_dir",
            dataset_dir,
            "--max_epochs",
            "1",
            "--epoch_length",
            "1",
            "--grid_interval",
            "100",
        ],
        nproc=2,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["checkpoint_epoch=1.pt"]
    keys = torch.load(tmp_path / "checkpoints" / "checkpoint_epoch=1.pt", weights_only=True)["network"].keys()
    assert not any(k.startswith("module.") for k in keys)  # saved unwrapped from DDP


def test_metadata_fields():
    meta = json.loads((BUNDLES / "patronus_demo" / "configs" / "metadata.json").read_text())
    for key in (
        "version",
        "changelog",
        "monai_version",
        "required_packages_version",
        "network_data_format",
        "intended_use",
    ):
        assert key in meta
    assert meta["version"] in meta["changelog"]
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == [32, 32]
    for name in (
        "LICENSE",
        "docs/README.md",
        "configs/logging.conf",
        "configs/multi_gpu_train.json",
        "configs/inference.json",
    ):
        assert (BUNDLES / "patronus_demo" / name).is_file()


def test_killed_run_resumes_from_last_good_checkpoint(tmp_path, dataset_dir):
    """SIGKILL a CLI training run after a few epochs; every checkpoint left loads, and --resume continues."""
    import signal
    import subprocess
    import sys
    import time

    args = [
        "--config_file",
        "['configs/common.json','configs/train.json']",
        "--output_dir",
        str(tmp_path),
        "--dataset_dir",
        dataset_dir,
        "--epoch_length",
        "1",
        "--grid_interval",
        "1000",
        "--keep_last_checkpoints",
        "2",
    ]
    ckpts = tmp_path / "checkpoints"
    proc = subprocess.Popen(
        [sys.executable, "-m", "monai.bundle", "run", *args, "--max_epochs", "1000"],
        cwd=BUNDLES / "patronus_demo",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while latest_checkpoint(ckpts) is None or int(latest_checkpoint(ckpts).split("=")[-1][:-3]) < 3:
            assert proc.poll() is None and time.monotonic() < deadline, "training did not reach epoch 3"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    saved = sorted(p.name for p in ckpts.iterdir() if not p.name.startswith("."))
    # the newest checkpoint is written before the oldest is pruned, so a kill between the two leaves keep + 1
    assert 1 <= len(saved) <= 3, saved
    for name in saved:  # nothing truncated: every visible checkpoint loads completely
        assert set(torch.load(ckpts / name, weights_only=True)) == {"network", "optimizer", "trainer"}
    last = int(latest_checkpoint(ckpts).split("=")[-1][:-3])
    result = run_cli("patronus_demo", [*args, "--max_epochs", str(last + 1), "--resume", "true"])
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(latest_checkpoint(ckpts), weights_only=True)["trainer"]
    assert latest_checkpoint(ckpts).endswith(f"checkpoint_epoch={last + 1}.pt")
    assert state["iteration"] == last + 1  # continued after the last good epoch, one iteration per epoch
    assert not list(ckpts.glob(".checkpoint_*.tmp"))


def _digests(folder) -> dict[str, str]:
    import hashlib

    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def test_new_run_in_an_old_output_folder_keeps_both_and_loads_the_new(tmp_path, dataset_dir):
    """F2: `make demo`, then a shorter run in the same folder: nothing is lost and the new weights are what loads."""
    from monai_patronus.handlers import load_network_weights

    common = dict(output_dir=str(tmp_path), dataset_dir=dataset_dir, epoch_length=1, grid_interval=100)
    run_bundle("patronus_demo", ["common.json", "train.json"], max_epochs=3, **common)
    ckpts = tmp_path / "checkpoints"
    old = _digests(ckpts)
    assert sorted(old) == ["checkpoint_epoch=2.pt", "checkpoint_epoch=3.pt"]  # keep_last_checkpoints = 2

    wf = run_bundle("patronus_demo", ["common.json", "train.json"], max_epochs=1, **common)
    assert (ckpts / "checkpoint_epoch=1.pt").is_file()
    assert sorted(p.name for p in ckpts.glob("checkpoint_epoch=*.pt")) == ["checkpoint_epoch=1.pt"]
    archived = {k: v for k, v in _digests(ckpts).items() if k.startswith("previous/")}
    assert sorted(k.split("/")[-1] for k in archived) == sorted(old) and set(archived.values()) == set(old.values())

    trained = wf.parser.get_parsed_content("network")
    net = wf.parser.get_parsed_content("network_def", instantiate=True)  # a fresh, untrained instance
    assert load_network_weights(net, ckpts).endswith("checkpoint_epoch=1.pt")
    for k, v in trained.state_dict().items():
        torch.testing.assert_close(net.state_dict()[k].cpu(), v.cpu(), rtol=0, atol=0)
    old_weights = torch.load(next(ckpts.glob("previous/*/checkpoint_epoch=3.pt")), weights_only=True)["network"]
    assert any(not torch.equal(old_weights[k], v.cpu()) for k, v in trained.state_dict().items())


def test_nan_loss_stops_the_bundle_and_keeps_its_checkpoints(tmp_path, dataset_dir):
    """F6: a resumed run whose batches turn NaN raises before any step; the good checkpoints are untouched."""
    common = dict(output_dir=str(tmp_path), dataset_dir=dataset_dir, epoch_length=1, grid_interval=100)
    run_bundle("patronus_demo", ["common.json", "train.json"], max_epochs=2, **common)
    good = _digests(tmp_path / "checkpoints")
    nan_batches = "$lambda batch: {'image': torch.stack([b['image'] for b in batch]) * float('nan')}"
    with pytest.raises(RuntimeError, match="Failed to evaluate") as info:  # MONAI wraps the run expression's error
        run_bundle(
            "patronus_demo",
            ["common.json", "train.json"],
            max_epochs=4,
            resume=True,
            **common,
            **{"train#dataloader#collate_fn": nan_batches},
        )
    assert isinstance(info.value.__cause__, FloatingPointError)
    assert "non-finite training loss (loss=nan) at epoch 3, iteration 3" in str(info.value.__cause__)
    assert _digests(tmp_path / "checkpoints") == good


def test_the_shipped_model_is_loaded_by_default_and_follows_s(tmp_path, dataset_dir):
    """``models/model.pt`` (<= 10 MB, a weights_only state dict) is what inference.json loads without
    ``--weights``; its generation follows s on the grid slices (chance: gap 0)."""
    shipped = BUNDLES / "patronus_demo" / "models" / "model.pt"
    assert shipped.stat().st_size <= 10 * 2**20
    state = torch.load(shipped, map_location="cpu", weights_only=True)
    card = json.loads((BUNDLES / "patronus_demo" / "models" / "model_card.json").read_text())
    assert set(state) == {"network"} and card["size_bytes"] == shipped.stat().st_size
    run_bundle(
        "patronus_demo",
        ["common.json", "inference.json"],
        output_dir=str(tmp_path),
        dataset_dir=dataset_dir,
        num_inference_steps=10,
        grid_images=6,
    )
    (record,) = [json.loads(line) for line in (tmp_path / "inference" / "conditioning.jsonl").read_text().splitlines()]
    sem = record["semantic_reconstruction"]
    print("shipped model on 6 grid slices, 10 steps:", record["summary"])
    assert sem["psnr"]["gap"] > 3.0 and sem["ssim"]["gap"] > 0.15 and sem["win_rate"] > 0.8


def test_compare_config_puts_the_run_beside_the_shipped_model(tmp_path, dataset_dir):
    common = dict(output_dir=str(tmp_path), dataset_dir=dataset_dir)
    run_bundle(
        "patronus_demo", ["common.json", "train.json"], max_epochs=1, epoch_length=1, grid_interval=100, **common
    )
    run_bundle("patronus_demo", ["common.json", "compare.json"], compare_images=3, num_inference_steps=3, **common)
    out = json.loads((tmp_path / "comparison.json").read_text())
    assert list(out["results"]) == ["this run (output/checkpoints)", "shipped model (models/model.pt)"]
    assert out["num_images"] == 3 and out["reference_weights"] == "model.pt"
