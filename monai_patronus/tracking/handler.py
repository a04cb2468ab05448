"""MLflow tracking of a Patronus training run, on MONAI's :class:`monai.handlers.MLFlowHandler`."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import mlflow
import monai
import torch
from ignite.engine import Engine, Events
from mlflow.utils.git_utils import get_git_commit
from monai.handlers import MLFlowHandler
from monai.utils import flatten_dict

import monai_patronus
from monai_patronus.bundle import loss_terms
from monai_patronus.handlers.utils import is_main_process, unwrap_network
from monai_patronus.tracking.config import bundle_config_record, find_bundle_parser, literal_config
from monai_patronus.tracking.fingerprint import dataset_fingerprint
from monai_patronus.tracking.privacy import Pseudonymizer, pseudonymizer_for, redact_config, redact_uri
from monai_patronus.tracking.provenance import PROVENANCE_ARTIFACT, prototype_provenance
from monai_patronus.tracking.registry import CANDIDATE, register_candidate, tracking_uri_scope

__all__ = ["PatronusTrackingHandler", "check_tracking_uri", "default_tracking_uri", "git_commit", "register_weights"]

logger = logging.getLogger("monai_patronus.tracking")

#: the run tag that finds the unfinished run of an output folder on ``--resume`` (a keyed pseudonym, not the path)
OUTPUT_TAG = "patronus.output_id"


def default_tracking_uri(output_dir: str | os.PathLike, tracking_uri: str | None = None) -> str:
    """``tracking_uri`` if given, else ``$MLFLOW_TRACKING_URI``, else a SQLite store ``<output_dir>/mlflow.db``."""
    local = f"sqlite:///{Path(output_dir).resolve() / 'mlflow.db'}"
    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or local


def check_tracking_uri(uri: str, timeout: float = 10.0) -> None:
    """Fail before training, naming ``uri`` without its credentials, if the tracking store does not answer. One
    try, at most ``timeout`` seconds (MLflow's own retries of an unreachable server take about 4 minutes)."""
    shown = redact_uri(uri)
    if urllib.parse.urlparse(uri).scheme in ("", "file"):
        raise ValueError(
            f"MLflow tracking URI {shown!r} is a plain folder (file store), which MLflow no longer supports; use "
            "sqlite:///<folder>/mlflow.db or an http(s) server."
        )
    one_try = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, int(timeout)))}
    try:
        if uri.startswith("sqlite:///"):  # MLflow creates the database, not its folder
            Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        with _environ(one_try):
            mlflow.MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
        return
    except Exception as err:  # any failure of the store means no record: stop before training
        failure = f"{type(err).__name__}: {_hide(err, uri)}"
    # raised outside the except block: the chained MLflow error would carry the credentials
    raise ValueError(
        f"MLflow tracking store {shown} does not answer ({failure}); start the server or point --tracking_uri / "
        "MLFLOW_TRACKING_URI at a reachable store (or disable tracking with --tracking_enabled false)."
    )


@contextlib.contextmanager
def _environ(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (``None``: remove) environment variables meanwhile."""
    saved = {k: os.environ.get(k) for k in values}

    def put(items: Mapping[str, str | None]) -> None:
        for k, v in items.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    put(values)
    try:
        yield
    finally:
        put(saved)


def _hide(err: BaseException, uri: str) -> str:
    """An exception's text with ``uri`` (and its credentials) replaced by the redacted URI."""
    return str(err).replace(uri, redact_uri(uri))


def git_commit(path: str | os.PathLike | None = None) -> str:
    """The git commit of the code at ``path`` (default: this package); ``"unknown"`` outside a git checkout."""
    return get_git_commit(str(path or Path(__file__).resolve().parent)) or "unknown"


class PatronusTrackingHandler(MLFlowHandler):
    """Track a Patronus training run in MLflow (rank 0 only). On top of :class:`~monai.handlers.MLFlowHandler`: the
    redacted bundle config as params, versions as tags, the dataset fingerprint; new sample grids every epoch; at
    the end, prototype provenance (pseudonymous ids) and the ``pyfunc`` model, registered with the ``candidate``
    alias. The run is named in ``<output_dir>/mlflow_run.json``.

    Args:
        output_dir: the bundle's output folder (default SQLite store, key file, ``mlflow_run.json``).
        network: the network being trained.
        tracking_uri: default ``$MLFLOW_TRACKING_URI`` or ``sqlite:///<output_dir>/mlflow.db``; checked here.
        experiment_name, run_name: MLflow experiment and run names (default run name: time stamp).
        registered_model_name: the registry name; ``None`` logs the model without registering it.
        datalist: the training datalist (or dataset folder) to fingerprint.
        provenance_data: batches of the training data in fixed order with ``image`` and ``id``.
        provenance_top_k, provenance_interval: patches kept per prototype; also log provenance every this many epochs.
        grid_dir: folder of the sample grids to log as they appear.
        example_images: a few training images ``(N, C, *spatial)``: the model's input shape.
        model_config: configs to rebuild the network (``log_patronus_model``); in a bundle, from ``network_def``,
            ``noise_scheduler`` and ``inferer``.
        num_inference_steps: the served model's default DDIM steps.
        pseudonym_key: key of the image-id pseudonyms (default ``$PATRONUS_PSEUDONYM_KEY`` or a key file).
        config: the configuration to log outside a bundle run.
        iteration_log: log the loss every iteration (or a filter ``(engine, iteration) -> bool``).
        resume: continue the latest unfinished run of this experiment and output folder.
        artifacts: files to log at the end (MONAI's ``save_execute_config``).
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
        artifacts: str | Sequence[str] | None = None,
    ) -> None:
        self.active = is_main_process()
        self.resume = bool(resume)
        self.output_dir = Path(output_dir)
        self.tracking_uri = default_tracking_uri(self.output_dir, tracking_uri)
        if not self.active:
            return
        if os.environ.get("MLFLOW_TRACKING_URI") and tracking_uri and tracking_uri != os.environ["MLFLOW_TRACKING_URI"]:
            logger.warning(
                "tracking_uri %s overrides MLFLOW_TRACKING_URI=%s",
                redact_uri(tracking_uri),
                redact_uri(os.environ["MLFLOW_TRACKING_URI"]),
            )
        check_tracking_uri(self.tracking_uri)
        parser = find_bundle_parser()
        record = bundle_config_record(parser) if parser is not None else (config or {}, {})
        # what leaves the machine: no file paths (PACS folders are patient ids), no credentials, no keys
        self.config_record = (redact_config(record[0]), redact_config(record[1]))
        if model_config is None and parser is not None:
            inferer = literal_config(parser, "inferer", exclude=("_target_", "scheduler"))
            network_def, scheduler = literal_config(parser, "network_def"), literal_config(parser, "noise_scheduler")
            model_config = {"network": network_def, "scheduler": scheduler, "inferer": inferer}
        self.network, self.model_config, self.registered_model_name = network, model_config, registered_model_name
        self.datalist, self.provenance_data, self.provenance_top_k = datalist, provenance_data, provenance_top_k
        self.provenance_interval, self.example_images = provenance_interval, example_images
        self.grid_dir = Path(grid_dir) if grid_dir is not None else None
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
        with _environ({"MLFLOW_TRACKING_URI": None}):  # our resolution of the URI above is final
            super().__init__(
                tracking_uri=self.tracking_uri,
                iteration_log=iteration_log,
                output_transform=loss_terms,
                experiment_name=experiment_name,
                run_name=run_name or f"{experiment_name}-{time.strftime('%Y%m%d-%H%M%S')}",
                artifacts=artifacts,
                close_on_complete=False,
            )

    def attach(self, engine: Engine) -> None:
        if not self.active:
            return
        super().attach(engine)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_artifacts)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._failed)

    def start(self, engine: Engine) -> None:
        if self.cur_run is not None:  # resumed engine.run() in the same process: same run
            return
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        previous = self._unfinished_run(experiment.experiment_id) if self.resume and experiment is not None else None
        if previous is not None:  # --resume: the same record continues, as the training does
            self.cur_run = previous
            self.client.update_run(previous.info.run_id, status="RUNNING")
            self.client.set_tag(previous.info.run_id, "patronus.resumed_at_epoch", str(engine.state.epoch))
            logger.info("resume: continuing MLflow run %s", previous.info.run_id)
        super().start(engine)  # a new run (MONAI's handler creates it), max_epochs and epoch_length as run
        run_id = self.cur_run.info.run_id
        config, resolved = self.config_record
        params = {
            k: json.dumps(v) if isinstance(v, list) else str(v)
            for k, v in resolved.items()
            if not isinstance(v, list) or len(str(v)) < 500
        }
        logged = self.client.get_run(run_id).data.params
        changed = {k: resolved[k] for k, v in params.items() if k in logged and logged[k] != v}
        if changed:  # MLflow params are immutable: a resumed run's new values (e.g. max_epochs) become a tag
            self.client.set_tag(run_id, "patronus.resumed_params", json.dumps(changed))
        new = [mlflow.entities.Param(k, v) for k, v in params.items() if k not in logged]
        for i in range(0, len(new), 100):  # MLflow's log_batch limit for params
            self.client.log_batch(run_id, params=new[i : i + 100])
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
        self.client.log_batch(run_id, tags=[mlflow.entities.RunTag(k, str(v)) for k, v in tags.items()])
        self.client.log_dict(run_id, config, "config/bundle_config.json")
        self.client.log_dict(run_id, resolved, "config/resolved_values.json")
        if self.fingerprint is not None:
            self.client.log_dict(run_id, self.fingerprint, "data/fingerprint.json")
        self._write_run_file()

    def _output_id(self) -> str:
        """A keyed pseudonym of the output folder: finds a resumed run's record without logging the folder's path."""
        return self.pseudonymize(str(self.output_dir.resolve()), prefix="out-")

    def _unfinished_run(self, experiment_id: str):
        """The latest run of this experiment and output folder that did not finish (killed or failed)."""
        runs = self.client.search_runs(
            [experiment_id],
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

    def _no_run_url_print(self):
        """MLflow prints "View run ... at: <tracking URI>" whenever a run ends; with credentials in the URI that
        line would carry them, so it is switched off meanwhile (the summary shows the redacted URI)."""
        return _environ({"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"} if self._credentials_in_uri else {})

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
            with contextlib.suppress(Exception):  # the store itself may be gone; the error below says what to do
                self.client.set_terminated(self.cur_run.info.run_id, "FAILED")
            raise RuntimeError(
                f"MLflow logging at the end of training failed ({type(err).__name__}: "
                f"{_hide(err, self.tracking_uri)}). "
                f"The trained weights are safe in the checkpoints under {self.output_dir}; the run is {self._where()}."
            ) from (None if self._credentials_in_uri else err)  # the cause's text may hold the credentials

    def _failed(self, engine: Engine, err: Exception) -> None:
        if self.cur_run is not None:
            try:
                with self._no_run_url_print():
                    self._flush_metrics()
                    self.client.set_terminated(self.cur_run.info.run_id, "FAILED")
            except Exception:  # the store is down too: the training error below is the one to report
                logger.warning("could not mark MLflow run %s as FAILED: no answer", self.cur_run.info.run_id)
        raise err

    def _log_metrics(self, metrics: dict, step: int | None = None) -> None:
        """MONAI's handler logs metrics through here. If the store does not answer, training goes on: the values are
        kept (in memory and in :attr:`offline_metrics_file`) and sent once the store answers again."""
        timestamp = int(time.time() * 1000)
        values = flatten_dict(metrics).items()
        self._pending += [mlflow.entities.Metric(k, float(v), timestamp, step or 0) for k, v in values]
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
                "answers again",
                redact_uri(self.tracking_uri),
                self._outage,
                self.offline_metrics_file,
            )

    def _spool(self) -> None:
        """Append the kept values not yet in the local copy to :attr:`offline_metrics_file` (one JSON per line)."""
        new = self._pending[self._spooled :]
        if not new:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.offline_metrics_file, "a", encoding="utf-8") as f:
            for m in new:
                f.write(json.dumps({"key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step}) + "\n")
        self._spooled = len(self._pending)

    def _log_new_grids(self) -> None:
        for png in sorted(self.grid_dir.glob("*.png")) if self.grid_dir is not None else ():
            if png.name not in self._logged_grids:
                self.client.log_artifact(self.cur_run.info.run_id, str(png), artifact_path="grids")
                self._logged_grids.add(png.name)

    def log_provenance(self, artifact_path: str = PROVENANCE_ARTIFACT) -> None:
        """Find, draw and log every prototype's nearest training patches under ``artifact_path``."""
        with tempfile.TemporaryDirectory() as tmp:
            data, top_k = self.provenance_data, self.provenance_top_k
            prototype_provenance(self.network, data, tmp, self.pseudonymize, top_k, fingerprint=self.fingerprint)
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

    def _where(self) -> str:
        run = self.cur_run.info.run_id if self.cur_run is not None else "(not started)"
        return f"run {run} in experiment {self.experiment_name!r} at {redact_uri(self.tracking_uri)}"

    def _write_run_file(self) -> None:
        version = self.model_version
        record = {"tracking_uri": redact_uri(self.tracking_uri), "experiment_name": self.experiment_name}
        record |= {"run_id": self.cur_run.info.run_id, "registered_model_name": self.registered_model_name}
        record |= {"model_version": version.version if version else None, "alias": CANDIDATE if version else None}
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "mlflow_run.json").write_text(json.dumps(record, indent=1))

    def _print_summary(self) -> None:
        uri, name = redact_uri(self.tracking_uri), self.registered_model_name
        lines = [f"MLflow: {self._where()}", f"  browse: mlflow ui --backend-store-uri {uri}"]
        if self.model_version is not None:
            lines += [
                f"Registered model: models:/{name}@{CANDIDATE} (version {self.model_version.version})",
                "Review its prototypes in notebooks/prototype_review.ipynb (`make review` in a checkout) with "
                f"tracking_uri={uri!r}, model_name={name!r}, alias={CANDIDATE!r}",
            ]
        for line in lines:
            logger.info(line)
        print("\n".join(lines), flush=True)


def register_weights(handler: PatronusTrackingHandler, source: str = "a weights file"):
    """Record and register ``handler.network`` as it is, without training (e.g. a shipped pretrained model): the
    record a training run ends with, in a run tagged ``patronus.trained_here = false`` and
    ``patronus.weights_source = source``. Returns the registered model version (or ``None``)."""
    if not handler.active:
        return None
    engine = Engine(lambda engine, batch: None)  # never run: it only carries the (empty) state start() reads
    handler.start(engine)
    run_id = handler.cur_run.info.run_id
    handler.client.set_tag(run_id, "patronus.trained_here", "false")
    handler.client.set_tag(run_id, "patronus.weights_source", str(source))
    handler.complete()
    return handler.model_version
