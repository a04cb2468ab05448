"""Periodic validation for Patronus training: reconstruction and sampling, written as a PNG grid."""

from __future__ import annotations

from pathlib import Path

import torch
from ignite.engine import Events

from monai_patronus.handlers.utils import is_main_process, unwrap_network
from monai_patronus.inferers import PatronusInferer
from monai_patronus.utils import psnr, save_png_grid

__all__ = ["SampleGridHandler"]


class SampleGridHandler:
    """Every ``interval`` epochs: DDIM-invert and reconstruct fixed images, sample from fresh noise with
    their activations, write ``originals | reconstructions | samples`` as a PNG, and put the mean
    reconstruction PSNR (dB, images clamped to [-1, 1]) in ``engine.state.metrics[metric_name]``.

    Runs on rank 0 only when distributed. 3-D images are shown by their central slice along the last axis.

    Args:
        inferer: the :class:`PatronusInferer` to generate with (its scheduler needs ``clip_sample=False``).
        images: fixed validation images ``(N, C, *spatial)`` in [-1, 1].
        output_dir: folder for ``grid_epoch{epoch:04d}.png``.
        interval: epochs between grids.
        num_inference_steps: DDIM steps for inversion, reconstruction and sampling.
        seed: seed of the sampling noise (the same noise every time, so grids are comparable).
        metric_name: key in ``engine.state.metrics``.
    """

    def __init__(
        self,
        inferer: PatronusInferer,
        images: torch.Tensor,
        output_dir: str | Path,
        interval: int = 1,
        num_inference_steps: int = 50,
        seed: int = 0,
        metric_name: str = "reconstruction_psnr",
    ) -> None:
        if not isinstance(inferer, PatronusInferer):
            raise TypeError(f"SampleGridHandler: inferer must be a PatronusInferer, got {type(inferer).__name__}.")
        if not isinstance(images, torch.Tensor) or images.ndim not in (4, 5):
            raise ValueError(
                f"SampleGridHandler: images must be a tensor (N, C, H, W) or (N, C, H, W, D), got "
                f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}."
            )
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"SampleGridHandler: interval must be an int >= 1, got {interval!r}.")
        self.inferer = inferer
        self.images = images.float()
        self.output_dir = Path(output_dir)
        self.interval = interval
        self.num_inference_steps = num_inference_steps
        self.seed = seed
        self.metric_name = metric_name

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    def __call__(self, engine) -> None:
        if not is_main_process():
            return
        psnr_db = self.render(engine.network, f"grid_epoch{engine.state.epoch:04d}.png", engine.state.device)
        engine.state.metrics[self.metric_name] = psnr_db

    def render(self, network, filename: str = "grid.png", device: str | torch.device | None = None) -> float:
        """Write ``output_dir/filename`` for ``network`` (train mode restored) and return the mean reconstruction PSNR."""
        network = unwrap_network(network)
        device = torch.device(device) if device is not None else next(network.parameters()).device
        was_training = network.training
        network.eval()
        try:
            x0 = self.images.to(device)
            n = self.num_inference_steps
            with torch.no_grad():
                s = network.encode(x0)
            recon = self.inferer.reconstruct(self.inferer.invert(x0, network, s, n), network, s, n)
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(self.seed)).to(device)
            samples = self.inferer.sample(noise, network, s, n)
        finally:
            network.train(was_training)
        save_png_grid([self._to_2d(t) for t in (x0, recon, samples)], self.output_dir / filename)
        return float(psnr(recon.clamp(-1, 1), x0).mean())

    @staticmethod
    def _to_2d(x: torch.Tensor) -> torch.Tensor:
        return x[..., x.shape[-1] // 2] if x.ndim == 5 else x
