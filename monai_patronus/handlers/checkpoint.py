"""Atomic, keep-last-N training checkpoints, and the latest one for resuming with MONAI's CheckpointLoader.

MONAI's ``CheckpointSaver`` writes in place (ignite ``DiskSaver(atomic=False)``), so a crash while
saving can leave a truncated file. Here every checkpoint goes to a temporary file in the same folder,
is flushed to disk, then renamed over its final name (``os.replace`` is atomic on POSIX and Windows).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import torch
from ignite.engine import Events

from monai_patronus.handlers.utils import is_main_process

__all__ = ["AtomicCheckpointSaver", "latest_checkpoint"]

_PATTERN = re.compile(r"^checkpoint_epoch=(\d+)\.pt$")


def latest_checkpoint(directory: str | Path) -> str | None:
    """Path of the highest-epoch ``checkpoint_epoch=N.pt`` in ``directory``, or ``None`` if there is none."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _PATTERN.match(p.name))]
    return str(max(found)[1]) if found else None


class AtomicCheckpointSaver:
    """Save ``{name: obj.state_dict()}`` every ``save_interval`` epochs as ``checkpoint_epoch=N.pt``.

    Args:
        save_dir: folder for the checkpoints (created if missing).
        save_dict: objects with ``state_dict()``, e.g. ``{"network": net, "optimizer": opt,
            "lr_scheduler": sched, "trainer": trainer}`` (the trainer's state holds epoch and iteration,
            which MONAI's ``CheckpointLoader`` restores when resuming).
        save_interval: epochs between checkpoints.
        keep_last: how many of the newest checkpoints to keep (older ones are deleted after a good save).

    Only rank 0 writes when running distributed.
    """

    def __init__(self, save_dir: str | Path, save_dict: dict, save_interval: int = 1, keep_last: int = 3) -> None:
        if not isinstance(save_dict, dict) or not save_dict:
            raise ValueError(f"AtomicCheckpointSaver: save_dict must be a non-empty dict of objects, got {save_dict!r}.")
        for name, obj in save_dict.items():
            if not callable(getattr(obj, "state_dict", None)):
                raise TypeError(f"AtomicCheckpointSaver: save_dict[{name!r}] ({type(obj).__name__}) has no state_dict().")
        for arg, value in (("save_interval", save_interval), ("keep_last", keep_last)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"AtomicCheckpointSaver: {arg} must be an int >= 1, got {value!r}.")
        self.save_dir = Path(save_dir)
        self.save_dict = save_dict
        self.save_interval = save_interval
        self.keep_last = keep_last

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self)

    def __call__(self, engine) -> None:
        if is_main_process():
            self.save(engine.state.epoch)

    def save(self, epoch: int) -> Path:
        """Write the checkpoint of ``epoch`` atomically and prune old ones; returns its path."""
        self.save_dir.mkdir(parents=True, exist_ok=True)
        target = self.save_dir / f"checkpoint_epoch={epoch}.pt"
        state = {name: obj.state_dict() for name, obj in self.save_dict.items()}
        fd, tmp = tempfile.mkstemp(prefix=".checkpoint_", suffix=".tmp", dir=self.save_dir)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._prune()
        return target

    def _prune(self) -> None:
        found = sorted((int(m.group(1)), p) for p in self.save_dir.iterdir() if (m := _PATTERN.match(p.name)))
        for _, path in found[: -self.keep_last]:
            path.unlink(missing_ok=True)
