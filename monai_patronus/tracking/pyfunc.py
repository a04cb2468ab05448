"""A trained Patronus model as an MLflow ``pyfunc`` model: encode, generate and edit behind one endpoint.

:func:`log_patronus_model` logs the network's ``state_dict`` and a literal ``model_config`` as artifacts of a
:class:`PatronusModel`, an MLflow "model from code" (no pickle). ``params["mode"]`` picks ``"encode"``,
``"generate"`` or ``"edit"``. Bad requests raise ``MlflowException`` ``INVALID_PARAMETER_VALUE`` (400) before any
network call, a busy model ``TEMPORARILY_UNAVAILABLE`` (503), non-finite outputs ``INTERNAL_ERROR`` (500). Requests
are capped by :data:`DEFAULT_LIMITS`; images must lie in [-1, 1], activations in ``[0, log(1/eps)]``.

Trust boundary: the stored ``model_config`` is data. Every ``_target_`` must be in :data:`ALLOWED_TARGETS`, no
ConfigParser directive but ``_target_``, ``_desc_``, ``_mode_: "default"``, ``_disabled_: false``, no ``@``/``$``/``%``
values; weights load with ``torch.load(weights_only=True)``. :meth:`PatronusModel.from_model_dir` runs nothing from
the store; ``mlflow.pyfunc.load_model`` and ``mlflow models serve`` run the stored code file, so write access to the
store is code execution. The scoring server has no authentication: bind it to ``127.0.0.1``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import numbers
import os
import re
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE
from mlflow.types import DataType, ParamSchema, ParamSpec
from torch import nn

from monai_patronus.handlers.utils import unwrap_network
from monai_patronus.inferers import PatronusInferer
from monai_patronus.interpret.editing import edit_activations, edit_images

__all__ = [
    "ALLOWED_TARGETS",
    "CONFIG_KEYS",
    "DEFAULT_LIMITS",
    "IMAGE_RANGE",
    "LOCK_WAIT_FRACTION",
    "MODES",
    "OPERATIONS",
    "PatronusModel",
    "default_lock_timeout",
    "log_patronus_model",
]

MODES = ("encode", "generate", "edit")
#: Values of ``params["operation"]`` in ``"edit"`` mode (keywords of :func:`~monai_patronus.interpret.edit_images`).
OPERATIONS = ("set", "scale", "add")
#: Keys ``model_config`` must hold; the request limits (:data:`DEFAULT_LIMITS`) are optional.
CONFIG_KEYS = ("network", "scheduler", "inferer", "image_shape", "num_prototypes", "num_inference_steps")
#: Images (or activation vectors) per request, and ``N * num_inference_steps`` per ``generate``/``edit`` request.
DEFAULT_LIMITS = {"max_batch_size": 32, "max_batch_steps": 800}
IMAGE_RANGE = (-1.0, 1.0)
IMAGE_TOLERANCE = 1e-2
#: How far outside ``[0, log(1/eps)]`` an activation or a ``set`` value may lie (float32 rounding).
ACTIVATION_TOLERANCE = 1e-3
#: A request waits for the model at most this fraction of ``MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT``.
LOCK_WAIT_FRACTION = 0.5

_ARTIFACTS = ("model_config", "weights")
_MODEL_CODE = Path(__file__).with_name("model_code.py")
_INPUTS = {"encode": "image", "generate": "activations", "edit": "image"}
#: ConfigParser directives a stored config may hold, and the only value each may have.
_SAFE_DIRECTIVES = {"_mode_": "default", "_disabled_": False}


def _allowed_targets() -> frozenset[str]:
    """The ``nn.Module`` classes of ``monai_patronus.networks`` and MONAI's DDIM/DDPM schedulers, under their
    package path and their defining module's path."""
    import monai.networks.schedulers as schedulers

    import monai_patronus.networks as networks

    classes = [("monai_patronus.networks", getattr(networks, name)) for name in networks.__all__]
    classes = [(package, c) for package, c in classes if isinstance(c, type) and issubclass(c, nn.Module)]
    classes += [("monai.networks.schedulers", c) for c in (schedulers.DDIMScheduler, schedulers.DDPMScheduler)]
    return frozenset(name for p, c in classes for name in (f"{p}.{c.__name__}", f"{c.__module__}.{c.__qualname__}"))


#: The only ``_target_`` values a stored model config may hold (see "Trust boundary" above).
ALLOWED_TARGETS = _allowed_targets()


def _activation_range(epsilon: float) -> tuple[float, float]:
    """``[0, log(1/eps)]``: the values ``s = log((d + 1) / (d + eps))`` takes for distances ``d >= 0``."""
    return (0.0, math.log(1.0 / epsilon))


def _invalid(message: str) -> MlflowException:
    """A bad request: HTTP 400 with ``message`` in the JSON body."""
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def default_lock_timeout() -> float:
    """:data:`LOCK_WAIT_FRACTION` of ``MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT``: the caller gets a 503 before the 504."""
    from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT

    return LOCK_WAIT_FRACTION * float(MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get())


class PatronusModel(mlflow.pyfunc.PythonModel):
    """MLflow ``pyfunc`` wrapper of a Patronus network, scheduler and inferer. Load it with
    ``mlflow.pyfunc.load_model(uri)`` or, running no stored code, :meth:`from_model_dir` / :meth:`from_files`.

    - ``encode``: ``{"image": (N, C, *spatial)}`` in [-1, 1] -> ``activations`` ``(N, K)``, ``min_distances``
      ``(N, K)``, ``boxes`` ``(N, K, spatial_dims, 2)`` int64 ``[start, stop)``;
    - ``generate``: ``{"activations": (N, K)}`` in ``[0, log(1/eps)]`` -> ``images`` (not clipped);
    - ``edit``: ``{"image": ...}`` -> ``images``, ``activations`` (re-encoded), ``original_activations``,
      ``target_activations``.

    Params: ``mode``, ``num_inference_steps`` (default from the config), ``seed`` (``generate`` noise, default
    0), and for ``edit``: ``prototypes``, ``values`` (one per prototype), ``operation`` (``"set"``, ``"scale"``,
    ``"add"``; default ``"set"``). One request runs at a time; a waiting one gives up after ``lock_timeout`` s.
    """

    config = network = inferer = device = lock_timeout = None  # set by loading

    def load_context(self, context) -> None:
        """Build the model from the ``model_config`` and ``weights`` artifacts (see :meth:`from_files`)."""
        self._load(*(context.artifacts[name] for name in _ARTIFACTS))

    @classmethod
    def from_files(cls, config_path: str | os.PathLike, weights_path: str | os.PathLike) -> PatronusModel:
        """A loaded model (CUDA when available, ``eval()``) from a ``model_config`` JSON file and a ``state_dict``
        file, running no stored code; the config passes the trust-boundary checks first."""
        return cls()._load(config_path, weights_path)

    @classmethod
    def from_model_dir(cls, model_dir: str | os.PathLike) -> PatronusModel:
        """A loaded model from a downloaded MLflow model folder, running no stored code: ``MLmodel`` is read with
        ``yaml.safe_load`` only to find the two artifacts (which must lie inside ``model_dir``)."""
        import yaml

        root = Path(model_dir).resolve()
        try:
            artifacts = yaml.safe_load((root / "MLmodel").read_text(encoding="utf-8"))["flavors"]["python_function"]
            relative = [artifacts["artifacts"][name]["path"] for name in _ARTIFACTS]
        except (OSError, KeyError, TypeError, yaml.YAMLError) as e:
            raise ValueError(
                f"{root} is no Patronus pyfunc model folder: its MLmodel names no {list(_ARTIFACTS)} artifacts "
                f"({type(e).__name__}: {e}); log the model with log_patronus_model."
            ) from e
        paths = [(root / r).resolve() for r in relative]
        for name, r, path in zip(_ARTIFACTS, relative, paths):
            if not path.is_relative_to(root) or not path.is_file():
                raise ValueError(f"{root}: artifact {name!r} at {r!r} is not a file inside the model folder.")
        return cls.from_files(*paths)

    def _load(self, config_path: str | os.PathLike, weights_path: str | os.PathLike) -> PatronusModel:
        config = _check_model_config(json.loads(Path(config_path).read_text(encoding="utf-8")))
        network, inferer = _build(config)
        network.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.network, self.inferer, self.config = network.to(self.device).eval(), inferer, config
        self.lock_timeout, self._lock = default_lock_timeout(), threading.Lock()
        return self

    def predict(self, context, model_input, params=None) -> dict[str, np.ndarray]:
        """Answer one request: ``model_input`` maps ``"image"`` or ``"activations"`` to an array (or is a DataFrame
        with one sample per row); ``params`` holds ``mode`` and the mode's params (see the class docstring)."""
        if self.network is None:
            raise RuntimeError(
                "PatronusModel.predict: the model is not loaded; use mlflow.pyfunc.load_model or "
                "PatronusModel.from_files."
            )
        params = params or {}
        mode = params.get("mode")
        if mode not in MODES:
            raise _invalid(f"params['mode'] must be one of {list(MODES)}, got {mode!r}.")
        name = _INPUTS[mode]
        array = self._input(model_input, mode)
        max_steps = int(self.inferer.scheduler.num_train_timesteps)
        steps = _int_param(params, "num_inference_steps", self.config["num_inference_steps"], 2, max_steps)
        seed = _int_param(params, "seed", 0, 0, 2**63 - 1)
        self._check_limits(mode, name, len(array), steps)
        tensor = self._tensor(name, array)
        run = {"encode": self._encode, "generate": lambda x: self._generate(x, steps, seed)}
        if mode == "edit":
            operation, edits = self._edits(params)
            run["edit"] = lambda x: self._edit(x, operation, edits, steps)
        with self._acquired(), torch.no_grad():
            result = run[mode](tensor)
        bad = [k for k, v in result.items() if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all()]
        if bad:
            raise MlflowException(
                f"mode {mode!r}: the model produced NaN or infinite values in output(s) {bad} for in-range inputs, so "
                "no result is returned; its weights may have diverged, or try other params['num_inference_steps'].",
                error_code=INTERNAL_ERROR,
            )
        return result

    @contextlib.contextmanager
    def _acquired(self) -> Iterator[None]:
        """Hold the model's lock, waiting at most :attr:`lock_timeout` seconds (then a 503)."""
        timeout = self.lock_timeout
        if not self._lock.acquire(timeout=-1 if timeout is None else max(0.0, float(timeout))):
            raise MlflowException(
                f"the model is busy with another request and stayed busy for {timeout:g} s; retry later, or serve "
                "more workers (mlflow models serve --workers N), or send smaller requests.",
                error_code=TEMPORARILY_UNAVAILABLE,
            )
        try:
            yield
        finally:
            self._lock.release()

    def _encode(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        maps = self.network.prototype_encoder(x, return_maps=True)
        boxes = self.network.prototype_encoder.boxes(maps.locations, tuple(x.shape[2:]))
        return {
            "activations": _numpy(maps.activations),
            "min_distances": _numpy(maps.min_distances),
            "boxes": boxes.cpu().numpy().astype(np.int64),
        }

    def _generate(self, s: torch.Tensor, steps: int, seed: int) -> dict[str, np.ndarray]:
        generator = torch.Generator().manual_seed(seed)  # CPU noise: the same images on CPU and CUDA
        noise = torch.randn((s.shape[0], *self.config["image_shape"]), generator=generator).to(self.device)
        return {"images": _numpy(self.inferer.sample(noise, self.network, s, steps, generator=generator))}

    def _edit(self, x: torch.Tensor, operation: str, edits: dict[int, float], steps: int) -> dict[str, np.ndarray]:
        # checked after encoding, before the U-Net runs: scale/add results depend on s
        target = edit_activations(self.network.encode(x), **{operation: edits})
        (low, high), tol = self._activation_range(), ACTIVATION_TOLERANCE
        for index, value in edits.items():
            column = target[:, index]
            bad = ~torch.isfinite(column) | (column < low - tol) | (column > high + tol)
            if bool(bad.any()):
                image = int(torch.nonzero(bad)[0])
                raise _invalid(
                    f"params['values']: operation {operation!r} with value {value!r} takes prototype {index}'s "
                    f"activation of image {image} to {float(column[image]):.6g}, outside [{low:g}, {high:.6g}]; use a "
                    f"value that keeps it in range, e.g. operation 'set' with a value in [{low:g}, {high:.6g}]."
                )
        result = edit_images(
            self.inferer, self.network, x, edited_activations=target, num_inference_steps=steps, reconstruct=False
        )
        return {
            "images": _numpy(result.edited),
            "activations": _numpy(result.edited_encoded),
            "original_activations": _numpy(result.activations),
            "target_activations": _numpy(result.edited_activations),
        }

    def _activation_range(self) -> tuple[float, float]:
        return _activation_range(float(self.network.prototype_encoder.epsilon))

    def _input(self, model_input, mode: str) -> np.ndarray:
        import pandas as pd

        name = _INPUTS[mode]
        if not isinstance(model_input, (Mapping, pd.DataFrame)):
            raise _invalid(f"model_input must be a dict such as {{{name!r}: array}}, got {type(model_input).__name__}.")
        names = sorted(str(key) for key in model_input.keys())
        if names != [name]:
            raise _invalid(f"mode {mode!r} takes the input(s) [{name!r}], got {names}.")
        value = model_input[name]
        try:
            array = np.stack(list(value)) if isinstance(value, pd.Series) else np.asarray(value)
        except (ValueError, TypeError) as e:
            raise _invalid(f"input {name!r} must be a rectangular numeric array; it could not be read ({e}).") from e
        if array.dtype.kind not in "iuf":
            raise _invalid(f"input {name!r} must hold real numbers, got dtype {array.dtype}.")
        shape = (self.config["num_prototypes"],) if name == "activations" else tuple(self.config["image_shape"])
        if array.shape[1:] != shape or len(array) == 0:
            raise _invalid(
                f"input {name!r} must have shape (N, {', '.join(map(str, shape))}) with N >= 1, got {array.shape}."
            )
        return array

    def _check_limits(self, mode: str, name: str, n: int, steps: int) -> None:
        max_n, max_work = self.config["max_batch_size"], self.config["max_batch_steps"]
        if n > max_n:
            raise _invalid(
                f"input {name!r} holds {n} samples, over this model's max_batch_size={max_n}; send at most {max_n} per "
                "request, or log the model again with a larger cap (model_config['max_batch_size'] in "
                "log_patronus_model)."
            )
        if mode != "encode" and n * steps > max_work:
            raise _invalid(
                f"the request's work N * num_inference_steps = {n} * {steps} = {n * steps} is over this model's "
                f"max_batch_steps={max_work}; send fewer samples (at most {max_work // steps} at {steps} steps) or "
                "fewer params['num_inference_steps'], or log the model again with a larger cap "
                "(model_config['max_batch_steps'] in log_patronus_model)."
            )

    def _tensor(self, name: str, array: np.ndarray) -> torch.Tensor:
        values = np.asarray(array, dtype=np.float64)
        if not np.isfinite(values).all():
            raise _invalid(f"input {name!r} holds NaN or infinite values; send finite numbers.")
        image, lo, hi = name == "image", float(values.min()), float(values.max())
        (low, high), tol = (IMAGE_RANGE, IMAGE_TOLERANCE) if image else (self._activation_range(), ACTIVATION_TOLERANCE)
        fix = "rescale or clip the images to [-1, 1]" if image else "send activations as returned by mode 'encode'"
        if lo < low - tol or hi > high + tol:
            raise _invalid(
                f"input {name!r} must lie in [{low:g}, {high:.6g}] (tolerance {tol:g}), got values in "
                f"[{lo:.6g}, {hi:.6g}]; {fix}."
            )
        return torch.from_numpy(values.astype(np.float32)).to(self.device)

    def _edits(self, params: Mapping) -> tuple[str, dict[int, float]]:
        k, (low, high), tol = self.config["num_prototypes"], self._activation_range(), ACTIVATION_TOLERANCE
        rules = {  # operation: (lowest value, highest value, the rule)
            "set": (
                low - tol,
                high + tol,
                f"'set' values must lie in [{low:g}, {high:.6g}], the range of activations the encoder produces",
            ),
            "add": (
                low - high - tol,
                high - low + tol,
                f"'add' values must lie in [{low - high:.6g}, {high - low:.6g}] (larger steps leave the range)",
            ),
            "scale": (0.0, math.inf, "'scale' factors must be >= 0 (a negative one leaves the encoder's range)"),
        }
        operation = params.get("operation") or "set"
        if operation not in rules:
            raise _invalid(f"params['operation'] must be one of {list(OPERATIONS)}, got {operation!r}.")
        prototypes, values = _as_list(params.get("prototypes")), _as_list(params.get("values"))
        if not prototypes or len(values) != len(prototypes):
            raise _invalid(
                f"mode 'edit' needs params['prototypes'] (indices in [0, {k})) and params['values'] with one value per "
                f"prototype, e.g. {{'prototypes': [3], 'values': [2.5]}}; got {prototypes} and {values}."
            )
        if len(set(prototypes)) < len(prototypes) or any(
            not isinstance(p, numbers.Integral) or not 0 <= p < k for p in prototypes
        ):
            raise _invalid(f"params['prototypes'] must hold distinct prototype indices in [0, {k}), got {prototypes}.")
        lowest, highest, rule = rules[operation]
        bad = [v for v in values if not (isinstance(v, numbers.Real) and math.isfinite(v) and lowest <= v <= highest)]
        if bad:
            raise _invalid(f"params['values']: {rule}; got {bad}.")
        return operation, {int(p): float(v) for p, v in zip(prototypes, values)}


def log_patronus_model(
    network: nn.Module,
    model_config: dict,
    artifact_path: str = "model",
    registered_model_name: str | None = None,
    run_id: str | None = None,
    tmp_dir: str | os.PathLike | None = None,
    pip_requirements: list[str] | None = None,
) -> ModelInfo:
    """Log a trained Patronus network as an MLflow ``pyfunc`` model (a :class:`PatronusModel`, from code).
    ``model_config["network"]`` must rebuild the network (its ``state_dict`` loads strictly) or this fails.

    Args:
        network: the trained :class:`~monai_patronus.networks.PatronusUNet` (or a DDP / DataParallel wrapper).
        model_config: a JSON-serialisable dict with the keys :data:`CONFIG_KEYS`: ``"network"`` and
            ``"scheduler"`` (literal MONAI bundle configs whose ``_target_`` are in :data:`ALLOWED_TARGETS`; a
            DDIM scheduler with ``"clip_sample": false``), ``"inferer"`` (:class:`PatronusInferer` keyword
            arguments, e.g. ``{"inversion_iterations": 5}``), ``"image_shape"`` (``[C, *spatial]``),
            ``"num_prototypes"``, ``"num_inference_steps"`` (the default DDIM steps), and optionally the
            limits ``"max_batch_size"`` and ``"max_batch_steps"`` (:data:`DEFAULT_LIMITS`).
        artifact_path: the logged model's name.
        registered_model_name: also register the model under this name.
        run_id: log into this run (resumed, nested under the active run if any, and ended with its former
            status); ``None``: the active run, or a run-less logged model.
        tmp_dir: parent folder of the temporary artifacts.
        pip_requirements: ``None`` pins the running ``mlflow``, ``torch``, ``monai``, ``numpy`` and
            ``monai-patronus`` (not on PyPI: serve with ``--env-manager local``).

    Returns:
        the ``ModelInfo`` of the logged model.
    """
    from monai_patronus.networks import PatronusUNet

    network = unwrap_network(network)
    if not isinstance(network, PatronusUNet):
        raise TypeError(
            f"log_patronus_model: network must be a monai_patronus.networks.PatronusUNet, got {type(network).__name__}."
        )
    config = _check_model_config(model_config)
    encoder = network.prototype_encoder
    if config["image_shape"][0] != encoder.in_channels or len(config["image_shape"]) != encoder.spatial_dims + 1:
        raise ValueError(
            f"model_config['image_shape'] is {config['image_shape']} but the network takes "
            f"{encoder.in_channels} channel(s) and {encoder.spatial_dims} spatial dims."
        )
    if config["num_prototypes"] != network.num_prototypes:
        raise ValueError(
            f"model_config['num_prototypes'] is {config['num_prototypes']} but the network has "
            f"{network.num_prototypes} prototypes."
        )
    state = {key: value.detach().cpu() for key, value in network.state_dict().items()}
    rebuilt, _ = _build(config)
    try:
        rebuilt.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(
            f"log_patronus_model: model_config['network'] does not build the logged network's "
            f"architecture; give the config the network was built from. {e}"
        ) from e

    with tempfile.TemporaryDirectory(prefix="patronus_pyfunc_", dir=tmp_dir) as tmp:
        config_path, weights_path = Path(tmp) / "patronus_config.json", Path(tmp) / "patronus_weights.pt"
        config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        torch.save(state, weights_path)
        example = np.zeros((1, *config["image_shape"]), dtype=np.float32)
        with _in_run(run_id):
            return mlflow.pyfunc.log_model(
                name=artifact_path,
                python_model=str(_MODEL_CODE),  # a model from code: no python_model.pkl
                artifacts=dict(zip(_ARTIFACTS, (str(config_path), str(weights_path)))),
                signature=_signature(config),
                input_example=({"image": example}, {"mode": "encode"}),
                pip_requirements=pip_requirements if pip_requirements is not None else _default_pip_requirements(),
                registered_model_name=registered_model_name,
                metadata={"patronus": _metadata(config, float(encoder.epsilon))},
            )


def _signature(config: dict) -> ModelSignature:
    """Params-only signature: MLflow 3.17 has no optional tensor inputs."""
    specs = [
        ParamSpec("mode", DataType.string, "encode"),
        ParamSpec("num_inference_steps", DataType.long, int(config["num_inference_steps"])),
        ParamSpec("seed", DataType.long, 0),
        ParamSpec("prototypes", DataType.long, [], shape=(-1,)),
        ParamSpec("values", DataType.double, [], shape=(-1,)),
        ParamSpec("operation", DataType.string, "set"),
    ]
    return ModelSignature(params=ParamSchema(specs))


def _metadata(config: dict, epsilon: float) -> dict:
    """The inputs (which MLflow's schema cannot express) and the limits, for ``MLmodel``."""
    k, image = config["num_prototypes"], [-1, *config["image_shape"]]
    s = {"dtype": "float32", "shape": [-1, k], "range": list(_activation_range(epsilon)), "modes": ["generate"]}
    return {
        "image_shape": list(config["image_shape"]),
        "num_prototypes": k,
        "limits": {key: config[key] for key in DEFAULT_LIMITS},
        "inputs": {
            "image": {"dtype": "float32", "shape": image, "range": list(IMAGE_RANGE), "modes": ["encode", "edit"]},
            "activations": s,
        },
    }


def _default_pip_requirements() -> list[str]:
    import monai

    import monai_patronus

    modules = {"mlflow": mlflow, "torch": torch, "monai": monai, "numpy": np, "monai-patronus": monai_patronus}
    return [f"{name}=={module.__version__.split('+')[0]}" for name, module in modules.items()]  # no +cpu labels


@contextlib.contextmanager
def _in_run(run_id: str | None) -> Iterator[None]:
    """Make ``run_id`` the active run for the block, then put the run, its status and ``MLFLOW_RUN_ID`` back."""
    active = mlflow.active_run()
    if run_id is None or (active is not None and active.info.run_id == run_id):
        yield
        return
    status = mlflow.MlflowClient().get_run(run_id).info.status
    env_run_id = os.environ.get("MLFLOW_RUN_ID")
    mlflow.start_run(run_id=run_id, nested=active is not None)
    try:
        yield
    finally:
        mlflow.end_run(status=status)  # pops only this run
        if env_run_id is not None:  # end_run clears it
            os.environ["MLFLOW_RUN_ID"] = env_run_id


def _check_model_config(config: Mapping) -> dict:
    """A JSON-normalised copy of ``model_config`` with the limits filled in, refused if it could run code."""
    unknown = sorted(set(config) - set(CONFIG_KEYS) - set(DEFAULT_LIMITS))
    missing = [key for key in CONFIG_KEYS if key not in config]
    if missing or unknown:
        raise ValueError(
            f"model_config is missing {missing} and has unknown key(s) {unknown}; its keys are "
            f"{list(CONFIG_KEYS)} and optionally {list(DEFAULT_LIMITS)}."
        )
    _check_safe(config, "model_config")
    config = json.loads(json.dumps({**DEFAULT_LIMITS, **config}))
    lows = dict(
        num_prototypes=1, num_inference_steps=2, max_batch_size=1, max_batch_steps=config["num_inference_steps"]
    )
    for key, low in lows.items():
        if not isinstance(config[key], int) or config[key] < low:
            raise ValueError(f"model_config[{key!r}] must be an int >= {low}, got {config[key]!r}.")
    return config


def _check_safe(value: object, path: str) -> None:
    """The trust boundary: refuse, at any depth, a ``_target_`` outside :data:`ALLOWED_TARGETS`, a ConfigParser
    directive that could run code, and ``@`` references, ``$`` expressions and ``%`` macros."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            where = f"{path}[{key!r}]"
            if key == "_target_" and (not isinstance(item, str) or item not in ALLOWED_TARGETS):
                raise ValueError(
                    f"{where} is {item!r}, which a stored model config may not instantiate; the allowed "
                    f"'_target_' values are {sorted(ALLOWED_TARGETS)}."
                )
            if key in _SAFE_DIRECTIVES and item is not _SAFE_DIRECTIVES[key] and item != _SAFE_DIRECTIVES[key]:
                raise ValueError(
                    f"{where} is {item!r}; a stored model config may only hold {key!r}: "
                    f"{json.dumps(_SAFE_DIRECTIVES[key])}."
                )
            if re.fullmatch(r"_.+_", str(key)) and key not in ("_target_", "_desc_", *_SAFE_DIRECTIVES):
                raise ValueError(f"{where} is a ConfigParser directive, which a stored model config may not hold.")
            _check_safe(item, where)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_safe(item, f"{path}[{i}]")
    elif isinstance(value, str) and value[:1] in ("@", "$", "%"):
        raise ValueError(
            f"{path} holds {value!r}; the config must be literal (no '@' references, '$' expressions or '%' macros)."
        )


def _build(config: dict) -> tuple[nn.Module, PatronusInferer]:
    """The network (random weights) and the inferer from a config checked by :func:`_check_model_config`."""
    from monai.bundle import ConfigParser

    network = ConfigParser(copy.deepcopy(config["network"])).get_parsed_content()
    scheduler = ConfigParser(copy.deepcopy(config["scheduler"])).get_parsed_content()
    if not hasattr(network, "prototype_encoder"):
        raise TypeError(f"model_config['network'] must build a PatronusUNet, got {type(network).__name__}.")
    if not hasattr(scheduler, "reversed_step") or scheduler.clip_sample:
        raise ValueError(
            "model_config['scheduler'] must build a DDIMScheduler with 'clip_sample': false (editing "
            f"inverts images), got {type(scheduler).__name__}."
        )
    return network, PatronusInferer(scheduler, **config["inferer"])


def _int_param(params: Mapping, name: str, default: int, low: int, high: int) -> int:
    value = params.get(name)
    if value is None:
        return default
    if not isinstance(value, numbers.Integral) or not low <= value <= high:
        raise _invalid(f"params[{name!r}] must be an int in [{low}, {high}], got {value!r}.")
    return int(value)


def _as_list(value: object) -> list:
    return [] if value is None else np.asarray(value).ravel().tolist()


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().float().cpu().numpy()
