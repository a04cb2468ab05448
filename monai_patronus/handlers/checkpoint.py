"""Atomic, keep-last-N training checkpoints, and the latest one for resuming or loading weights.

MONAI's ``CheckpointSaver`` writes in place (ignite ``DiskSaver(atomic=False)``), so a crash while
saving can leave a truncated file. Here every checkpoint goes to a temporary file in the same folder,
is flushed to disk, renamed over its final name (``os.replace`` is atomic on POSIX and Windows), and the
folder itself is flushed (POSIX), so the rename survives a power loss.

One folder holds the checkpoints of one run. A new run (``resume=False``) that finds an earlier run's
``checkpoint_epoch=N.pt`` files moves them to ``<save_dir>/previous/<UTC time>/`` when it starts (never
deleted), so keep-last-N pruning, which only touches the run's own files, cannot delete the new run's
checkpoints, and :func:`latest_checkpoint` never returns the other run's weights.
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


def latest_checkpoint(directory: str | Path) -> str | None:
    """Path of the highest-epoch ``checkpoint_epoch=N.pt`` in ``directory``, or ``None`` if there is none.

    Only the folder itself is searched: earlier runs archived under ``previous/`` are not candidates.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return None
    found = _checkpoints(directory)
    return str(found[-1][1]) if found else None


def _checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """``(epoch, path)`` of every ``checkpoint_epoch=N.pt`` in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in directory.iterdir() if (m := _PATTERN.match(p.name)) and p.is_file())


def _short(err: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message`` (torch's messages run to many lines)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if len(text) > limit:
        text = text[:limit] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _read_checkpoint(path: Path, hint: str = "") -> Mapping:
    """``torch.load(path, weights_only=True)`` of a checkpoint dict, with errors that name the file and the fix
    (``hint`` is appended to them).

    Raises:
        RuntimeError: the file cannot be read or is not a checkpoint dict (truncated, corrupt, foreign).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        if isinstance(err, OSError) and not isinstance(err, EOFError):
            raise RuntimeError(
                f"checkpoint {path} cannot be read ({_short(err)}): check that the file exists and is readable.{hint}"
            ) from err
        raise RuntimeError(
            f"checkpoint {path} cannot be loaded ({_short(err)}): the file is truncated or corrupt (e.g. an "
            "interrupted copy or a full disk), or holds objects that weights-only loading refuses. Copy it again "
            f"from where it was trained, or move it out of the folder to use the previous checkpoint.{hint}"
        ) from err
    if not isinstance(state, Mapping):
        raise RuntimeError(
            f"checkpoint {path} holds a {type(state).__name__}, not a dict of state dicts: it was not written by "
            f"AtomicCheckpointSaver. Give a checkpoint_epoch=N.pt written by a Patronus training run.{hint}"
        )
    return state


def _keys(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" ... (+{len(names) - limit} more)" if len(names) > limit else "")


def _check_fits(module: torch.nn.Module, state_dict: object, path: Path, entry: str) -> None:
    """Raise a ValueError naming ``path`` if ``state_dict`` does not fit ``module`` (keys and shapes)."""
    if not isinstance(state_dict, Mapping):
        raise ValueError(
            f"checkpoint {path}: entry {entry!r} is a {type(state_dict).__name__}, not a state dict; give a "
            "checkpoint_epoch=N.pt written by a Patronus training run."
        )
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs network {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and isinstance(v, torch.Tensor) and isinstance(state_dict[k], torch.Tensor)
        and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or shapes):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s) ({_keys(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) ({_keys(unexpected)})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es) ({_keys(shapes, 3)})")
    hint = ""
    if unexpected and all(k.startswith("module.") for k in unexpected):
        hint = " Its keys start with 'module.': it was saved from a DistributedDataParallel-wrapped network."
    raise ValueError(
        f"checkpoint {path} does not fit the {type(module).__name__} of entry {entry!r}: {'; '.join(parts)}. "
        "It was trained with another configuration (e.g. other num_prototypes, channels, spatial_dims, "
        f"in_channels or encoder preset).{hint} Load it with the config it was trained with, or point ckpt_dir "
        "at checkpoints trained with this config (train first)."
    )


def load_network_weights(network: torch.nn.Module, checkpoint: str | Path, key: str = "network") -> str:
    """Load ``checkpoint[key]`` into ``network`` (unwrapped if DDP).

    Args:
        network: the network to load into; it must have the architecture the checkpoint was trained with.
        checkpoint: a ``checkpoint_epoch=N.pt`` file, or a folder (then its latest ``checkpoint_epoch=N.pt``;
            earlier runs archived under ``previous/`` are not considered).
        key: the checkpoint entry holding the network's state dict.

    Returns:
        The path of the file loaded.

    Raises:
        FileNotFoundError: no such file, or no checkpoint in the folder (train first, or give a file).
        RuntimeError: the file is truncated, corrupt or not a checkpoint (named, with what to do).
        KeyError: the checkpoint has no ``key`` entry.
        ValueError: the checkpoint was trained with another architecture (missing/unexpected keys, shapes).
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
    """Save ``{name: obj.state_dict()}`` and the trainer's state every ``save_interval`` epochs as
    ``checkpoint_epoch=N.pt`` (and after the last epoch in any case); optionally resume from the latest one
    when the run starts.

    When a new run starts (``resume=False``) in a folder that holds an earlier run's checkpoints, they are moved
    to ``<save_dir>/previous/<UTC time>/`` (a WARNING names the folder) and kept: pruning only deletes
    checkpoints of the current run, so nothing of the new run is lost and nothing later loads the other run's
    weights by mistake. A checkpoint whose network weights are not finite (NaN/Inf) is never written.

    Args:
        save_dir: folder for the checkpoints (created if missing).
        save_dict: objects with ``state_dict()``, e.g. ``{"network": net, "optimizer": opt, "lr_scheduler": s}``.
            Wrapped networks (DDP) are saved unwrapped. The attached engine's state (epoch, iteration) is
            added under ``"trainer"``.
        save_interval: epochs between checkpoints.
        keep_last: how many of the run's newest checkpoints to keep (older ones of the same run are deleted after
            a good save; archived runs are never deleted).
        resume: on ``Events.STARTED``, load the newest checkpoint in ``save_dir`` that loads into ``save_dict``
            and the engine, so training continues after the last saved epoch. Checkpoints that do not load
            (truncated, corrupt, another configuration) are skipped with a WARNING naming each and why, and
            moved to ``previous/<UTC time>/``. A bundle exposes this as one override (``--resume true``).

    Only rank 0 writes (and moves files) when running distributed; every rank resumes.
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
        self._own: set[Path] = set()  # checkpoints of this run: the only ones pruning may delete

    # ------------------------------------------------------------------------------------------ events
    def attach(self, engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self)
        engine.add_event_handler(Events.COMPLETED, self._save_final)

    def _started(self, engine) -> None:
        if engine.state.iteration > 0:  # engine.run() continuing in the same process: the same run goes on
            return
        if self.resume:
            self.load_latest(engine)
        elif is_main_process():
            self.archive_previous_run()

    def __call__(self, engine) -> None:
        if is_main_process():
            self.save(engine.state.epoch, engine)

    def _save_final(self, engine) -> None:
        # the last epoch is always saved, also when it is not a multiple of save_interval
        if is_main_process() and not (self.save_dir / f"checkpoint_epoch={engine.state.epoch}.pt").exists():
            self.save(engine.state.epoch, engine)

    # ------------------------------------------------------------------------------------ a new run
    def _archive_folder(self) -> Path:
        """A new ``previous/<UTC time>[-k]/`` folder."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        root = self.save_dir / ARCHIVE_DIR
        root.mkdir(parents=True, exist_ok=True)
        for k in range(1000):
            folder = root / (stamp if k == 0 else f"{stamp}-{k}")
            try:
                folder.mkdir()
                return folder
            except FileExistsError:
                continue
        raise RuntimeError(f"AtomicCheckpointSaver: cannot create a new archive folder under {root}; tidy it up.")

    def _move(self, paths: list[Path]) -> Path:
        folder = self._archive_folder()
        for path in paths:
            os.replace(path, folder / path.name)
        fsync_directory(folder)
        fsync_directory(self.save_dir)
        return folder

    def archive_previous_run(self) -> Path | None:
        """Move the ``checkpoint_epoch=N.pt`` files in ``save_dir`` (an earlier run's) to a new
        ``previous/<UTC time>/`` folder; returns it (None: there were none). Called when a run starts from
        epoch 0 without ``resume``: everything already in the folder belongs to an earlier run."""
        found = _checkpoints(self.save_dir)
        self._own = set()
        self._clean_temporary_files()
        if not found:
            return None
        folder = self._move([path for _, path in found])
        epochs = f"epoch {found[0][0]}" if len(found) == 1 else f"epochs {found[0][0]}-{found[-1][0]}"
        logger.warning(
            "new run (resume is off): moved %d checkpoint(s) of an earlier run (%s) from %s to %s, where they are "
            "kept. To continue that run instead, stop this one, move them back into %s and run with --resume true.",
            len(found), epochs, self.save_dir, folder, self.save_dir,
        )
        return folder

    # --------------------------------------------------------------------------------------- resume
    def load_latest(self, engine) -> str | None:
        """Load the newest checkpoint in ``save_dir`` that loads into ``save_dict`` and ``engine``.

        Newer checkpoints that do not load are skipped with a WARNING naming each and why, and (rank 0) moved
        to ``previous/<UTC time>/`` so that nothing loads them later by mistake.

        Returns:
            The path loaded; None when the folder holds no checkpoint (the run starts from scratch).

        Raises:
            RuntimeError: no checkpoint in the folder loads (each is listed with the reason).
            ValueError: the checkpoint's epoch is beyond the engine's ``max_epochs``.
        """
        found = _checkpoints(self.save_dir)
        if not found:
            logger.info("resume: no checkpoint in %s, starting from scratch", self.save_dir)
            return None
        skipped: list[tuple[Path, str]] = []
        loaded: Path | None = None
        for _, path in reversed(found):
            try:
                self._restore(path, engine)
            except _Unloadable as err:
                logger.warning("resume: skipping checkpoint %s: %s", path, err)
                skipped.append((path, str(err)))
                continue
            loaded = path
            break
        if loaded is None:
            listing = "\n".join(f"  - {path}: {why}" for path, why in skipped)
            raise RuntimeError(
                f"resume: none of the {len(skipped)} checkpoint(s) in {self.save_dir} loads:\n{listing}\n"
                "Copy good checkpoints back into the folder, run with the configuration they were trained with, "
                "or start a new run without --resume (these files are then moved to "
                f"{self.save_dir / ARCHIVE_DIR}/<UTC time>/ and kept)."
            )
        if skipped and is_main_process():
            folder = self._move([path for path, _ in skipped])
            logger.warning(
                "resume: moved the %d checkpoint(s) that do not load to %s; continuing from %s",
                len(skipped), folder, loaded,
            )
        self._own = {path for _, path in _checkpoints(self.save_dir)}  # the resumed run's files
        logger.info("resume: continuing after epoch %d from %s", engine.state.epoch, loaded)
        return str(loaded)

    def _restore(self, path: Path, engine) -> None:
        """Load ``path`` into ``save_dict`` and ``engine``; ``_Unloadable`` names what does not fit."""
        try:
            checkpoint = _read_checkpoint(path)
            for name in [*self.save_dict, "trainer"]:
                if name not in checkpoint:
                    raise ValueError(
                        f"it has no {name!r} entry (it has {sorted(checkpoint)}); it was not written by a training "
                        "run with this save_dict"
                    )
                if isinstance(self.save_dict.get(name), torch.nn.Module):
                    _check_fits(self.save_dict[name], checkpoint[name], path, name)
        except (RuntimeError, ValueError) as err:
            raise _Unloadable(str(err)) from err
        # every entry is loaded in full, so a later (older) candidate overwrites anything a failed one changed
        for name, obj in self.save_dict.items():
            try:
                obj.load_state_dict(checkpoint[name])
            except Exception as err:
                raise _Unloadable(
                    f"its {name!r} entry does not load into the {type(obj).__name__} ({_short(err)}): it was written "
                    "with another configuration (e.g. another optimizer or learning-rate schedule)"
                ) from err
        max_epochs = engine.state.max_epochs
        try:
            engine.load_state_dict(checkpoint["trainer"])
        except Exception as err:
            raise _Unloadable(f"its 'trainer' entry does not load into the engine ({_short(err)})") from err
        # as MONAI's CheckpointLoader: the engine keeps its own max_epochs
        if max_epochs is not None and engine.state.epoch > max_epochs:
            raise ValueError(
                f"resume: checkpoint {path} is at epoch {engine.state.epoch}, beyond max_epochs={max_epochs}: "
                f"train with max_epochs > {engine.state.epoch} to continue it (e.g. --max_epochs "
                f"{engine.state.epoch + 1}); to use it for inference, no resume is needed."
            )
        engine.state.max_epochs = max_epochs

    # ----------------------------------------------------------------------------------------- save
    def _check_finite(self, state: dict, target: Path) -> None:
        for entry, obj in self.save_dict.items():
            if not isinstance(obj, torch.nn.Module):
                continue
            for key, value in state[entry].items():
                if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
                    bad = int((~torch.isfinite(value)).sum())
                    raise FloatingPointError(
                        f"AtomicCheckpointSaver: not writing {target}: {entry} parameter {key!r} holds {bad} non-finite "
                        f"value(s) (NaN/Inf) of {value.numel()}; the training diverged. The checkpoints already in "
                        f"{self.save_dir} are kept: resume from the last good one (--resume true) with a lower lr, "
                        "autocast/amp off, and check the data for NaN/Inf or constant images."
                    )

    def save(self, epoch: int, engine=None) -> Path:
        """Write the checkpoint of ``epoch`` atomically and prune the run's old ones; returns its path.

        Raises:
            FloatingPointError: a network weight is NaN/Inf (nothing is written).
            RuntimeError: the write failed (e.g. the disk is full): names the file; the previous checkpoint is
                intact and no temporary file is left.
        """
        target = self.save_dir / f"checkpoint_epoch={epoch}.pt"
        state = {name: obj.state_dict() for name, obj in self.save_dict.items()}
        self._check_finite(state, target)
        if engine is not None:
            state["trainer"] = engine.state_dict()
        tmp: str | None = None
        try:
            self.save_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".checkpoint_", suffix=".tmp", dir=self.save_dir)
            with os.fdopen(fd, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except Exception as err:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            raise RuntimeError(self._failed_save_message(target, err)) from err
        except BaseException:  # KeyboardInterrupt, SystemExit: leave no partial file, keep the interruption
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            raise
        try:
            fsync_directory(self.save_dir)
        except OSError as err:
            raise RuntimeError(
                f"AtomicCheckpointSaver: checkpoint {target} was written but {self.save_dir} could not be flushed to "
                f"disk ({_short(err)}): the disk may be failing or full; check it before relying on this checkpoint."
            ) from err
        self._own.add(target)
        self._prune()
        return target

    def _failed_save_message(self, target: Path, err: Exception) -> str:
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            cause = "The disk is full"
        elif isinstance(err, OSError) and err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            cause = "The folder is not writable (or the disk is full)"
        else:
            cause = "The disk may be full (or a file size limit was reached)"
        previous = [p for _, p in _checkpoints(self.save_dir)]
        kept = f"the previous checkpoint {previous[-1]} is intact" if previous else "no earlier checkpoint was there"
        return (
            f"AtomicCheckpointSaver: could not write checkpoint {target} ({_short(err)}). {cause}: free space or "
            f"choose another output_dir, then continue with --resume true. Nothing was replaced: {kept}, and no "
            "temporary file was left."
        )

    def _prune(self) -> None:
        own = sorted((int(_PATTERN.match(p.name).group(1)), p) for p in self._own if p.is_file())
        for _, path in own[: -self.keep_last]:
            path.unlink(missing_ok=True)
        self._own = {p for _, p in own[-self.keep_last:]}
        self._clean_temporary_files()

    def _clean_temporary_files(self) -> None:
        # temporary files of a run that was killed while saving (only one process writes here)
        if self.save_dir.is_dir():
            for stale in self.save_dir.glob(".checkpoint_*.tmp"):
                stale.unlink(missing_ok=True)
