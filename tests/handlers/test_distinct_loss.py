from __future__ import annotations

import pytest
import torch
from monai.engines import SupervisedTrainer
from monai.networks.schedulers import DDIMScheduler
from torch.utils.data import DataLoader

from monai_patronus.engines import create_patronus_trainer
from monai_patronus.handlers import PrototypeDistinctLossHandler
from monai_patronus.inferers import PatronusInferer
from monai_patronus.losses import PrototypeDistinctLoss
from tests._helpers import randomize_zero_init, tiny_patronus


def _trainer(net, images, handler=None):
    loader = DataLoader(
        [{"image": im} for im in images], batch_size=len(images), generator=torch.Generator().manual_seed(0)
    )
    inferer = PatronusInferer(DDIMScheduler(1000, clip_sample=False))
    trainer = create_patronus_trainer(net, inferer, loader, torch.optim.SGD(net.parameters(), lr=0.0), max_epochs=1)
    if handler is not None:
        handler.attach(trainer)
    return trainer, inferer


def test_same_gradients_as_combined_loss_and_term_logged():
    images = torch.rand(4, 1, 16, 16) * 2 - 1
    net = randomize_zero_init(tiny_patronus(num_prototypes=5))
    trainer, inferer = _trainer(net, images, PrototypeDistinctLossHandler(weight=0.5, delta=0.9))
    torch.manual_seed(123)
    trainer.run()
    grads = {k: p.grad.clone() for k, p in net.named_parameters()}
    out = trainer.state.output

    # brute force: the same noise and timesteps (DiffusionPrepareBatch draws noise, then timesteps)
    net.zero_grad()
    torch.manual_seed(123)
    noise = torch.randn_like(images)
    t = torch.randint(0, 1000, (4,))
    mse = ((inferer(images, net, noise, t) - noise) ** 2).mean()
    distinct = PrototypeDistinctLoss(0.9)(net.prototype_encoder.prototypes)
    assert distinct > 0
    (mse + 0.5 * distinct).backward()
    for k, p in net.named_parameters():
        torch.testing.assert_close(grads[k], p.grad, atol=1e-6, rtol=1e-5, msg=k)
    torch.testing.assert_close(out["distinct_loss"], distinct.detach())
    torch.testing.assert_close(out["loss"].detach(), (mse + 0.5 * distinct).detach())


def test_invalid_weight_and_network():
    with pytest.raises(ValueError, match="weight must be a float >= 0, got -1"):
        PrototypeDistinctLossHandler(weight=-1)
    handler = PrototypeDistinctLossHandler(weight=1.0)

    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=[{"image": torch.rand(2, 2)}],
        network=torch.nn.Linear(2, 2),
        optimizer=torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1),
        loss_function=torch.nn.MSELoss(),
        train_handlers=[handler],
    )
    with pytest.raises(TypeError, match="PatronusUNet"):  # checked once, when the run starts
        trainer.run()
