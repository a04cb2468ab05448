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
    trainer = create_patronus_trainer(net, inferer, DataLoader(data, batch_size=4), torch.optim.Adam(net.parameters(), 1e-2), max_epochs=2)
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
        create_patronus_trainer(torch.nn.Identity(), SimpleInferer(), [], torch.optim.SGD([torch.zeros(1, requires_grad=True)], 0.1))
