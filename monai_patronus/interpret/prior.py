"""Unconditional Patronus generation: a small diffusion prior over prototype activation vectors.

Section 4 of ``docs/method.md`` (Weng, Feragen, Bigdeli, ICLR 2026, https://arxiv.org/abs/2503.22782): encode the
training set to ``s ∈ R^K`` with the encoder frozen, train a 1-D U-Net diffusion model (T = 100, Adam 1e-4, batch
256) on them, then ``PatronusInferer.sample(noise, net, prior.sample(n))``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from ignite.engine import Events
from monai.engines import DiffusionPrepareBatch, SupervisedTrainer
from monai.inferers import DiffusionInferer
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler
from monai.networks.utils import eval_mode
from monai.utils import CommonKeys, look_up_option
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler

from monai_patronus.data.batches import iter_batches
from monai_patronus.networks.activation_prior import ActivationPriorUNet

__all__ = ["ActivationPrior", "ActivationPriorUNet", "encode_dataset", "fit_activation_prior"]


class ActivationPrior(nn.Module):
    """Diffusion prior over prototype activation vectors ``s ∈ R^K``: standardisation + 1-D U-Net + schedule.

    Vectors are standardised per dimension (buffers ``mean`` and ``std``, ``(K,)``); :meth:`sample` de-standardises.
    A state dict loads into ``ActivationPrior(**prior.config)``. Training minimises ``MSE(ε, ε̂)``; with
    ``parameterization="v"`` the network output ``F`` is a velocity and ``ε̂ = sqrt(1 - ᾱ_t) z_t + sqrt(ᾱ_t) F``
    (exact, so ``ε̂ ≈ z_t`` at high noise and DDIM has no outliers); ``"epsilon"`` reads ``F`` as ``ε̂``. The beta
    schedule is linear, by default DDPM's ``[1e-4, 0.02]`` scaled by ``1000 / T`` (``ᾱ_{T-1} ≈ 2e-5`` at T = 100).

    Args:
        num_prototypes: ``K``, the length of the activation vectors.
        channels, num_res_blocks, norm_num_groups: the :class:`ActivationPriorUNet` settings.
        num_train_timesteps: ``T``.
        beta_start, beta_end: the linear beta range; ``None`` for ``1e-4 * 1000 / T`` and ``0.02 * 1000 / T``.
        min_std: floor of the stored standard deviation (dimensions constant in the data stay constant).
        parameterization: ``"v"`` or ``"epsilon"`` (see above).
    """

    def __init__(
        self,
        num_prototypes: int,
        channels: Sequence[int] = (64, 128, 256),
        num_res_blocks: int = 1,
        norm_num_groups: int = 8,
        num_train_timesteps: int = 100,
        beta_start: float | None = None,
        beta_end: float | None = None,
        min_std: float = 1e-6,
        parameterization: str = "v",
    ) -> None:
        super().__init__()
        scale = 1000.0 / num_train_timesteps
        b0 = min(1e-4 * scale, 0.1) if beta_start is None else beta_start
        b1 = min(0.02 * scale, 0.999) if beta_end is None else beta_end
        if num_prototypes < 1 or num_train_timesteps < 2 or not 0 < b0 <= b1 < 1 or not min_std > 0:
            raise ValueError(
                "ActivationPrior: need num_prototypes >= 1, num_train_timesteps >= 2, 0 < beta_start <= beta_end < 1 "
                f"and min_std > 0, got num_prototypes={num_prototypes}, num_train_timesteps={num_train_timesteps}, "
                f"beta_start={b0!r}, beta_end={b1!r}, min_std={min_std!r}."
            )
        self.num_prototypes = num_prototypes
        self.num_train_timesteps = num_train_timesteps
        self.net = ActivationPriorUNet(channels, num_res_blocks, norm_num_groups)
        self.register_buffer("mean", torch.zeros(num_prototypes))
        self.register_buffer("std", torch.ones(num_prototypes))
        self.min_std = float(min_std)
        self.parameterization = look_up_option(parameterization, ("v", "epsilon"))
        self.config: dict = {
            "num_prototypes": num_prototypes,
            "channels": self.net.channels,
            "num_res_blocks": num_res_blocks,
            "norm_num_groups": norm_num_groups,
            "num_train_timesteps": num_train_timesteps,
            "beta_start": float(b0),
            "beta_end": float(b1),
            "min_std": self.min_std,
            "parameterization": parameterization,
        }
        sched = {"schedule": "linear_beta", "beta_start": float(b0), "beta_end": float(b1), "clip_sample": False}
        # standardised vectors are not in [-1, 1], hence clip_sample=False
        self.scheduler = DDPMScheduler(num_train_timesteps, **sched)
        self.ddim_scheduler = DDIMScheduler(num_train_timesteps, **sched)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @torch.no_grad()
    def set_statistics(self, activations: torch.Tensor) -> None:
        """Store the per-dimension mean and (population) standard deviation of ``activations`` ``(M, K)``, M >= 2."""
        s = torch.as_tensor(activations).as_subclass(torch.Tensor).float()
        if s.ndim != 2 or s.shape[0] < 2 or s.shape[1] != self.num_prototypes or not torch.isfinite(s).all():
            k = self.num_prototypes
            raise ValueError(
                f"ActivationPrior: activations must be finite, of shape (M >= 2, num_prototypes={k}), got shape "
                f"{tuple(s.shape)}{'' if torch.isfinite(s).all() else ' with NaN or inf values'}."
            )
        s = s.to(self.device)
        self.mean.copy_(s.mean(dim=0))
        self.std.copy_(s.std(dim=0, correction=0).clamp_min(self.min_std))

    def standardize(self, activations: torch.Tensor) -> torch.Tensor:
        """``(s - mean) / std``, ``(N, K) -> (N, K)``."""
        return (activations.to(self.device, torch.float32) - self.mean) / self.std

    def destandardize(self, z: torch.Tensor) -> torch.Tensor:
        """``z * std + mean``, ``(N, K) -> (N, K)``; the inverse of :meth:`standardize`."""
        return z.to(self.device) * self.std + self.mean

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """``ε̂(z_t, t)``, ``(N, K)``, from the network output (see the class docstring); ``context`` is unused."""
        out = self.net(x, timesteps)
        if self.parameterization == "epsilon":
            return out
        alpha_bar = self.scheduler.alphas_cumprod.to(device=x.device, dtype=x.dtype)[timesteps][:, None]
        return (1.0 - alpha_bar).sqrt() * x + alpha_bar.sqrt() * out

    def loss(self, activations: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Denoising loss ``MSE(ε, ε̂(z_t, t))`` of raw activations ``(B, K)``, drawn with ``generator``."""
        z0 = self.standardize(activations)
        t = torch.randint(0, self.num_train_timesteps, (z0.shape[0],), generator=generator, device=z0.device)
        noise = torch.randn(z0.shape, generator=generator, device=z0.device, dtype=z0.dtype)
        return F.mse_loss(self(self.scheduler.add_noise(z0, noise, t), t), noise)

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        generator: torch.Generator | None = None,
        num_inference_steps: int | None = None,
        batch_size: int = 4096,
    ) -> torch.Tensor:
        """Draw activation vectors from the prior.

        DDPM over all ``T`` steps by default; deterministic DDIM (η = 0) when ``2 <= num_inference_steps < T``, on
        ``DDIMScheduler``'s grid, written out because ``DDIMScheduler.step`` always moves by ``T // n`` (off that grid).

        Args:
            num_samples: number of vectors ``N``.
            generator: random generator on the prior's device, for reproducible samples.
            batch_size: vectors denoised at once (memory bound); samples depend on it for a given generator.

        Returns:
            ``(num_samples, K)`` de-standardised activations on the prior's device.
        """
        T = self.num_train_timesteps
        n = T if num_inference_steps is None else num_inference_steps
        if not 2 <= n <= T:
            raise ValueError(f"ActivationPrior: num_inference_steps must be None or an int in [2, {T}], got {n!r}.")
        if n == T:
            self.scheduler.set_timesteps(T)
            timesteps = list(range(T - 1, -1, -1))
        else:
            self.ddim_scheduler.set_timesteps(n)
            timesteps = torch.unique_consecutive(self.ddim_scheduler.timesteps).tolist()
            alpha_bar = self.ddim_scheduler.alphas_cumprod.to(self.device)
            final_alpha_bar = self.ddim_scheduler.final_alpha_cumprod.to(self.device)

        out = []
        for start in range(0, num_samples, batch_size):
            m = min(batch_size, num_samples - start)
            z = torch.randn((m, self.num_prototypes), generator=generator, device=self.device)
            for i, t in enumerate(timesteps):
                eps = self(z, torch.full((m,), t, device=self.device, dtype=torch.long))
                if n == T:
                    z, _ = self.scheduler.step(eps, t, z, generator=generator)
                else:  # DDIM, eta = 0: z_prev = sqrt(ᾱ_prev) ẑ_0 + sqrt(1 - ᾱ_prev) ε̂
                    a_t = alpha_bar[t]
                    a_prev = alpha_bar[timesteps[i + 1]] if i + 1 < len(timesteps) else final_alpha_bar
                    z0 = (z - (1 - a_t).sqrt() * eps) / a_t.sqrt()
                    z = a_prev.sqrt() * z0 + (1 - a_prev).sqrt() * eps
            out.append(z)
        return self.destandardize(torch.cat(out))


def fit_activation_prior(
    activations: torch.Tensor,
    epochs: int = 100,
    batch_size: int = 256,
    lr: float = 1e-4,
    seed: int = 0,
    device: str | torch.device = "cpu",
    **net_kwargs,
) -> tuple[ActivationPrior, list[float]]:
    """Fit an :class:`ActivationPrior` to activation vectors with MONAI's ``SupervisedTrainer``.

    Adam on shuffled mini-batches of the standardised vectors; everything random comes from ``seed`` (the global
    RNG is restored afterwards), so a fit is reproducible.

    Args:
        activations: training vectors ``(M, K)``, ``M >= 2`` (e.g. from :func:`encode_dataset`).
        epochs: passes over the data (``ceil(M / batch_size)`` steps each).
        batch_size: mini-batch size (paper: 256).
        lr: Adam learning rate (paper: 1e-4; small data sets train faster with ~1e-3).
        seed: random seed.
        device: where to train; the returned prior lives there.
        net_kwargs: further :class:`ActivationPrior` arguments.

    Returns:
        ``(prior, losses)``: the trained prior (in eval mode) and the mean training loss of every epoch.
    """
    s = torch.as_tensor(activations).as_subclass(torch.Tensor).float()
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        prior = ActivationPrior(s.shape[-1], **net_kwargs).to(device)
        prior.set_statistics(s)
        z0 = prior.standardize(s)
        # whole batches by one index op (no per-row collate)
        sampler = BatchSampler(RandomSampler(z0, generator=torch.Generator().manual_seed(seed)), batch_size, False)
        loader = DataLoader(z0, batch_size=None, sampler=sampler)
        trainer = SupervisedTrainer(
            device=device,
            max_epochs=epochs,
            train_data_loader=loader,
            network=prior,
            optimizer=torch.optim.Adam(prior.parameters(), lr=lr),
            loss_function=nn.MSELoss(),
            inferer=DiffusionInferer(prior.scheduler),
            prepare_batch=DiffusionPrepareBatch(prior.num_train_timesteps),
            decollate=False,
        )
        sums: list[float] = []
        losses: list[float] = []

        @trainer.on(Events.ITERATION_COMPLETED)
        def _add(engine: SupervisedTrainer) -> None:
            sums.append(engine.state.output[CommonKeys.LOSS].item() * len(engine.state.output[CommonKeys.IMAGE]))

        @trainer.on(Events.EPOCH_COMPLETED)
        def _mean(engine: SupervisedTrainer) -> None:
            losses.append(sum(sums) / len(z0))
            sums.clear()

        trainer.run()
    return prior.eval(), losses


def encode_dataset(
    encoder: nn.Module,
    data_iterable: Iterable | torch.Tensor | dict,
    image_key: str = "image",
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Prototype activations of a whole data set, streamed batch by batch without gradients.

    Args:
        encoder: a ``PatronusUNet`` (its ``encode``) or a ``PrototypeEncoder`` (called): images to ``(N, K)``.
        data_iterable: batches as in :func:`monai_patronus.data.batches.iter_batches` (e.g. a ``DataLoader``).
        image_key: the images' key in dict batches.
        device: where to run the encoder; defaults to the encoder's device.

    Returns:
        ``(M, K)`` float32 activations on the CPU, in data order. The encoder's train/eval mode is restored.
    """
    encode = getattr(encoder, "encode", encoder)
    if device is None:
        device = next(iter(encoder.parameters()), torch.empty(0)).device
    out: list[torch.Tensor] = []
    with eval_mode(encoder):
        for _, images, _ in iter_batches(data_iterable, image_key, name="data_iterable"):
            s = encode(images.to(device=device, dtype=torch.float32))
            if s.ndim != 2 or s.shape[0] != images.shape[0]:
                raise ValueError(f"encode_dataset: the encoder must return activations (N, K), got {tuple(s.shape)}.")
            out.append(s.as_subclass(torch.Tensor).float().cpu())
    if not out:
        raise ValueError("encode_dataset: data_iterable yielded no batches; give it at least one batch of images.")
    return torch.cat(out)
