from __future__ import annotations

import pytest
import torch
from monai.networks.schedulers import DDIMScheduler
from torch.utils.data import DataLoader

from monai_patronus.engines import create_patronus_trainer
from monai_patronus.inferers import PatronusInferer
from tests._helpers import tiny_patronus


def test_supervised_trainer_updates_encoder_and_prototypes():
    net = tiny_patronus(2, num_prototypes=4)
    before = {k: v.clone() for k, v in net.prototype_encoder.state_dict().items()}
    data = [{"image": torch.rand(1, 16, 16) * 2 - 1} for _ in range(8)]
    inferer = PatronusInferer(DDIMScheduler(1000, clip_sample=False))
    trainer = create_patronus_trainer(
        net, inferer, DataLoader(data, batch_size=4), torch.optim.Adam(net.parameters(), 1e-2), max_epochs=2
    )
    trainer.run()
    assert trainer.state.iteration == 4
    assert isinstance(trainer.state.output["loss"], torch.Tensor)
    # MONAI's zero-initialised convs pass gradient to the encoder from the second step on
    after = net.prototype_encoder.state_dict()
    assert not torch.equal(before["prototypes"], after["prototypes"])
    assert not torch.equal(before["features.0.weight"], after["features.0.weight"])


def test_rejects_other_inferers():
    from monai.inferers import SimpleInferer

    with pytest.raises(TypeError, match="PatronusInferer"):
        create_patronus_trainer(
            torch.nn.Identity(), SimpleInferer(), [], torch.optim.SGD([torch.zeros(1, requires_grad=True)], 0.1)
        )


def _one_iteration_trainer(scheduler):
    net = tiny_patronus(2, num_prototypes=4)
    data = [{"image": torch.rand(1, 8, 8) * 2 - 1} for _ in range(4)]
    return create_patronus_trainer(
        net,
        PatronusInferer(scheduler),
        DataLoader(data, batch_size=4),
        torch.optim.Adam(net.parameters(), 1e-3),
        max_epochs=1,
        epoch_length=1,
    )


def test_prepare_batch_follows_the_prediction_type():
    from monai.engines import DiffusionPrepareBatch, VPredictionPrepareBatch

    eps = _one_iteration_trainer(DDIMScheduler(1000, clip_sample=False))
    assert type(eps.prepare_batch) is DiffusionPrepareBatch
    scheduler = DDIMScheduler(1000, clip_sample=False, prediction_type="v_prediction")
    trainer = _one_iteration_trainer(scheduler)
    assert isinstance(trainer.prepare_batch, VPredictionPrepareBatch)
    assert trainer.prepare_batch.scheduler is scheduler and trainer.prepare_batch.num_train_timesteps == 1000
    # the target is the velocity sqrt(a) eps - sqrt(1 - a) x0
    x0, noise, t = torch.rand(2, 1, 8, 8), torch.randn(2, 1, 8, 8), torch.tensor([10, 900])
    a = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(trainer.prepare_batch.get_target(x0, noise, t), a.sqrt() * noise - (1 - a).sqrt() * x0)
    trainer.run()
    assert trainer.state.iteration == 1
    loss = trainer.state.output["loss"]
    assert torch.isfinite(loss).all() and float(loss.detach()) > 0


def test_rejects_unsupported_prediction_type():
    with pytest.raises(ValueError, match="prediction_type must be 'epsilon' or 'v_prediction', got 'sample'"):
        _one_iteration_trainer(DDIMScheduler(1000, clip_sample=False, prediction_type="sample"))
