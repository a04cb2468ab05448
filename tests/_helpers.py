"""Shared test builders: tiny networks with the shapes the tests use, and a log collector for bundle runs."""

from __future__ import annotations

import logging

import torch

from monai_patronus.networks import PatronusUNet, PrototypeEncoder


def tiny_encoder(spatial_dims: int = 2, num_prototypes: int = 6, in_channels: int = 1) -> PrototypeEncoder:
    return PrototypeEncoder(
        spatial_dims, in_channels, num_prototypes=num_prototypes, channels=(4, 8), kernel_sizes=3, strides=(2, 1),
        paddings=(1, 0), preset=None,
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
