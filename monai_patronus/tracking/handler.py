"""MLflow tracking of a Patronus training run, on MONAI's :class:`monai.handlers.MLFlowHandler`.

MONAI's handler logs losses, learning rates and ``engine.state.metrics``; this one adds what a Patronus run
must leave behind: the merged bundle config, the dataset fingerprint, package version and git commit,
sample grids, every prototype's provenance under pseudonymous image ids, and the trained model as an MLflow
``pyfunc`` model registered under a name with the ``candidate`` alias.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import mlflow
import monai
import torch
from ignite.engine import Engine, Events
from monai.handlers import MLFlowHandler
from monai.utils import flatten_dict

import monai_patronus
from monai_patronus.handlers.utils import is_main_process, unwrap_network
from monai_patronus.tracking.config import bundle_config_record, find_bundle_parser, literal_config
from monai_patronus.tracking.fingerprint import dataset_fingerprint
from monai_patronus.tracking.privacy import Pseudonymizer, pseudonymizer_for, redact_config, redact_uri
from monai_patronus.tracking.provenance import PROVENANCE_ARTIFACT, prototype_provenance
from monai_patronus.tracking.registry import CANDIDATE, register_candidate, tracking_uri_scope

__all__ = ["PatronusTrackingHandler", "check_tracking_uri", "default_tracking_uri", "git_commit", "register_weights"]

logger = logging.getLogger("monai_patronus.tracking")

_QUIET_URLS = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"

#: the run tag that finds the unfinished run of an output folder on ``--resume`` (a keyed pseudonym, not the path)
OUTPUT_TAG = "patronus.output_id"


def default_tracking_uri(output_dir: str | os.PathLike, tracking_uri: str | None = None) -> str:
    """``tracking_uri`` if given, else ``$MLFLOW_TRACKING_URI``, else a SQLite store ``<output_dir>/mlflow.db``.

    An explicit ``tracking_uri`` (a bundle override) wins over the environment variable.
    """
    if tracking_uri:
        return tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return "sqlite:///" + str(Path(output_dir).resolve() / "mlflow.db")


def check_tracking_uri(uri: str, timeout: float = 10.0) -> None:
    """Fail now, naming ``uri``, if the tracking store cannot be reached: before training, not after it.

    ``http(s)`` servers must accept a connection and answer ``/health``; a SQLite store's folder must be
    writable; any store must answer a query for experiments.

    Messages show the URI without credentials (:func:`~monai_patronus.tracking.privacy.redact_uri`).

    Raises:
        ValueError: a file-store URI (MLflow refuses it) or an unreachable store.
    """
    if not isinstance(uri, str) or not uri:
        raise TypeError(f"check_tracking_uri: uri must be a non-empty str, got {redact_uri(uri)!r}.")
    shown = redact_uri(uri)
    fix = "start the server or point --tracking_uri / MLFLOW_TRACKING_URI at a reachable store (or disable tracking with --tracking_enabled false)"
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme in ("", "file"):
        raise ValueError(
            f"MLflow tracking URI {shown!r} is a plain folder (file store), which MLflow no longer supports; use "
            "sqlite:///<folder>/mlflow.db or an http(s) server."
        )
    if parsed.scheme in ("http", "https"):
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        # urllib takes no credentials in the URL: ask /health at the bare address, credentials as a header
        netloc = parsed.netloc.rsplit("@", 1)[-1]
        health = urllib.request.Request(urllib.parse.urlunsplit((parsed.scheme, netloc, parsed.path.rstrip("/") + "/health", "", "")))
        if parsed.username is not None:
            token = base64.b64encode(f"{urllib.parse.unquote(parsed.username)}:{urllib.parse.unquote(parsed.password or '')}".encode())
            health.add_header("Authorization", "Basic " + token.decode())
        try:
            socket.create_connection((parsed.hostname, port), timeout=timeout).close()
            with urllib.request.urlopen(health, timeout=timeout) as response:
                if response.status != 200:
                    raise OSError(f"/health answered HTTP {response.status}")
        except (OSError, urllib.error.URLError) as err:
            raise ValueError(f"MLflow tracking server {shown} is unreachable ({_hide(err, uri)}); {fix}.") from None
    if parsed.scheme == "sqlite":
        folder = Path(uri[len("sqlite:///"):]).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=folder).close()
        except OSError as err:
            raise ValueError(f"MLflow tracking store {shown} cannot be written ({err}); {fix}.") from err
    try:
        mlflow.MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as err:  # any failure of the store means no record: stop before training
        raise ValueError(
            f"MLflow tracking store {shown} does not answer ({type(err).__name__}: {_hide(err, uri)}); {fix}."
        ) from None


def _hide(err: BaseException, uri: str) -> str:
    """An exception's text with ``uri`` (and its credentials) replaced by the redacted URI."""
    return str(err).replace(uri, redact_uri(uri))


def git_commit(path: str | os.PathLike | None = None) -> str:
    """The git commit of the code at ``path`` (default: this package), ``+dirty`` if modified; ``"unknown"``
    outside a git checkout (an installed wheel)."""
    where = str(path or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where, capture_output=True, text=True, timeout=10)
        return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _loss_terms(output: object) -> dict[str, float] | None:
    if isinstance(output, Mapping):
        return {k: float(torch.as_tensor(output[k]).detach()) for k in ("loss", "distinct_loss") if k in output}
    if isinstance(output, Sequence) and output and isinstance(output[0], Mapping):
        return _loss_terms(output[0])
    return None


class PatronusTrackingHandler(MLFlowHandler):
    """Track a Patronus training run in MLflow; attach it to MONAI's trainer like any handler.

    At start: a new run with the merged bundle config (``config/bundle_config.json``) and its plain values as
    params, versions and the git commit as tags, the dataset fingerprint (``data/fingerprint.json`` and
    ``data.*`` tags). Every iteration: the loss terms and learning rate; every epoch: ``engine.state.metrics``
    (e.g. the reconstruction PSNR) and new sample grids. At the end, after the checkpoint is on disk: the
    provenance of every prototype (``provenance/final/``: JSON table and gallery, pseudonymous ids), the
    ``pyfunc`` model (``model``), registered as a new version of ``registered_model_name`` with the
    ``candidate`` alias. The run's location is printed and written to ``<output_dir>/mlflow_run.json``.

    Only rank 0 tracks when distributed.

    Args:
        output_dir: the bundle's output folder (SQLite store, key file and ``mlflow_run.json`` go there).
        network: the network being trained.
        tracking_uri: the store; default ``$MLFLOW_TRACKING_URI`` or ``sqlite:///<output_dir>/mlflow.db``.
            It is checked when the handler is built, so an unreachable server stops the run before training.
        experiment_name, run_name: MLflow experiment and run names (default run name: time stamp).
        registered_model_name: the registry name; ``None`` logs the model without registering it.
        datalist: the training datalist (or the dataset folder) to fingerprint; ``None`` logs no fingerprint.
        provenance_data: batches of the training data in fixed order (no shuffling) with ``image`` and ``id``.
        provenance_top_k: nearest training patches kept per prototype.
        provenance_interval: also log provenance every this many epochs (``provenance/epoch_NNNN/``).
        grid_dir: folder of the sample grids to log as they appear.
        example_images: a few training images ``(N, C, *spatial)``: the model's input shape and example.
        model_config: self-contained configs to rebuild the network (see ``log_patronus_model``); in a bundle
            it is made from the ids ``network_def``, ``noise_scheduler`` and ``inferer``.
        num_inference_steps: the served model's default DDIM steps.
        pseudonym_key: key of the image-id pseudonyms; default ``$PATRONUS_PSEUDONYM_KEY`` or
            ``<output_dir>/pseudonym.key`` (created; never logged).
        config: the configuration to log; in a bundle run, the bundle's merged config is found by itself.
        iteration_log: log the loss every iteration (or a filter ``(engine, iteration) -> bool``).
        resume: continue the latest unfinished run (killed or failed) of this experiment and output folder,
            as ``--resume true`` continues training from its checkpoint; a new run when there is none.
            Params are immutable in MLflow, so values that changed go to the ``patronus.resumed_params`` tag.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        network: torch.nn.Module,
        tracking_uri: str | None = None,
        experiment_name: str = "patronus",
        run_name: str | None = None,
        registered_model_name: str | None = None,
        datalist: Sequence[Mapping] | str | os.PathLike | None = None,
        provenance_data: Iterable | None = None,
        provenance_top_k: int = 5,
        provenance_interval: int | None = None,
        grid_dir: str | os.PathLike | None = None,
        example_images: torch.Tensor | None = None,
        model_config: dict | None = None,
        num_inference_steps: int = 50,
        pseudonym_key: bytes | str | None = None,
        config: dict | None = None,
        iteration_log: bool | object = True,
        resume: bool = False,
    ) -> None:
        self.active = is_main_process()
        self.resume = bool(resume)
        self.output_dir = Path(output_dir)
        self.tracking_uri = default_tracking_uri(self.output_dir, tracking_uri)
        if not self.active:
            return
        if not isinstance(network, torch.nn.Module):
            raise TypeError(f"PatronusTrackingHandler: network must be a torch module, got {type(network).__name__}.")
        for name, value in (("provenance_top_k", provenance_top_k), ("num_inference_steps", num_inference_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"PatronusTrackingHandler: {name} must be an int >= 1, got {value!r}.")
        if provenance_interval is not None and (isinstance(provenance_interval, bool) or not isinstance(provenance_interval, int) or provenance_interval < 1):
            raise ValueError(f"PatronusTrackingHandler: provenance_interval must be None or an int >= 1, got {provenance_interval!r}.")
        if example_images is not None and (not isinstance(example_images, torch.Tensor) or example_images.ndim not in (4, 5)):
            raise ValueError("PatronusTrackingHandler: example_images must be a (N, C, *spatial) tensor of training images.")
        if os.environ.get("MLFLOW_TRACKING_URI") and tracking_uri and tracking_uri != os.environ["MLFLOW_TRACKING_URI"]:
            logger.warning(
                "tracking_uri %s overrides MLFLOW_TRACKING_URI=%s", redact_uri(tracking_uri), redact_uri(os.environ["MLFLOW_TRACKING_URI"])
            )
        check_tracking_uri(self.tracking_uri)
        parser = find_bundle_parser()
        record = bundle_config_record(parser) if parser is not None else (config or {}, {})
        # what leaves the machine: no file paths (PACS folders are patient ids), no credentials, no keys
        self.config_record = (redact_config(record[0]), redact_config(record[1]))
        if model_config is None and parser is not None:
            model_config = {
                "network": literal_config(parser, "network_def"),
                "scheduler": literal_config(parser, "noise_scheduler"),
                "inferer": literal_config(parser, "inferer", exclude=("_target_", "scheduler")),
            }
        self.network = network
        self.model_config = model_config
        self.registered_model_name = registered_model_name
        self.datalist = datalist
        self.provenance_data = provenance_data
        self.provenance_top_k = provenance_top_k
        self.provenance_interval = provenance_interval
        self.grid_dir = Path(grid_dir) if grid_dir is not None else None
        self.example_images = example_images
        self.num_inference_steps = num_inference_steps
        self.pseudonymize: Pseudonymizer = pseudonymizer_for(self.output_dir, pseudonym_key)
        self.fingerprint: dict | None = None
        self._logged_grids: set[str] = set()
        self.model_version = None
        # metrics the store has not taken yet (an outage), and how many of them are already in the local copy
        self._pending: list[mlflow.entities.Metric] = []
        self._spooled = 0
        self._outage: str | None = None
        self.offline_metrics_file = self.output_dir / "mlflow_offline_metrics.jsonl"
        # MONAI's handler: losses and lr per iteration, engine.state.metrics per epoch, this store
        env_uri = os.environ.pop("MLFLOW_TRACKING_URI", None)  # our resolution of the URI above is final
        try:
            super().__init__(
                tracking_uri=self.tracking_uri,
                iteration_log=iteration_log,
                output_transform=_loss_terms,
                experiment_name=experiment_name,
                run_name=run_name or f"{experiment_name}-{time.strftime('%Y%m%d-%H%M%S')}",
                close_on_complete=False,
            )
        finally:
            if env_uri is not None:
                os.environ["MLFLOW_TRACKING_URI"] = env_uri

    # ------------------------------------------------------------------------------------------ events
    def attach(self, engine: Engine) -> None:
        if not self.active:
            return
        super().attach(engine)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_artifacts)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._failed)

    def start(self, engine: Engine) -> None:
        if self.cur_run is not None:  # resumed engine.run() in the same process: same run
            return
        self._set_experiment()
        previous = self._unfinished_run() if self.resume else None
        if previous is not None:  # --resume: the same record continues, as the training does
            self.cur_run = previous
            self.client.update_run(previous.info.run_id, status="RUNNING")
            self.client.set_tag(previous.info.run_id, "patronus.resumed_at_epoch", str(engine.state.epoch))
            logger.info("resume: continuing MLflow run %s", previous.info.run_id)
        else:
            self.cur_run = self.client.create_run(self.experiment.experiment_id, run_name=self.run_name)
        super().start(engine)
        run_id = self.cur_run.info.run_id
        config, resolved = self.config_record
        params = {k: v for k, v in resolved.items() if not isinstance(v, list) or len(str(v)) < 500}
        logged = self.client.get_run(run_id).data.params
        changed = {k: v for k, v in params.items() if k in logged and logged[k] != str(json.dumps(v) if isinstance(v, list) else v)}
        if changed:  # MLflow params are immutable: a resumed run's new values (e.g. max_epochs) become a tag
            self.client.set_tag(run_id, "patronus.resumed_params", json.dumps(changed))
        self._delete_exist_param_in_dict(params)  # e.g. epoch_length, as the engine ran it
        self._log_params({k: json.dumps(v) if isinstance(v, list) else v for k, v in params.items()})
        if self.datalist is not None:
            self.fingerprint = dataset_fingerprint(self.datalist)
        tags = {
            OUTPUT_TAG: self._output_id(),
            "patronus.version": monai_patronus.__version__,
            "mlflow.source.git.commit": git_commit(),
            "torch.version": torch.__version__,
            "monai.version": monai.__version__,
            **self._model_tags(),
        }
        for key, value in tags.items():
            self.client.set_tag(run_id, key, str(value))
        self.client.log_dict(run_id, config, "config/bundle_config.json")
        self.client.log_dict(run_id, resolved, "config/resolved_values.json")
        if self.fingerprint is not None:
            self.client.log_dict(run_id, self.fingerprint, "data/fingerprint.json")
        self._write_run_file()

    def _output_id(self) -> str:
        """A keyed pseudonym of the output folder: finds a resumed run's record without logging the folder's path."""
        return self.pseudonymize(str(self.output_dir.resolve()), prefix="out-")

    def _unfinished_run(self):
        """The latest run of this experiment and output folder that did not finish (killed or failed)."""
        runs = self.client.search_runs(
            [self.experiment.experiment_id],
            filter_string=f"tags.`{OUTPUT_TAG}` = '{self._output_id()}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return runs[0] if runs and runs[0].info.status != "FINISHED" else None

    def _epoch_artifacts(self, engine: Engine) -> None:
        try:  # grids not logged now are logged at a later epoch or at the end; provenance is logged at the end
            self._log_new_grids()
            if self.provenance_interval and engine.state.epoch % self.provenance_interval == 0:
                self.log_provenance(f"provenance/epoch_{engine.state.epoch:04d}")
        except Exception as err:  # the store is down: training goes on
            self._store_down(err)

    @property
    def _credentials_in_uri(self) -> bool:
        return redact_uri(self.tracking_uri) != self.tracking_uri

    @contextlib.contextmanager
    def _no_run_url_print(self) -> Iterator[None]:
        """MLflow prints "View run ... at: <tracking URI>" to stdout whenever a run ends; with credentials in the
        URI that line would carry them, so it is switched off meanwhile (the summary shows the redacted URI)."""
        if not self._credentials_in_uri:
            yield
            return
        saved = os.environ.get(_QUIET_URLS)
        os.environ[_QUIET_URLS] = "true"
        try:
            yield
        finally:
            if saved is None:
                os.environ.pop(_QUIET_URLS, None)
            else:
                os.environ[_QUIET_URLS] = saved

    def complete(self) -> None:
        """After the last epoch (the checkpoint is already saved): grids, provenance, model, registry."""
        with self._no_run_url_print():
            self._complete()
        self._write_run_file()
        self._print_summary()

    def _complete(self) -> None:
        super().complete()
        try:
            if not self._flush_metrics():
                raise RuntimeError(
                    f"the store still does not answer ({self._outage}); the {len(self._pending)} metric values it has "
                    f"not taken are in {self.offline_metrics_file}"
                )
            self._log_new_grids()
            if self.provenance_data is not None:
                self.log_provenance(PROVENANCE_ARTIFACT)
            if self.model_config is not None:
                self.log_model()
            self.client.set_terminated(self.cur_run.info.run_id, "FINISHED")
        except Exception as err:
            if self.cur_run is not None:
                try:
                    self.client.set_terminated(self.cur_run.info.run_id, "FAILED")
                except Exception:  # the store itself is gone; the error below says what to do
                    pass
            raise RuntimeError(
                f"MLflow logging at the end of training failed ({type(err).__name__}: {_hide(err, self.tracking_uri)}). "
                f"The trained weights are safe in the checkpoints under {self.output_dir}; the run is {self._where()}."
            ) from (None if self._credentials_in_uri else err)  # the cause's text may hold the credentials

    def _failed(self, engine: Engine, err: Exception) -> None:
        if self.cur_run is not None:
            try:
                with self._no_run_url_print():
                    self._flush_metrics()
                    self.client.set_terminated(self.cur_run.info.run_id, "FAILED")
            except Exception:  # the store is down too: the training error below is the one to report
                logger.warning("could not mark MLflow run %s as FAILED; the store does not answer", self.cur_run.info.run_id)
        raise err

    # ------------------------------------------------------------------------------------ store outages
    def _log_metrics(self, metrics: dict, step: int | None = None) -> None:
        """MONAI's handler logs every iteration's and epoch's metrics through here. If the store does not answer,
        training goes on: the failure is logged once, the values are kept (in memory and appended to
        :attr:`offline_metrics_file`) and sent with the next values once the store answers again."""
        timestamp = int(time.time() * 1000)
        self._pending += [mlflow.entities.Metric(k, float(v), timestamp, step or 0) for k, v in flatten_dict(metrics).items()]
        self._flush_metrics()

    def _flush_metrics(self) -> bool:
        """Send the kept metric values; ``True`` when the store has taken all of them."""
        while self._pending:
            batch = self._pending[:1000]  # MLflow's log_batch limit
            try:
                self.client.log_batch(run_id=self.cur_run.info.run_id, metrics=batch, params=[], tags=[])
            except Exception as err:
                self._store_down(err)
                self._spool()
                return False
            del self._pending[: len(batch)]
            self._spooled = max(0, self._spooled - len(batch))
        if self._outage is not None:
            logger.warning("MLflow store answers again: the metric values kept during the outage are logged")
            self._outage = None
            self.offline_metrics_file.unlink(missing_ok=True)
        return True

    def _store_down(self, err: Exception) -> None:
        if self._outage is None:  # once per outage, not once per iteration
            self._outage = f"{type(err).__name__}: {_hide(err, self.tracking_uri)}"
            logger.warning(
                "MLflow store %s failed (%s); training goes on, metrics are kept in %s and logged when the store "
                "answers again", redact_uri(self.tracking_uri), self._outage, self.offline_metrics_file,
            )

    def _spool(self) -> None:
        """Append the kept values not yet in the local copy to :attr:`offline_metrics_file` (one JSON per line)."""
        new = self._pending[self._spooled:]
        if not new:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.offline_metrics_file, "a", encoding="utf-8") as f:
            for m in new:
                f.write(json.dumps({"key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step}) + "\n")
        self._spooled = len(self._pending)

    # ----------------------------------------------------------------------------------------- logging
    def _log_new_grids(self) -> None:
        if self.grid_dir is None or not self.grid_dir.is_dir():
            return
        for png in sorted(self.grid_dir.glob("*.png")):
            if png.name not in self._logged_grids:
                self.client.log_artifact(self.cur_run.info.run_id, str(png), artifact_path="grids")
                self._logged_grids.add(png.name)

    def log_provenance(self, artifact_path: str = PROVENANCE_ARTIFACT) -> None:
        """Find, draw and log every prototype's nearest training patches under ``artifact_path``."""
        with tempfile.TemporaryDirectory() as tmp:
            prototype_provenance(
                self.network, self.provenance_data, tmp, self.pseudonymize, self.provenance_top_k, fingerprint=self.fingerprint
            )
            self.client.log_artifacts(self.cur_run.info.run_id, tmp, artifact_path)

    def log_model(self):
        """Log the network as a ``pyfunc`` model and register it (``candidate``); returns the model version."""
        from monai_patronus.tracking.pyfunc import log_patronus_model

        net = unwrap_network(self.network)
        config = dict(self.model_config)
        if self.example_images is not None:
            config.setdefault("image_shape", list(self.example_images.shape[1:]))
        config.setdefault("num_prototypes", net.prototype_encoder.num_prototypes)
        config.setdefault("num_inference_steps", self.num_inference_steps)
        with tracking_uri_scope(self.tracking_uri):
            info = log_patronus_model(net, config, artifact_path="model", run_id=self.cur_run.info.run_id)
        if self.registered_model_name:
            tags = {**self._model_tags(), "review.status": "pending"}
            self.model_version = register_candidate(self.client, info.model_uri, self.registered_model_name, tags)
        return self.model_version

    def _model_tags(self) -> dict:
        """What the run and its registered version both carry: prototype count, pseudonym key id, data fingerprint."""
        return {
            "patronus.num_prototypes": unwrap_network(self.network).prototype_encoder.num_prototypes,
            "pseudonym_key_id": self.pseudonymize.key_id,
            **{f"data.{k}": v for k, v in (self.fingerprint or {}).items()},
        }

    # ----------------------------------------------------------------------------------------- report
    def _where(self) -> str:
        run = self.cur_run.info.run_id if self.cur_run is not None else "(not started)"
        return f"run {run} in experiment {self.experiment_name!r} at {redact_uri(self.tracking_uri)}"

    def _write_run_file(self) -> None:
        record = {
            "tracking_uri": redact_uri(self.tracking_uri),  # credentials come from MLflow's env vars
            "experiment_name": self.experiment_name,
            "run_id": self.cur_run.info.run_id,
            "registered_model_name": self.registered_model_name,
            "model_version": self.model_version.version if self.model_version is not None else None,
            "alias": CANDIDATE if self.model_version is not None else None,
        }
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "mlflow_run.json").write_text(json.dumps(record, indent=1))

    def _print_summary(self) -> None:
        lines = [f"MLflow: {self._where()}", f"  browse: mlflow ui --backend-store-uri {redact_uri(self.tracking_uri)}"]
        if self.model_version is not None:
            name = self.registered_model_name
            lines += [
                f"Registered model: models:/{name}@{CANDIDATE} (version {self.model_version.version})",
                "Review its prototypes in notebooks/prototype_review.ipynb: `make review` in a checkout (installs "
                "Jupyter into .venv and opens it), or `pip install 'monai-patronus[notebooks]'` and "
                "`jupyter notebook notebooks/prototype_review.ipynb`; set the parameters "
                f"tracking_uri={redact_uri(self.tracking_uri)!r}, model_name={name!r}, alias={CANDIDATE!r}",
            ]
        for line in lines:
            logger.info(line)
        print("\n".join(lines), flush=True)



def register_weights(handler: PatronusTrackingHandler, source: str = "a weights file"):
    """Record and register ``handler.network`` as it is, without training (e.g. a bundle's shipped pretrained
    model, loaded from its weights file): the record a training run ends with (config, data fingerprint,
    prototype provenance, ``pyfunc`` model, a registered version with the ``candidate`` alias), in a run
    tagged ``patronus.trained_here = false`` and ``patronus.weights_source = source``, so the review notebook
    and the registry work with it as with a trained model.

    Returns:
        the registered model version (``None`` when ``handler`` has no ``registered_model_name``, or is
        inactive on a non-main process).
    """
    if not isinstance(handler, PatronusTrackingHandler):
        raise TypeError(f"register_weights: handler must be a PatronusTrackingHandler, got {type(handler).__name__}.")
    if not handler.active:
        return None
    engine = Engine(lambda engine, batch: None)  # never run: it only carries the (empty) state start() reads
    handler.start(engine)
    run_id = handler.cur_run.info.run_id
    handler.client.set_tag(run_id, "patronus.trained_here", "false")
    handler.client.set_tag(run_id, "patronus.weights_source", str(source))
    handler.complete()
    return handler.model_version
