"""F6: a non-finite loss stops training before the optimizer steps on it; no checkpoint is written over good ones."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.engines.utils import IterationEvents
from monai.networks.schedulers import DDIMScheduler
from torch.utils.data import DataLoader

from monai_patronus.engines import create_patronus_trainer
from monai_patronus.handlers import AtomicCheckpointSaver
from monai_patronus.inferers import PatronusInferer
from tests._helpers import tiny_patronus


def _data(nan_item: int | None = None) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    data = [{"image": torch.rand(1, 16, 16, generator=g) * 2 - 1} for _ in range(4)]
    if nan_item is not None:
        data[nan_item]["image"][0, 3, 5] = float("nan")
    return data


def _trainer(data, max_epochs, folder, resume=False, **kwargs):
    torch.manual_seed(0)
    net = tiny_patronus(num_prototypes=4)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    inferer = PatronusInferer(DDIMScheduler(1000, clip_sample=False))
    trainer = create_patronus_trainer(
        net, inferer, DataLoader(data, batch_size=2), opt, max_epochs=max_epochs, **kwargs
    )
    AtomicCheckpointSaver(folder, {"network": net, "optimizer": opt}, keep_last=3, resume=resume).attach(trainer)
    return net, trainer


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def test_nan_loss_raises_before_the_optimizer_steps_and_keeps_the_good_checkpoints(tmp_path):
    _, trainer = _trainer(_data(), max_epochs=2, folder=tmp_path)
    trainer.run()
    good = _digests(tmp_path)
    assert sorted(good) == ["checkpoint_epoch=1.pt", "checkpoint_epoch=2.pt"]

    # resumed with a NaN pixel in the second batch: epoch 3 is iterations 5 and 6, the NaN loss at 6
    net, trainer = _trainer(_data(nan_item=2), max_epochs=4, folder=tmp_path, resume=True)
    weights = {}
    completed = []
    trainer.add_event_handler(
        Events.ITERATION_STARTED, lambda e: weights.update({k: v.clone() for k, v in net.state_dict().items()})
    )
    trainer.add_event_handler(Events.COMPLETED, lambda e: completed.append(e.state.epoch))
    with pytest.raises(FloatingPointError) as info:
        trainer.run()
    message = str(info.value)
    assert "non-finite training loss (loss=nan) at epoch 3, iteration 6 (2 of 2 in the epoch)" in message
    assert (
        "lower lr" in message and "autocast" in message and "check the data" in message and "--resume true" in message
    )
    assert trainer.state.iteration == 6 and not completed  # no COMPLETED: no final checkpoint, no registration
    for k, v in net.state_dict().items():  # the optimizer never stepped on the NaN loss
        assert torch.equal(v, weights[k]), k
    assert _digests(tmp_path) == good  # the good checkpoints unchanged, no new one, no temp file


def test_a_nan_term_added_by_a_handler_is_caught(tmp_path):
    """Handlers such as the distinct loss add their terms at LOSS_COMPLETED too; the check sees the sum."""
    net, trainer = _trainer(_data(), max_epochs=2, folder=tmp_path)

    @trainer.on(IterationEvents.LOSS_COMPLETED)
    def bad_term(engine):
        if engine.state.iteration == 3:
            engine.state.output["distinct_loss"] = torch.tensor(float("inf"))
            engine.state.output["loss"] = engine.state.output["loss"] + engine.state.output["distinct_loss"]

    with pytest.raises(FloatingPointError, match=r"\(loss=inf, distinct_loss=inf\) at epoch 2, iteration 3"):
        trainer.run()
    assert sorted(_digests(tmp_path)) == ["checkpoint_epoch=1.pt"]


def test_without_the_check_the_saver_refuses_nan_weights(tmp_path):
    """With ``finite_loss_check=False`` the weights turn NaN; the saver still writes nothing over the good ones."""
    net, trainer = _trainer(_data(), max_epochs=1, folder=tmp_path)
    trainer.run()
    good = _digests(tmp_path)
    net, trainer = _trainer(_data(nan_item=0), max_epochs=2, folder=tmp_path, resume=True, finite_loss_check=False)
    with pytest.raises(FloatingPointError, match=r"not writing .*checkpoint_epoch=2\.pt: network parameter '.*' holds"):
        trainer.run()
    assert _digests(tmp_path) == good


def test_finite_training_is_unaffected(tmp_path):
    net, trainer = _trainer(_data(), max_epochs=2, folder=tmp_path)
    trainer.run()
    assert trainer.state.iteration == 4 and torch.isfinite(trainer.state.output["loss"])
