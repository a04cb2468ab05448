"""MLflow tracking of a demo bundle run: config, metrics, fingerprint, provenance, registry, failure modes."""

from __future__ import annotations

import json
import socket

import mlflow
import pytest
import torch

from monai_patronus.handlers import latest_checkpoint
from monai_patronus.tracking import (
    CANDIDATE,
    Pseudonymizer,
    dataset_fingerprint,
    download_run_artifact,
    model_provenance,
    tracking_uri_scope,
)
from tests._helpers import LogRecords
from tests.bundles._workflow import run_bundle, run_cli

pytestmark = pytest.mark.slow  # runs bundle configs (training, CLI, torchrun)

SHORT = dict(max_epochs=1, epoch_length=1, num_inference_steps=2, grid_images=2, grid_interval=100, provenance_top_k=1)


def _client(uri):
    return mlflow.MlflowClient(tracking_uri=uri)


def _artifacts(client, run_id, path=None):
    found = []
    for a in client.list_artifacts(run_id, path):
        found += _artifacts(client, run_id, a.path) if a.is_dir else [a.path]
    return found


def test_run_records_config_metrics_fingerprint_and_grids(tracked_demo):
    client = _client(tracked_demo["tracking_uri"])
    assert tracked_demo["tracking_uri"] == "sqlite:///" + str((tracked_demo["output_dir"] / "mlflow.db").resolve())
    run = client.get_run(tracked_demo["run_id"])
    assert run.info.status == "FINISHED"
    params, tags = run.data.params, run.data.tags
    assert (params["max_epochs"], params["num_prototypes"], params["lr"]) == (
        "2",
        "32",
        "0.001",
    )  # overrides and defaults
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]  # every iteration
    assert len(client.get_metric_history(run.info.run_id, "inversion_psnr")) == 2  # every epoch
    assert len(client.get_metric_history(run.info.run_id, "semantic_gap_psnr")) == 2
    assert client.get_metric_history(run.info.run_id, "lr_group_0")[0].value == pytest.approx(1e-3)
    datalist = tracked_demo["workflow"].parser.get_parsed_content("train#datalist")
    expected = dataset_fingerprint(datalist)
    assert {k: tags[f"data.{k}"] for k in expected} == {k: str(v) for k, v in expected.items()}
    assert tags["patronus.version"] == "0.1.0" and tags["mlflow.source.git.commit"]
    artifacts = _artifacts(client, run.info.run_id)
    assert {
        "config/bundle_config.json",
        "config/resolved_values.json",
        "data/fingerprint.json",
        "grids/grid_epoch0001.png",
        "grids/grid_epoch0002.png",
        "provenance/final/provenance.json",
        "provenance/final/provenance.png",
        "provenance/epoch_0002/provenance.json",
    } <= set(artifacts)  # also at checkpoints, when asked
    config = json.loads(download_run_artifact(client, run.info.run_id, "config/bundle_config.json").read_text())
    assert config["max_epochs"] == 2 and config["network_def"]["_target_"] == "monai_patronus.networks.PatronusUNet"


def test_provenance_matches_a_brute_force_search_and_maps_back_with_the_key(tracked_demo):
    wf = tracked_demo["workflow"]
    record = model_provenance(tracked_demo["model_name"], CANDIDATE, tracked_demo["tracking_uri"])
    assert record.run_id == tracked_demo["run_id"] and record.num_prototypes == 32
    datalist = wf.parser.get_parsed_content("train#datalist")
    assert record.data == dataset_fingerprint(datalist)
    # brute force over the whole dataset with the checkpoint's network: every image's min distance per prototype
    net = wf.parser.get_parsed_content("network_def")
    net.load_state_dict(
        torch.load(latest_checkpoint(tracked_demo["output_dir"] / "checkpoints"), weights_only=True)["network"]
    )
    dataset = wf.parser.get_parsed_content("train#dataset")
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    with torch.no_grad():
        dist = net.prototype_encoder(images, return_maps=True).min_distances.double()  # (N, K)
    key = Pseudonymizer.from_key_file(tracked_demo["output_dir"] / "pseudonym.key", create=False)
    ids = [item["id"] for item in datalist]
    for k in (0, 5, 31):
        patches = record.prototype(k)
        assert len(patches) == 3
        best = torch.sort(dist[:, k]).values[:3]
        assert [p["distance"] for p in patches] == pytest.approx(best.tolist(), rel=1e-4)
        back = key.map_back([p["image"] for p in patches], ids)
        for p in patches:  # the pseudonym names the image whose distance it reports
            assert p["image"] not in ids
            assert float(dist[ids.index(back[p["image"]]), k]) == pytest.approx(p["distance"], rel=1e-4)
    with pytest.raises(ValueError, match="no prototype 32"):
        record.prototype(32)


def test_registry_round_trip_by_alias(tracked_demo):
    with tracking_uri_scope(tracked_demo["tracking_uri"]):
        model = mlflow.pyfunc.load_model(f"models:/{tracked_demo['model_name']}@{CANDIDATE}")
    wf = tracked_demo["workflow"]
    net = wf.parser.get_parsed_content("network_def").eval()
    net.load_state_dict(
        torch.load(latest_checkpoint(tracked_demo["output_dir"] / "checkpoints"), weights_only=True)["network"]
    )
    images = wf.parser.get_parsed_content("train#grid_images")
    out = model.predict({"image": images.numpy()}, params={"mode": "encode"})
    with torch.no_grad():
        assert torch.allclose(torch.as_tensor(out["activations"]), net.encode(images), atol=1e-5)
    mv = _client(tracked_demo["tracking_uri"]).get_model_version_by_alias(tracked_demo["model_name"], CANDIDATE)
    assert mv.run_id == tracked_demo["run_id"] and mv.tags["patronus.num_prototypes"] == "32"


def test_cli_run_ends_by_saying_where_the_run_and_the_model_are(tmp_path, dataset_dir):
    """The main job's command line (as in the Makefile): the last lines name the run, the model and the notebook."""
    result = run_cli(
        "patronus_demo",
        [
            "--config_file",
            "['configs/common.json','configs/train.json']",
            "--meta_file",
            "configs/metadata.json",
            "--logging_file",
            "configs/logging.conf",
            "--output_dir",
            str(tmp_path / "out"),
            "--dataset_dir",
            dataset_dir,
            "--tracking_enabled",
            "true",
            *[f"--{k}={v}" for k, v in SHORT.items()],
        ],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("MLflow: run "))  # the printed summary
    tail = lines[start : start + 4]
    assert all(" - INFO - " in line or "Engine run" in line for line in lines[start + 4 :])  # only log lines after it
    run_id = json.loads((tmp_path / "out" / "mlflow_run.json").read_text())["run_id"]
    assert tail[0].startswith(f"MLflow: run {run_id}") and str(tmp_path / "out" / "mlflow.db") in tail[0]
    assert tail[2] == "Registered model: models:/patronus-demo@candidate (version 1)"
    assert "notebooks/prototype_review.ipynb" in tail[3] and "make review" in tail[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_tracking_server_stops_the_run_before_training(tmp_path, dataset_dir):
    uri = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(Exception) as info:
        run_bundle(
            "patronus_demo",
            ["common.json", "train.json"],
            output_dir=str(tmp_path / "out"),
            dataset_dir=dataset_dir,
            tracking_enabled=True,
            tracking_uri=uri,
            **SHORT,
        )
    chain, e = [], info.value
    while e is not None:
        chain.append(str(e))
        e = e.__cause__ or e.__context__
    assert any(uri in m and "does not answer" in m for m in chain), chain
    assert not (tmp_path / "out" / "checkpoints").exists()  # nothing trained


def test_logging_failure_at_the_end_keeps_the_checkpoint(tmp_path, dataset_dir, monkeypatch):
    from monai_patronus.tracking import PatronusTrackingHandler

    def broken(self):
        raise OSError("artifact store is full")

    monkeypatch.setattr(PatronusTrackingHandler, "log_model", broken)
    other_store = f"sqlite:///{tmp_path / 'elsewhere' / 'store.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other_store)  # the environment points the run elsewhere
    with pytest.raises(Exception) as info:
        run_bundle(
            "patronus_demo",
            ["common.json", "train.json"],
            output_dir=str(tmp_path / "out"),
            dataset_dir=dataset_dir,
            tracking_enabled=True,
            **SHORT,
        )
    chain, e = [], info.value
    while e is not None:
        chain.append(str(e))
        e = e.__cause__ or e.__context__
    assert any("artifact store is full" in m and "checkpoints" in m for m in chain), chain
    ckpt = latest_checkpoint(tmp_path / "out" / "checkpoints")
    assert ckpt is not None and set(torch.load(ckpt, weights_only=True)) == {"network", "optimizer", "trainer"}
    assert not (tmp_path / "out" / "mlflow.db").exists() and (tmp_path / "elsewhere" / "store.db").is_file()
    runs = _client(other_store).search_runs(
        [_client(other_store).get_experiment_by_name("patronus_demo").experiment_id]
    )
    assert [r.info.status for r in runs] == ["FAILED"]


def test_resumed_training_continues_the_same_run(tmp_path, dataset_dir):
    out = tmp_path / "o'brien's run"  # a quote in the folder name once broke the run lookup (fault-matrix row 24)
    common = dict(output_dir=str(out), dataset_dir=dataset_dir, tracking_enabled=True, **(SHORT | dict(max_epochs=1)))
    run_bundle("patronus_demo", ["common.json", "train.json"], **common)
    uri = f"sqlite:///{out / 'mlflow.db'}"
    client = _client(uri)
    first = json.loads((out / "mlflow_run.json").read_text())["run_id"]
    assert "patronus.output_dir" not in client.get_run(first).data.tags  # found by a keyed pseudonym, not the path
    client.set_terminated(first, "KILLED")  # as a run whose process died is marked
    run_bundle("patronus_demo", ["common.json", "train.json"], **(common | dict(max_epochs=2, resume=True)))
    run = client.get_run(first)
    assert json.loads((out / "mlflow_run.json").read_text())["run_id"] == first
    assert run.info.status == "FINISHED" and run.data.tags["patronus.resumed_at_epoch"] == "1"
    assert [m.step for m in client.get_metric_history(first, "loss")] == [1, 2]  # one record of both parts
    assert json.loads(run.data.tags["patronus.resumed_params"]) == {"max_epochs": 2, "resume": True}
    assert [str(v.version) for v in client.search_model_versions("name='patronus-demo'")] == ["2", "1"]
    run_bundle(
        "patronus_demo", ["common.json", "train.json"], **(common | dict(max_epochs=3, resume=True))
    )  # finished: a new run
    assert json.loads((out / "mlflow_run.json").read_text())["run_id"] != first


def _store_down_for(monkeypatch, down):
    """The store refuses every metric batch while ``down(batch_steps)`` is true (a network outage)."""
    real = mlflow.MlflowClient.log_batch
    refused = []

    def flaky(self, run_id, metrics=(), params=(), tags=(), **kwargs):
        steps = {m.step for m in metrics}
        if metrics and down(steps):
            refused.append(sorted(steps))
            raise ConnectionError("connection reset by peer")
        return real(self, run_id, metrics=metrics, params=params, tags=tags, **kwargs)

    monkeypatch.setattr(mlflow.MlflowClient, "log_batch", flaky)
    return refused


def test_a_store_outage_during_training_keeps_training_and_logs_the_metrics_later(tmp_path, dataset_dir, monkeypatch):
    refused = _store_down_for(monkeypatch, lambda steps: max(steps) in (2, 3))  # iterations 2 and 3: no store
    with LogRecords("monai_patronus.tracking") as records:
        run_bundle(
            "patronus_demo",
            ["common.json", "train.json"],
            output_dir=str(tmp_path / "out"),
            dataset_dir=dataset_dir,
            tracking_enabled=True,
            **(SHORT | dict(max_epochs=4)),
        )
    assert refused  # the outage happened
    client = _client(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    run = client.get_run(json.loads((tmp_path / "out" / "mlflow_run.json").read_text())["run_id"])
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3, 4]  # nothing lost
    failed = [m for m in records.messages if "failed (ConnectionError" in m]
    assert len(failed) == 1 and "training goes on" in failed[0]  # logged once, not per iteration
    assert sum(m.startswith("MLflow store answers again") for m in records.messages) == 1
    assert not (tmp_path / "out" / "mlflow_offline_metrics.jsonl").exists()  # all of it reached the store
    assert latest_checkpoint(tmp_path / "out" / "checkpoints").endswith("checkpoint_epoch=4.pt")


def test_a_store_that_never_comes_back_keeps_a_local_copy_and_the_weights(tmp_path, dataset_dir, monkeypatch):
    _store_down_for(monkeypatch, lambda steps: max(steps) >= 2)
    with pytest.raises(Exception) as info:
        run_bundle(
            "patronus_demo",
            ["common.json", "train.json"],
            output_dir=str(tmp_path / "out"),
            dataset_dir=dataset_dir,
            tracking_enabled=True,
            **(SHORT | dict(max_epochs=3)),
        )
    offline = tmp_path / "out" / "mlflow_offline_metrics.jsonl"
    chain, e = [], info.value
    while e is not None:
        chain.append(str(e))
        e = e.__cause__ or e.__context__
    assert any(str(offline) in m and "checkpoints" in m for m in chain), chain
    kept = [json.loads(line) for line in offline.read_text().splitlines()]
    assert sorted({m["step"] for m in kept if m["key"] == "loss"}) == [2, 3]  # step 1 reached the store
    assert latest_checkpoint(tmp_path / "out" / "checkpoints").endswith("checkpoint_epoch=3.pt")  # trained to the end


def test_register_pretrained_records_weights_without_training(tmp_path, dataset_dir):
    """``register_pretrained.json`` (what ``make review`` runs for the shipped model): the given weights are
    logged and registered unchanged, with provenance, in a run that says it did not train them."""
    from monai_patronus.tracking import load_patronus

    out, data = tmp_path / "out", dataset_dir
    run_bundle("patronus_demo", ["common.json", "train.json"], output_dir=str(out), dataset_dir=data, **SHORT)
    weights = latest_checkpoint(out / "checkpoints")
    run_bundle(
        "patronus_demo",
        ["common.json", "train.json", "register_pretrained.json"],
        output_dir=str(out),
        dataset_dir=data,
        weights=weights,
        tracking_enabled=True,
        provenance_top_k=1,
        num_inference_steps=2,
    )
    uri = f"sqlite:///{out / 'mlflow.db'}"
    model, version = load_patronus("patronus-demo-pretrained", CANDIDATE, uri)
    expected = torch.load(weights, map_location="cpu", weights_only=True)["network"]
    loaded = model.network.state_dict()
    assert all(torch.equal(loaded[k].cpu(), v) for k, v in expected.items())  # the weights as given
    tags = _client(uri).get_run(version.run_id).data.tags
    assert tags["patronus.trained_here"] == "false" and tags["patronus.weights_source"] == "a weights file"
    assert model_provenance("patronus-demo-pretrained", CANDIDATE, uri).prototype(0)  # the review notebook needs it
