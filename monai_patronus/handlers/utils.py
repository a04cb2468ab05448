"""Helpers shared by the Patronus ignite handlers."""

from __future__ import annotations

import errno
import os

import ignite.distributed as idist
from torch import nn

__all__ = ["unwrap_network", "is_main_process", "fsync_directory"]


def unwrap_network(network: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel wrappers (or the module itself)."""
    while isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        network = network.module
    return network


def is_main_process() -> bool:
    """True on rank 0, or when not running distributed (``ignite.distributed.get_rank() == 0``)."""
    return idist.get_rank() == 0


def fsync_directory(directory: str | os.PathLike) -> None:
    """Flush a folder's entries to disk, so that a file renamed into it survives a power loss; a no-op where
    ``os.O_DIRECTORY`` is missing (Windows) or the filesystem cannot sync a folder. Raises ``OSError`` (e.g. EIO)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)
