"""Components the bundles' configs call by ``_target_``, so that no Python is written in the configs."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import torch
from monai.handlers import MLFlowHandler, StatsHandler

__all__ = ["inference_report", "loss_stats", "loss_terms", "one_mlflow_run", "report"]

logger = logging.getLogger("monai_patronus.bundle")


def report(**outputs) -> dict:
    """Log ``name: value`` for each of ``outputs`` (what a bundle step wrote, and where) and return them."""
    for name, value in outputs.items():
        logger.info("%s: %s", name.replace("_", " "), value)
    return outputs


def inference_report(grid, network: torch.nn.Module, filename: str = "inference_grid.png") -> dict:
    """Render ``grid`` (a :class:`~monai_patronus.handlers.SampleGridHandler`: originals | reconstructions |
    samples) with ``network`` and measure whether its generation uses the prototype activations."""
    psnr = grid.render(network, filename)
    return report(
        inference_grid=grid.output_dir / filename,
        inversion_psnr_db=round(psnr, 2),  # inversion error, not a measure of learning
        does_generation_use_s=grid.evaluate(network)["summary"],
    )


def loss_terms(output) -> dict[str, float] | None:
    """The trainer output's loss terms (``loss``, ``distinct_loss``) as floats; the first item of a decollated list."""
    if isinstance(output, Sequence) and output and isinstance(output[0], Mapping):
        output = output[0]
    if isinstance(output, Mapping):
        return {k: float(torch.as_tensor(output[k]).detach()) for k in ("loss", "distinct_loss") if k in output}
    return None


def loss_stats(interval: int = 10) -> StatsHandler:
    """MONAI's :class:`~monai.handlers.StatsHandler` logging the loss terms every ``interval`` iterations."""
    return StatsHandler(
        tag_name="train_loss", iteration_log=lambda engine, it: it % interval == 0, output_transform=loss_terms
    )


def one_mlflow_run(handlers: Sequence) -> list:
    """The trainer's handlers with at most one MLflow run.

    ``--tracking mlflow`` (or a tracking settings file) makes MONAI append an ``MLFlowHandler`` to
    ``train#handlers``. Next to the bundle's :class:`~monai_patronus.tracking.PatronusTrackingHandler` it would
    open a second run, so it is dropped and the Patronus handler logs its ``artifacts`` (the executed config
    MONAI saved, ``save_execute_config``). Without a Patronus handler (``tracking_enabled`` false) MONAI's handler
    stays, reading the loss terms of the Patronus trainer's output.
    """
    from monai_patronus.tracking.handler import PatronusTrackingHandler

    ours = [h for h in handlers if isinstance(h, PatronusTrackingHandler)]
    kept = []
    for h in handlers:
        if isinstance(h, MLFlowHandler) and not isinstance(h, PatronusTrackingHandler):
            if ours:
                ours[0].artifacts = [*ours[0].artifacts, *h.artifacts]
                continue
            h.output_transform = loss_terms
        kept.append(h)
    return kept
