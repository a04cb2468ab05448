"""Atomic, keep-last-N training checkpoints, and the latest one for resuming with MONAI's CheckpointLoader.

MONAI's ``CheckpointSaver`` writes in place (ignite ``DiskSaver(atomic=False)``), so a crash while
saving can leave a truncated file. Here every checkpoint goes to a temporary file in the same folder,
is flushed to disk, then renamed over its final name (``os.replace`` is atomic on POSIX and Windows).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

import torch
from ignite.engine import Events

from monai_patronus.handlers.utils import is_main_process, unwrap_network

__all__ = ["AtomicCheckpointSaver", "latest_checkpoint", "load_network_weights"]

_PATTERN = re.compile(r"^checkpoint_epoch=(\d+)\.pt$")


def latest_checkpoint(directory: str | Path) -> str | None:
    """Path of the highest-epoch ``checkpoint_epoch=N.pt`` in ``directory``, or ``None`` if there is none."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    found = _checkpoints(directory)
    return str(found[-1][1]) if found else None


def _checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """``(epoch, path)`` of every ``checkpoint_epoch=N.pt`` in ``directory``, oldest first."""
    return sorted((int(m.group(1)), p) for p in directory.iterdir() if (m := _PATTERN.match(p.name)))


def load_network_weights(network: torch.nn.Module, checkpoint: str | Path, key: str = "network") -> str:
    """Load ``checkpoint[key]`` into ``network`` (unwrapped if DDP); ``checkpoint`` may be a file or a folder
    (then its latest ``checkpoint_epoch=N.pt``). Returns the file loaded.

    Raises:
        FileNotFoundError: no such file, or no checkpoint in the folder (train first, or give a file).
        KeyError: the checkpoint has no ``key`` entry.
    """
    path = Path(checkpoint)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"no checkpoint_epoch=N.pt in {path}: train first, or give a checkpoint file.")
        path = Path(found)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist: train first, or give an existing file or folder.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if key not in state:
        raise KeyError(f"checkpoint {path} has no {key!r} entry (it has {sorted(state)}).")
    unwrap_network(network).load_state_dict(state[key])
    return str(path)


class AtomicCheckpointSaver:
    """Save ``{name: obj.state_dict()}`` and the trainer's state every ``save_interval`` epochs as
    ``checkpoint_epoch=N.pt`` (and after the last epoch in any case); optionally resume from the latest one when the run starts.

    Args:
        save_dir: folder for the checkpoints (created if missing).
        save_dict: objects with ``state_dict()``, e.g. ``{"network": net, "optimizer": opt, "lr_scheduler": s}``.
            Wrapped networks (DDP) are saved unwrapped. The attached engine's state (epoch, iteration) is
            added under ``"trainer"``.
        save_interval: epochs between checkpoints.
        keep_last: how many of the newest checkpoints to keep (older ones are deleted after a good save).
        resume: on ``Events.STARTED``, load the latest checkpoint in ``save_dir`` (if any) into
            ``save_dict`` and the engine with MONAI's ``CheckpointLoader``, so training continues after
            the last saved epoch. A bundle exposes this as one override (``--resume true``).

    Only rank 0 writes when running distributed; every rank resumes.
    """

    def __init__(
        self, save_dir: str | Path, save_dict: dict, save_interval: int = 1, keep_last: int = 3, resume: bool = False
    ) -> None:
        if not isinstance(save_dict, dict) or not save_dict:
            raise ValueError(f"AtomicCheckpointSaver: save_dict must be a non-empty dict of objects, got {save_dict!r}.")
        for name, obj in save_dict.items():
            if not callable(getattr(obj, "state_dict", None)):
                raise TypeError(f"AtomicCheckpointSaver: save_dict[{name!r}] ({type(obj).__name__}) has no state_dict().")
        for arg, value in (("save_interval", save_interval), ("keep_last", keep_last)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"AtomicCheckpointSaver: {arg} must be an int >= 1, got {value!r}.")
        if "trainer" in save_dict:
            raise ValueError("AtomicCheckpointSaver: save_dict must not hold 'trainer'; the engine's state is added itself.")
        self.save_dir = Path(save_dir)
        self.save_dict = {name: unwrap_network(obj) if isinstance(obj, torch.nn.Module) else obj for name, obj in save_dict.items()}
        self.save_interval = save_interval
        self.keep_last = keep_last
        self.resume = bool(resume)

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self)
        engine.add_event_handler(Events.COMPLETED, self._save_final)
        if self.resume:
            engine.add_event_handler(Events.STARTED, self.load_latest)

    def __call__(self, engine) -> None:
        if is_main_process():
            self.save(engine.state.epoch, engine)

    def _save_final(self, engine) -> None:
        # the last epoch is always saved, also when it is not a multiple of save_interval
        if is_main_process() and not (self.save_dir / f"checkpoint_epoch={engine.state.epoch}.pt").exists():
            self.save(engine.state.epoch, engine)

    def load_latest(self, engine) -> str | None:
        """Load the latest checkpoint into ``save_dict`` and ``engine``; returns its path (None: none found)."""
        from monai.handlers import CheckpointLoader

        path = latest_checkpoint(self.save_dir)
        if path is None:
            logging.getLogger("monai_patronus").info("resume: no checkpoint in %s, starting from scratch", self.save_dir)
            return None
        CheckpointLoader(path, {**self.save_dict, "trainer": engine}, map_location=torch.device("cpu"))(engine)
        logging.getLogger("monai_patronus").info("resume: continuing after epoch %d from %s", engine.state.epoch, path)
        return path

    def save(self, epoch: int, engine=None) -> Path:
        """Write the checkpoint of ``epoch`` atomically and prune old ones; returns its path."""
        self.save_dir.mkdir(parents=True, exist_ok=True)
        target = self.save_dir / f"checkpoint_epoch={epoch}.pt"
        state = {name: obj.state_dict() for name, obj in self.save_dict.items()}
        if engine is not None:
            state["trainer"] = engine.state_dict()
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
        for _, path in _checkpoints(self.save_dir)[: -self.keep_last]:
            path.unlink(missing_ok=True)
        # temporary files of a run that was killed while saving (only one process writes here)
        for stale in self.save_dir.glob(".checkpoint_*.tmp"):
            stale.unlink(missing_ok=True)
