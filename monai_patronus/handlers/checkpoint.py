"""Atomic (fsynced temporary file + rename), keep-last-N training checkpoints; resume and weight loading.

Not ignite's ``Checkpoint(DiskSaver(atomic=True))``: (ignite 0.5.5, measured) it removes the oldest file *before*
writing the new one, so a failed write with ``n_saved=1`` leaves no checkpoint, and it saves a one-object
``to_save`` as a bare state dict, not ``{"network": ...}`` (the format of ``models/model.pt``). A new run
(``resume=False``) moves an earlier run's checkpoints to ``<save_dir>/previous/<UTC time>/`` (never deleted).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import torch
from ignite.engine import Events

from monai_patronus.handlers.utils import fsync_directory, is_main_process, unwrap_network

__all__ = ["ARCHIVE_DIR", "AtomicCheckpointSaver", "latest_checkpoint", "load_network_weights"]

#: subfolder of ``save_dir`` where a new run moves an earlier run's checkpoints (and resume its unloadable ones)
ARCHIVE_DIR = "previous"

_PATTERN = re.compile(r"^checkpoint_epoch=(\d+)\.pt$")
logger = logging.getLogger("monai_patronus")


def _checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """``(epoch, path)`` of every ``checkpoint_epoch=N.pt`` in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in directory.iterdir() if (m := _PATTERN.match(p.name)) and p.is_file())


def latest_checkpoint(directory: str | Path) -> str | None:
    """Path of the highest-epoch ``checkpoint_epoch=N.pt`` in ``directory`` (not ``previous/``), or ``None``."""
    found = _checkpoints(Path(directory))
    return str(found[-1][1]) if found else None


def _short(err: BaseException) -> str:
    """``Type: first line of the message`` (torch's messages run to many lines)."""
    text = (str(err).strip().splitlines() or [""])[0][:300]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _keys(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f" ... (+{len(names) - limit} more)" if len(names) > limit else "")


def _read_checkpoint(path: Path, hint: str = "") -> Mapping:
    """``torch.load(path, weights_only=True)`` of a checkpoint dict; a RuntimeError names the file and the fix."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise RuntimeError(
            f"checkpoint {path} cannot be loaded ({_short(err)}): it is unreadable, truncated or corrupt, or not "
            f"weights-only. Copy it again, or move it out of the folder to use the previous checkpoint.{hint}"
        ) from err
    if not isinstance(state, Mapping):
        raise RuntimeError(f"checkpoint {path} holds a {type(state).__name__}, not a dict of state dicts.{hint}")
    return state


def _check_fits(module: torch.nn.Module, state_dict: Mapping, path: Path, entry: str) -> None:
    """Raise a ValueError naming ``path`` if ``state_dict`` does not fit ``module`` (keys and shapes)."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs network {tuple(v.shape)}"
        for k, v in expected.items()
        if isinstance(state_dict.get(k), torch.Tensor) and state_dict[k].shape != v.shape
    ]
    found = {"missing key(s)": missing, "unexpected key(s)": unexpected, "shape mismatch(es)": shapes}
    parts = [f"{len(items)} {what} ({_keys(items)})" for what, items in found.items() if items]
    if not parts:
        return
    ddp = unexpected and all(k.startswith("module.") for k in unexpected)
    raise ValueError(
        f"checkpoint {path} does not fit the {type(module).__name__} of entry {entry!r}: {'; '.join(parts)}; it was "
        "trained with another configuration (num_prototypes, channels, spatial_dims, in_channels, preset)."
        + (" Its keys start with 'module.': it was saved from a DistributedDataParallel network." if ddp else "")
        + " Load it with the config it was trained with, or point ckpt_dir at checkpoints of this config."
    )


def load_network_weights(network: torch.nn.Module, checkpoint: str | Path, key: str = "network") -> str:
    """Load ``checkpoint[key]`` into ``network`` (unwrapped if DDP); returns the path loaded.

    Args:
        network: the network to load into, of the architecture the checkpoint was trained with.
        checkpoint: a checkpoint file, or a folder (then its latest ``checkpoint_epoch=N.pt``).
        key: the checkpoint entry holding the network's state dict.

    Raises:
        FileNotFoundError / RuntimeError / KeyError / ValueError: no checkpoint / unreadable / no ``key`` entry /
            another architecture.
    """
    path = Path(checkpoint)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"no checkpoint_epoch=N.pt in {path}: train first, or give a checkpoint file.")
        path = Path(found)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist: train first, or give an existing file or folder.")
    others = [p.name for _, p in reversed(_checkpoints(path.parent)) if p != path]
    hint = f" Other checkpoints in {path.parent}: {_keys(others)} (pass one of them as the file)." if others else ""
    state = _read_checkpoint(path, hint)
    if key not in state:
        raise KeyError(f"checkpoint {path} has no {key!r} entry (it has {sorted(state)}).")
    target = unwrap_network(network)
    _check_fits(target, state[key], path, key)
    target.load_state_dict(state[key])
    return str(path)


class _Unloadable(RuntimeError):
    """A checkpoint that resume skips (it names the file and why)."""


class AtomicCheckpointSaver:
    """Save ``{name: obj.state_dict()}`` and the trainer's state every ``save_interval`` epochs (and after the last
    epoch) as ``checkpoint_epoch=N.pt``, atomically, never with NaN/Inf network weights; optionally resume from the
    latest one when the run starts. Only rank 0 writes and moves files; every rank resumes.

    Args:
        save_dir: folder for the checkpoints (created if missing).
        save_dict: objects with ``state_dict()``, e.g. ``{"network": net, "optimizer": opt}``; DDP-wrapped networks
            are saved unwrapped. The engine's state is added under ``"trainer"``.
        save_interval: epochs between checkpoints.
        keep_last: how many of this run's newest checkpoints to keep (archived runs are never deleted).
        resume: on ``Events.STARTED``, load the newest checkpoint in ``save_dir`` that loads (:meth:`load_latest`);
            a bundle exposes this as ``--resume true``.
    """

    def __init__(
        self, save_dir: str | Path, save_dict: dict, save_interval: int = 1, keep_last: int = 3, resume: bool = False
    ) -> None:
        if not save_dict or "trainer" in save_dict:
            raise ValueError(
                f"AtomicCheckpointSaver: save_dict must be a non-empty dict of objects and must not hold 'trainer' "
                f"(the engine's state is added itself), got {sorted(save_dict or {})}."
            )
        for name, obj in save_dict.items():
            if not callable(getattr(obj, "state_dict", None)):
                raise TypeError(
                    f"AtomicCheckpointSaver: save_dict[{name!r}] ({type(obj).__name__}) lacks state_dict()."
                )
        for arg, value in (("save_interval", save_interval), ("keep_last", keep_last)):
            if value < 1:
                raise ValueError(f"AtomicCheckpointSaver: {arg} must be an int >= 1, got {value!r}.")
        self.save_dir = Path(save_dir)
        self.save_dict = {k: unwrap_network(v) if isinstance(v, torch.nn.Module) else v for k, v in save_dict.items()}
        self.save_interval, self.keep_last, self.resume = save_interval, keep_last, bool(resume)
        self._own: set[Path] = set()  # checkpoints of this run: the only ones pruning may delete

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval) | Events.COMPLETED, self)

    def _started(self, engine) -> None:
        if engine.state.iteration > 0:  # engine.run() continuing in the same process: the same run goes on
            return
        if self.resume:
            self.load_latest(engine)
        elif is_main_process():
            self.archive_previous_run()

    def __call__(self, engine) -> None:  # every save_interval epochs, and the last epoch in any case
        if is_main_process() and not (self.save_dir / f"checkpoint_epoch={engine.state.epoch}.pt").exists():
            self.save(engine.state.epoch, engine)

    def _move(self, paths: list[Path]) -> Path:
        """Move ``paths`` to a new ``previous/<UTC time>[-k]/`` folder and return it."""
        root = self.save_dir / ARCHIVE_DIR
        root.mkdir(parents=True, exist_ok=True)
        stamp, k = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()), 0
        while (folder := root / (stamp if k == 0 else f"{stamp}-{k}")).exists():
            k += 1
        folder.mkdir()
        for path in paths:
            os.replace(path, folder / path.name)
        fsync_directory(folder)
        fsync_directory(self.save_dir)
        return folder

    def archive_previous_run(self) -> Path | None:
        """Move an earlier run's checkpoints to a new ``previous/<UTC time>/`` folder and return it (None: none)."""
        found = _checkpoints(self.save_dir)
        self._own = set()
        self._clean_temporary_files()
        if not found:
            return None
        folder = self._move([path for _, path in found])
        logger.warning("new run: moved an earlier run's checkpoints to %s (--resume true continues)", folder)
        return folder

    def load_latest(self, engine) -> str | None:
        """Load the newest checkpoint in ``save_dir`` that loads and return its path (None: none); newer ones that
        do not load are skipped with a WARNING and (rank 0) moved to ``previous/<UTC time>/``.

        Raises:
            RuntimeError: no checkpoint loads. ValueError: its epoch is beyond the engine's ``max_epochs``.
        """
        found = _checkpoints(self.save_dir)
        if not found:
            logger.info("resume: no checkpoint in %s, starting from scratch", self.save_dir)
            return None
        skipped: list[tuple[Path, str]] = []
        for _, path in reversed(found):
            try:
                self._restore(path, engine)
                break
            except _Unloadable as err:
                logger.warning("resume: skipping checkpoint %s: %s", path, err)
                skipped.append((path, str(err)))
        else:
            listing = "\n".join(f"  - {p}: {why}" for p, why in skipped)
            raise RuntimeError(
                f"resume: none of the {len(skipped)} checkpoint(s) in {self.save_dir} loads:\n{listing}\n"
                "Copy good checkpoints back into the folder, run with the configuration they were trained with, "
                f"or start a new run without --resume (these files are then moved to {self.save_dir / ARCHIVE_DIR})."
            )
        if skipped and is_main_process():
            folder = self._move([p for p, _ in skipped])
            logger.warning("resume: moved the %d checkpoint(s) that do not load to %s", len(skipped), folder)
        self._own = {p for _, p in _checkpoints(self.save_dir)}  # the resumed run's files
        logger.info("resume: continuing after epoch %d from %s", engine.state.epoch, path)
        return str(path)

    def _restore(self, path: Path, engine) -> None:
        """Load ``path`` into ``save_dict`` and ``engine``; ``_Unloadable`` names what does not fit."""
        try:
            checkpoint = _read_checkpoint(path)
            for name in [*self.save_dict, "trainer"]:
                if name not in checkpoint:
                    raise ValueError(f"it has no {name!r} entry (it has {sorted(checkpoint)})")
                if isinstance(self.save_dict.get(name), torch.nn.Module):
                    _check_fits(self.save_dict[name], checkpoint[name], path, name)
        except (RuntimeError, ValueError) as err:
            raise _Unloadable(str(err)) from err
        max_epochs = engine.state.max_epochs
        # every entry is loaded in full, so a later (older) candidate overwrites anything a failed one changed
        for name, obj in [*self.save_dict.items(), ("trainer", engine)]:
            try:
                obj.load_state_dict(checkpoint[name])
            except Exception as err:
                raise _Unloadable(
                    f"its {name!r} entry does not load into the {type(obj).__name__} ({_short(err)}): it was written "
                    "with another configuration (e.g. another optimizer or learning-rate schedule)"
                ) from err
        if max_epochs is not None and engine.state.epoch > max_epochs:  # as MONAI's CheckpointLoader
            raise ValueError(
                f"resume: checkpoint {path} is at epoch {engine.state.epoch}, beyond max_epochs={max_epochs}: "
                f"train with --max_epochs {engine.state.epoch + 1} or more to continue it; inference needs no resume."
            )
        engine.state.max_epochs = max_epochs

    def save(self, epoch: int, engine=None) -> Path:
        """Write the checkpoint of ``epoch`` atomically, then prune the run's old ones; returns its path. Raises
        ``FloatingPointError`` for a NaN/Inf network weight, ``RuntimeError`` for a failed write (nothing written)."""
        target = self.save_dir / f"checkpoint_epoch={epoch}.pt"
        state = {name: obj.state_dict() for name, obj in self.save_dict.items()}
        for entry, obj in self.save_dict.items():
            for key, value in state[entry].items() if isinstance(obj, torch.nn.Module) else ():
                if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
                    raise FloatingPointError(
                        f"AtomicCheckpointSaver: not writing {target}: {entry} parameter {key!r} holds "
                        f"{int((~torch.isfinite(value)).sum())} non-finite value(s) (training diverged); resume from "
                        "the last good checkpoint (--resume true) with a lower lr."
                    )
        if engine is not None:
            state["trainer"] = engine.state_dict()
        tmp = None
        try:
            self.save_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".checkpoint_", suffix=".tmp", dir=self.save_dir)
            with os.fdopen(fd, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException as err:  # KeyboardInterrupt too: leave no partial file
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            if not isinstance(err, Exception):
                raise
            cause = (
                "is full" if getattr(err, "errno", None) == errno.ENOSPC else "may be full or the folder not writable"
            )
            previous = _checkpoints(self.save_dir)
            kept = f"the previous checkpoint {previous[-1][1]} is intact" if previous else "there was no earlier one"
            raise RuntimeError(
                f"AtomicCheckpointSaver: could not write checkpoint {target} ({_short(err)}). The disk {cause}: free "
                f"space, then continue with --resume true. Nothing was replaced: {kept}, and no temporary file was "
                "left."
            ) from err
        fsync_directory(self.save_dir)
        self._own.add(target)
        own = sorted((int(_PATTERN.match(p.name).group(1)), p) for p in self._own if p.is_file())
        for _, path in own[: -self.keep_last]:
            path.unlink(missing_ok=True)
        self._own = {p for _, p in own[-self.keep_last :]}
        self._clean_temporary_files()
        return target

    def _clean_temporary_files(self) -> None:
        """Remove the temporary files of a run killed while saving (only one process writes here)."""
        for stale in self.save_dir.glob(".checkpoint_*.tmp") if self.save_dir.is_dir() else ():
            stale.unlink(missing_ok=True)
