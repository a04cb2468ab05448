"""Periodic validation for Patronus training: does generation use ``s``? Conditioning metrics on fixed images,
and reconstruction and sampling written as a PNG grid."""

from __future__ import annotations

import json
from pathlib import Path

import ignite.distributed as idist
import torch
from ignite.engine import Events
from monai.networks.utils import eval_mode

from monai_patronus.evaluation.conditioning import conditioning_metrics
from monai_patronus.handlers.utils import unwrap_network
from monai_patronus.inferers import PatronusInferer
from monai_patronus.utils import psnr, save_png_grid

__all__ = ["SampleGridHandler"]


class SampleGridHandler:
    """Every ``interval`` epochs, on fixed images: the conditioning metrics (does generation use ``s``?) and a PNG
    grid ``originals | reconstructions | samples`` (3-D: the central slice along the last axis). Rank 0 only.

    Put in ``engine.state.metrics`` (so the tracking handler logs them), all with chance level 0 but the last two:
    ``semantic_gap_psnr`` / ``semantic_gap_ssim`` (samples given ``s(x)`` against the same noise given another
    image's ``s``, compared with ``x``; the headline), ``edit_efficacy_raise`` / ``edit_efficacy_suppress``
    (median share of an intended change of ``s_k`` that an invert + regenerate edit shows), ``conditioning_gain``
    (relative denoising-loss reduction of the right ``s`` over a shuffled one), ``sample_saturation`` (share of
    sample pixels beyond ±0.98) and ``inversion_psnr`` (the DDIM inversion error, not a measure of learning: an
    untrained network reconstructs at > 100 dB). Each evaluation is appended to ``output_dir/conditioning.jsonl``.

    Args:
        inferer: the :class:`PatronusInferer` (its scheduler needs ``clip_sample=False``).
        images: fixed validation images ``(N, C, *spatial)`` in [-1, 1].
        output_dir: folder for ``grid_epoch{epoch:04d}.png``.
        interval, num_inference_steps: epochs between grids; DDIM steps.
        seed: seed of the sampling noise (the same every time, so grids are comparable).
        metric_name: key of the inversion PSNR in ``engine.state.metrics``.
        conditioning: compute the conditioning metrics (needs at least 2 images).
        num_prototypes: prototypes edited for the edit efficacy (those that vary most over the images).
    """

    def __init__(
        self,
        inferer: PatronusInferer,
        images: torch.Tensor,
        output_dir: str | Path,
        interval: int = 1,
        num_inference_steps: int = 50,
        seed: int = 0,
        metric_name: str = "inversion_psnr",
        conditioning: bool = True,
        num_prototypes: int = 4,
    ) -> None:
        if not isinstance(inferer, PatronusInferer):
            raise TypeError(f"SampleGridHandler: inferer must be a PatronusInferer, got {type(inferer).__name__}.")
        if images.ndim not in (4, 5):
            raise ValueError(
                f"SampleGridHandler: images must be a tensor (N, C, H, W[, D]), got {tuple(images.shape)}."
            )
        if interval < 1:
            raise ValueError(f"SampleGridHandler: interval must be an int >= 1, got {interval!r}.")
        self.inferer = inferer
        self.images = images.float()
        self.output_dir = Path(output_dir)
        self.interval = interval
        self.num_inference_steps = num_inference_steps
        self.seed = seed
        self.metric_name = metric_name
        self.conditioning = conditioning and images.shape[0] >= 2
        self.num_prototypes = num_prototypes

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    @idist.one_rank_only()
    def __call__(self, engine) -> None:
        psnr_db = self.render(engine.network, f"grid_epoch{engine.state.epoch:04d}.png", engine.state.device)
        engine.state.metrics[self.metric_name] = psnr_db
        if self.conditioning:
            metrics = self.evaluate(engine.network, engine.state.device, epoch=engine.state.epoch)
            engine.state.metrics.update(self.scalars(metrics))

    def evaluate(self, network, device: str | torch.device | None = None, epoch: int | None = None) -> dict:
        """The conditioning metrics of ``network`` on the fixed images (appended to ``conditioning.jsonl``)."""
        network, x0 = self._inputs(network, device)
        n, k = self.num_inference_steps, self.num_prototypes
        metrics = conditioning_metrics(network, self.inferer, x0, n, k, seed=self.seed)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.output_dir / "conditioning.jsonl", "a") as f:
            f.write(json.dumps({"epoch": epoch, **metrics}) + "\n")
        return metrics

    @staticmethod
    def scalars(metrics: dict) -> dict[str, float]:
        """The tracked scalars of :func:`~monai_patronus.evaluation.conditioning_metrics`' result (NaN where an
        edit changed nothing measurable)."""
        inv = metrics["edit_efficacy"]["invert"]
        edit = {k: float("nan") if inv[k]["median"] is None else float(inv[k]["median"]) for k in ("raise", "suppress")}
        return {
            "semantic_gap_psnr": metrics["semantic_reconstruction"]["psnr"]["gap"],
            "semantic_gap_ssim": metrics["semantic_reconstruction"]["ssim"]["gap"],
            "edit_efficacy_raise": edit["raise"],
            "edit_efficacy_suppress": edit["suppress"],
            "conditioning_gain": metrics["conditioning_gain"]["mean_gain"],
            "sample_saturation": metrics["sample_sanity"]["samples"]["saturated"],
        }

    def render(self, network, filename: str = "grid.png", device: str | torch.device | None = None) -> float:
        """Write ``output_dir/filename`` for ``network`` (train mode restored) and return the mean inversion PSNR."""
        network, x0 = self._inputs(network, device)
        n = self.num_inference_steps
        with eval_mode(network):
            s = network.encode(x0)
            recon = self.inferer.reconstruct(self.inferer.invert(x0, network, s, n), network, s, n)
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(self.seed)).to(x0.device)
            samples = self.inferer.sample(noise, network, s, n)
        save_png_grid([self._to_2d(t) for t in (x0, recon, samples)], self.output_dir / filename)
        return float(psnr(recon.clamp(-1, 1), x0).mean())

    def _inputs(self, network, device) -> tuple:
        network = unwrap_network(network)
        return network, self.images.to(device if device is not None else next(network.parameters()).device)

    @staticmethod
    def _to_2d(x: torch.Tensor) -> torch.Tensor:
        return x[..., x.shape[-1] // 2] if x.ndim == 5 else x
