from __future__ import annotations

import pytest
import torch
from monai.networks.schedulers import DDIMScheduler
from PIL import Image
from torch.utils.data import DataLoader

from monai_patronus.engines import create_patronus_trainer
from monai_patronus.handlers import SampleGridHandler
from monai_patronus.inferers import PatronusInferer
from tests._helpers import tiny_patronus


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_grid_written_every_interval_with_psnr_metric(tmp_path, spatial_dims):
    shape = (1,) + (16, 16) if spatial_dims == 2 else (1, 8, 8, 8)
    images = torch.rand(4, *shape) * 2 - 1
    net = tiny_patronus(spatial_dims, num_prototypes=4)
    inferer = PatronusInferer(DDIMScheduler(1000, clip_sample=False))
    loader = DataLoader([{"image": im} for im in images], batch_size=2)
    trainer = create_patronus_trainer(net, inferer, loader, torch.optim.Adam(net.parameters(), 1e-3), max_epochs=3)
    SampleGridHandler(inferer, images[:3], tmp_path, interval=2, num_inference_steps=4).attach(trainer)
    trainer.run()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid_epoch0002.png"]
    side = shape[1]
    grid = Image.open(tmp_path / "grid_epoch0002.png")
    assert grid.size == ((3 * (side + 1) + 1) * 4, (3 * (side + 1) + 1) * 4)  # 3 columns, 3 rows
    value = trainer.state.metrics["reconstruction_psnr"]
    assert isinstance(value, float) and value > 0
    assert net.training  # the handler restores train mode


def test_invalid_arguments(tmp_path):
    inferer = PatronusInferer(DDIMScheduler(1000, clip_sample=False))
    with pytest.raises(TypeError, match="inferer"):
        SampleGridHandler(object(), torch.zeros(1, 1, 8, 8), tmp_path)
    with pytest.raises(ValueError, match=r"images must be a tensor.*got \(1, 8, 8\)"):
        SampleGridHandler(inferer, torch.zeros(1, 8, 8), tmp_path)
    with pytest.raises(ValueError, match="interval must be an int >= 1, got 0"):
        SampleGridHandler(inferer, torch.zeros(1, 1, 8, 8), tmp_path, interval=0)
