"""Helpers shared by the Patronus ignite handlers."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["unwrap_network", "is_main_process"]


def unwrap_network(network: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel wrappers (or the module itself)."""
    while isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        network = network.module
    return network


def is_main_process() -> bool:
    """True unless running distributed on a rank other than 0 (for rank-0-only writing)."""
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or torch.distributed.get_rank() == 0
