"""Helpers shared by the Patronus ignite handlers."""

from __future__ import annotations

import errno
import os

import torch
from torch import nn

__all__ = ["unwrap_network", "is_main_process", "fsync_directory"]

# fsync of a folder is not supported everywhere (some network and FUSE filesystems): nothing to do there
_FSYNC_UNSUPPORTED = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP}


def unwrap_network(network: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel wrappers (or the module itself)."""
    while isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        network = network.module
    return network


def is_main_process() -> bool:
    """True unless running distributed on a rank other than 0 (for rank-0-only writing)."""
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or torch.distributed.get_rank() == 0


def fsync_directory(directory: str | os.PathLike) -> None:
    """Flush a folder's entries to disk, so that a file renamed into it (``os.replace``) survives a power loss.

    POSIX only: a no-op where ``os.O_DIRECTORY`` is missing (Windows), and where the filesystem does not
    support syncing a folder (EINVAL/ENOTSUP).

    Args:
        directory: the folder that received the renamed file.

    Raises:
        OSError: the folder cannot be opened or the sync failed (e.g. EIO).
    """
    flag = getattr(os, "O_DIRECTORY", None)
    if flag is None:
        return
    fd = os.open(directory, os.O_RDONLY | flag)
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in _FSYNC_UNSUPPORTED:
            raise
    finally:
        os.close(fd)
