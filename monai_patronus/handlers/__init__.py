from __future__ import annotations

from .checkpoint import AtomicCheckpointSaver, latest_checkpoint, load_network_weights
from .distinct_loss import PrototypeDistinctLossHandler
from .sample_grid import SampleGridHandler
from .utils import is_main_process, unwrap_network

__all__ = [
    "AtomicCheckpointSaver",
    "PrototypeDistinctLossHandler",
    "SampleGridHandler",
    "is_main_process",
    "latest_checkpoint",
    "load_network_weights",
    "unwrap_network",
]
