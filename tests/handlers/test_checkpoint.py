from __future__ import annotations

import errno
import hashlib
import logging
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.networks.schedulers import DDIMScheduler
from torch.utils.data import DataLoader

from monai_patronus.engines import create_patronus_trainer
from monai_patronus.handlers import AtomicCheckpointSaver, latest_checkpoint, load_network_weights
from monai_patronus.handlers import checkpoint as checkpoint_module
from monai_patronus.handlers.utils import fsync_directory
from monai_patronus.inferers import PatronusInferer
from tests._helpers import tiny_patronus


def _setup(max_epochs, num_prototypes=4):
    net = tiny_patronus(num_prototypes=num_prototypes)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    data = [{"image": torch.rand(1, 16, 16) * 2 - 1} for _ in range(4)]
    inferer = PatronusInferer(DDIMScheduler(1000, clip_sample=False))
    trainer = create_patronus_trainer(net, inferer, DataLoader(data, batch_size=2), opt, max_epochs=max_epochs)
    return net, opt, trainer


def test_keeps_last_n_and_resumes_after_a_crash(tmp_path):
    net, opt, trainer = _setup(max_epochs=5)
    AtomicCheckpointSaver(tmp_path, {"network": net, "optimizer": opt}, keep_last=2).attach(trainer)

    @trainer.on(Events.ITERATION_COMPLETED)
    def crash(engine):  # dies in the middle of epoch 4
        if engine.state.epoch == 4 and engine.state.iteration % 2 == 1:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        trainer.run()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_epoch=2.pt", "checkpoint_epoch=3.pt"]
    path = latest_checkpoint(tmp_path)
    assert path.endswith("checkpoint_epoch=3.pt")
    saved = torch.load(path, weights_only=False)

    assert saved["trainer"]["iteration"] == 6 and saved["trainer"]["epoch_length"] == 2  # = epoch 3

    # resume: a fresh trainer whose saver loads the latest checkpoint when the run starts
    net2, opt2, trainer2 = _setup(max_epochs=5)
    AtomicCheckpointSaver(tmp_path, {"network": net2, "optimizer": opt2}, keep_last=2, resume=True).attach(trainer2)
    epochs_run = []
    trainer2.add_event_handler(Events.EPOCH_STARTED, lambda e: epochs_run.append(e.state.epoch))
    first_weights = {}

    @trainer2.on(Events.ITERATION_STARTED)
    def grab(engine):
        if not first_weights:
            first_weights.update({k: v.clone() for k, v in net2.state_dict().items()})

    trainer2.run()
    assert epochs_run == [4, 5]
    assert trainer2.state.iteration == 10
    for k, v in saved["network"].items():
        torch.testing.assert_close(first_weights[k], v)
    assert latest_checkpoint(tmp_path).endswith("checkpoint_epoch=5.pt")


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    net, opt, trainer = _setup(max_epochs=2)
    AtomicCheckpointSaver(tmp_path, {"network": net}, resume=True).attach(trainer)
    trainer.run()
    assert trainer.state.epoch == 2 and trainer.state.iteration == 4


def test_ddp_wrapped_network_saved_unwrapped(tmp_path):
    net = tiny_patronus(num_prototypes=4)
    wrapped = torch.nn.DataParallel(net)
    path = AtomicCheckpointSaver(tmp_path, {"network": wrapped}).save(1)
    assert set(torch.load(path)["network"]) == set(net.state_dict())


@pytest.mark.parametrize(
    "failure, cause",
    [
        (OSError(errno.ENOSPC, "No space left on device"), "The disk is full"),
        # what torch.save raises when the disk fills (or RLIMIT_FSIZE is hit) in the middle of the zip stream
        (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 896 vs 790"), "The disk may be full"),
    ],
)
def test_failed_save_leaves_previous_checkpoint_and_no_partial_file(tmp_path, monkeypatch, failure, cause):
    # behaviour changed on purpose: the raw OSError/RuntimeError is now a RuntimeError naming the file (raw one chained)
    net = tiny_patronus(num_prototypes=4)
    saver = AtomicCheckpointSaver(tmp_path, {"network": net})
    good = saver.save(1)
    before = good.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise failure

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(RuntimeError) as info:
        saver.save(2)
    message = str(info.value)
    assert f"could not write checkpoint {tmp_path / 'checkpoint_epoch=2.pt'}" in message
    assert cause in message and "--resume true" in message
    assert f"the previous checkpoint {good} is intact" in message and "no temporary file was left" in message
    assert info.value.__cause__ is failure
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_epoch=1.pt"]
    assert good.read_bytes() == before
    assert latest_checkpoint(tmp_path) == str(good)


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="POSIX file size limits")
def test_save_past_a_real_file_size_limit_names_the_file(tmp_path):
    """The audit's real failure (RLIMIT_FSIZE as a stand-in for a full disk), in a child process."""
    script = textwrap.dedent(
        """
        import os, resource, signal, sys, torch
        from monai_patronus.handlers import AtomicCheckpointSaver
        saver = AtomicCheckpointSaver(sys.argv[1], {"network": torch.nn.Linear(200, 200)})
        first = saver.save(1)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        limit = os.path.getsize(first) // 2
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        try:
            saver.save(2)
        except RuntimeError as err:
            print(err)
            sys.exit(3)
        """
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"could not write checkpoint {tmp_path / 'checkpoint_epoch=2.pt'}" in result.stdout
    assert "inline_container" in result.stdout and "The disk may be full" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_epoch=1.pt"]
    assert set(torch.load(tmp_path / "checkpoint_epoch=1.pt", weights_only=True)) == {"network"}


def test_folder_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    events = []
    real_replace, real_fsync = os.replace, os.fsync

    def replace(src, dst):
        events.append(("replace", Path(dst).name))
        return real_replace(src, dst)

    def fsync(fd):
        events.append(("fsync", "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"))
        return real_fsync(fd)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "fsync", fsync)
    AtomicCheckpointSaver(tmp_path, {"network": torch.nn.Linear(2, 2)}).save(1)
    if hasattr(os, "O_DIRECTORY"):
        assert events == [("fsync", "file"), ("replace", "checkpoint_epoch=1.pt"), ("fsync", "dir")]
    else:  # Windows: no directory fsync
        assert events == [("fsync", "file"), ("replace", "checkpoint_epoch=1.pt")]


def test_fsync_directory_skips_filesystems_without_it(tmp_path, monkeypatch):
    def unsupported(fd):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(os, "fsync", unsupported)
    fsync_directory(tmp_path)  # no error
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    if hasattr(os, "O_DIRECTORY"):
        with pytest.raises(OSError, match="I/O error"):
            fsync_directory(tmp_path)


def test_non_finite_weights_are_never_written(tmp_path):
    net = tiny_patronus(num_prototypes=4)
    saver = AtomicCheckpointSaver(tmp_path, {"network": net})
    good = saver.save(1)
    before = good.read_bytes()
    name = next(n for n, _ in net.named_parameters() if n.endswith("prototypes"))
    with torch.no_grad():
        dict(net.named_parameters())[name][0, 0] = float("nan")
    with pytest.raises(FloatingPointError) as info:
        saver.save(2)
    assert f"not writing {tmp_path / 'checkpoint_epoch=2.pt'}" in str(info.value)
    assert f"network parameter {name!r} holds 1 non-finite value(s)" in str(info.value)
    assert "--resume true" in str(info.value) and "lower lr" in str(info.value)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_epoch=1.pt"]  # no new file, no temp file
    assert good.read_bytes() == before


def test_latest_checkpoint_without_any(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    assert latest_checkpoint(tmp_path / "missing") is None
    (tmp_path / "checkpoint_epoch=x.pt").write_text("not a checkpoint name")
    assert latest_checkpoint(tmp_path) is None


def test_invalid_arguments(tmp_path):
    with pytest.raises(ValueError, match="save_dict"):
        AtomicCheckpointSaver(tmp_path, {})
    with pytest.raises(TypeError, match=r"save_dict\['x'\]"):
        AtomicCheckpointSaver(tmp_path, {"x": 3})
    with pytest.raises(ValueError, match="must not hold 'trainer'"):
        AtomicCheckpointSaver(tmp_path, {"trainer": torch.nn.Linear(1, 1)})
    with pytest.raises(ValueError, match="keep_last must be an int >= 1, got 0"):
        AtomicCheckpointSaver(tmp_path, {"n": torch.nn.Linear(1, 1)}, keep_last=0)


def test_last_epoch_is_saved_even_between_intervals(tmp_path):
    net, opt, trainer = _setup(max_epochs=3)
    AtomicCheckpointSaver(tmp_path, {"network": net, "optimizer": opt}, save_interval=2, keep_last=5).attach(trainer)
    trainer.run()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_epoch=2.pt", "checkpoint_epoch=3.pt"]
    assert (
        torch.load(tmp_path / "checkpoint_epoch=3.pt", weights_only=True)["trainer"]["iteration"] == 6
    )  # 3 epochs of 2


def _digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _train(folder, max_epochs, keep_last=2, resume=False, num_prototypes=4):
    net, opt, trainer = _setup(max_epochs, num_prototypes)
    AtomicCheckpointSaver(folder, {"network": net, "optimizer": opt}, keep_last=keep_last, resume=resume).attach(
        trainer
    )
    epochs_run = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: epochs_run.append(e.state.epoch))
    trainer.run()
    return net, trainer, epochs_run


def test_new_run_archives_an_earlier_runs_checkpoints(tmp_path, caplog):
    """F2: a shorter new run in a folder holding a longer run's checkpoints loses nothing and is what loads."""
    _train(tmp_path, max_epochs=3)
    old = {p.name: _digest(p) for p in tmp_path.glob("checkpoint_epoch=*.pt")}
    assert sorted(old) == ["checkpoint_epoch=2.pt", "checkpoint_epoch=3.pt"]

    with caplog.at_level(logging.WARNING, logger="monai_patronus"):
        net, _, _ = _train(tmp_path, max_epochs=1)
    assert sorted(p.name for p in tmp_path.glob("checkpoint_epoch=*.pt")) == ["checkpoint_epoch=1.pt"]
    archives = list((tmp_path / "previous").iterdir())
    assert len(archives) == 1 and {p.name: _digest(p) for p in archives[0].iterdir()} == old
    assert f"to {archives[0]}" in caplog.text and "--resume true" in caplog.text

    assert latest_checkpoint(tmp_path) == str(tmp_path / "checkpoint_epoch=1.pt")
    fresh = tiny_patronus(num_prototypes=4)
    assert load_network_weights(fresh, tmp_path) == str(tmp_path / "checkpoint_epoch=1.pt")
    for k, v in net.state_dict().items():  # the new run's weights, not the archived epoch 3
        torch.testing.assert_close(fresh.state_dict()[k], v, rtol=0, atol=0)


def test_rerunning_in_the_same_folder_keeps_every_run(tmp_path):
    """``make demo`` twice: each run prunes only its own checkpoints; earlier runs are archived, never deleted."""
    for _ in range(3):
        _train(tmp_path, max_epochs=3)
        assert sorted(p.name for p in tmp_path.glob("checkpoint_epoch=*.pt")) == [
            "checkpoint_epoch=2.pt",
            "checkpoint_epoch=3.pt",
        ]
    archives = sorted((tmp_path / "previous").iterdir())
    assert len(archives) == 2  # distinct folders even within the same second
    for folder in archives:
        assert sorted(p.name for p in folder.iterdir()) == ["checkpoint_epoch=2.pt", "checkpoint_epoch=3.pt"]


def test_other_ranks_never_move_files(tmp_path, monkeypatch):
    _train(tmp_path, max_epochs=2)
    before = {p.name: _digest(p) for p in tmp_path.iterdir()}
    monkeypatch.setattr(checkpoint_module, "is_main_process", lambda: False)
    _train(tmp_path, max_epochs=1)
    assert {p.name: _digest(p) for p in tmp_path.iterdir()} == before


def test_resume_falls_back_past_a_truncated_checkpoint(tmp_path, caplog):
    _train(tmp_path, max_epochs=3, keep_last=3)
    newest = tmp_path / "checkpoint_epoch=3.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # e.g. a bad copy
    broken = _digest(newest)
    good = torch.load(tmp_path / "checkpoint_epoch=2.pt", weights_only=True)

    net, opt, trainer = _setup(max_epochs=4)
    saver = AtomicCheckpointSaver(tmp_path, {"network": net, "optimizer": opt}, keep_last=3, resume=True)
    with caplog.at_level(logging.WARNING, logger="monai_patronus"):
        assert saver.load_latest(trainer) == str(tmp_path / "checkpoint_epoch=2.pt")
    assert trainer.state.epoch == 2 and trainer.state.iteration == 4  # the older checkpoint's state
    for k, v in good["network"].items():
        torch.testing.assert_close(net.state_dict()[k], v, rtol=0, atol=0)
    assert f"skipping checkpoint {newest}" in caplog.text and "truncated or corrupt" in caplog.text
    moved = list((tmp_path / "previous").glob("*/checkpoint_epoch=3.pt"))
    assert len(moved) == 1 and _digest(moved[0]) == broken  # kept, out of latest_checkpoint's way
    assert latest_checkpoint(tmp_path) == str(tmp_path / "checkpoint_epoch=2.pt")

    # the same through a run: it continues after epoch 2 and writes a good epoch 3 and 4
    caplog.clear()
    moved[0].replace(newest)  # put the truncated file back
    with caplog.at_level(logging.WARNING, logger="monai_patronus"):
        _, trainer, epochs_run = _train(tmp_path, max_epochs=4, keep_last=3, resume=True)
    assert epochs_run == [3, 4] and trainer.state.iteration == 8
    assert f"skipping checkpoint {newest}" in caplog.text
    assert sorted(p.name for p in tmp_path.glob("checkpoint_epoch=*.pt")) == [
        "checkpoint_epoch=2.pt",
        "checkpoint_epoch=3.pt",
        "checkpoint_epoch=4.pt",
    ]
    assert torch.load(newest, weights_only=True)["trainer"]["iteration"] == 6


def test_resume_skips_a_checkpoint_of_another_architecture(tmp_path, caplog):
    _train(tmp_path, max_epochs=1)
    other, other_opt, other_trainer = _setup(max_epochs=2, num_prototypes=6)
    AtomicCheckpointSaver(tmp_path, {"network": other, "optimizer": other_opt}).save(2, other_trainer)
    with caplog.at_level(logging.WARNING, logger="monai_patronus"):
        _, trainer, epochs_run = _train(tmp_path, max_epochs=2, resume=True)
    assert epochs_run == [2]
    assert f"skipping checkpoint {tmp_path / 'checkpoint_epoch=2.pt'}" in caplog.text
    assert "another configuration" in caplog.text


def test_resume_names_every_checkpoint_when_none_loads(tmp_path):
    _train(tmp_path, max_epochs=2)
    (tmp_path / "checkpoint_epoch=2.pt").write_bytes(b"")
    other, other_opt, other_trainer = _setup(max_epochs=2, num_prototypes=6)
    AtomicCheckpointSaver(tmp_path / "x", {"network": other, "optimizer": other_opt}).save(1, other_trainer)
    (tmp_path / "x" / "checkpoint_epoch=1.pt").replace(tmp_path / "checkpoint_epoch=1.pt")
    before = {p.name: _digest(p) for p in tmp_path.glob("checkpoint_epoch=*.pt")}
    net, opt, trainer = _setup(max_epochs=3)
    AtomicCheckpointSaver(tmp_path, {"network": net, "optimizer": opt}, resume=True).attach(trainer)
    with pytest.raises(RuntimeError, match=r"none of the 2 checkpoint\(s\)") as info:
        trainer.run()
    message = str(info.value)
    assert f"{tmp_path / 'checkpoint_epoch=2.pt'}: checkpoint" in message and "truncated or corrupt" in message
    assert f"{tmp_path / 'checkpoint_epoch=1.pt'}: checkpoint" in message and "shape mismatch" in message
    assert {p.name: _digest(p) for p in tmp_path.glob("checkpoint_epoch=*.pt")} == before  # nothing moved
    assert not (tmp_path / "previous").exists()


def test_resume_beyond_max_epochs_says_what_to_do(tmp_path):
    _train(tmp_path, max_epochs=3)
    net, opt, trainer = _setup(max_epochs=2)
    AtomicCheckpointSaver(tmp_path, {"network": net, "optimizer": opt}, resume=True).attach(trainer)
    with pytest.raises(ValueError, match="epoch 3, beyond max_epochs=2.*--max_epochs 4"):
        trainer.run()


def test_load_network_weights_names_a_corrupt_file(tmp_path):
    _train(tmp_path, max_epochs=2, keep_last=2)
    newest = tmp_path / "checkpoint_epoch=2.pt"
    newest.write_bytes(newest.read_bytes()[:100])
    with pytest.raises(RuntimeError) as info:
        load_network_weights(tiny_patronus(num_prototypes=4), tmp_path)
    message = str(info.value)
    assert f"checkpoint {newest} cannot be loaded" in message and "truncated or corrupt" in message
    assert "checkpoint_epoch=1.pt (pass one of them as the file)" in message
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(RuntimeError, match=r"junk\.pt cannot be loaded"):
        load_network_weights(tiny_patronus(num_prototypes=4), tmp_path / "junk.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(RuntimeError, match=r"tensor\.pt holds a Tensor, not a dict"):
        load_network_weights(tiny_patronus(num_prototypes=4), tmp_path / "tensor.pt")


def test_load_network_weights_names_an_architecture_mismatch(tmp_path):
    path = AtomicCheckpointSaver(tmp_path, {"network": tiny_patronus(num_prototypes=4)}).save(1)
    net = tiny_patronus(num_prototypes=6)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError) as info:
        load_network_weights(net, path)
    message = str(info.value)
    assert f"checkpoint {path} does not fit the PatronusUNet" in message
    assert "shape mismatch" in message and "prototypes: checkpoint (4," in message
    assert "trained with another configuration" in message
    for k, v in net.state_dict().items():  # nothing half-loaded
        assert torch.equal(v, before[k])
    with pytest.raises(ValueError, match=r"missing key\(s\).*unexpected key\(s\)"):
        load_network_weights(torch.nn.Linear(2, 2), path)
    wrapped = {"network": {f"module.{k}": v for k, v in tiny_patronus(num_prototypes=4).state_dict().items()}}
    torch.save(wrapped, tmp_path / "ddp.pt")
    with pytest.raises(ValueError, match="DistributedDataParallel"):
        load_network_weights(tiny_patronus(num_prototypes=4), tmp_path / "ddp.pt")
