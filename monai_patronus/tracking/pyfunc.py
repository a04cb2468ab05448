"""A trained Patronus model as an MLflow ``pyfunc`` model: encode, generate and edit behind one endpoint.

:func:`log_patronus_model` stores the network's ``state_dict`` and a literal MONAI bundle config (network,
DDIM scheduler, inferer settings, request limits) as artifacts of a :class:`PatronusModel`, logged as an
MLflow "model from code" (``python_model=`` the path of :mod:`monai_patronus.tracking.model_code`), so no
``python_model.pkl`` is written. ``mlflow.pyfunc.load_model`` and ``mlflow models serve`` run that code file
and rebuild the model from the artifacts; :func:`~monai_patronus.tracking.load_patronus` rebuilds it from the
artifacts alone. ``params["mode"]`` picks one of three kinds of request:

- ``"encode"``: ``{"image": (N, C, *spatial)}`` -> prototype activations, minimum distances and the input
  box of each prototype's closest patch;
- ``"generate"``: ``{"activations": (N, K)}`` -> images sampled with DDIM from noise drawn with ``seed``;
- ``"edit"``: ``{"image": ...}`` plus the params ``prototypes``, ``values`` and ``operation`` -> the images
  inverted, regenerated with the edited activations, and encoded again.

Signature. In MLflow 3.17 every ``TensorSpec`` is required (``TensorSpec.required`` always returns ``True``
and schema enforcement rejects a dict without one of the named tensors). So a tensor-based schema naming
both ``image`` and ``activations`` would make every request carry both. Column-based
``ColSpec(Array(...), required=False)`` inputs are optional, but they reject N-d numpy arrays and would
turn each image into a DataFrame cell. The signature therefore has only a params schema
(``inputs=None``). MLflow then passes the request's ``inputs`` dict to :meth:`PatronusModel.predict`
unchanged, and ``predict`` checks names, shapes and values itself. The expected tensors, their ranges and
the request limits are written to the model metadata (``MLmodel`` -> ``metadata: patronus``). The input
example is an ``encode`` request.

Errors. ``predict`` raises every problem with a request as
``MlflowException(message, error_code=INVALID_PARAMETER_VALUE)``. The scoring server
(``mlflow.pyfunc.scoring_server.invocations``) re-raises an ``MlflowException`` from ``predict`` with its
code kept, and answers with ``get_http_status_code()`` and a JSON body whose ``message`` carries the text:
400 for ``INVALID_PARAMETER_VALUE`` (bad request), 503 for ``TEMPORARILY_UNAVAILABLE`` (busy), 500 for
``INTERNAL_ERROR`` (the model produced NaN or infinite values). Any other exception would give a 400 with a
generic message.

Limits (availability). A request is refused with a 400 before any network call when its batch size ``N``
exceeds ``max_batch_size``, or, for ``generate`` and ``edit``, when ``N * num_inference_steps`` exceeds
``max_batch_steps`` (both stored in the model config; defaults :data:`DEFAULT_LIMITS`; a larger cap needs
the model logged again with ``model_config["max_batch_size"]`` / ``["max_batch_steps"]``). Images must lie
in [-1, 1] and activations (and ``set`` values) in the range the encoder produces, ``[0, log(1/eps)]``
(``eps`` = the encoder's ``epsilon``, 1e-4 by default: ``[0, 9.21]``), up to small tolerances. One request
runs at a time per loaded model (a request uses the whole machine; serialising them bounds memory and latency). The
scoring server runs ``predict`` in a worker thread and answers 504 at ``MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT``
(60 s) while the thread runs on, so a request waits for the model at most :attr:`PatronusModel.lock_timeout`
(:data:`LOCK_WAIT_FRACTION` of that timeout) and then gets a 503 instead of queueing. A request that has
started cannot be interrupted; the work cap is what bounds it. An output holding NaN or infinite values is
never returned: it raises a 500 instead.

Trust boundary (security). The stored ``model_config`` is data: before ``monai.bundle.ConfigParser`` sees
it, every ``_target_`` at any depth must name one of :data:`ALLOWED_TARGETS` (the ``torch.nn.Module``
classes of :mod:`monai_patronus.networks` and MONAI's DDIM/DDPM schedulers), ConfigParser directives that
could run code (``_requires_``, ``_mode_`` other than ``"default"``, ``_disabled_`` other than ``false``,
``_debug_``, any other ``_name_`` key) are refused, and so are ``@`` references, ``$`` expressions and ``%``
macros. Weights load with ``torch.load(weights_only=True)``. What this does **not** cover:

- ``mlflow.pyfunc.load_model`` and ``mlflow models serve`` import the model's code file, the copy of
  :mod:`~monai_patronus.tracking.model_code` stored with the model, and MLflow follows the stored
  ``MLmodel`` (its ``loader_module``, ``code`` paths, or a ``python_model.pkl`` it names, which MLflow
  unpickles unless ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``; versions logged before this change are
  pickled). Anyone who can write to the MLflow artifact store can therefore change what a loading or
  serving process runs. Treat write access to the store as code execution on every host that serves or
  loads models with MLflow's loader, and serve only from a store you control.
- :func:`~monai_patronus.tracking.load_patronus` (reviews, notebooks) runs nothing from the store: it
  downloads the model folder, reads ``MLmodel`` with ``yaml.safe_load`` to find the two artifacts, and
  builds the model through the same allowlisted path (:meth:`PatronusModel.from_files`).
- The allowlisted classes still run with values from the store (sizes, channels): a tampered config can
  make a model that is huge or wrong, but not one that runs other code.
- The scoring server has no authentication or TLS; bind it to ``127.0.0.1`` (``-h 127.0.0.1``) or put it
  behind an authenticating proxy.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import numbers
import os
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

#: Values of ``params["mode"]``.
MODES = ("encode", "generate", "edit")
#: Values of ``params["operation"]`` in ``"edit"`` mode (keywords of :func:`~monai_patronus.interpret.edit_images`).
OPERATIONS = ("set", "scale", "add")
#: Keys the ``model_config`` dict given to :func:`log_patronus_model` must hold.
CONFIG_KEYS = ("network", "scheduler", "inferer", "image_shape", "num_prototypes", "num_inference_steps")
#: Optional ``model_config`` keys (request limits) and their defaults, used for configs logged without them.
#: ``max_batch_size``: images (or activation vectors) per request; ``max_batch_steps``: ``N *
#: num_inference_steps`` per ``generate`` or ``edit`` request (an edit runs about ``2 + inversion_iterations``
#: U-Net passes per step, a generation one).
DEFAULT_LIMITS = {"max_batch_size": 32, "max_batch_steps": 800}
#: The range of input images, and how far outside it a value may lie.
IMAGE_RANGE = (-1.0, 1.0)
IMAGE_TOLERANCE = 1e-2
#: How far outside ``[0, log(1/eps)]`` an activation or a ``set`` value may lie (float32 rounding).
ACTIVATION_TOLERANCE = 1e-3
#: A request waits for the model at most this fraction of ``MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT``.
LOCK_WAIT_FRACTION = 0.5

_CONFIG_ARTIFACT = "model_config"
_WEIGHTS_ARTIFACT = "weights"
_MODEL_CODE = Path(__file__).with_name("model_code.py")
_INPUTS = {"encode": ("image",), "generate": ("activations",), "edit": ("image",)}
_CONFIG_EXAMPLE = (
    '{"network": {"_target_": "monai_patronus.networks.PatronusUNet", "spatial_dims": 2, "in_channels": 1, '
    '"encoder": {"_target_": "monai_patronus.networks.PrototypeEncoder", ...}, ...}, '
    '"scheduler": {"_target_": "monai.networks.schedulers.DDIMScheduler", "num_train_timesteps": 1000, '
    '"clip_sample": false}, "inferer": {"inversion_iterations": 5}, "image_shape": [1, 64, 64], '
    '"num_prototypes": 100, "num_inference_steps": 50}'
)


def _allowed_targets() -> frozenset[str]:
    """The ``torch.nn.Module`` classes exported by ``monai_patronus.networks`` and MONAI's DDIM/DDPM schedulers,
    each under its package path and its defining module's path."""
    import monai.networks.schedulers as schedulers

    import monai_patronus.networks as networks

    classes = [("monai_patronus.networks", getattr(networks, name)) for name in networks.__all__]
    classes = [(package, cls) for package, cls in classes if isinstance(cls, type) and issubclass(cls, nn.Module)]
    classes += [("monai.networks.schedulers", cls) for cls in (schedulers.DDIMScheduler, schedulers.DDPMScheduler)]
    names = set()
    for package, cls in classes:
        names.add(f"{package}.{cls.__name__}")
        names.add(f"{cls.__module__}.{cls.__qualname__}")
    return frozenset(names)


#: The only ``_target_`` values a stored model config may hold (see "Trust boundary" in the module docstring).
ALLOWED_TARGETS = _allowed_targets()


def _activation_range(epsilon: float) -> tuple[float, float]:
    """``[0, log(1/eps)]``: the values ``s = log((d + 1) / (d + eps))`` takes for distances ``d >= 0``."""
    top = math.log(1.0 / epsilon)
    return (min(0.0, top), max(0.0, top))


def _invalid(message: str) -> MlflowException:
    """A bad request: the scoring server answers it with HTTP 400 and ``message`` in the JSON body."""
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def default_lock_timeout() -> float:
    """Seconds a request waits for a busy model: :data:`LOCK_WAIT_FRACTION` of MLflow's request timeout
    (``MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT``, 60 s by default), so the caller gets a 503 before the 504."""
    from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT

    return LOCK_WAIT_FRACTION * float(MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get())


class PatronusModel(mlflow.pyfunc.PythonModel):
    """MLflow ``pyfunc`` wrapper of a Patronus network, scheduler and inferer (see the module docstring).

    Log it with :func:`log_patronus_model`. Load it with ``mlflow.pyfunc.load_model(uri)``, which calls
    :meth:`load_context`, or without running stored code with :meth:`from_files` (what
    :func:`~monai_patronus.tracking.load_patronus` does), and call ``.predict(inputs, params={...})`` on the
    result. A bare instance holds nothing until it is loaded.

    Requests (``model_input`` a dict of numpy arrays; ``params`` a dict):

    ===========  ========================================  ==================================================
    mode         inputs                                    returns (numpy arrays)
    ===========  ========================================  ==================================================
    encode       ``image`` ``(N, C, *spatial)`` in [-1, 1]  ``activations`` ``(N, K)`` float32,
                                                           ``min_distances`` ``(N, K)`` float32,
                                                           ``boxes`` ``(N, K, spatial_dims, 2)`` int64
                                                           ``[start, stop)`` per axis
    generate     ``activations`` ``(N, K)``                ``images`` ``(N, C, *spatial)`` float32
                 in ``[0, log(1/eps)]``                    (not clipped)
    edit         ``image`` ``(N, C, *spatial)``            ``images`` (edited), ``activations`` (their
                                                           re-encoded ``s``), ``original_activations``,
                                                           ``target_activations`` (the edited vectors)
    ===========  ========================================  ==================================================

    Params: ``mode`` (required by this class; the logged signature makes it default to ``"encode"``),
    ``num_inference_steps`` (DDIM steps, default from the config), ``seed`` (noise of ``generate``,
    default 0), and for ``edit``: ``prototypes`` (indices), ``values`` (one per index), ``operation``
    (``"set"``, ``"scale"`` or ``"add"``, default ``"set"``). The edited activations must stay in
    ``[0, log(1/eps)]``.

    Every problem with a request raises ``MlflowException`` with error code ``INVALID_PARAMETER_VALUE``
    (HTTP 400 when served), before any network call for sizes and ranges. Predictions hold a lock (one request
    at a time bounds memory and latency); a request that cannot get it within
    :attr:`lock_timeout` seconds raises ``TEMPORARILY_UNAVAILABLE`` (503).

    Attributes:
        config: the model config (with its limits), after loading.
        network, inferer, device: the loaded network (``eval()``, on ``device``) and inferer.
        lock_timeout: seconds a request waits for another one to finish (default
            :func:`default_lock_timeout`, set when the model is loaded).
    """

    def __init__(self) -> None:
        super().__init__()
        self.config: dict | None = None
        self.network: nn.Module | None = None
        self.inferer: PatronusInferer | None = None
        self.device: torch.device | None = None
        self.lock_timeout: float | None = None
        self._lock: threading.Lock | None = None

    # ------------------------------------------------------------------ loading
    def load_context(self, context) -> None:
        """Build the network, scheduler and inferer from the ``model_config`` and ``weights`` artifacts.

        See :meth:`from_files`, which does the same from two file paths.

        Raises:
            KeyError: an artifact is missing (the model was not logged by :func:`log_patronus_model`).
            ValueError / TypeError: the stored config or weights are invalid, or the config names a class
                outside :data:`ALLOWED_TARGETS` (see :func:`log_patronus_model`).
        """
        artifacts = getattr(context, "artifacts", None) or {}
        for name in (_CONFIG_ARTIFACT, _WEIGHTS_ARTIFACT):
            if name not in artifacts:
                raise KeyError(
                    f"PatronusModel.load_context: artifact {name!r} is missing (found {sorted(artifacts)}); "
                    "log the model with monai_patronus.tracking.pyfunc.log_patronus_model."
                )
        self._load(artifacts[_CONFIG_ARTIFACT], artifacts[_WEIGHTS_ARTIFACT], where="the logged model_config")

    @classmethod
    def from_files(
        cls, config_path: str | os.PathLike, weights_path: str | os.PathLike, where: str = "the logged model_config"
    ) -> PatronusModel:
        """A loaded model from a ``model_config`` JSON file and a ``state_dict`` file, running no stored code.

        The config is checked (keys, literal values, every ``_target_`` in :data:`ALLOWED_TARGETS`, no
        ConfigParser directives) before ``monai.bundle.ConfigParser`` instantiates the network and scheduler.
        Configs logged without the request limits get :data:`DEFAULT_LIMITS`. The weights load with
        ``torch.load(weights_only=True)``. The model goes on CUDA when available (otherwise the CPU) in
        ``eval()`` mode.

        Args:
            config_path: the model's ``model_config`` artifact (JSON).
            weights_path: the model's ``weights`` artifact (a ``torch.save``'d ``state_dict``).
            where: how error messages name the config.

        Returns:
            the loaded model (``network``, ``inferer``, ``config``, ``device`` set).

        Raises:
            ValueError / TypeError: the config or the weights are invalid or refused; the message names the
                key and the value.
        """
        model = cls()
        model._load(config_path, weights_path, where=where)
        return model

    @classmethod
    def from_model_dir(cls, model_dir: str | os.PathLike, where: str | None = None) -> PatronusModel:
        """A loaded model from a downloaded MLflow model folder, running no stored code.

        ``MLmodel`` is read with ``yaml.safe_load`` only to find the ``model_config`` and ``weights``
        artifacts (which must lie inside ``model_dir``); the model's code file, any ``python_model.pkl``
        and the ``loader_module`` are ignored. Then as :meth:`from_files`.

        Args:
            model_dir: the local folder of a model logged by :func:`log_patronus_model` (e.g. from
                ``mlflow.artifacts.download_artifacts("models:/name/1")``).
            where: how error messages name the model (default: the folder).

        Raises:
            ValueError: the folder is not a Patronus pyfunc model, or its config or weights are invalid or
                refused.
        """
        import yaml

        root = Path(model_dir)
        where = where or f"model {str(root)!r}"
        try:
            mlmodel = yaml.safe_load((root / "MLmodel").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise ValueError(f"{where}: no readable MLmodel file in {root} ({e}); is it an MLflow model folder?") from e
        flavors = mlmodel.get("flavors") if isinstance(mlmodel, dict) else None
        flavor = flavors.get("python_function") if isinstance(flavors, dict) else None
        artifacts = flavor.get("artifacts") if isinstance(flavor, dict) else None
        paths = {}
        for name in (_CONFIG_ARTIFACT, _WEIGHTS_ARTIFACT):
            entry = artifacts.get(name) if isinstance(artifacts, dict) else None
            relative = entry.get("path") if isinstance(entry, dict) else None
            if not isinstance(relative, str) or not relative:
                raise ValueError(
                    f"{where}: MLmodel names no {name!r} artifact of the python_function flavor (found "
                    f"{sorted(artifacts) if isinstance(artifacts, dict) else artifacts!r}); log the model with "
                    "monai_patronus.tracking.pyfunc.log_patronus_model."
                )
            path = (root / relative).resolve()
            if not path.is_relative_to(root.resolve()) or not path.is_file():
                raise ValueError(f"{where}: artifact {name!r} at {relative!r} is not a file inside the model folder.")
            paths[name] = path
        return cls.from_files(paths[_CONFIG_ARTIFACT], paths[_WEIGHTS_ARTIFACT], where=f"{where}: model_config")

    def _load(self, config_path: str | os.PathLike, weights_path: str | os.PathLike, where: str) -> None:
        try:
            config = json.loads(Path(config_path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{where} ({config_path}) could not be read as JSON: {e}") from e
        config = _check_model_config(config, where=where)
        network, inferer = _build(config, where=where)
        try:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
        except Exception as e:  # UnpicklingError for anything but tensors and containers; OSError; zip errors
            raise ValueError(
                f"the model's weights ({weights_path}) could not be loaded with torch.load(weights_only=True): {e}"
            ) from e
        if not isinstance(state, Mapping):
            raise TypeError(f"the model's weights ({weights_path}) must hold a state_dict (a dict), got {type(state).__name__}.")
        network.load_state_dict(state)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.network = network.to(self.device).eval()
        self.inferer = inferer
        self.config = config
        self.lock_timeout = default_lock_timeout()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ prediction
    def predict(self, context, model_input, params=None) -> dict[str, np.ndarray]:
        """Answer one ``encode``, ``generate`` or ``edit`` request (see the class docstring).

        Every check (names, shapes, dtypes, ranges, limits, params) runs before the lock is taken and before
        any network call.

        Args:
            context: MLflow's model context (unused; the model is built when it is loaded).
            model_input: a dict mapping ``"image"`` and/or ``"activations"`` to arrays (the JSON request
                ``{"inputs": {"image": [...]}}`` arrives as one), or a pandas DataFrame with those columns
                and one sample per row.
            params: ``mode`` and the mode's params.

        Returns:
            a dict of numpy arrays; its keys depend on the mode.

        Raises:
            MlflowException: ``INVALID_PARAMETER_VALUE`` (400) for an unknown or missing mode, missing or
                unexpected inputs, shapes, dtypes or values the model does not take, a request over the
                model's limits, or invalid params; ``TEMPORARILY_UNAVAILABLE`` (503) when another request
                holds the model for longer than :attr:`lock_timeout`; ``INTERNAL_ERROR`` (500) when the
                output holds NaN or infinite values.
            RuntimeError: the model was not loaded (use ``mlflow.pyfunc.load_model``).
        """
        if self.network is None or self.inferer is None or self.config is None or self._lock is None:
            raise RuntimeError(
                "PatronusModel.predict: the model is not loaded; load it with mlflow.pyfunc.load_model(model_uri), "
                "which calls load_context, or with PatronusModel.from_files."
            )
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise _invalid(f"params must be a dict such as {{'mode': 'encode'}}, got {type(params).__name__}.")
        mode = params.get("mode")
        if mode is None:
            raise _invalid(f"params['mode'] is required: one of {list(MODES)}, e.g. params={{'mode': 'encode'}}.")
        if mode not in MODES:
            raise _invalid(f"params['mode'] must be one of {list(MODES)}, got {mode!r}.")
        inputs = self._inputs(model_input)
        wanted = _INPUTS[mode]
        missing = [name for name in wanted if name not in inputs]
        extra = [name for name in inputs if name not in wanted]
        if missing or extra:
            raise _invalid(
                f"mode {mode!r} takes the input(s) {list(wanted)}; "
                + (f"missing {missing}" if missing else "")
                + ("; " if missing and extra else "")
                + (f"got unexpected {extra}" if extra else "")
                + f" (received {sorted(inputs)})."
            )
        steps = self._int_param(params, "num_inference_steps", self.config["num_inference_steps"],
                                2, int(self.inferer.scheduler.num_train_timesteps))
        seed = self._int_param(params, "seed", 0, 0, 2**63 - 1)

        if mode == "generate":
            array = self._check_activations_shape(inputs["activations"])
            self._check_limits(mode, array.shape[0], steps)
            s = self._tensor("activations", array, self._activation_range(), ACTIVATION_TOLERANCE,
                             "send activations as returned by mode 'encode'")
        else:
            array = self._check_image_shape(inputs["image"])
            self._check_limits(mode, array.shape[0], steps)
            x = self._tensor("image", array, IMAGE_RANGE, IMAGE_TOLERANCE, "rescale or clip the images to [-1, 1]")
            if mode == "edit":
                operation, edits = self._edits(params)

        with self._acquired(), torch.no_grad():
            if mode == "encode":
                result = self._encode(x)
            elif mode == "generate":
                result = self._generate(s, steps, seed)
            else:
                result = self._edit(x, operation, edits, steps)
        return _check_finite(mode, result)

    @contextlib.contextmanager
    def _acquired(self) -> Iterator[None]:
        """Hold the model's lock, waiting at most :attr:`lock_timeout` seconds (then a 503)."""
        timeout = self.lock_timeout
        if not self._lock.acquire(timeout=-1 if timeout is None else max(0.0, float(timeout))):
            raise MlflowException(
                f"the model is busy with another request and stayed busy for {timeout:g} s; retry later, or serve "
                "more workers (mlflow models serve --workers N). Large requests keep it busy longer: send fewer "
                "images or fewer num_inference_steps.",
                error_code=TEMPORARILY_UNAVAILABLE,
            )
        try:
            yield
        finally:
            self._lock.release()

    def _encode(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        encoder = self.network.prototype_encoder
        maps = encoder(x, return_maps=True)
        boxes = encoder.boxes(maps.locations, tuple(x.shape[2:]))
        return {
            "activations": _numpy(maps.activations),
            "min_distances": _numpy(maps.min_distances),
            "boxes": boxes.cpu().numpy().astype(np.int64),
        }

    def _generate(self, s: torch.Tensor, steps: int, seed: int) -> dict[str, np.ndarray]:
        generator = torch.Generator().manual_seed(seed)  # CPU noise: the same images on CPU and CUDA
        noise = torch.randn((s.shape[0], *self.config["image_shape"]), generator=generator).to(self.device)
        images = self.inferer.sample(noise, self.network, s, steps, generator=generator)
        return {"images": _numpy(images)}

    def _edit(self, x: torch.Tensor, operation: str, edits: dict[int, float], steps: int) -> dict[str, np.ndarray]:
        # the edited vectors are checked after encoding and before the U-Net runs: scale/add results depend on s
        target = edit_activations(self.network.encode(x), **{operation: edits})
        low, high = self._activation_range()
        tol = ACTIVATION_TOLERANCE
        for index, value in edits.items():
            column = target[:, index]
            bad = ~torch.isfinite(column) | (column < low - tol) | (column > high + tol)
            if bool(bad.any()):
                image = int(torch.nonzero(bad)[0])
                raise _invalid(
                    f"params['values']: operation {operation!r} with value {value!r} takes prototype {index}'s activation "
                    f"of image {image} to {float(column[image]):.6g}, outside [{low:g}, {high:.6g}] (the range the "
                    f"encoder produces); use a value that keeps it in range, e.g. operation 'set' with a value in "
                    f"[{low:g}, {high:.6g}]."
                )
        result = edit_images(self.inferer, self.network, x, edited_activations=target, num_inference_steps=steps,
                             reconstruct=False)
        return {
            "images": _numpy(result.edited),
            "activations": _numpy(result.edited_encoded),
            "original_activations": _numpy(result.activations),
            "target_activations": _numpy(result.edited_activations),
        }

    # ------------------------------------------------------------------ request checks
    def _activation_range(self) -> tuple[float, float]:
        return _activation_range(float(self.network.prototype_encoder.epsilon))

    def _check_limits(self, mode: str, n: int, steps: int) -> None:
        """Refuse a request over ``max_batch_size`` or (``generate`` / ``edit``) ``max_batch_steps``."""
        max_n, max_work = self.config["max_batch_size"], self.config["max_batch_steps"]
        name = "activations" if mode == "generate" else "image"
        if n > max_n:
            raise _invalid(
                f"input {name!r} holds {n} samples, over this model's max_batch_size={max_n}; send at most {max_n} per "
                "request, or log the model again with a larger cap (model_config['max_batch_size'] in "
                "log_patronus_model)."
            )
        if mode != "encode" and n * steps > max_work:
            raise _invalid(
                f"the request's work N * num_inference_steps = {n} * {steps} = {n * steps} is over this model's "
                f"max_batch_steps={max_work}; send fewer samples (at most {max(max_work // steps, 0)} at {steps} steps) "
                "or fewer params['num_inference_steps'], or log the model again with a larger cap "
                "(model_config['max_batch_steps'] in log_patronus_model)."
            )

    def _inputs(self, model_input) -> dict[str, np.ndarray]:
        """The request's named arrays (from a dict or a one-sample-per-row DataFrame), unknown names refused."""
        import pandas as pd

        allowed = ("image", "activations")
        if isinstance(model_input, pd.DataFrame):
            columns = {str(c): model_input[c] for c in model_input.columns}
        elif isinstance(model_input, Mapping):
            columns = {str(k): v for k, v in model_input.items()}
        else:
            raise _invalid(
                f"model_input must be a dict mapping {list(allowed)} to arrays (served: "
                f"{{\"inputs\": {{\"image\": [...]}}, \"params\": {{\"mode\": \"encode\"}}}}), "
                f"got {type(model_input).__name__}."
            )
        unknown = [name for name in columns if name not in allowed]
        if unknown:
            raise _invalid(f"unknown input(s) {unknown}; the inputs are 'image' (encode, edit) and 'activations' (generate).")
        arrays = {}
        for name, value in columns.items():
            try:
                if isinstance(value, pd.Series):  # one sample per row
                    array = np.stack([np.asarray(v, dtype=np.float64) for v in value]) if len(value) else np.asarray([])
                else:
                    array = np.asarray(value)
            except (ValueError, TypeError) as e:
                raise _invalid(f"input {name!r} must be a rectangular numeric array; it could not be read ({e}).") from e
            if array.dtype == np.bool_ or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
                raise _invalid(f"input {name!r} must hold real numbers, got dtype {array.dtype}.")
            arrays[name] = array
        return arrays

    def _check_image_shape(self, array: np.ndarray) -> np.ndarray:
        shape = tuple(self.config["image_shape"])
        if array.ndim != len(shape) + 1 or tuple(array.shape[1:]) != shape or array.shape[0] < 1:
            expected = ", ".join(str(n) for n in shape)
            raise _invalid(
                f"input 'image' must have shape (N, {expected}): N >= 1 images of {shape[0]} channel(s) and spatial "
                f"shape {shape[1:]}, got {tuple(array.shape)}."
            )
        return array

    def _check_activations_shape(self, array: np.ndarray) -> np.ndarray:
        k = self.config["num_prototypes"]
        if array.ndim != 2 or array.shape[1] != k or array.shape[0] < 1:
            raise _invalid(
                f"input 'activations' must have shape (N, {k}): N >= 1 vectors of the model's {k} prototype "
                f"activations, got {tuple(array.shape)}."
            )
        return array

    def _tensor(self, name: str, array: np.ndarray, bounds: tuple[float, float], tol: float, fix: str) -> torch.Tensor:
        """float32 tensor on the model's device; NaN, infinite and out-of-range values refused (checked in float64,
        so a finite value too large for float32 is reported as out of range)."""
        values = np.asarray(array, dtype=np.float64)
        if not np.isfinite(values).all():
            raise _invalid(f"input {name!r} holds NaN or infinite values; send finite numbers.")
        low, high = bounds
        lo, hi = float(values.min()), float(values.max())
        if lo < low - tol or hi > high + tol:
            raise _invalid(
                f"input {name!r} must lie in [{low:g}, {high:.6g}] (tolerance {tol:g}), got values in [{lo:.6g}, {hi:.6g}]; "
                f"{fix}."
            )
        return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).to(self.device)

    @staticmethod
    def _int_param(params: Mapping, name: str, default: int, low: int, high: int) -> int:
        value = params.get(name)
        if value is None:
            return default
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or not low <= value <= high:
            raise _invalid(f"params[{name!r}] must be an int in [{low}, {high}], got {value!r}.")
        return int(value)

    def _edits(self, params: Mapping) -> tuple[str, dict[int, float]]:
        k = self.config["num_prototypes"]
        operation = params.get("operation")
        operation = "set" if operation is None else operation
        if operation not in OPERATIONS:
            raise _invalid(f"params['operation'] must be one of {list(OPERATIONS)}, got {operation!r}.")
        prototypes = _as_list(params.get("prototypes"))
        values = _as_list(params.get("values"))
        if not prototypes:
            raise _invalid(
                f"mode 'edit' needs params['prototypes']: a non-empty list of prototype indices in [0, {k}), "
                "with params['values'] holding one value each, e.g. {'prototypes': [3], 'values': [2.5]}."
            )
        bad = [p for p in prototypes if isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Integral) or not 0 <= p < k]
        if bad:
            raise _invalid(f"params['prototypes'] must hold prototype indices in [0, {k}) (the model has {k}), got {bad}.")
        if len({int(p) for p in prototypes}) != len(prototypes):
            raise _invalid(f"params['prototypes'] must not repeat an index, got {list(prototypes)}.")
        if len(values) != len(prototypes):
            raise _invalid(
                f"params['values'] must hold one value per prototype: {len(prototypes)} prototype(s) {list(prototypes)} "
                f"but {len(values)} value(s) {list(values)}."
            )
        bad = [v for v in values if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real) or not math.isfinite(v)]
        if bad:
            raise _invalid(f"params['values'] must hold finite numbers, got {bad}.")
        low, high = self._activation_range()
        tol, span = ACTIVATION_TOLERANCE, high - low
        if operation == "set":
            bad = [v for v in values if not low - tol <= v <= high + tol]
            rule = f"'set' values must lie in [{low:g}, {high:.6g}], the range of activations the encoder produces"
        elif operation == "add":
            bad = [v for v in values if abs(v) > span + tol]
            rule = f"'add' values must lie in [{-span:.6g}, {span:.6g}] (larger steps always leave [{low:g}, {high:.6g}])"
        else:
            bad = [v for v in values if v < 0]
            rule = "'scale' factors must be >= 0 (a negative factor flips the activation's sign, out of the encoder's range)"
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

    The network's ``state_dict`` (unwrapped from DDP / DataParallel, moved to the CPU) and ``model_config``
    (as JSON, with the request limits filled in) are written to a temporary folder and logged as the model's
    artifacts. The model is logged as an MLflow "model from code": ``python_model`` is the path of
    :mod:`monai_patronus.tracking.model_code`, copied into the model folder, so no pickle is written (see
    "Trust boundary" in the module docstring). The model's signature
    holds a params schema (``mode``, ``num_inference_steps``, ``seed``, ``prototypes``, ``values``,
    ``operation``) and no input schema, because MLflow has no optional tensor inputs (see the module
    docstring). The expected input tensors are recorded in the metadata. The input example is a one-image
    ``encode`` request. Logging goes to the current tracking URI (``mlflow.set_tracking_uri`` or
    ``MLFLOW_TRACKING_URI``).

    Before logging, ``model_config["network"]`` is instantiated and must accept the network's
    ``state_dict`` (``strict=True``), so a config that does not rebuild this architecture fails here
    instead of at serving time.

    Args:
        network: the trained :class:`~monai_patronus.networks.PatronusUNet` (or a DDP / DataParallel wrapper).
        model_config: a dict with exactly the keys

            - ``"network"``: instantiable MONAI bundle config (``_target_`` keys, literal values only, no
              ``@``/``$``/``%`` references) that builds ``network``'s architecture;
            - ``"scheduler"``: the same for a ``monai.networks.schedulers.DDIMScheduler`` with
              ``"clip_sample": false`` (editing inverts the images);
            - ``"inferer"``: keyword arguments of :class:`~monai_patronus.inferers.PatronusInferer` other than
              the scheduler, e.g. ``{"inversion_iterations": 5}`` (may be ``{}``);
            - ``"image_shape"``: ``[C, *spatial]`` of the images the model takes;
            - ``"num_prototypes"``: ``K``;
            - ``"num_inference_steps"``: the default DDIM steps of ``generate`` and ``edit``;
            - optional request limits (defaults :data:`DEFAULT_LIMITS`): ``"max_batch_size"``, the most images
              or activation vectors per request, and ``"max_batch_steps"``, the most ``N *
              num_inference_steps`` per ``generate`` or ``edit`` request (at least ``num_inference_steps``).

            It must be JSON-serialisable. Every ``_target_`` must be in :data:`ALLOWED_TARGETS`.
        artifact_path: the logged model's name (``name=`` of ``mlflow.pyfunc.log_model``).
        registered_model_name: also register the model under this name (a new version).
        run_id: log into this existing run. ``None`` logs into the active run if there is one, or as a
            run-less MLflow 3 logged model in the current experiment. A run other than the active one is
            resumed (nested under the active run, if any), then ended with the status it had before. The
            active run and ``MLFLOW_RUN_ID`` are left as they were.
        tmp_dir: parent folder of the temporary folder holding the artifacts before upload (``None``: the
            system's).
        pip_requirements: the model's pip requirements. ``None`` pins the running ``mlflow``, ``torch``,
            ``monai``, ``numpy`` and ``monai-patronus`` versions. ``monai-patronus`` is not on PyPI, so
            serve with ``--env-manager local`` in an environment where it is installed.

    Returns:
        the ``ModelInfo`` of the logged model (``model_uri``, ``registered_model_version``, ...).

    Raises:
        TypeError / ValueError: an invalid argument, a ``model_config`` with missing, unknown or invalid
            keys, a ``_target_`` outside :data:`ALLOWED_TARGETS`, or one that does not match ``network``. The
            message names the key and the fix.
        MlflowException: MLflow could not log (e.g. ``run_id`` does not exist).
    """
    if not isinstance(network, nn.Module):
        raise TypeError(f"log_patronus_model: network must be a torch.nn.Module (a PatronusUNet), got {type(network).__name__}.")
    network = unwrap_network(network)
    if not hasattr(network, "prototype_encoder") or not hasattr(network, "num_prototypes"):
        raise TypeError(
            f"log_patronus_model: network must be a monai_patronus.networks.PatronusUNet (with a prototype_encoder), "
            f"got {type(network).__name__}."
        )
    for name, value in (("artifact_path", artifact_path), ("registered_model_name", registered_model_name),
                        ("run_id", run_id)):
        if (value is not None or name == "artifact_path") and (not isinstance(value, str) or not value):
            raise TypeError(f"log_patronus_model: {name} must be a non-empty str{'' if name == 'artifact_path' else ' or None'}, got {value!r}.")
    if pip_requirements is not None and (
        isinstance(pip_requirements, str) or not all(isinstance(r, str) and r for r in pip_requirements)
    ):
        raise TypeError(f"log_patronus_model: pip_requirements must be a list of requirement strings or None, got {pip_requirements!r}.")

    config = _check_model_config(model_config, where="model_config")
    _check_matches(network, config)
    state = {key: value.detach().cpu() for key, value in network.state_dict().items()}
    rebuilt, _ = _build(config, where="model_config")
    try:
        rebuilt.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(
            "log_patronus_model: model_config['network'] does not build the logged network's architecture "
            f"(load_state_dict failed); give the config the network was built from. {e}"
        ) from e
    del rebuilt

    with tempfile.TemporaryDirectory(prefix="patronus_pyfunc_", dir=tmp_dir) as tmp:
        config_path = Path(tmp) / "patronus_config.json"
        config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        weights_path = Path(tmp) / "patronus_weights.pt"
        torch.save(state, weights_path)
        example = np.zeros((1, *config["image_shape"]), dtype=np.float32)
        with _in_run(run_id):
            return mlflow.pyfunc.log_model(
                name=artifact_path,
                python_model=str(_MODEL_CODE),  # a model from code: no python_model.pkl
                artifacts={_CONFIG_ARTIFACT: str(config_path), _WEIGHTS_ARTIFACT: str(weights_path)},
                signature=_signature(config),
                input_example=({"image": example}, {"mode": "encode"}),
                pip_requirements=list(pip_requirements) if pip_requirements is not None else _default_pip_requirements(),
                registered_model_name=registered_model_name,
                metadata={"patronus": _metadata(config, float(network.prototype_encoder.epsilon))},
                code_paths=None,
            )


# ---------------------------------------------------------------------- helpers
def _signature(config: dict) -> ModelSignature:
    """Params-only signature: MLflow 3.17 has no optional tensor inputs (see the module docstring)."""
    return ModelSignature(
        inputs=None,
        outputs=None,
        params=ParamSchema([
            ParamSpec("mode", DataType.string, "encode"),
            ParamSpec("num_inference_steps", DataType.long, int(config["num_inference_steps"])),
            ParamSpec("seed", DataType.long, 0),
            ParamSpec("prototypes", DataType.long, [], shape=(-1,)),
            ParamSpec("values", DataType.double, [], shape=(-1,)),
            ParamSpec("operation", DataType.string, "set"),
        ]),
    )


def _metadata(config: dict, epsilon: float) -> dict:
    """What the requests carry and what they return (the input schema MLflow cannot express), and the limits."""
    def image() -> list[int]:  # a fresh list each time: shared ones become YAML anchors in MLmodel
        return [-1, *config["image_shape"]]

    k = config["num_prototypes"]
    spatial_dims = len(config["image_shape"]) - 1
    return {
        "image_shape": list(config["image_shape"]),
        "num_prototypes": k,
        "limits": {key: config[key] for key in DEFAULT_LIMITS},
        "inputs": {
            "image": {"dtype": "float32", "shape": image(), "range": list(IMAGE_RANGE), "modes": ["encode", "edit"]},
            "activations": {"dtype": "float32", "shape": [-1, k], "range": list(_activation_range(epsilon)),
                            "modes": ["generate"]},
        },
        "outputs": {
            "encode": {"activations": [-1, k], "min_distances": [-1, k], "boxes": [-1, k, spatial_dims, 2]},
            "generate": {"images": image()},
            "edit": {"images": image(), "activations": [-1, k], "original_activations": [-1, k],
                     "target_activations": [-1, k]},
        },
    }


def _default_pip_requirements() -> list[str]:
    import monai

    import monai_patronus

    def release(version: str) -> str:
        return version.split("+")[0]  # drop local labels such as +cpu / +cu130

    return [
        f"mlflow=={release(mlflow.__version__)}",
        f"torch=={release(torch.__version__)}",
        f"monai=={release(monai.__version__)}",
        f"numpy=={release(np.__version__)}",
        f"monai-patronus=={monai_patronus.__version__}",
    ]


@contextlib.contextmanager
def _in_run(run_id: str | None) -> Iterator[None]:
    """Make ``run_id`` the active run for the block, then put the run and the fluent state back."""
    active = mlflow.active_run()
    if run_id is None or (active is not None and active.info.run_id == run_id):
        yield
        return
    status = mlflow.MlflowClient().get_run(run_id).info.status  # raises MlflowException for an unknown run
    env_run_id = os.environ.get("MLFLOW_RUN_ID")
    mlflow.start_run(run_id=run_id, nested=active is not None)
    try:
        yield
    finally:
        mlflow.end_run(status=status)  # pops only this run; the active one (if any) stays active
        if env_run_id is not None:  # end_run clears it
            os.environ["MLFLOW_RUN_ID"] = env_run_id


def _check_model_config(config: object, where: str) -> dict:
    """Validated, JSON-normalised copy of a ``model_config`` (tuples become lists)."""
    if not isinstance(config, Mapping):
        raise TypeError(f"{where} must be a dict with the keys {list(CONFIG_KEYS)}, got {type(config).__name__}.")
    missing = [key for key in CONFIG_KEYS if key not in config]
    if missing:
        raise ValueError(f"{where} is missing {missing}; it needs the keys {list(CONFIG_KEYS)}, e.g. {_CONFIG_EXAMPLE}.")
    unknown = sorted(str(key) for key in config if key not in CONFIG_KEYS and key not in DEFAULT_LIMITS)
    if unknown:
        raise ValueError(
            f"{where} has unknown key(s) {unknown}; the keys are {list(CONFIG_KEYS)} and the optional limits "
            f"{list(DEFAULT_LIMITS)}."
        )
    for key in ("network", "scheduler"):
        value = config[key]
        if not isinstance(value, Mapping) or "_target_" not in value:
            raise ValueError(
                f"{where}[{key!r}] must be an instantiable MONAI bundle config (a dict with a '_target_' key), "
                f"got {value!r:.200}; e.g. {_CONFIG_EXAMPLE}."
            )
    if not isinstance(config["inferer"], Mapping):
        raise TypeError(
            f"{where}['inferer'] must be a dict of PatronusInferer keyword arguments (e.g. {{'inversion_iterations': 5}} "
            f"or {{}}), got {config['inferer']!r}."
        )
    if "scheduler" in config["inferer"]:
        raise ValueError(f"{where}['inferer'] must not hold 'scheduler'; give the scheduler's config as {where}['scheduler'].")
    for key in ("network", "scheduler", "inferer"):
        _check_targets(config[key], f"{where}[{key!r}]")  # the gate in front of ConfigParser (_build)
        _check_literal(config[key], f"{where}[{key!r}]")
    shape = config["image_shape"]
    if (
        isinstance(shape, (str, bytes)) or not isinstance(shape, (list, tuple)) or len(shape) not in (3, 4)
        or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in shape)
    ):
        raise ValueError(
            f"{where}['image_shape'] must be [C, *spatial] with 2 or 3 positive int spatial sizes (e.g. [1, 64, 64]), "
            f"got {shape!r}."
        )
    config = {**DEFAULT_LIMITS, **config}  # configs logged before the limits existed get the defaults
    for key, low in (("num_prototypes", 1), ("num_inference_steps", 2), ("max_batch_size", 1),
                     ("max_batch_steps", config["num_inference_steps"])):
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            hint = " (one image at the default num_inference_steps)" if key == "max_batch_steps" else ""
            raise ValueError(f"{where}[{key!r}] must be an int >= {low}{hint}, got {value!r}.")
    try:
        text = json.dumps(dict(config))
    except (TypeError, ValueError) as e:
        raise TypeError(f"{where} must be JSON-serialisable (dicts, lists, strings, numbers, booleans, null): {e}.") from e
    return json.loads(text)


def _check_literal(value: object, where: str) -> None:
    """Refuse ConfigParser references and expressions: the stored config must rebuild the model by itself."""
    if isinstance(value, str) and value[:1] in ("@", "$", "%"):
        raise ValueError(
            f"{where} holds {value!r}; the config must be literal (no '@' references, '$' expressions or '%' macros): "
            "write the value itself."
        )
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_literal(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_literal(item, f"{where}[{i}]")


def _check_matches(network: nn.Module, config: dict) -> None:
    """``image_shape`` and ``num_prototypes`` must describe ``network``."""
    encoder = network.prototype_encoder
    channels, *spatial = config["image_shape"]
    if channels != encoder.in_channels or len(spatial) != encoder.spatial_dims:
        raise ValueError(
            f"model_config['image_shape'] is {config['image_shape']} but the network takes {encoder.in_channels} "
            f"channel(s) and {encoder.spatial_dims} spatial dims; give [{encoder.in_channels}, *spatial]."
        )
    if config["num_prototypes"] != network.num_prototypes:
        raise ValueError(
            f"model_config['num_prototypes'] is {config['num_prototypes']} but the network has "
            f"{network.num_prototypes} prototypes."
        )
    try:
        encoder.receptive_field.output_shape(spatial)
    except ValueError as e:
        raise ValueError(f"model_config['image_shape'] {config['image_shape']} does not fit the encoder: {e}") from e


_TARGET = "_target_"
#: ConfigParser directives that are allowed, and the only value each may have (``_desc_``: any free text).
_SAFE_DIRECTIVES = {"_mode_": "default", "_disabled_": False}


def _check_targets(value: object, where: str) -> None:
    """Refuse every ``_target_`` outside :data:`ALLOWED_TARGETS` and every ConfigParser directive that could run
    code (``_requires_``, ``_mode_`` other than ``"default"``, ``_disabled_`` other than ``false``, ``_debug_``,
    any other ``_name_`` key), at any depth of ``value``; ``where`` names the key path in the message."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            path = f"{where}[{key!r}]"
            if key == _TARGET:
                if not isinstance(item, str) or item not in ALLOWED_TARGETS:
                    raise ValueError(
                        f"{path} is {item!r}, which a stored model config may not instantiate; the allowed "
                        f"'_target_' values are {sorted(ALLOWED_TARGETS)}. A config naming anything else is refused "
                        "because loading it would run that code: rebuild the model from a config that uses them only."
                    )
            elif key == "_desc_":
                if not isinstance(item, str):
                    raise ValueError(f"{path} must be free text (a str), got {item!r}.")
            elif key in _SAFE_DIRECTIVES:
                allowed = _SAFE_DIRECTIVES[key]
                if item is not allowed and not (isinstance(item, str) and item == allowed):
                    raise ValueError(
                        f"{path} is {item!r}; a stored model config may only hold {key!r}: {json.dumps(allowed)} "
                        "(other values change how ConfigParser runs the target); remove the key."
                    )
            elif isinstance(key, str) and len(key) > 2 and key.startswith("_") and key.endswith("_"):
                raise ValueError(
                    f"{path} is a ConfigParser directive ({key!r}), which a stored model config may not hold (it "
                    "could run code or change what is built); the allowed ones are '_target_' (an allowed class), "
                    "'_desc_', '_mode_': 'default' and '_disabled_': false. Remove the key."
                )
            _check_targets(item, path)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_targets(item, f"{where}[{i}]")


def _build(config: dict, where: str) -> tuple[nn.Module, PatronusInferer]:
    """Instantiate the network (random weights) and the inferer (with its scheduler) from a checked config.

    ``config`` must come from :func:`_check_model_config`, whose :func:`_check_targets` and :func:`_check_literal`
    make sure ConfigParser never sees a ``_target_`` outside :data:`ALLOWED_TARGETS`, a directive that could run
    code, or a reference, expression or macro (both callers check, then build).
    """
    from monai.bundle import ConfigParser

    try:
        network = ConfigParser(copy.deepcopy(config["network"])).get_parsed_content()
    except Exception as e:  # any failure: re-raised naming the config key
        raise ValueError(f"{where}['network'] could not be instantiated with monai.bundle.ConfigParser: {e}") from e
    if not isinstance(network, nn.Module) or not hasattr(network, "prototype_encoder"):
        raise TypeError(
            f"{where}['network'] must build a monai_patronus.networks.PatronusUNet, got {type(network).__name__}."
        )
    try:
        scheduler = ConfigParser(copy.deepcopy(config["scheduler"])).get_parsed_content()
    except Exception as e:  # any failure: re-raised naming the config key
        raise ValueError(f"{where}['scheduler'] could not be instantiated with monai.bundle.ConfigParser: {e}") from e
    if not hasattr(scheduler, "reversed_step"):
        raise ValueError(
            f"{where}['scheduler'] must build a DDIM scheduler (editing inverts images), got {type(scheduler).__name__}; "
            "use {'_target_': 'monai.networks.schedulers.DDIMScheduler', 'clip_sample': false, ...}."
        )
    if getattr(scheduler, "clip_sample", False):
        raise ValueError(f"{where}['scheduler'] must set 'clip_sample': false (clipping makes DDIM inversion inexact).")
    steps, total = config["num_inference_steps"], int(scheduler.num_train_timesteps)
    if steps > total:
        raise ValueError(f"{where}['num_inference_steps'] must be <= the scheduler's num_train_timesteps ({total}), got {steps}.")
    try:
        inferer = PatronusInferer(scheduler, **config["inferer"])
    except TypeError as e:
        raise ValueError(f"{where}['inferer'] holds an argument PatronusInferer does not take: {e}") from e
    return network, inferer


def _as_list(value: object) -> list:
    if value is None:
        return []
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _check_finite(mode: str, result: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Refuse to return an output holding NaN or infinite values: an error (HTTP 500), never a 200."""
    bad = [name for name, array in result.items() if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all()]
    if bad:
        raise MlflowException(
            f"mode {mode!r}: the model produced NaN or infinite values in output(s) {bad} for in-range inputs, so no "
            "result is returned. The model's weights may have diverged (check its training loss and checkpoint) or "
            "it is unstable at these settings: try fewer or more params['num_inference_steps'], or report the request "
            "to the model's owner.",
            error_code=INTERNAL_ERROR,
        )
    return result


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().float().cpu().numpy()
