"""Shared test builders: tiny networks with the shapes the tests use, and a log collector for bundle runs."""

from __future__ import annotations

import logging

import torch
from torch import nn

from monai_patronus.networks import PatronusUNet, PrototypeEncoder


def tiny_encoder(spatial_dims: int = 2, num_prototypes: int = 6, in_channels: int = 1) -> PrototypeEncoder:
    return PrototypeEncoder(
        spatial_dims,
        in_channels,
        num_prototypes=num_prototypes,
        channels=(4, 8),
        kernel_sizes=3,
        strides=(2, 1),
        paddings=(1, 0),
        preset=None,
    )


def tiny_patronus(spatial_dims: int = 2, num_prototypes: int = 6, dropout: float = 0.0) -> PatronusUNet:
    enc = tiny_encoder(spatial_dims, num_prototypes)
    return PatronusUNet(spatial_dims, 1, enc, channels=(8, 16), num_res_blocks=1, norm_num_groups=4, dropout=dropout)


def randomize_zero_init(net: torch.nn.Module, std: float = 0.1) -> torch.nn.Module:
    """MONAI zero-initialises the output conv and every res-block's second conv, which hides the
    conditioning at init: give every all-zero weight random values."""
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("weight") and not p.any():
                p.normal_(0, std)
    return net


class IgnoresS(nn.Module):
    """The trained toy network with its condition replaced by one fixed vector: it denoises (and DDIM-inverts)
    as well as before but cannot use ``s``."""

    def __init__(self, net: nn.Module, fixed: torch.Tensor):
        super().__init__()
        self.net, self.prototype_encoder = net, net.prototype_encoder
        self.register_buffer("fixed", fixed)

    def encode(self, x):
        return self.net.encode(x)

    def condition_vector(self, x, context=None, **kw):
        return self.net.condition_vector(x, context=context, **kw)

    def forward(self, x, timesteps, context=None, unconditional=None):
        return self.net(x, timesteps, activations=self.fixed.expand(x.shape[0], -1), unconditional=unconditional)


def shows(k: int, present: bool) -> list[int]:
    """Indices of the parts images that show (or lack) shape ``k``."""
    return [i for i in range(16) if bool(i >> k & 1) == present]


def quadrant(k: int) -> torch.Tensor:
    """The ``(16, 16)`` mask of the quadrant where shape ``k`` is drawn."""
    mask = torch.zeros(16, 16, dtype=torch.bool)
    r, c = 8 * (k >> 1), 8 * (k & 1)
    mask[r : r + 8, c : c + 8] = True
    return mask


class LogRecords(logging.Handler):
    """Collects the WARNING+ messages of one logger (default ``monai_patronus.data``) during a bundle run: the
    bundles' logging.conf resets the root logger's handlers, which pytest's caplog relies on."""

    def __init__(self, name: str = "monai_patronus.data"):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self.logger = logging.getLogger(name)

    def emit(self, record):
        self.messages.append(record.getMessage())

    def __enter__(self):
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self)

    @property
    def text(self) -> str:
        return "\n".join(self.messages)


def parts_images() -> torch.Tensor:
    """The 16 images of a toy where ``s`` decides the image: 16-px, background -1, and each of four distinct
    5x5 shapes (horizontal bar, vertical bar, diagonal cross, hollow square) present or absent in its own
    quadrant, in every combination. Returns ``(16, 1, 16, 16)``; image ``i`` shows shape ``k`` iff bit ``k``
    of ``i`` is set."""
    shapes = torch.full((4, 5, 5), -1.0)
    shapes[0, 2, :] = 1.0
    shapes[1, :, 2] = 1.0
    shapes[2, range(5), range(5)] = 1.0
    shapes[2, range(5), range(4, -1, -1)] = 1.0
    shapes[3, [0, 4], :] = 1.0
    shapes[3, :, [0, 4]] = 1.0
    corners = [(1, 1), (1, 10), (10, 1), (10, 10)]
    images = torch.full((16, 1, 16, 16), -1.0)
    for i in range(16):
        for k, (r, c) in enumerate(corners):
            if i >> k & 1:
                images[i, 0, r : r + 5, c : c + 5] = shapes[k]
    return images


def train_parts_toy(steps: int = 600, seed: int = 0):
    """A tiny Patronus whose generation demonstrably follows ``s``, on :func:`parts_images`: a frozen
    encoder whose prototype ``k`` is the feature of shape ``k``'s centre cell (ProtoPNet-style, so ``s_k`` is
    high exactly when shape ``k`` is present), and the U-Net trained ``steps`` steps with MONAI's trainer
    (about a minute on 2 cores). Returns ``(images, network, inferer, losses)``."""
    from ignite.engine import Events
    from monai.networks.schedulers import DDIMScheduler
    from monai.utils import set_determinism
    from torch.utils.data import DataLoader, RandomSampler

    from monai_patronus.engines import create_patronus_trainer
    from monai_patronus.inferers import PatronusInferer

    images = parts_images()
    set_determinism(seed=seed)
    encoder = PrototypeEncoder(
        2, 1, num_prototypes=4, channels=(8, 16), kernel_sizes=3, strides=1, paddings=(1, 0), preset=None
    )
    net = PatronusUNet(2, 1, encoder, channels=(16, 32), num_res_blocks=1, norm_num_groups=8, dropout=0.0)
    with torch.no_grad():
        z = encoder.features(images[15:16])  # every shape present; the feature map is 14x14 (padding 1, then 0)
        centres = [(2, 2), (2, 11), (11, 2), (11, 11)]  # shape centres (3, 3) ... shifted by the unpadded conv
        encoder.prototypes.copy_(torch.stack([z[0, :, r, c] for r, c in centres]))
    encoder.requires_grad_(False)
    inferer = PatronusInferer(DDIMScheduler(num_train_timesteps=1000, clip_sample=False))
    data = [{"image": img} for img in images]
    sampler = RandomSampler(
        data, replacement=True, num_samples=steps * 16, generator=torch.Generator().manual_seed(seed)
    )
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=2e-3)
    trainer = create_patronus_trainer(net, inferer, DataLoader(data, batch_size=16, sampler=sampler), optimizer)
    losses: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output["loss"].item()))
    trainer.run()
    set_determinism(seed=None)
    return images, net.eval(), inferer, losses
