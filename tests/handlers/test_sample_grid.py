from __future__ import annotations

import json

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
def test_grid_and_conditioning_metrics_every_interval(tmp_path, spatial_dims):
    shape = (1,) + (16, 16) if spatial_dims == 2 else (1, 8, 8, 8)
    images = torch.rand(4, *shape) * 2 - 1
    net = tiny_patronus(spatial_dims, num_prototypes=4)
    inferer = PatronusInferer(DDIMScheduler(1000, clip_sample=False))
    loader = DataLoader([{"image": im} for im in images], batch_size=2)
    trainer = create_patronus_trainer(net, inferer, loader, torch.optim.Adam(net.parameters(), 1e-3), max_epochs=3)
    SampleGridHandler(inferer, images[:3], tmp_path, interval=2, num_inference_steps=4).attach(trainer)
    trainer.run()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conditioning.jsonl", "grid_epoch0002.png"]
    side = shape[1]
    grid = Image.open(tmp_path / "grid_epoch0002.png")
    assert grid.size == ((3 * (side + 1) + 1) * 4, (3 * (side + 1) + 1) * 4)  # 3 columns, 3 rows
    value = trainer.state.metrics["inversion_psnr"]
    assert isinstance(value, float) and value > 0
    (record,) = [json.loads(line) for line in (tmp_path / "conditioning.jsonl").read_text().splitlines()]
    assert record["epoch"] == 2 and "s->image gap" in record["summary"]
    assert {k: trainer.state.metrics[k] for k in SampleGridHandler.scalars(record)} == SampleGridHandler.scalars(record)
    assert net.training  # the handler restores train mode


def test_invalid_arguments(tmp_path):
    inferer = PatronusInferer(DDIMScheduler(1000, clip_sample=False))
    with pytest.raises(TypeError, match="inferer"):
        SampleGridHandler(object(), torch.zeros(1, 1, 8, 8), tmp_path)
    with pytest.raises(ValueError, match=r"images must be a tensor.*got \(1, 8, 8\)"):
        SampleGridHandler(inferer, torch.zeros(1, 8, 8), tmp_path)
    with pytest.raises(ValueError, match="interval must be an int >= 1, got 0"):
        SampleGridHandler(inferer, torch.zeros(1, 1, 8, 8), tmp_path, interval=0)


def test_scalars_are_the_chance_level_for_a_network_that_ignores_s(tmp_path):
    net = tiny_patronus(num_prototypes=4).eval()  # zero-initialised output conv: the prediction ignores s
    inferer = PatronusInferer(DDIMScheduler(1000, clip_sample=False))
    handler = SampleGridHandler(inferer, torch.rand(4, 1, 16, 16) * 2 - 1, tmp_path, num_inference_steps=4)
    scalars = handler.scalars(handler.evaluate(net))
    assert scalars["semantic_gap_psnr"] == 0.0 and scalars["conditioning_gain"] == 0.0
    assert scalars["edit_efficacy_raise"] == 0.0
