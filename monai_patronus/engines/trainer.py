"""Patronus training on ``monai.engines.SupervisedTrainer``."""

from __future__ import annotations

import torch
from ignite.engine import Events
from monai.engines import DiffusionPrepareBatch, SupervisedTrainer, VPredictionPrepareBatch
from monai.engines.utils import IterationEvents
from monai.utils.enums import CommonKeys
from torch import nn

from monai_patronus.inferers import PatronusInferer

__all__ = ["create_patronus_trainer", "check_finite_loss"]


def check_finite_loss(engine: SupervisedTrainer) -> None:
    """Raise a ``FloatingPointError`` if ``engine.state.output["loss"]`` is NaN or infinite.

    Attached by :func:`create_patronus_trainer` at ``IterationEvents.LOSS_COMPLETED``: after the loss (and any
    term a handler adds there, e.g. the distinct loss) and before ``backward``, so the optimizer never steps on
    a non-finite loss, no later checkpoint is written and nothing is registered.

    Args:
        engine: the trainer, during an iteration.

    Raises:
        FloatingPointError: the loss is not finite; names the epoch, the iteration, the loss terms and what to try.
    """
    output = engine.state.output
    loss = output[CommonKeys.LOSS]
    if bool(torch.isfinite(torch.as_tensor(loss).detach()).all()):
        return
    terms = ", ".join(
        f"{key}={float(torch.as_tensor(output[key]).detach().float().mean()):g}"
        for key in (CommonKeys.LOSS, "distinct_loss") if key in output
    )
    state = engine.state
    within = f" ({(state.iteration - 1) % state.epoch_length + 1} of {state.epoch_length} in the epoch)" if state.epoch_length else ""
    raise FloatingPointError(
        f"non-finite training loss ({terms}) at epoch {state.epoch}, iteration {state.iteration}{within}: training "
        "stopped before the optimizer stepped on it; the checkpoints already written are kept and no model is "
        "registered. Try a lower lr, autocast/amp off (autocast_dtype null, amp false), and check the data for "
        "NaN/Inf or constant images (e.g. monai_patronus.data CheckImaged); then continue from the last good "
        "checkpoint with --resume true."
    )


def create_patronus_trainer(
    network: nn.Module,
    inferer: PatronusInferer,
    train_data_loader,
    optimizer: torch.optim.Optimizer,
    max_epochs: int = 1,
    epoch_length: int | None = None,
    device: str | torch.device = "cpu",
    finite_loss_check: bool = True,
    **kwargs,
) -> SupervisedTrainer:
    """A ``SupervisedTrainer`` for ``MSE(ε, ε_θ(x_t, t, s(x0)))``.

    Batches are dicts with an ``"image"`` key (images in [-1, 1]); ``DiffusionPrepareBatch`` draws
    ``ε`` and ``t``, and the :class:`PatronusInferer` conditions the network on the clean image, so the
    loss trains the encoder and the prototypes. Extra ``kwargs`` go to ``SupervisedTrainer`` (handlers,
    ``amp``, ``key_train_metric`` ...); ``decollate`` defaults to False, so ``state.output`` is a dict.

    With ``finite_loss_check`` (default) a NaN/Inf loss stops training with a ``FloatingPointError``
    (:func:`check_finite_loss`) before the optimizer steps on it.

    Args:
        network: the :class:`~monai_patronus.networks.PatronusUNet` to train (DDP-wrapped when distributed).
        inferer: the :class:`PatronusInferer` (its scheduler's ``num_train_timesteps`` draws ``t``).
        train_data_loader: batches of ``{"image": (B, C, *spatial)}``.
        optimizer: the optimizer of ``network``'s parameters.
        max_epochs: epochs to train.
        epoch_length: iterations per epoch (default: the loader's length).
        device: where the batches go.
        finite_loss_check: raise on a non-finite loss (see :func:`check_finite_loss`).
        kwargs: passed to ``SupervisedTrainer``.

    Raises:
        TypeError: ``inferer`` is not a ``PatronusInferer``.
    """
    if not isinstance(inferer, PatronusInferer):
        raise TypeError(f"create_patronus_trainer: inferer must be a PatronusInferer, got {type(inferer).__name__}.")
    # decollating every batch costs time and nothing downstream needs per-sample outputs
    kwargs.setdefault("decollate", False)
    trainer = SupervisedTrainer(
        device=torch.device(device),
        max_epochs=max_epochs,
        epoch_length=epoch_length,
        train_data_loader=train_data_loader,
        network=network,
        optimizer=optimizer,
        loss_function=nn.MSELoss(),
        inferer=inferer,
        prepare_batch=_prepare_batch(inferer.scheduler),
        **kwargs,
    )
    if finite_loss_check:
        # Not ignite's TerminateOnNan: it checks ITERATION_COMPLETED (after the optimizer has stepped on the NaN
        # loss, so the weights are already NaN) and stops "gracefully" with engine.terminate(), which fires
        # COMPLETED: the final checkpoint would be saved over the good ones and the tracking handler would
        # register the NaN model as `candidate`. Raising at LOSS_COMPLETED, before backward, fires
        # EXCEPTION_RAISED instead: the MLflow run is marked FAILED and no COMPLETED handler runs.
        trainer.add_event_handler(IterationEvents.LOSS_COMPLETED, check_finite_loss)
        trainer.add_event_handler(Events.STARTED, _check_loss_last)
    return trainer


def _prepare_batch(scheduler) -> DiffusionPrepareBatch:
    """MONAI's batch preparation for the scheduler's prediction type: the target is ε, or ``v`` for
    ``prediction_type="v_prediction"`` (Salimans & Ho 2022)."""
    T = scheduler.num_train_timesteps
    if getattr(scheduler, "prediction_type", "epsilon") == "v_prediction":
        return VPredictionPrepareBatch(scheduler, num_train_timesteps=T)
    if getattr(scheduler, "prediction_type", "epsilon") != "epsilon":
        raise ValueError(
            f"create_patronus_trainer: the scheduler's prediction_type must be 'epsilon' or 'v_prediction', "
            f"got {scheduler.prediction_type!r}."
        )
    return DiffusionPrepareBatch(num_train_timesteps=T)


def _check_loss_last(engine: SupervisedTrainer) -> None:
    """Move :func:`check_finite_loss` to the end of the LOSS_COMPLETED handlers, so it checks the loss with
    the terms of handlers attached after the trainer was made (e.g. ``PrototypeDistinctLossHandler.attach``)."""
    if engine.has_event_handler(check_finite_loss, IterationEvents.LOSS_COMPLETED):
        engine.remove_event_handler(check_finite_loss, IterationEvents.LOSS_COMPLETED)
    engine.add_event_handler(IterationEvents.LOSS_COMPLETED, check_finite_loss)
