"""A tiny Patronus for 16-px images and its training recipe, used by the tests and benchmarks (the demo itself
is the ``patronus_demo`` bundle)."""

from __future__ import annotations

import torch
from ignite.engine import Events
from monai.networks.schedulers import DDIMScheduler
from monai.utils import set_determinism
from torch.utils.data import DataLoader, RandomSampler

from monai_patronus.engines import create_patronus_trainer
from monai_patronus.inferers import PatronusInferer
from monai_patronus.networks import PatronusUNet, PrototypeEncoder, init_prototypes_from_data

__all__ = ["build_tiny_patronus", "train_tiny_patronus"]


def build_tiny_patronus(
    spatial_dims: int = 2,
    in_channels: int = 1,
    num_prototypes: int = 16,
    condition_norm: bool = True,
    condition_dropout: float = 0.1,
) -> PatronusUNet:
    """A small Patronus for 16-px images: 3-layer encoder (7-px patches on a 10x10 map), 2-level U-Net, with the
    recipe's standardised ``s`` and condition dropout (the README's "Training recipe")."""
    encoder = PrototypeEncoder(
        spatial_dims,
        in_channels,
        num_prototypes=num_prototypes,
        channels=(16, 32, 32),
        kernel_sizes=3,
        strides=1,
        paddings=(1, 0, 0),
        preset=None,
    )
    return PatronusUNet(
        spatial_dims,
        in_channels,
        encoder,
        channels=(32, 64),
        num_res_blocks=1,
        norm_num_groups=8,
        dropout=0.0,
        condition_norm=condition_norm,
        condition_dropout=condition_dropout,
    )


def train_tiny_patronus(
    images: torch.Tensor,
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    num_prototypes: int = 16,
    autocast_dtype: torch.dtype | str | None = None,
    device: str | torch.device = "cpu",
    recipe: bool = True,
    guidance_scale: float = 1.5,
) -> tuple[PatronusUNet, PatronusInferer, list[float]]:
    """Train :func:`build_tiny_patronus` on ``images`` for ``steps`` optimiser steps with MONAI's trainer.

    With ``recipe`` (default) the README's "Training recipe": prototypes initialised on feature cells of ``images``,
    ``s`` standardised, condition dropout 0.1, v-prediction, and an inferer with guidance ``guidance_scale`` and x̂0
    clipped when sampling from noise; without it the paper's plain recipe (uniform prototypes, raw ``s``, ε, no
    guidance or clipping). Returns the network (eval mode), a ``DDIMScheduler(clip_sample=False)`` inferer and the
    per-step losses.
    """
    set_determinism(seed=seed)
    net = build_tiny_patronus(
        images.ndim - 2,
        images.shape[1],
        num_prototypes,
        condition_norm=recipe,
        condition_dropout=0.1 if recipe else 0.0,
    ).to(device)
    if recipe:
        init_prototypes_from_data(net, images, seed=seed)
    scheduler = DDIMScheduler(
        num_train_timesteps=1000, clip_sample=False, prediction_type="v_prediction" if recipe else "epsilon"
    )
    inferer = PatronusInferer(
        scheduler,
        autocast_dtype=autocast_dtype,
        guidance_scale=guidance_scale if recipe else 1.0,
        sample_clip=1.0 if recipe else None,
    )
    data = [{"image": img} for img in images]
    generator = torch.Generator().manual_seed(seed)
    sampler = RandomSampler(data, replacement=True, num_samples=steps * batch_size, generator=generator)
    loader = DataLoader(data, batch_size=batch_size, sampler=sampler)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr)
    trainer = create_patronus_trainer(net, inferer, loader, optimizer, max_epochs=1, device=device)
    losses: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output["loss"].item()))
    trainer.run()
    set_determinism(seed=None)
    return net.eval(), inferer, losses
