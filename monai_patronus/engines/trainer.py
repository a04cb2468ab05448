"""Patronus training on ``monai.engines.SupervisedTrainer``."""

from __future__ import annotations

import torch
from monai.engines import DiffusionPrepareBatch, SupervisedTrainer
from torch import nn

from monai_patronus.inferers import PatronusInferer

__all__ = ["create_patronus_trainer"]


def create_patronus_trainer(
    network: nn.Module,
    inferer: PatronusInferer,
    train_data_loader,
    optimizer: torch.optim.Optimizer,
    max_epochs: int = 1,
    epoch_length: int | None = None,
    device: str | torch.device = "cpu",
    **kwargs,
) -> SupervisedTrainer:
    """A ``SupervisedTrainer`` for ``MSE(ε, ε_θ(x_t, t, s(x0)))``.

    Batches are dicts with an ``"image"`` key (images in [-1, 1]); ``DiffusionPrepareBatch`` draws
    ``ε`` and ``t``, and the :class:`PatronusInferer` conditions the network on the clean image, so the
    loss trains the encoder and the prototypes. Extra ``kwargs`` go to ``SupervisedTrainer`` (handlers,
    ``amp``, ``key_train_metric`` ...); ``decollate`` defaults to False, so ``state.output`` is a dict.
    """
    if not isinstance(inferer, PatronusInferer):
        raise TypeError(f"create_patronus_trainer: inferer must be a PatronusInferer, got {type(inferer).__name__}.")
    # decollating every batch costs time and nothing downstream needs per-sample outputs
    kwargs.setdefault("decollate", False)
    return SupervisedTrainer(
        device=torch.device(device),
        max_epochs=max_epochs,
        epoch_length=epoch_length,
        train_data_loader=train_data_loader,
        network=network,
        optimizer=optimizer,
        loss_function=nn.MSELoss(),
        inferer=inferer,
        prepare_batch=DiffusionPrepareBatch(num_train_timesteps=inferer.scheduler.num_train_timesteps),
        **kwargs,
    )
