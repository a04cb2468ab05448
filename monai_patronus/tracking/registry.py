"""The MLflow model registry for Patronus: candidate after training, champion after an approved review."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

__all__ = [
    "CANDIDATE", "CHAMPION", "download_run_artifact", "load_patronus", "model_version", "register_candidate", "tracking_uri_scope",
]

CANDIDATE = "candidate"
CHAMPION = "champion"


@contextmanager
def tracking_uri_scope(uri: str | None) -> Iterator[None]:
    """Use ``uri`` as MLflow's tracking URI inside the block and restore exactly what was there before.

    ``mlflow.set_tracking_uri`` also writes ``$MLFLOW_TRACKING_URI`` (for subprocesses), so setting the previous
    URI back would leave the variable set, and every later run in the process would follow it. This restores
    both the module's URI and the environment variable (set, or unset). ``None`` changes nothing.
    """
    if uri is None:
        yield
        return
    from mlflow.tracking._tracking_service import utils

    saved_uri, saved_env = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved_uri)
        if saved_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved_env


def _client(tracking_uri: str | None) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri=tracking_uri)


def model_version(name: str, alias_or_version: str | int, tracking_uri: str | None = None):
    """``(client, ModelVersion)`` of registered model ``name`` at an alias or a version number.

    Raises:
        TypeError: a name that is not a string.
        ValueError: the model, alias or version does not exist (naming what does).
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"model_version: name must be a registered model's name (a non-empty str), got {name!r}.")
    client = _client(tracking_uri)
    try:
        registered = client.get_registered_model(name)
    except MlflowException as err:
        raise ValueError(f"model_version: no registered model {name!r} in {client.tracking_uri}.") from err
    try:
        if isinstance(alias_or_version, int) or (isinstance(alias_or_version, str) and alias_or_version.isdigit()):
            return client, client.get_model_version(name, str(alias_or_version))
        return client, client.get_model_version_by_alias(name, alias_or_version)
    except MlflowException as err:
        raise ValueError(
            f"model_version: model {name!r} has no version or alias {alias_or_version!r}; its aliases are "
            f"{sorted(registered.aliases)}."
        ) from err


def register_candidate(client: mlflow.MlflowClient, model_uri: str, name: str, tags: dict | None = None):
    """Register a logged model (``ModelInfo.model_uri``) as a new version of ``name``, tagged, and point the
    ``candidate`` alias at it. Returns the new ``ModelVersion``."""
    with tracking_uri_scope(client.tracking_uri):
        mv = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in (tags or {}).items()})
    client.set_registered_model_alias(name, CANDIDATE, mv.version)
    return client.get_model_version(name, mv.version)


def download_run_artifact(client: mlflow.MlflowClient, run_id: str, artifact: str) -> Path:
    """Download one artifact of a run into a fresh temporary folder; returns its local path.

    Raises:
        ValueError: the run has no such artifact.
    """
    try:
        return Path(client.download_artifacts(run_id, artifact, tempfile.mkdtemp(prefix="patronus_")))
    except (MlflowException, OSError) as err:
        raise ValueError(f"run {run_id} has no artifact {artifact!r}; was it trained with tracking on?") from err


def load_patronus(name: str, alias_or_version: str | int = CHAMPION, tracking_uri: str | None = None):
    """Load a registered Patronus model for Python use (reviews, notebooks): ``(model, ModelVersion)``.

    ``model`` is a loaded :class:`~monai_patronus.tracking.pyfunc.PatronusModel`: ``model.network`` and
    ``model.inferer`` work with every ``monai_patronus.interpret`` function, and ``model.config`` holds the
    logged model config (``image_shape``, ``num_prototypes``, ...).

    Nothing stored in the MLflow store is executed: the model folder is downloaded, and the model is built
    from its ``model_config`` JSON (every ``_target_`` checked against
    :data:`~monai_patronus.tracking.pyfunc.ALLOWED_TARGETS`) and its weights (``torch.load(weights_only=True)``)
    by :meth:`~monai_patronus.tracking.pyfunc.PatronusModel.from_model_dir`. Unlike
    ``mlflow.pyfunc.load_model``, the model's code file (or the ``python_model.pkl`` of older versions) is
    neither imported nor unpickled.

    Raises:
        TypeError / ValueError: no such model, alias or version; or the stored model is not a Patronus model,
            or its config or weights are invalid or refused (the message names the key and the value).
    """
    from monai_patronus.tracking.pyfunc import PatronusModel

    _, mv = model_version(name, alias_or_version, tracking_uri)
    with tracking_uri_scope(tracking_uri), tempfile.TemporaryDirectory(prefix="patronus_model_") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{mv.version}", dst_path=tmp)
        except (MlflowException, OSError) as err:
            raise ValueError(
                f"load_patronus: the files of model {name!r} version {mv.version} could not be downloaded: {err}"
            ) from err
        model = PatronusModel.from_model_dir(local, where=f"model {name!r} version {mv.version}")
    return model, mv
