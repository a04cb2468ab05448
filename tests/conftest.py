from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

#: Session fixtures that train a model: every test that uses one belongs to the slow tier (``make test-fast`` runs
#: ``-m "not slow"``). Files of integration tests (CLI, torchrun, notebooks) carry ``pytestmark = pytest.mark.slow``.
SLOW_FIXTURES = frozenset({"parts_toy", "trained_digits", "tracked_demo"})


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same RNG state."""
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def trained_digits():
    """A tiny Patronus trained for a short, fixed budget on 16 real digits (about half a minute on 2 cores),
    shared by the tests that need a trained model: ``(images, network, inferer, losses)``."""
    from monai_patronus.data import load_digits_images
    from monai_patronus.demo import train_tiny_patronus

    images, _ = load_digits_images(size=16, num_images=16)
    net, inferer, losses = train_tiny_patronus(images, steps=300, batch_size=32, lr=1e-3, seed=0)
    return images, net, inferer, losses


@pytest.fixture(scope="module")
def one_thread():
    """Tiny networks: intra-op threading only adds overhead (several-fold on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tracked_demo(tmp_path_factory):
    """The demo bundle trained for two short epochs with MLflow tracking on (its own SQLite store), shared by
    the tracking, registry and notebook tests: ``{"output_dir", "dataset_dir", "tracking_uri", "run_id",
    "model_name", "workflow"}``. Tests that change the registry register their own model names."""
    import json

    from tests.bundles._workflow import run_bundle

    out = tmp_path_factory.mktemp("tracked_demo")
    data = tmp_path_factory.mktemp("tracked_demo_data")
    wf = run_bundle(
        "patronus_demo",
        ["train.json"],
        output_dir=str(out),
        dataset_dir=str(data),
        tracking_enabled=True,
        max_epochs=2,
        epoch_length=1,
        num_inference_steps=3,
        grid_images=2,
        grid_interval=1,
        provenance_top_k=3,
        provenance_interval=2,
    )
    record = json.loads((out / "mlflow_run.json").read_text())
    return {
        "output_dir": out,
        "dataset_dir": data,
        "tracking_uri": record["tracking_uri"],
        "run_id": record["run_id"],
        "model_name": record["registered_model_name"],
        "workflow": wf,
    }


@pytest.fixture(scope="session")
def parts_toy():
    """A tiny Patronus whose generation follows ``s`` (``tests._helpers.train_parts_toy``: four shapes, each
    present or absent, prototypes fixed to the shapes; about a minute on 2 cores), shared by the tests that must
    tell a model that uses its prototypes from one that ignores them: ``(images, network, inferer, losses)``."""
    from tests._helpers import train_parts_toy

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_parts_toy()
    finally:
        torch.set_num_threads(threads)
