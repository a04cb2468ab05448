"""The Patronus MLflow pyfunc model: logging, in-process predictions, the registry, and serving over HTTP."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import mlflow
import numpy as np
import pytest
import torch
from mlflow.exceptions import MlflowException
from monai.bundle import ConfigParser
from monai.networks.schedulers import DDIMScheduler

from monai_patronus.inferers import PatronusInferer
from monai_patronus.interpret import edit_images
from monai_patronus.networks import PatronusUNet, PrototypeEncoder
from monai_patronus.tracking.pyfunc import PatronusModel, log_patronus_model
from tests._helpers import randomize_zero_init

NAME = "patronus-test"
STEPS = 4
K = 4

NETWORK_CONFIG = {
    "_target_": "monai_patronus.networks.PatronusUNet",
    "spatial_dims": 2,
    "in_channels": 1,
    "encoder": {
        "_target_": "monai_patronus.networks.PrototypeEncoder",
        "spatial_dims": 2,
        "in_channels": 1,
        "num_prototypes": K,
        "preset": "small",
    },
    "channels": [8, 8],
    "num_res_blocks": 1,
    "norm_num_groups": 4,
}
MODEL_CONFIG = {
    "network": NETWORK_CONFIG,
    "scheduler": {"_target_": "monai.networks.schedulers.DDIMScheduler", "num_train_timesteps": 1000, "clip_sample": False},
    "inferer": {"inversion_iterations": 1},
    "image_shape": [1, 16, 16],
    "num_prototypes": K,
    "num_inference_steps": STEPS,
}


def _tiny_network() -> PatronusUNet:
    encoder = PrototypeEncoder(spatial_dims=2, in_channels=1, num_prototypes=K, preset="small")
    net = PatronusUNet(2, 1, encoder, channels=(8, 8), num_res_blocks=1, norm_num_groups=4)
    return randomize_zero_init(net, std=0.05).eval()  # so that the conditioning reaches the output


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A sqlite tracking store and an experiment in a temporary folder; tracking URI and threads restored after."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        mp.setattr(mlflow.tracking._tracking_service.utils, "_tracking_uri", None)  # restored on exit
        mlflow.set_tracking_uri(uri)  # as a caller would
        experiment_id = mlflow.create_experiment("patronus-pyfunc", artifact_location=str(root / "artifacts"))
        yield {"uri": uri, "experiment_id": experiment_id, "root": root}
        while mlflow.active_run() is not None:
            mlflow.end_run()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def logged(store):
    """The tiny network logged in a run, registered as ``patronus-test`` with the alias ``candidate``."""
    torch.manual_seed(0)
    net = _tiny_network()
    with mlflow.start_run(experiment_id=store["experiment_id"]) as run:
        info = log_patronus_model(net, MODEL_CONFIG, artifact_path="patronus", registered_model_name=NAME)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(NAME, "candidate", info.registered_model_version)
    inferer = PatronusInferer(DDIMScheduler(1000, clip_sample=False), inversion_iterations=1)
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    return {"net": net, "inferer": inferer, "info": info, "run_id": run.info.run_id, "x": x,
            "model": mlflow.pyfunc.load_model(info.model_uri)}


def test_model_config_builds_the_same_architecture():
    torch.manual_seed(0)
    net = _tiny_network()
    rebuilt = ConfigParser(NETWORK_CONFIG).get_parsed_content()
    assert type(rebuilt) is PatronusUNet
    rebuilt.load_state_dict(net.state_dict(), strict=True)
    rebuilt.eval()
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    t = torch.tensor([10, 500])
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x, t, image=x), net(x, t, image=x))
    scheduler = ConfigParser(MODEL_CONFIG["scheduler"]).get_parsed_content()
    assert isinstance(scheduler, DDIMScheduler) and not scheduler.clip_sample


def test_logged_model_metadata_and_signature(logged):
    info = logged["info"]
    assert info.run_id == logged["run_id"] and info.registered_model_version == 1
    params = {p.name: p for p in info.signature.params.params}
    assert sorted(params) == ["mode", "num_inference_steps", "operation", "prototypes", "seed", "values"]
    assert params["mode"].default == "encode" and params["num_inference_steps"].default == STEPS
    assert info.signature.inputs is None  # no optional TensorSpecs in MLflow: inputs are checked by predict
    meta = info.metadata["patronus"]
    assert meta["inputs"]["image"]["shape"] == [-1, 1, 16, 16]
    assert meta["inputs"]["activations"]["shape"] == [-1, K]


def test_encode_generate_edit_match_direct_calls(logged):
    model, net, inferer, x = logged["model"], logged["net"], logged["inferer"], logged["x"]
    out = model.predict({"image": x.numpy()}, params={"mode": "encode"})
    with torch.no_grad():
        maps = net.prototype_encoder(x, return_maps=True)
        boxes = net.prototype_encoder.boxes(maps.locations, x.shape[2:])
        s = net.encode(x)
    np.testing.assert_allclose(out["activations"], s.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["min_distances"], maps.min_distances.numpy(), rtol=1e-5, atol=1e-6)
    assert out["boxes"].dtype == np.int64 and out["boxes"].shape == (2, K, 2, 2)
    np.testing.assert_array_equal(out["boxes"], boxes.numpy())

    generated = model.predict({"activations": s.numpy()}, params={"mode": "generate", "seed": 3})["images"]
    again = model.predict({"activations": s.numpy()}, params={"mode": "generate", "seed": 3})["images"]
    other = model.predict({"activations": s.numpy()}, params={"mode": "generate", "seed": 4})["images"]
    g = torch.Generator().manual_seed(3)
    noise = torch.randn((2, 1, 16, 16), generator=g)
    direct = inferer.sample(noise, net, s, STEPS, generator=g)
    assert generated.shape == (2, 1, 16, 16) and generated.dtype == np.float32
    np.testing.assert_array_equal(generated, again)
    np.testing.assert_allclose(generated, direct.numpy(), rtol=1e-4, atol=1e-5)
    assert np.abs(generated - other).max() > 1e-3

    high = float(s[:, 2].max()) + 2.0
    edited = model.predict({"image": x.numpy()}, params={"mode": "edit", "prototypes": [2], "values": [high]})
    zero = model.predict({"image": x.numpy()}, params={"mode": "edit", "prototypes": [2], "values": [0.0]})
    ref = edit_images(inferer, net, x, num_inference_steps=STEPS, reconstruct=False, set={2: high})
    assert edited["images"].shape == (2, 1, 16, 16)
    np.testing.assert_allclose(edited["images"], ref.edited.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(edited["activations"], ref.edited_encoded.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(edited["original_activations"], s.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(edited["target_activations"][:, 2], [high, high])
    assert np.abs(edited["images"] - zero["images"]).max() > 1e-4  # the edited value reaches the images
    scaled = model.predict({"image": x.numpy()}, params={"mode": "edit", "prototypes": [1, 3], "values": [2.0, 0.5],
                                                         "operation": "scale", "num_inference_steps": 3})
    np.testing.assert_allclose(scaled["target_activations"][:, [1, 3]], s[:, [1, 3]].numpy() * [2.0, 0.5], rtol=1e-5)


def test_registry_alias_round_trip(logged):
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@candidate")
    x = logged["x"].numpy()
    for request, params in (({"image": x}, {"mode": "encode"}),
                            ({"activations": logged["model"].predict({"image": x})["activations"]}, {"mode": "generate"})):
        got, expected = model.predict(request, params=params), logged["model"].predict(request, params=params)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key])


@pytest.mark.parametrize(
    "request_, params, match",
    [
        ({"image": np.zeros((1, 3, 16, 16), np.float32)}, {"mode": "encode"},
         r"input 'image' must have shape \(N, 1, 16, 16\).*got \(1, 3, 16, 16\)"),
        ({"image": np.zeros((1, 1, 8, 8), np.float32)}, {"mode": "edit", "prototypes": [0], "values": [1.0]},
         r"got \(1, 1, 8, 8\)"),
        ({"activations": np.zeros((2, K + 1), np.float32)}, {"mode": "generate"},
         rf"input 'activations' must have shape \(N, {K}\).*got \(2, {K + 1}\)"),
        ({"image": np.zeros((1, 1, 16, 16), np.float32)}, {"mode": "decode"}, r"params\['mode'\] must be one of"),
        ({"activations": np.zeros((1, K), np.float32)}, {"mode": "encode"}, r"mode 'encode' takes the input\(s\) \['image'\]"),
        ({"images": np.zeros((1, 1, 16, 16), np.float32)}, {"mode": "encode"}, r"unknown input\(s\) \['images'\]"),
        ({"image": np.zeros((1, 1, 16, 16), np.float32)}, {"mode": "edit", "prototypes": [K], "values": [1.0]},
         rf"prototype indices in \[0, {K}\).*got \[{K}\]"),
        ({"image": np.zeros((1, 1, 16, 16), np.float32)}, {"mode": "edit", "prototypes": [0, 1], "values": [1.0]},
         r"one value per prototype"),
        ({"image": np.zeros((1, 1, 16, 16), np.float32)},
         {"mode": "edit", "prototypes": [0], "values": [1.0], "operation": "multiply"}, r"params\['operation'\] must be one of"),
        ({"image": np.zeros((1, 1, 16, 16), np.float32)}, {"mode": "edit"}, r"needs params\['prototypes'\]"),
        ({"activations": np.zeros((1, K), np.float32)}, {"mode": "generate", "num_inference_steps": 1},
         r"params\['num_inference_steps'\] must be an int in \[2, 1000\], got 1"),
        ({"image": np.full((1, 1, 16, 16), np.nan, np.float32)}, {"mode": "encode"}, r"NaN or infinite"),
    ],
)
def test_malformed_requests_raise_invalid_parameter_value(logged, request_, params, match):
    with pytest.raises(MlflowException, match=match) as info:
        logged["model"].predict(request_, params=params)
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"


def test_python_model_needs_mode_and_a_dict(logged):
    python_model = logged["model"].unwrap_python_model()
    assert isinstance(python_model, PatronusModel)
    x = logged["x"].numpy()
    with pytest.raises(MlflowException, match=r"params\['mode'\] is required"):
        python_model.predict(None, {"image": x}, params=None)
    with pytest.raises(MlflowException, match="model_input must be a dict"):
        python_model.predict(None, x, params={"mode": "encode"})
    import pandas as pd

    frame = pd.DataFrame({"image": list(x)})  # one image per row
    np.testing.assert_array_equal(
        python_model.predict(None, frame, params={"mode": "encode"})["activations"],
        python_model.predict(None, {"image": x}, params={"mode": "encode"})["activations"],
    )
    with pytest.raises(RuntimeError, match="not loaded"):
        PatronusModel().predict(None, {"image": x}, params={"mode": "encode"})


def test_log_patronus_model_validates_config(store):
    net = _tiny_network()
    cases = [
        ({k: v for k, v in MODEL_CONFIG.items() if k != "scheduler"}, ValueError, r"missing \['scheduler'\]"),
        ({**MODEL_CONFIG, "schedular": {}}, ValueError, r"unknown key\(s\) \['schedular'\]"),
        ({**MODEL_CONFIG, "num_prototypes": K + 1}, ValueError, rf"num_prototypes'\] is {K + 1} but the network has {K}"),
        ({**MODEL_CONFIG, "image_shape": [3, 16, 16]}, ValueError, r"takes 1 channel\(s\)"),
        ({**MODEL_CONFIG, "network": {**NETWORK_CONFIG, "channels": [8, 16]}}, ValueError, "does not build the logged network"),
        ({**MODEL_CONFIG, "network": {**NETWORK_CONFIG, "channels": "@channels"}}, ValueError, "must be literal"),
        ({**MODEL_CONFIG, "scheduler": {**MODEL_CONFIG["scheduler"], "clip_sample": True}}, ValueError, "clip_sample"),
        ({**MODEL_CONFIG, "inferer": {"inversion_steps": 3}}, ValueError, "PatronusInferer does not take"),
        ({**MODEL_CONFIG, "num_inference_steps": 1}, ValueError, r"num_inference_steps'\] must be an int >= 2"),
    ]
    for config, error, match in cases:
        with pytest.raises(error, match=match):
            log_patronus_model(net, config)
    with pytest.raises(TypeError, match="must be a monai_patronus.networks.PatronusUNet"):
        log_patronus_model(torch.nn.Linear(2, 2), MODEL_CONFIG)
    assert mlflow.active_run() is None


def test_log_into_a_given_run_restores_the_active_run(store, logged):
    client = mlflow.MlflowClient()
    target = client.create_run(store["experiment_id"]).info.run_id
    client.set_terminated(target, "FINISHED")
    with mlflow.start_run(experiment_id=store["experiment_id"]) as outer:
        info = log_patronus_model(logged["net"], MODEL_CONFIG, artifact_path="again", run_id=target)
        assert mlflow.active_run().info.run_id == outer.info.run_id
    assert info.run_id == target and client.get_run(target).info.status == "FINISHED"
    assert mlflow.active_run() is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        text = e.read().decode(errors="replace")
        try:
            return e.code, json.loads(text)
        except ValueError:
            return e.code, {"message": text}


def _stop(server: subprocess.Popen) -> None:
    """End the server and its uvicorn child: they share the new session (process group) started for them."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 20)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:  # the whole group has exited
            break
        try:
            server.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue


_HAS_CLI = all(importlib.util.find_spec(m) is not None for m in ("mlflow.cli", "uvicorn", "fastapi"))


@pytest.mark.skipif(not _HAS_CLI, reason="the mlflow CLI (mlflow.cli, uvicorn, fastapi) is not installed")
def test_serve_registered_model_over_http(store, logged, tmp_path):
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": store["uri"], "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "1",
           # the server runs `uvicorn` from PATH: use this interpreter's (e.g. an unactivated venv's) scripts
           "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
    with open(tmp_path / "serve.log", "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{NAME}@candidate", "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                if server.poll() is not None:
                    pytest.fail(f"mlflow models serve exited with {server.returncode}:\n{(tmp_path / 'serve.log').read_text()[-3000:]}")
                try:
                    with urllib.request.urlopen(f"{base}/ping", timeout=2) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"server not up after 120 s:\n{(tmp_path / 'serve.log').read_text()[-3000:]}")
                time.sleep(0.5)

            model, x = logged["model"], logged["x"].numpy()
            s = model.predict({"image": x}, params={"mode": "encode"})["activations"]
            requests = [
                ({"image": x}, {"mode": "encode"}),
                ({"activations": s}, {"mode": "generate", "seed": 5}),
                ({"image": x}, {"mode": "edit", "prototypes": [1], "values": [3.0], "operation": "set"}),
            ]
            for inputs, params in requests:
                status, body = _post(f"{base}/invocations",
                                     {"inputs": {k: v.tolist() for k, v in inputs.items()}, "params": params})
                assert status == 200, body
                expected = model.predict(inputs, params=params)
                assert sorted(body["predictions"]) == sorted(expected)
                for key, value in expected.items():
                    np.testing.assert_allclose(np.asarray(body["predictions"][key]), value, rtol=1e-4, atol=1e-5, err_msg=key)

            status, body = _post(f"{base}/invocations",
                                 {"inputs": {"image": np.zeros((1, 3, 16, 16)).tolist()}, "params": {"mode": "encode"}})
            assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE"
            assert "input 'image' must have shape (N, 1, 16, 16)" in body["message"] and "(1, 3, 16, 16)" in body["message"]
            status, body = _post(f"{base}/invocations", {"inputs": {"image": x.tolist()}, "params": {"mode": "decode"}})
            assert status == 400 and "params['mode'] must be one of ['encode', 'generate', 'edit']" in body["message"]
        finally:
            _stop(server)
