from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from monai.networks.schedulers import DDIMScheduler
from torch.utils.data import DataLoader

from monai_patronus.engines import create_patronus_trainer
from monai_patronus.handlers import AtomicCheckpointSaver, latest_checkpoint
from monai_patronus.inferers import PatronusInferer
from tests._helpers import tiny_patronus


def _setup(max_epochs):
    net = tiny_patronus(num_prototypes=4)
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


def test_failed_save_leaves_previous_checkpoint_and_no_partial_file(tmp_path, monkeypatch):
    net = tiny_patronus(num_prototypes=4)
    saver = AtomicCheckpointSaver(tmp_path, {"network": net})
    good = saver.save(1)
    before = good.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        saver.save(2)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_epoch=1.pt"]
    assert good.read_bytes() == before
    assert latest_checkpoint(tmp_path) == str(good)


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
    assert torch.load(tmp_path / "checkpoint_epoch=3.pt", weights_only=True)["trainer"]["iteration"] == 6  # 3 epochs of 2
