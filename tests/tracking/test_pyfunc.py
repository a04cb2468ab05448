"""The Patronus MLflow pyfunc model: logging, in-process predictions, the registry, and serving over HTTP.

Also what a tampered store can and cannot do (F5: models from code, the ``_target_`` allowlist, ``load_patronus``
running no stored code) and the served model's limits (F8: caps, ranges, the busy answer, non-finite outputs).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml
from mlflow.exceptions import MlflowException
from mlflow.utils.file_utils import local_file_uri_to_path
from monai.bundle import ConfigParser
from monai.networks.schedulers import DDIMScheduler

from monai_patronus.inferers import PatronusInferer
from monai_patronus.interpret import edit_images
from monai_patronus.networks import PatronusUNet, PrototypeEncoder
from monai_patronus.tracking import load_patronus
from monai_patronus.tracking import pyfunc as pyfunc_module
from monai_patronus.tracking.pyfunc import (
    ALLOWED_TARGETS,
    DEFAULT_LIMITS,
    PatronusModel,
    default_lock_timeout,
    log_patronus_model,
)
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
    "scheduler": {
        "_target_": "monai.networks.schedulers.DDIMScheduler",
        "num_train_timesteps": 1000,
        "clip_sample": False,
    },
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
    return {
        "net": net,
        "inferer": inferer,
        "info": info,
        "run_id": run.info.run_id,
        "x": x,
        "model": mlflow.pyfunc.load_model(info.model_uri),
    }


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
    scaled = model.predict(
        {"image": x.numpy()},
        params={
            "mode": "edit",
            "prototypes": [1, 3],
            "values": [2.0, 0.5],
            "operation": "scale",
            "num_inference_steps": 3,
        },
    )
    np.testing.assert_allclose(scaled["target_activations"][:, [1, 3]], s[:, [1, 3]].numpy() * [2.0, 0.5], rtol=1e-5)


def test_registry_alias_round_trip(logged):
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@candidate")
    x = logged["x"].numpy()
    for request, params in (
        ({"image": x}, {"mode": "encode"}),
        ({"activations": logged["model"].predict({"image": x})["activations"]}, {"mode": "generate"}),
    ):
        got, expected = model.predict(request, params=params), logged["model"].predict(request, params=params)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key])


@pytest.mark.parametrize(
    "request_, params, match",
    [
        (
            {"image": np.zeros((1, 3, 16, 16), np.float32)},
            {"mode": "encode"},
            r"input 'image' must have shape \(N, 1, 16, 16\).*got \(1, 3, 16, 16\)",
        ),
        (
            {"image": np.zeros((1, 1, 8, 8), np.float32)},
            {"mode": "edit", "prototypes": [0], "values": [1.0]},
            r"got \(1, 1, 8, 8\)",
        ),
        (
            {"activations": np.zeros((2, K + 1), np.float32)},
            {"mode": "generate"},
            rf"input 'activations' must have shape \(N, {K}\).*got \(2, {K + 1}\)",
        ),
        ({"image": np.zeros((1, 1, 16, 16), np.float32)}, {"mode": "decode"}, r"params\['mode'\] must be one of"),
        (
            {"activations": np.zeros((1, K), np.float32)},
            {"mode": "encode"},
            r"mode 'encode' takes the input\(s\) \['image'\], got \['activations'\]",
        ),
        (
            {"images": np.zeros((1, 1, 16, 16), np.float32)},
            {"mode": "encode"},
            r"takes the input\(s\) \['image'\], got \['images'\]",
        ),
        (
            {"image": np.zeros((1, 1, 16, 16), np.float32)},
            {"mode": "edit", "prototypes": [K], "values": [1.0]},
            rf"prototype indices in \[0, {K}\).*got \[{K}\]",
        ),
        (
            {"image": np.zeros((1, 1, 16, 16), np.float32)},
            {"mode": "edit", "prototypes": [0, 1], "values": [1.0]},
            r"one value per prototype",
        ),
        (
            {"image": np.zeros((1, 1, 16, 16), np.float32)},
            {"mode": "edit", "prototypes": [0], "values": [1.0], "operation": "multiply"},
            r"params\['operation'\] must be one of",
        ),
        ({"image": np.zeros((1, 1, 16, 16), np.float32)}, {"mode": "edit"}, r"needs params\['prototypes'\]"),
        (
            {"activations": np.zeros((1, K), np.float32)},
            {"mode": "generate", "num_inference_steps": 1},
            r"params\['num_inference_steps'\] must be an int in \[2, 1000\], got 1",
        ),
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
    with pytest.raises(MlflowException, match=r"params\['mode'\] must be one of .*, got None"):
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
        (
            {**MODEL_CONFIG, "num_prototypes": K + 1},
            ValueError,
            rf"num_prototypes'\] is {K + 1} but the network has {K}",
        ),
        ({**MODEL_CONFIG, "image_shape": [3, 16, 16]}, ValueError, r"takes 1 channel\(s\)"),
        (
            {**MODEL_CONFIG, "network": {**NETWORK_CONFIG, "channels": [8, 16]}},
            ValueError,
            "does not build the logged network",
        ),
        ({**MODEL_CONFIG, "network": {**NETWORK_CONFIG, "channels": "@channels"}}, ValueError, "must be literal"),
        ({**MODEL_CONFIG, "scheduler": {**MODEL_CONFIG["scheduler"], "clip_sample": True}}, ValueError, "clip_sample"),
        (
            {**MODEL_CONFIG, "inferer": {"inversion_steps": 3}},
            TypeError,
            "unexpected keyword argument 'inversion_steps'",
        ),
        ({**MODEL_CONFIG, "num_inference_steps": 1}, ValueError, r"num_inference_steps'\] must be an int >= 2"),
        ({**MODEL_CONFIG, "max_batch_size": 0}, ValueError, r"max_batch_size'\] must be an int >= 1, got 0"),
        (
            {**MODEL_CONFIG, "max_batch_steps": STEPS - 1},
            ValueError,
            rf"max_batch_steps'\] must be an int >= {STEPS}, got {STEPS - 1}",
        ),
        (
            {**MODEL_CONFIG, "network": {**NETWORK_CONFIG, "_target_": "torch.nn.Identity"}},
            ValueError,
            r"model_config\['network'\]\['_target_'\] is 'torch.nn.Identity', which a stored model config may not instantiate",
        ),
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


# ---------------------------------------------------------------------- F5: what a writable store can make a loader run
def _model_folder(info) -> Path:
    """The logged model's folder in the (local) artifact store: what anyone with write access to the store can change."""
    return Path(local_file_uri_to_path(mlflow.get_logged_model(info.model_id).artifact_location))


@pytest.fixture
def victim(store, logged):
    """A fresh registered version of the tiny model, to tamper with in the store."""
    with mlflow.start_run(experiment_id=store["experiment_id"]):
        info = log_patronus_model(
            logged["net"], MODEL_CONFIG, artifact_path="victim", registered_model_name="patronus-victim"
        )
    folder = _model_folder(info)
    assert (folder / "artifacts" / "patronus_config.json").is_file() and (folder / "model_code.py").is_file()
    return {"name": "patronus-victim", "version": info.registered_model_version, "folder": folder}


def _write_files(folder: Path, net: torch.nn.Module, config: dict) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    config_path, weights_path = folder / "patronus_config.json", folder / "patronus_weights.pt"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    torch.save(net.state_dict(), weights_path)
    return config_path, weights_path


def _from_files(folder: Path, net: torch.nn.Module, config: dict) -> PatronusModel:
    return PatronusModel.from_files(*_write_files(folder, net, config))


def test_logged_model_is_code_not_a_pickle(logged, tmp_path):
    local = Path(mlflow.artifacts.download_artifacts(logged["info"].model_uri, dst_path=str(tmp_path)))
    assert [p.name for p in local.rglob("*.pkl")] == []
    flavor = yaml.safe_load((local / "MLmodel").read_text(encoding="utf-8"))["flavors"]["python_function"]
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model" and "python_model" not in flavor
    code = (local / "model_code.py").read_text(encoding="utf-8")
    assert code == Path(pyfunc_module.__file__).with_name("model_code.py").read_text(encoding="utf-8")
    stored = json.loads((local / "artifacts" / "patronus_config.json").read_text(encoding="utf-8"))
    assert stored == {**MODEL_CONFIG, **DEFAULT_LIMITS}  # the limits are written out, not left to defaults


@pytest.mark.parametrize(
    "kind, path",
    [("subprocess.getoutput", "['network']['encoder']['_target_']"), ("os.system", "['scheduler']['_target_']")],
)
def test_crafted_model_config_is_refused_by_every_loader_and_runs_nothing(victim, tmp_path, kind, path):
    marker, control = tmp_path / "pwned", tmp_path / "control"

    def payload(target: Path) -> dict:
        argument = "cmd" if kind == "subprocess.getoutput" else "command"
        return {"_target_": kind, argument: f"touch {target}"}

    ConfigParser(payload(control)).get_parsed_content()  # the payload is live: ConfigParser alone runs it
    assert control.exists()
    crafted = copy.deepcopy(MODEL_CONFIG)
    if kind == "subprocess.getoutput":  # nested inside the network config
        crafted["network"]["encoder"] = payload(marker)
    else:
        crafted["scheduler"] = payload(marker)
    (victim["folder"] / "artifacts" / "patronus_config.json").write_text(json.dumps(crafted), encoding="utf-8")

    message = (
        rf"{re.escape(path)} is '{re.escape(kind)}', which a stored model config may not instantiate; "
        r"the allowed '_target_' values are \[.*'monai_patronus.networks.PatronusUNet'"
    )
    with pytest.raises(ValueError, match=message):
        load_patronus(victim["name"], victim["version"])
    with pytest.raises(ValueError, match=message):
        mlflow.pyfunc.load_model(f"models:/{victim['name']}/{victim['version']}")
    assert not marker.exists()


def test_load_patronus_runs_no_code_from_the_store(victim, logged, tmp_path):
    marker = tmp_path / "code-ran"
    code = victim["folder"] / "model_code.py"
    tampered = code.read_text(encoding="utf-8") + f"\nimport pathlib\npathlib.Path({str(marker)!r}).touch()\n"
    code.write_text(tampered, encoding="utf-8")
    (victim["folder"] / "python_model.pkl").write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    model, mv = load_patronus(victim["name"], victim["version"])
    assert not marker.exists() and int(mv.version) == int(victim["version"])
    x = logged["x"].numpy()
    np.testing.assert_array_equal(
        model.predict(None, {"image": x}, {"mode": "encode"})["activations"],
        logged["model"].predict({"image": x}, params={"mode": "encode"})["activations"],
    )
    # the trust boundary the module docstring names: MLflow's own loader imports the stored code file
    mlflow.pyfunc.load_model(f"models:/{victim['name']}/{victim['version']}")
    assert marker.exists()


def test_load_patronus_round_trips_a_legitimate_model(logged):
    model, mv = load_patronus(NAME, "candidate")
    assert isinstance(model, PatronusModel) and int(mv.version) == 1
    assert model.config == {**MODEL_CONFIG, **DEFAULT_LIMITS} and model.device.type in ("cpu", "cuda")
    assert isinstance(model.inferer, PatronusInferer) and isinstance(model.inferer.scheduler, DDIMScheduler)
    for key, value in logged["net"].state_dict().items():
        torch.testing.assert_close(model.network.state_dict()[key].cpu(), value, rtol=0, atol=0)
    x = logged["x"].numpy()
    s = logged["model"].predict({"image": x}, params={"mode": "encode"})["activations"]
    for request, params in (({"image": x}, {"mode": "encode"}), ({"activations": s}, {"mode": "generate", "seed": 2})):
        got, expected = model.predict(None, request, params), logged["model"].predict(request, params=params)
        assert sorted(got) == sorted(expected)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key])


def test_from_model_dir_reads_only_the_two_artifacts_inside_the_folder(logged, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    with pytest.raises(ValueError, match=r"is no Patronus pyfunc model folder"):
        PatronusModel.from_model_dir(folder)
    _write_files(tmp_path, logged["net"], MODEL_CONFIG)  # outside the model folder
    flavor = {"artifacts": {"model_config": {"path": "../patronus_config.json"}, "weights": {"path": "w.pt"}}}
    (folder / "MLmodel").write_text(yaml.safe_dump({"flavors": {"python_function": flavor}}), encoding="utf-8")
    with pytest.raises(
        ValueError, match=r"artifact 'model_config' at '../patronus_config.json' is not a file inside the model folder"
    ):
        PatronusModel.from_model_dir(folder)
    (folder / "MLmodel").write_text("flavors: {python_function: {loader_module: os}}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"MLmodel names no \['model_config', 'weights'\] artifacts"):
        PatronusModel.from_model_dir(folder)


_BAD_CONFIGS = [
    ("network", "_requires_", ["@x"], "['network']['_requires_'] is a ConfigParser directive"),
    ("network", "_mode_", "callable", "['network']['_mode_'] is 'callable'"),
    ("encoder", "_mode_", "debug", "['network']['encoder']['_mode_'] is 'debug'"),
    ("scheduler", "_disabled_", "true", "['scheduler']['_disabled_'] is 'true'"),
    ("scheduler", "_disabled_", True, "['scheduler']['_disabled_'] is True"),
    ("scheduler", "_debug_", True, "['scheduler']['_debug_'] is a ConfigParser directive"),
    ("network", "_args_", [1], "['network']['_args_'] is a ConfigParser directive"),
    ("encoder", "_target_", "torch.nn.SiLU", "['network']['encoder']['_target_'] is 'torch.nn.SiLU'"),
    (
        "scheduler",
        "_target_",
        "DDIMScheduler",
        "['scheduler']['_target_'] is 'DDIMScheduler'",
    ),  # short names: MONAI's lookup
    ("network", "channels", [8, {"_target_": "os.getcwd"}], "['network']['channels'][1]['_target_'] is 'os.getcwd'"),
    ("inferer", "extra", {"_target_": "os.getcwd"}, "['inferer']['extra']['_target_'] is 'os.getcwd'"),
]


@pytest.mark.parametrize(
    "part, key, value, message", _BAD_CONFIGS, ids=[f"{c[0]}.{c[1]}={c[2]!r}" for c in _BAD_CONFIGS]
)
def test_stored_config_directives_and_targets_are_refused_naming_the_key(logged, tmp_path, part, key, value, message):
    config = copy.deepcopy(MODEL_CONFIG)
    section = config["network"]["encoder"] if part == "encoder" else config[part]
    section[key] = value
    with pytest.raises(ValueError, match=re.escape(message)):
        _from_files(tmp_path, logged["net"], config)


def test_allowed_directives_and_old_configs_load(logged, tmp_path):
    assert {"monai_patronus.networks.PatronusUNet", "monai.networks.schedulers.DDIMScheduler"} <= ALLOWED_TARGETS
    config = copy.deepcopy(MODEL_CONFIG)  # as logged before the limits existed
    config["network"].update({"_desc_": "the U-Net", "_mode_": "default", "_disabled_": False})
    model = _from_files(tmp_path, logged["net"], config)
    assert {k: model.config[k] for k in DEFAULT_LIMITS} == DEFAULT_LIMITS
    x = logged["x"].numpy()
    np.testing.assert_array_equal(
        model.predict(None, {"image": x}, {"mode": "encode"})["activations"],
        logged["model"].predict({"image": x}, params={"mode": "encode"})["activations"],
    )


# ---------------------------------------------------------------------- F8: limits, ranges, busy, non-finite outputs
@contextlib.contextmanager
def _counting_calls(model: PatronusModel):
    """Count forward calls of the U-Net and of the prototype encoder."""
    calls = {"unet": 0, "encoder": 0}
    hooks = [
        model.network.register_forward_pre_hook(lambda *_: calls.__setitem__("unet", calls["unet"] + 1)),
        model.network.prototype_encoder.register_forward_pre_hook(
            lambda *_: calls.__setitem__("encoder", calls["encoder"] + 1)
        ),
    ]
    try:
        yield calls
    finally:
        for hook in hooks:
            hook.remove()


def _assert_bad_request(info) -> None:
    assert info.value.error_code == "INVALID_PARAMETER_VALUE" and info.value.get_http_status_code() == 400


def test_requests_over_the_limits_are_refused_before_any_network_call(logged, tmp_path):
    model = _from_files(tmp_path, logged["net"], {**MODEL_CONFIG, "max_batch_size": 3, "max_batch_steps": 8})
    x, s = np.zeros((4, 1, 16, 16), np.float32), np.ones((3, K), np.float32)
    cases = [
        (
            {"image": x},
            {"mode": "encode"},
            r"input 'image' holds 4 samples, over this model's max_batch_size=3; send at most 3 per request, or log the model "
            r"again with a larger cap \(model_config\['max_batch_size'\] in log_patronus_model\)",
        ),
        (
            {"activations": np.ones((4, K), np.float32)},
            {"mode": "generate", "num_inference_steps": 2},
            r"input 'activations' holds 4 samples, over this model's max_batch_size=3",
        ),
        (
            {"activations": s},
            {"mode": "generate"},
            r"N \* num_inference_steps = 3 \* 4 = 12 is over this model's max_batch_steps=8; send fewer samples \(at most 2 "
            r"at 4 steps\).*log the model again with a larger cap \(model_config\['max_batch_steps'\]",
        ),
        (
            {"image": x[:2]},
            {"mode": "edit", "prototypes": [0], "values": [1.0], "num_inference_steps": 5},
            r"2 \* 5 = 10 is over this model's max_batch_steps=8",
        ),
    ]
    with _counting_calls(model) as calls:
        for request, params, match in cases:
            with pytest.raises(MlflowException, match=match) as info:
                model.predict(None, request, params)
            _assert_bad_request(info)
        assert calls == {"unet": 0, "encoder": 0}
        assert model.predict(None, {"activations": s[:2]}, {"mode": "generate"})["images"].shape == (
            2,
            1,
            16,
            16,
        )  # 2*4 = 8
        assert calls["unet"] > 0
    served = logged["model"].unwrap_python_model()  # the logged model has the default limits
    n = DEFAULT_LIMITS["max_batch_size"] + 1
    with _counting_calls(served) as calls, pytest.raises(MlflowException, match=f"max_batch_size={n - 1}") as info:
        served.predict(None, {"image": np.zeros((n, 1, 16, 16), np.float32)}, {"mode": "encode"})
    _assert_bad_request(info)
    assert calls == {"unet": 0, "encoder": 0}


def _image(value: float) -> np.ndarray:
    x = np.zeros((2, 1, 16, 16), np.float64)
    x[1, 0, 3, 4] = value
    return x


_S_MAX = r"9\.21034"
_OUT_OF_RANGE = [
    (
        {"image": _image(1e30)},
        {"mode": "encode"},
        r"input 'image' must lie in \[-1, 1\] \(tolerance 0\.01\), got values in "
        r"\[0, 1e\+30\]; rescale or clip the images to \[-1, 1\]",
        0,
    ),
    (
        {"image": _image(-1.5)},
        {"mode": "edit", "prototypes": [0], "values": [1.0]},
        r"input 'image' must lie in \[-1, 1\]",
        0,
    ),
    (
        {"activations": np.full((1, K), 1e308)},
        {"mode": "generate"},
        rf"input 'activations' must lie in \[0, {_S_MAX}\] \(tolerance 0\.001\), got values in \[1e\+308, 1e\+308\]; "
        r"send activations as returned by mode 'encode'",
        0,
    ),
    (
        {"activations": np.full((1, K), -0.5)},
        {"mode": "generate"},
        rf"input 'activations' must lie in \[0, {_S_MAX}\]",
        0,
    ),
    (
        {"image": _image(0.5)},
        {"mode": "edit", "prototypes": [0], "values": [1e308]},
        rf"params\['values'\]: 'set' values must lie in \[0, {_S_MAX}\], the range of activations the encoder produces; "
        r"got \[1e\+308\]",
        0,
    ),
    ({"image": _image(0.5)}, {"mode": "edit", "prototypes": [0], "values": [-1.0]}, r"'set' values must lie in", 0),
    (
        {"image": _image(0.5)},
        {"mode": "edit", "prototypes": [0], "values": [100.0], "operation": "add"},
        rf"'add' values must lie in \[-{_S_MAX}, {_S_MAX}\]",
        0,
    ),
    (
        {"image": _image(0.5)},
        {"mode": "edit", "prototypes": [0], "values": [-2.0], "operation": "scale"},
        r"'scale' factors must be >= 0",
        0,
    ),
    (
        {"image": _image(0.5)},
        {"mode": "edit", "prototypes": [1], "values": [1e308], "operation": "scale"},
        rf"operation 'scale' with value 1e\+308 takes prototype 1's activation of image 0 to inf, outside \[0, {_S_MAX}\]",
        1,
    ),
]


@pytest.mark.parametrize(
    "request_, params, match, encoder_calls",
    _OUT_OF_RANGE,
    ids=[
        "image-1e30",
        "edit-image--1.5",
        "activations-1e308",
        "activations--0.5",
        "set-1e308",
        "set--1",
        "add-100",
        "scale--2",
        "scale-1e308",
    ],
)
def test_out_of_range_inputs_and_edits_are_refused_before_the_unet_runs(logged, request_, params, match, encoder_calls):
    model = logged["model"].unwrap_python_model()
    with _counting_calls(model) as calls, pytest.raises(MlflowException, match=match) as info:
        model.predict(None, request_, params)
    _assert_bad_request(info)
    assert calls == {"unet": 0, "encoder": encoder_calls}  # a scaled activation is known only after encoding


def test_values_within_the_tolerances_are_accepted(logged):
    model = logged["model"]
    x = np.clip(logged["x"].numpy(), -1, 1)
    x[0, 0, 0, 0], x[1, 0, 0, 0] = 1.005, -1.005
    assert np.isfinite(model.predict({"image": x}, params={"mode": "encode"})["activations"]).all()
    top = np.log(1e4)
    out = model.predict(
        {"activations": np.array([[0.0, top, top + 5e-4, 1.0]] * 2, np.float32)},
        params={"mode": "generate", "num_inference_steps": 2},
    )
    assert np.isfinite(out["images"]).all()


@pytest.mark.parametrize(
    "request_, match",
    [
        ({"image": np.full((1, 1, 16, 16), "a")}, r"input 'image' must hold real numbers, got dtype <U1"),
        (
            {"image": np.full((1, 1, 16, 16), None, dtype=object)},
            r"input 'image' must hold real numbers, got dtype object",
        ),
        ({"image": np.zeros((1, 1, 16, 16), bool)}, r"input 'image' must hold real numbers, got dtype bool"),
        ({"image": np.zeros((1, 1, 16, 16), complex)}, r"input 'image' must hold real numbers, got dtype complex128"),
        (
            {"image": [np.zeros((1, 16, 16)).tolist(), np.zeros((1, 8, 8)).tolist()]},
            r"input 'image' must be a rectangular numeric array; it could not be read",
        ),
        ({"activations": [["x"] * K]}, r"input 'activations' must hold real numbers, got dtype <U1"),
    ],
    ids=["str", "object", "bool", "complex", "ragged", "str-activations"],
)
def test_wrong_dtypes_are_refused(logged, request_, match):
    params = {"mode": "generate"} if "activations" in request_ else {"mode": "encode"}
    with pytest.raises(MlflowException, match=match) as info:
        logged["model"].predict(request_, params=params)
    _assert_bad_request(info)


def test_a_busy_model_answers_temporarily_unavailable_within_the_lock_timeout(logged, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT", "10")
    assert default_lock_timeout() == 5.0  # half of MLflow's request timeout: the 503 comes before the 504
    model = _from_files(tmp_path, logged["net"], MODEL_CONFIG)
    assert model.lock_timeout == 5.0
    model.lock_timeout = 0.3
    started, release = threading.Event(), threading.Event()
    encode = model._encode

    def slow_encode(x):  # the request in progress, holding the model
        started.set()
        release.wait(10)
        return encode(x)

    monkeypatch.setattr(model, "_encode", slow_encode)
    x = logged["x"].numpy()
    results = []
    worker = threading.Thread(target=lambda: results.append(model.predict(None, {"image": x}, {"mode": "encode"})))
    worker.start()
    timer = threading.Timer(8.0, release.set)  # without a lock timeout the second request would wait until then
    timer.start()
    try:
        assert started.wait(10)
        begin = time.monotonic()
        with pytest.raises(
            MlflowException,
            match=r"the model is busy with another request and stayed busy for 0\.3 s; "
            r"retry later",
        ) as info:
            model.predict(None, {"image": x}, {"mode": "encode"})
        waited = time.monotonic() - begin
    finally:
        release.set()
        timer.cancel()
        worker.join(30)
    assert info.value.error_code == "TEMPORARILY_UNAVAILABLE" and info.value.get_http_status_code() == 503
    assert 0.25 <= waited < 3.0
    assert len(results) == 1 and np.isfinite(results[0]["activations"]).all()  # the first request still completes
    monkeypatch.setattr(model, "_encode", encode)
    np.testing.assert_array_equal(
        model.predict(None, {"image": x}, {"mode": "encode"})["activations"], results[0]["activations"]
    )


def test_non_finite_outputs_are_an_error_not_a_result(logged, tmp_path):
    broken = copy.deepcopy(logged["net"])
    with torch.no_grad():
        broken.out[2].conv.bias.fill_(float("inf"))  # a diverged U-Net; the encoder is untouched
    model = _from_files(tmp_path, broken, MODEL_CONFIG)
    x = logged["x"].numpy()
    assert np.isfinite(model.predict(None, {"image": x}, {"mode": "encode"})["activations"]).all()
    s = model.predict(None, {"image": x}, {"mode": "encode"})["activations"]
    for request, params in (
        ({"activations": s}, {"mode": "generate"}),
        ({"image": x}, {"mode": "edit", "prototypes": [0], "values": [1.0]}),
    ):
        with pytest.raises(
            MlflowException,
            match=rf"mode '{params['mode']}': the model produced NaN or infinite values in "
            r"output\(s\) \[.*'images'.*\]",
        ) as info:
            model.predict(None, request, params)
        assert info.value.error_code == "INTERNAL_ERROR" and info.value.get_http_status_code() == 500


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
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
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": store["uri"],
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "OMP_NUM_THREADS": "1",
        # the server runs `uvicorn` from PATH: use this interpreter's (e.g. an unactivated venv's) scripts
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
    }
    with open(tmp_path / "serve.log", "wb") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "models",
                "serve",
                "-m",
                f"models:/{NAME}@candidate",
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                if server.poll() is not None:
                    pytest.fail(
                        f"mlflow models serve exited with {server.returncode}:\n{(tmp_path / 'serve.log').read_text()[-3000:]}"
                    )
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
                status, body = _post(
                    f"{base}/invocations", {"inputs": {k: v.tolist() for k, v in inputs.items()}, "params": params}
                )
                assert status == 200, body
                expected = model.predict(inputs, params=params)
                assert sorted(body["predictions"]) == sorted(expected)
                for key, value in expected.items():
                    np.testing.assert_allclose(
                        np.asarray(body["predictions"][key]), value, rtol=1e-4, atol=1e-5, err_msg=key
                    )

            status, body = _post(
                f"{base}/invocations",
                {"inputs": {"image": np.zeros((1, 3, 16, 16)).tolist()}, "params": {"mode": "encode"}},
            )
            assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE"
            assert (
                "input 'image' must have shape (N, 1, 16, 16)" in body["message"]
                and "(1, 3, 16, 16)" in body["message"]
            )
            status, body = _post(f"{base}/invocations", {"inputs": {"image": x.tolist()}, "params": {"mode": "decode"}})
            assert status == 400 and "params['mode'] must be one of ['encode', 'generate', 'edit']" in body["message"]
            n = DEFAULT_LIMITS["max_batch_size"] + 1  # F8: over the cap, refused at once
            status, body = _post(
                f"{base}/invocations",
                {"inputs": {"image": np.zeros((n, 1, 16, 16)).tolist()}, "params": {"mode": "encode"}},
            )
            assert status == 400 and f"max_batch_size={n - 1}" in body["message"], body
            big = np.zeros((1, 1, 16, 16))
            big[0, 0, 0, 0] = 1e30
            status, body = _post(
                f"{base}/invocations", {"inputs": {"image": big.tolist()}, "params": {"mode": "encode"}}
            )
            assert status == 400 and "input 'image' must lie in [-1, 1]" in body["message"], body
        finally:
            _stop(server)
