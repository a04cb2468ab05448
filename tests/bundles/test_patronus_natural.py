from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.bundles._workflow import run_bundle
from tests.data.test_natural import write_celeba, write_cifar10, write_fashion_mnist

pytestmark = pytest.mark.slow  # runs bundle configs (training, CLI, torchrun)

FAST = dict(
    max_epochs=1, epoch_length=1, batch_size=2, num_workers=0, grid_images=2, num_inference_steps=2, grid_interval=1
)


def _write_ffhq(root):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (70, 70, 3), dtype=np.uint8)).save(root / f"{i:05d}.png")


WRITERS = {"cifar10": write_cifar10, "fashion_mnist": write_fashion_mnist, "celeba": write_celeba, "ffhq": _write_ffhq}
SHAPES = {"cifar10": (3, 32, 32), "fashion_mnist": (1, 32, 32), "celeba": (3, 64, 64), "ffhq": (3, 64, 64)}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_each_dataset_config_trains_one_iteration(tmp_path, name):
    data = tmp_path / "data"
    WRITERS[name](data)
    tracked = name == "cifar10"  # one dataset also runs the MLflow tracking (fingerprint of the dataset folder)
    wf = run_bundle(
        "patronus_natural",
        ["common.json", "train.json", f"{name}.json"],
        output_dir=str(tmp_path / "out"),
        dataset_dir=str(data),
        tracking_enabled=tracked,
        provenance_top_k=1,
        **FAST,
    )
    if tracked:
        import mlflow

        from monai_patronus.tracking import dataset_fingerprint

        client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
        run = client.search_runs([client.get_experiment_by_name("patronus_natural_cifar10").experiment_id])[0]
        assert run.data.tags["data.files_sha256"] == dataset_fingerprint(data)["files_sha256"]
        assert client.get_model_version_by_alias("patronus-natural-cifar10", "candidate").run_id == run.info.run_id
    parser = wf.parser
    assert parser.get_parsed_content("dataset_name") == name
    batch = next(iter(parser.get_parsed_content("train#dataloader")))
    assert tuple(batch["image"].shape[1:]) == SHAPES[name] and len(batch["id"]) == 2
    net = parser.get_parsed_content("network")
    assert net.num_prototypes == (30 if name == "fashion_mnist" else 100)
    assert list(net.block_out_channels) == [64, 128, 256, 256] and net.dropout == 0.1
    assert parser.get_parsed_content("optimizer").param_groups[0]["lr"] == 1e-5
    assert parser.get_parsed_content("train#trainer").state.iteration == 1
    assert (tmp_path / "out" / "checkpoints" / "checkpoint_epoch=1.pt").is_file()
    assert (tmp_path / "out" / "grids" / "grid_epoch0001.png").is_file()


def test_inference_and_two_process_training(tmp_path):
    from tests.bundles._workflow import run_cli

    data = tmp_path / "data"
    write_cifar10(data)
    configs = ["common.json", "train.json", "cifar10.json"]
    common = dict(output_dir=str(tmp_path / "out"), dataset_dir=str(data))
    run_bundle("patronus_natural", configs, **(FAST | common | dict(grid_interval=100)))
    run_bundle("patronus_natural", ["common.json", configs[-1], "inference.json"], **(FAST | common))
    assert (tmp_path / "out" / "inference" / "inference_grid.png").is_file()

    result = run_cli(
        "patronus_natural",
        [
            "--config_file",
            "['configs/common.json','configs/train.json','configs/cifar10.json','configs/multi_gpu_train.json']",
            "--output_dir",
            str(tmp_path / "ddp"),
            "--dataset_dir",
            str(data),
            "--max_epochs",
            "1",
            "--epoch_length",
            "1",
            "--batch_size",
            "2",
            "--num_workers",
            "0",
            "--grid_interval",
            "100",
        ],
        nproc=2,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert [p.name for p in (tmp_path / "ddp" / "checkpoints").iterdir()] == ["checkpoint_epoch=1.pt"]


def test_explanation_configs(tmp_path):
    import json

    data = tmp_path / "data"
    write_fashion_mnist(data)
    configs = ["common.json", "train.json", "fashion_mnist.json"]
    common = dict(output_dir=str(tmp_path / "out"), dataset_dir=str(data), num_workers=0, num_inference_steps=2)
    run_bundle("patronus_natural", configs, **(FAST | common | dict(grid_interval=100)))
    run_bundle(
        "patronus_natural",
        ["common.json", configs[-1], "explain.json"],
        interpret_num_images=2,
        explain_prototypes=[1],
        **common,
    )
    summary = json.loads((tmp_path / "out" / "interpret" / "explain.json").read_text())
    assert [p["prototype"] for p in summary["prototypes"]] == [1]
    run_bundle("patronus_natural", ["common.json", configs[-1], "emergence.json"], interpret_num_images=2, **common)
    run_bundle(
        "patronus_natural",
        ["common.json", configs[-1], "edit.json"],
        edit_values=[0.0, 3.0],
        interpolation_steps=2,
        **common,
    )
    run_bundle("patronus_natural", ["common.json", configs[-1], "train_prior.json"], prior_epochs=1, **common)
    run_bundle("patronus_natural", ["common.json", configs[-1], "sample.json"], num_samples=2, **common)
    for name in ("gallery.png", "emergence.png", "extrapolation.png", "interpolation.png", "samples.png"):
        assert (tmp_path / "out" / "interpret" / name).is_file(), name


def test_evaluate_config_writes_the_report(tmp_path):
    """Fashion-MNIST's class-index labels become one-vs-rest attributes; the whole report is written."""
    import json

    data = tmp_path / "data"
    _, labels = write_fashion_mnist(data, n=40)
    configs = ["common.json", "train.json", "fashion_mnist.json"]
    common = dict(output_dir=str(tmp_path / "out"), dataset_dir=str(data), num_workers=0, num_inference_steps=2)
    run_bundle("patronus_natural", configs, **(FAST | common | dict(grid_interval=100)))
    run_bundle(
        "patronus_natural",
        ["common.json", configs[-1], "evaluate.json"],
        probe_folds=2,
        num_pairs=1,
        num_counterfactual=2,
        evaluate_batch_size=16,
        **common,
    )
    out = tmp_path / "out" / "evaluation"
    result = json.loads((out / "evaluation.json").read_text())
    assert result["num_images"] == 40
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    counts = np.bincount(labels, minlength=10)
    kept = [c for c, n in zip(classes, counts) if 2 <= n <= 38]  # both classes at least twice (2 folds)
    assert result["linear_probe_auroc"]["names"] == kept
    assert set(result["attribute_auroc"]["names"]) == {c for c, n in zip(classes, counts) if 0 < n < 40}
    assert result["timings_s"]["encode"] > 0 and result["reconstruction"]["num_images"] == 16
    assert (out / "evaluation.md").read_text().startswith("# Patronus on fashion_mnist")
    assert (out / "auroc_heatmap.png").is_file() and (out / "shortcuts.md").is_file()
