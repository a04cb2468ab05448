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
    """Raise a ``FloatingPointError`` naming the epoch, iteration and loss terms if ``engine.state.output["loss"]``
    is NaN/Inf. :func:`create_patronus_trainer` runs it last at ``IterationEvents.LOSS_COMPLETED`` (after the terms
    handlers add there, before ``backward``), so the optimizer never steps on a non-finite loss.
    """
    output = engine.state.output
    loss = output[CommonKeys.LOSS]
    if bool(torch.isfinite(torch.as_tensor(loss).detach()).all()):
        return
    terms = ", ".join(
        f"{key}={float(torch.as_tensor(output[key]).detach().float().mean()):g}"
        for key in (CommonKeys.LOSS, "distinct_loss")
        if key in output
    )
    state = engine.state
    within = ""
    if state.epoch_length:
        within = f" ({(state.iteration - 1) % state.epoch_length + 1} of {state.epoch_length} in the epoch)"
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
    """A ``SupervisedTrainer`` for ``MSE(ε, ε_θ(x_t, t, s(x0)))`` (``v`` instead of ``ε`` for a v-prediction scheduler).

    ``DiffusionPrepareBatch`` draws ``ε`` and ``t``; the inferer conditions the network on the clean image, so the
    loss also trains the encoder and prototypes. ``decollate`` defaults to False (``state.output`` is a dict).

    Args:
        network: the :class:`~monai_patronus.networks.PatronusUNet` to train (DDP-wrapped when distributed).
        inferer: the :class:`PatronusInferer` (its scheduler's ``num_train_timesteps`` draws ``t``).
        train_data_loader: batches of ``{"image": (B, C, *spatial)}`` in [-1, 1].
        optimizer: the optimizer of ``network``'s parameters.
        max_epochs: epochs to train.
        epoch_length: iterations per epoch (default: the loader's length).
        device: where the batches go.
        finite_loss_check: stop on a NaN/Inf loss before the optimizer steps (:func:`check_finite_loss`).
        kwargs: passed to ``SupervisedTrainer`` (handlers, ``amp``, ...).
    """
    if not isinstance(inferer, PatronusInferer):
        raise TypeError(f"create_patronus_trainer: inferer must be a PatronusInferer, got {type(inferer).__name__}.")
    kwargs.setdefault("decollate", False)  # decollating costs time; nothing needs per-sample outputs
    trainer = SupervisedTrainer(
        torch.device(device),
        max_epochs,
        train_data_loader,
        network,
        optimizer,
        nn.MSELoss(),
        epoch_length,
        inferer=inferer,
        prepare_batch=_prepare_batch(inferer.scheduler),
        **kwargs,
    )
    if finite_loss_check:
        # not ignite's TerminateOnNan: it runs after the optimizer stepped on the NaN loss and fires COMPLETED (final
        # checkpoint and model registration); raising before backward fires EXCEPTION_RAISED instead
        trainer.add_event_handler(Events.STARTED, _check_loss_last)
    return trainer


def _prepare_batch(scheduler) -> DiffusionPrepareBatch:
    """MONAI's batch preparation: target ε, or ``v`` for ``prediction_type="v_prediction"`` (Salimans & Ho 2022)."""
    T = scheduler.num_train_timesteps
    kind = getattr(scheduler, "prediction_type", "epsilon")
    if kind == "v_prediction":
        return VPredictionPrepareBatch(scheduler, num_train_timesteps=T)
    if kind != "epsilon":
        raise ValueError(
            f"create_patronus_trainer: the scheduler's prediction_type must be 'epsilon' or 'v_prediction', "
            f"got {kind!r}."
        )
    return DiffusionPrepareBatch(num_train_timesteps=T)


def _check_loss_last(engine: SupervisedTrainer) -> None:
    """Attach :func:`check_finite_loss` last at LOSS_COMPLETED when the run starts, so it checks the loss with the
    terms of handlers attached after the trainer was made (e.g. ``PrototypeDistinctLossHandler.attach``)."""
    if engine.has_event_handler(check_finite_loss, IterationEvents.LOSS_COMPLETED):
        engine.remove_event_handler(check_finite_loss, IterationEvents.LOSS_COMPLETED)
    engine.add_event_handler(IterationEvents.LOSS_COMPLETED, check_finite_loss)
