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
    "CANDIDATE",
    "CHAMPION",
    "download_run_artifact",
    "load_patronus",
    "model_version",
    "register_candidate",
    "tracking_uri_scope",
]

CANDIDATE = "candidate"
CHAMPION = "champion"


@contextmanager
def tracking_uri_scope(uri: str | None) -> Iterator[None]:
    """Use ``uri`` as MLflow's tracking URI inside the block, then leave ``$MLFLOW_TRACKING_URI`` as it was and
    MLflow following it (``mlflow.set_tracking_uri`` also writes the variable, which would otherwise stay set).
    ``None`` changes nothing."""
    if uri is None:
        yield
        return
    saved_env = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)  # unsets the module's URI and the variable
        if saved_env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved_env


def model_version(name: str, alias_or_version: str | int, tracking_uri: str | None = None):
    """``(client, ModelVersion)`` of registered model ``name`` at an alias or a version number.

    Raises:
        ValueError: the model, alias or version does not exist (naming what does).
    """
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    try:
        registered = client.get_registered_model(name)
    except MlflowException as err:
        raise ValueError(f"model_version: no registered model {name!r} in {client.tracking_uri}.") from err
    try:
        if str(alias_or_version).isdigit():
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

    ``model`` is a loaded :class:`~monai_patronus.tracking.pyfunc.PatronusModel` (``model.network``,
    ``model.inferer``, ``model.config``). Nothing from the store runs: the model folder is downloaded and built
    by :meth:`~monai_patronus.tracking.pyfunc.PatronusModel.from_model_dir` (allowlisted ``_target_``s,
    ``weights_only`` weights); unlike ``mlflow.pyfunc.load_model``, the stored code file is not imported.

    Raises:
        ValueError: no such model, alias or version, or the stored model is not a Patronus model or is refused.
    """
    from monai_patronus.tracking.pyfunc import PatronusModel

    _, mv = model_version(name, alias_or_version, tracking_uri)
    with tracking_uri_scope(tracking_uri), tempfile.TemporaryDirectory(prefix="patronus_model_") as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{mv.version}", dst_path=tmp)
        return PatronusModel.from_model_dir(local), mv
