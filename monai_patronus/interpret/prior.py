"""Unconditional Patronus generation: a small diffusion prior over prototype activation vectors.

Section 4 of ``METHOD.md`` (Weng, Feragen, Bigdeli, ICLR 2026, https://arxiv.org/abs/2503.22782): with the
prototype encoder frozen, encode the training set to vectors ``s ∈ R^K``, train a second, small diffusion
model (a 1-D U-Net, base 64, multipliers (1, 2, 4), T = 100, Adam 1e-4, batch 256) on them, then sample
``s`` from it and generate the image with the conditional sampler, e.g.
``PatronusInferer.sample(noise, net, prior.sample(n))``.

MONAI's ``DiffusionModelUNet`` has no 1-D mode (its res-block broadcasts the time embedding over 2-D/3-D
maps only), so :class:`ActivationPriorUNet` is written here; the noise schedule, noising and DDPM steps are
MONAI's ``DDPMScheduler``, the DDIM grid is ``DDIMScheduler``'s and the time embedding is MONAI's
``get_timestep_embedding``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.networks.nets.diffusion_model_unet import get_timestep_embedding
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler
from torch import nn

from monai_patronus.data.batches import iter_batches

__all__ = ["ActivationPrior", "ActivationPriorUNet", "encode_dataset", "fit_activation_prior"]


# ---------------------------------------------------------------------------------------------- checks
def _check_int(owner: str, name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner}: {name} must be an int >= {minimum}, got {value!r} ({type(value).__name__}).")
    if value < minimum:
        raise ValueError(f"{owner}: {name} must be an int >= {minimum}, got {value!r}.")


def _check_float(owner: str, name: str, value: object, low: float, high: float | None = None) -> None:
    """``value`` must be a real number with ``low < value`` (and ``value < high`` when given)."""
    bound = f"in ({low}, {high})" if high is not None else f"> {low}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{owner}: {name} must be a float {bound}, got {value!r} ({type(value).__name__}).")
    if not (value > low and (high is None or value < high)) or not math.isfinite(value):
        raise ValueError(f"{owner}: {name} must be a float {bound}, got {value!r}.")


def _check_channels(owner: str, channels: object, norm_num_groups: int) -> tuple[int, ...]:
    if isinstance(channels, (str, bytes)) or not isinstance(channels, Sequence) or len(channels) == 0:
        raise TypeError(f"{owner}: channels must be a non-empty sequence of ints, e.g. (64, 128, 256), got {channels!r}.")
    for c in channels:
        if isinstance(c, bool) or not isinstance(c, int):
            raise TypeError(f"{owner}: channels must hold ints, got {channels!r}.")
        if c < 1 or c % norm_num_groups != 0:
            raise ValueError(
                f"{owner}: every entry of channels must be a positive multiple of norm_num_groups={norm_num_groups} "
                f"(GroupNorm), got channels={tuple(channels)!r}; change channels or norm_num_groups."
            )
    return tuple(int(c) for c in channels)


def _check_activations(owner: str, name: str, activations: object, num_prototypes: int | None = None) -> torch.Tensor:
    if not isinstance(activations, torch.Tensor):
        raise TypeError(f"{owner}: {name} must be a torch.Tensor of shape (M, K), got {type(activations).__name__}.")
    if activations.ndim != 2 or activations.shape[0] < 1 or activations.shape[1] < 1:
        raise ValueError(f"{owner}: {name} must have shape (M, K) with M, K >= 1, got {tuple(activations.shape)}.")
    if num_prototypes is not None and activations.shape[1] != num_prototypes:
        raise ValueError(
            f"{owner}: {name} has K={activations.shape[1]} columns but the prior models num_prototypes={num_prototypes}."
        )
    if not (activations.dtype.is_floating_point or activations.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"{owner}: {name} must be a real (float) tensor, got dtype {activations.dtype}.")
    if isinstance(activations, MetaTensor):
        activations = activations.as_tensor()
    activations = activations.float()
    if not torch.isfinite(activations).all():
        raise ValueError(f"{owner}: {name} holds NaN or inf values; remove those rows before fitting the prior.")
    return activations


# ---------------------------------------------------------------------------------------------- network
class _ResBlock1d(nn.Module):
    """``GN -> SiLU -> Conv1d``, plus a time-embedding bias, ``GN -> SiLU -> Conv1d``, with a residual."""

    def __init__(self, in_channels: int, out_channels: int, temb_dim: int, norm_num_groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(norm_num_groups, in_channels, eps=1e-6)
        self.conv1 = nn.Conv1d(in_channels, out_channels, 3, padding=1)
        self.time_proj = nn.Linear(temb_dim, out_channels)
        self.norm2 = nn.GroupNorm(norm_num_groups, out_channels, eps=1e-6)
        self.conv2 = nn.Conv1d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv1d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_proj(F.silu(temb))[:, :, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class ActivationPriorUNet(nn.Module):
    """1-D U-Net ε-predictor for activation vectors ``s`` of any length ``K``, read as ``(N, 1, K)`` sequences.

    DDPM-style: ``conv_in``, then per level ``num_res_blocks`` res-blocks (GroupNorm + SiLU + Conv1d, sinusoidal
    time embedding through an MLP added in every block) and a stride-2 conv down-sampling (except the last
    level), two middle res-blocks, and the mirrored up path (``num_res_blocks + 1`` blocks per level on the
    concatenated skips, nearest up-sampling + conv), ``GN -> SiLU -> Conv1d`` out. ``K`` is zero-padded on the
    right to a multiple of ``2 ** (len(channels) - 1)`` and the output cropped back, so any ``K >= 1`` works.

    Args:
        channels: channels per level (paper: base 64, multipliers (1, 2, 4), i.e. ``(64, 128, 256)``).
        num_res_blocks: res-blocks per level on the way down (``+ 1`` on the way up).
        norm_num_groups: GroupNorm groups; must divide every entry of ``channels``.

    Raises:
        TypeError / ValueError: for an invalid argument, naming it and its value.
    """

    def __init__(
        self, channels: Sequence[int] = (64, 128, 256), num_res_blocks: int = 1, norm_num_groups: int = 8
    ) -> None:
        super().__init__()
        owner = "ActivationPriorUNet"
        _check_int(owner, "norm_num_groups", norm_num_groups, 1)
        _check_int(owner, "num_res_blocks", num_res_blocks, 1)
        self.channels = _check_channels(owner, channels, norm_num_groups)
        self.num_res_blocks = num_res_blocks
        self.norm_num_groups = norm_num_groups
        self.multiple = 2 ** (len(self.channels) - 1)

        ch0 = self.channels[0]
        temb_dim = 4 * ch0
        self.time_embed = nn.Sequential(nn.Linear(ch0, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))
        self.conv_in = nn.Conv1d(1, ch0, 3, padding=1)

        last = len(self.channels) - 1
        skip_channels = [ch0]
        self.down_blocks = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        c_in = ch0
        for level, ch in enumerate(self.channels):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(_ResBlock1d(c_in, ch, temb_dim, norm_num_groups))
                c_in = ch
                skip_channels.append(ch)
            self.down_blocks.append(blocks)
            if level != last:
                self.downsamplers.append(nn.Conv1d(ch, ch, 3, stride=2, padding=1))
                skip_channels.append(ch)
            else:
                self.downsamplers.append(nn.Identity())

        self.mid_blocks = nn.ModuleList([_ResBlock1d(c_in, c_in, temb_dim, norm_num_groups) for _ in range(2)])

        self.up_blocks = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        for level in reversed(range(len(self.channels))):
            ch = self.channels[level]
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                blocks.append(_ResBlock1d(c_in + skip_channels.pop(), ch, temb_dim, norm_num_groups))
                c_in = ch
            self.up_blocks.append(blocks)
            self.upsamplers.append(nn.Conv1d(ch, ch, 3, padding=1) if level != 0 else nn.Identity())

        self.norm_out = nn.GroupNorm(norm_num_groups, c_in, eps=1e-6)
        self.conv_out = nn.Conv1d(c_in, 1, 3, padding=1)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the noise in ``x``.

        Args:
            x: noisy vectors ``(N, K)`` or ``(N, 1, K)``, float.
            timesteps: ``(N,)`` diffusion timesteps (a 0-d tensor or int is used for the whole batch).
            context: must be ``None`` (the prior is unconditional); accepted so MONAI's ``DiffusionInferer``
                can call the network.

        Returns:
            ``ε̂`` with the shape of ``x``.
        """
        owner = "ActivationPriorUNet.forward"
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{owner}: x must be a torch.Tensor (N, K) or (N, 1, K), got {type(x).__name__}.")
        if not x.dtype.is_floating_point or not (x.ndim == 2 or (x.ndim == 3 and x.shape[1] == 1)) or x.shape[-1] < 1:
            raise ValueError(f"{owner}: x must be a float tensor (N, K) or (N, 1, K), got {tuple(x.shape)} {x.dtype}.")
        if context is not None:
            raise ValueError(
                f"{owner}: context must be None (the activation prior is unconditional), got a {type(context).__name__}."
            )
        n, k = x.shape[0], x.shape[-1]
        if isinstance(timesteps, int) and not isinstance(timesteps, bool):
            timesteps = torch.tensor(timesteps)
        if not isinstance(timesteps, torch.Tensor):
            raise TypeError(f"{owner}: timesteps must be a torch.Tensor of shape (N,), got {type(timesteps).__name__}.")
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(n)
        if timesteps.shape != (n,):
            raise ValueError(f"{owner}: timesteps must have shape (N,) = ({n},), got {tuple(timesteps.shape)}.")

        h = x.reshape(n, 1, k)
        pad = (-k) % self.multiple
        if pad:
            h = F.pad(h, (0, pad))
        t_emb = get_timestep_embedding(timesteps.to(h.device), self.channels[0]).to(dtype=h.dtype)
        temb = self.time_embed(t_emb)

        h = self.conv_in(h)
        skips = [h]
        for blocks, down in zip(self.down_blocks, self.downsamplers):
            for block in blocks:
                h = block(h, temb)
                skips.append(h)
            if not isinstance(down, nn.Identity):
                h = down(h)
                skips.append(h)
        for block in self.mid_blocks:
            h = block(h, temb)
        for blocks, up in zip(self.up_blocks, self.upsamplers):
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), temb)
            if not isinstance(up, nn.Identity):
                h = up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = self.conv_out(F.silu(self.norm_out(h)))
        return h[..., :k].reshape(x.shape)


# ---------------------------------------------------------------------------------------------- prior
class ActivationPrior(nn.Module):
    """Diffusion prior over prototype activation vectors ``s ∈ R^K``: standardisation + 1-D U-Net + schedule.

    Vectors are standardised per dimension with the training set's mean and standard deviation (buffers
    ``mean`` and ``std``, ``(K,)``, saved in the state dict), the network predicts the noise of the
    standardised vectors, and :meth:`sample` de-standardises. A state dict loads into a fresh
    ``ActivationPrior(**prior.config)``.

    Parameterisation. Training minimises ``MSE(ε, ε̂)`` (the paper's loss), and both samplers consume ``ε̂``.
    With ``parameterization="v"`` (default) the network output ``F`` is read as the velocity
    ``v = sqrt(ᾱ_t) ε - sqrt(1 - ᾱ_t) z_0`` and ``ε̂ = sqrt(1 - ᾱ_t) z_t + sqrt(ᾱ_t) F``, an exact identity, so at
    high noise ``ε̂ ≈ z_t`` holds analytically instead of having to be learnt to within ``sqrt(ᾱ_t)``; without
    this, small network errors at high noise are amplified by ``1 / sqrt(ᾱ_t)`` (≈ 200 at t = T-1) and
    deterministic DDIM sampling produces outliers. ``"epsilon"`` reads ``F`` as ``ε̂`` directly (fine for DDPM).

    The schedule is linear in beta over ``num_train_timesteps`` (paper: T = 100) steps. By default the range
    is DDPM's ``[1e-4, 0.02]`` scaled by ``1000 / T`` (the improved-DDPM convention), so that at T = 100 the
    last step is essentially pure noise (``ᾱ_{T-1} ≈ 2e-5``; unscaled it would still be ``≈ 0.37``).

    Args:
        num_prototypes: ``K``, the length of the activation vectors.
        channels, num_res_blocks, norm_num_groups: the :class:`ActivationPriorUNet` settings.
        num_train_timesteps: ``T``.
        beta_start, beta_end: the linear beta range; ``None`` for ``1e-4 * 1000 / T`` and ``0.02 * 1000 / T``.
        min_std: floor of the stored standard deviation (dimensions constant in the data stay constant).
        parameterization: ``"v"`` or ``"epsilon"``, how the network output becomes ``ε̂`` (see above).

    Raises:
        TypeError / ValueError: for an invalid argument, naming it and its value.
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
        owner = "ActivationPrior"
        if parameterization not in ("v", "epsilon"):
            raise ValueError(f"{owner}: parameterization must be 'v' or 'epsilon', got {parameterization!r}.")
        _check_int(owner, "num_prototypes", num_prototypes, 1)
        _check_int(owner, "num_train_timesteps", num_train_timesteps, 2)
        scale = 1000.0 / num_train_timesteps
        b0 = min(1e-4 * scale, 0.1) if beta_start is None else beta_start
        b1 = min(0.02 * scale, 0.999) if beta_end is None else beta_end
        _check_float(owner, "beta_start", b0, 0.0, 1.0)
        _check_float(owner, "beta_end", b1, 0.0, 1.0)
        if not b0 <= b1:
            raise ValueError(f"{owner}: beta_start must be <= beta_end, got beta_start={b0!r}, beta_end={b1!r}.")
        _check_float(owner, "min_std", min_std, 0.0)

        self.num_prototypes = num_prototypes
        self.num_train_timesteps = num_train_timesteps
        self.net = ActivationPriorUNet(channels, num_res_blocks, norm_num_groups)
        self.register_buffer("mean", torch.zeros(num_prototypes))
        self.register_buffer("std", torch.ones(num_prototypes))
        self.min_std = float(min_std)
        self.parameterization = parameterization
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

    # ------------------------------------------------------------------ statistics
    @torch.no_grad()
    def set_statistics(self, activations: torch.Tensor) -> None:
        """Store the per-dimension mean and (population) standard deviation of ``activations`` ``(M, K)``, M >= 2."""
        s = _check_activations("ActivationPrior.set_statistics", "activations", activations, self.num_prototypes)
        if s.shape[0] < 2:
            raise ValueError(
                f"ActivationPrior.set_statistics: activations needs at least 2 rows (M >= 2), got M={s.shape[0]}."
            )
        s = s.to(self.device)
        self.mean.copy_(s.mean(dim=0))
        self.std.copy_(s.std(dim=0, correction=0).clamp_min(self.min_std))

    def standardize(self, activations: torch.Tensor) -> torch.Tensor:
        """``(s - mean) / std``, ``(N, K) -> (N, K)``."""
        s = _check_activations("ActivationPrior.standardize", "activations", activations, self.num_prototypes)
        return (s.to(self.device) - self.mean) / self.std

    def destandardize(self, z: torch.Tensor) -> torch.Tensor:
        """``z * std + mean``, ``(N, K) -> (N, K)``; the inverse of :meth:`standardize`."""
        z = _check_activations("ActivationPrior.destandardize", "z", z, self.num_prototypes)
        return z.to(self.device) * self.std + self.mean

    # ------------------------------------------------------------------ training
    def loss(self, activations: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Denoising loss ``MSE(ε, ε_θ(z_t, t))`` for a batch of raw activations ``(B, K)``; a scalar.

        ``z_0`` is the standardised batch, ``t ~ U{0, T-1}`` and ``ε ~ N(0, I)`` are drawn with ``generator``
        (which must live on the prior's device).
        """
        self._check_generator("ActivationPrior.loss", generator)
        return self._loss(self.standardize(activations), generator)

    def _loss(self, z0: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        t = torch.randint(0, self.num_train_timesteps, (z0.shape[0],), generator=generator, device=z0.device)
        noise = torch.randn(z0.shape, generator=generator, device=z0.device, dtype=z0.dtype)
        zt = self.scheduler.add_noise(z0, noise, t)
        return F.mse_loss(self._predict_eps(zt, t), noise)

    def _predict_eps(self, zt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``ε̂(z_t, t)``, ``(N, K)``, from the network output (see the class docstring)."""
        out = self.net(zt, t)
        if self.parameterization == "epsilon":
            return out
        alpha_bar = self.scheduler.alphas_cumprod.to(device=zt.device, dtype=zt.dtype)[t][:, None]
        return (1.0 - alpha_bar).sqrt() * zt + alpha_bar.sqrt() * out

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        generator: torch.Generator | None = None,
        num_inference_steps: int | None = None,
        batch_size: int = 4096,
    ) -> torch.Tensor:
        """Draw activation vectors from the prior.

        DDPM (MONAI's ``DDPMScheduler.step``) over all ``T`` steps by default (``num_inference_steps`` ``None``
        or ``T``); deterministic DDIM (η = 0) when ``2 <= num_inference_steps < T``, on ``DDIMScheduler``'s grid
        ``round(linspace(T - 1, 0, n))`` and ending at ``ᾱ = 1``. The DDIM update is written out here because
        ``DDIMScheduler.step`` always moves by ``T // n``, which does not follow that grid (and with the grid
        ``k * (T // n)`` instead, ``n > T / 2`` would start from pure noise at ``t = n - 1``, e.g. ``t = 59``).

        Args:
            num_samples: number of vectors ``N``.
            generator: random generator on the prior's device, for reproducible samples.
            num_inference_steps: ``n``; see above.
            batch_size: vectors denoised at once (memory bound); samples depend on it for a given generator.

        Returns:
            ``(num_samples, K)`` de-standardised activations on the prior's device.
        """
        owner = "ActivationPrior.sample"
        _check_int(owner, "num_samples", num_samples, 1)
        _check_int(owner, "batch_size", batch_size, 1)
        self._check_generator(owner, generator)
        T = self.num_train_timesteps
        n = T if num_inference_steps is None else num_inference_steps
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(
                f"{owner}: num_inference_steps must be None or an int in [2, {T}], got {num_inference_steps!r}."
            )
        if not 2 <= n <= T:
            raise ValueError(f"{owner}: num_inference_steps must be None or an int in [2, {T}], got {n!r}.")

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
                eps = self._predict_eps(z, torch.full((m,), t, device=self.device, dtype=torch.long))
                if n == T:
                    z, _ = self.scheduler.step(eps, t, z, generator=generator)
                else:  # DDIM, eta = 0: z_prev = sqrt(ᾱ_prev) ẑ_0 + sqrt(1 - ᾱ_prev) ε̂
                    a_t = alpha_bar[t]
                    a_prev = alpha_bar[timesteps[i + 1]] if i + 1 < len(timesteps) else final_alpha_bar
                    z0 = (z - (1 - a_t).sqrt() * eps) / a_t.sqrt()
                    z = a_prev.sqrt() * z0 + (1 - a_prev).sqrt() * eps
            out.append(z)
        z = torch.cat(out)
        return z * self.std + self.mean

    def _check_generator(self, owner: str, generator: object) -> None:
        if generator is None:
            return
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"{owner}: generator must be a torch.Generator or None, got {type(generator).__name__}.")
        if generator.device.type != self.device.type:
            raise ValueError(
                f"{owner}: generator lives on {generator.device} but the prior on {self.device}; "
                f"create it with torch.Generator(device={str(self.device)!r})."
            )


# ---------------------------------------------------------------------------------------------- functions
def fit_activation_prior(
    activations: torch.Tensor,
    epochs: int = 100,
    batch_size: int = 256,
    lr: float = 1e-4,
    seed: int = 0,
    device: str | torch.device = "cpu",
    **net_kwargs,
) -> tuple[ActivationPrior, list[float]]:
    """Fit an :class:`ActivationPrior` to activation vectors (in memory, no ``DataLoader``).

    Sets the standardisation statistics from ``activations``, then trains the ε-predictor with Adam on
    shuffled mini-batches (the last, smaller batch of an epoch is kept). Initialisation, shuffling,
    timesteps and noise all come from ``seed`` (the global RNG is left untouched), so a fit is reproducible.

    Args:
        activations: training vectors ``(M, K)``, ``M >= 2`` (e.g. from :func:`encode_dataset`).
        epochs: passes over the data (``ceil(M / batch_size)`` steps each).
        batch_size: mini-batch size (paper: 256).
        lr: Adam learning rate (paper: 1e-4; small data sets train faster with ~1e-3).
        seed: random seed.
        device: where to train; the returned prior lives there.
        net_kwargs: further :class:`ActivationPrior` arguments (``channels``, ``num_res_blocks``,
            ``norm_num_groups``, ``num_train_timesteps``, ``beta_start``, ``beta_end``, ``min_std``,
            ``parameterization``).

    Returns:
        ``(prior, losses)``: the trained prior (in eval mode) and the mean training loss of every epoch.
    """
    owner = "fit_activation_prior"
    s = _check_activations(owner, "activations", activations)
    if s.shape[0] < 2:
        raise ValueError(f"{owner}: activations needs at least 2 rows (M >= 2), got M={s.shape[0]}.")
    _check_int(owner, "epochs", epochs, 1)
    _check_int(owner, "batch_size", batch_size, 1)
    _check_float(owner, "lr", lr, 0.0)
    _check_int(owner, "seed", seed, 0)
    if "num_prototypes" in net_kwargs:
        raise ValueError(f"{owner}: num_prototypes is taken from activations.shape[1]; do not pass it in net_kwargs.")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"{owner}: device must be a torch device such as 'cpu' or 'cuda', got {device!r}.") from e

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        prior = ActivationPrior(s.shape[1], **net_kwargs)
    prior = prior.to(device)
    prior.set_statistics(s)
    z0 = prior.standardize(s)  # (M, K) on device
    generator = torch.Generator(device=device).manual_seed(seed)
    optimizer = torch.optim.Adam(prior.net.parameters(), lr=lr)

    prior.train()
    losses: list[float] = []
    m = z0.shape[0]
    for _ in range(epochs):
        order = torch.randperm(m, generator=generator, device=device)
        total = torch.zeros((), device=device)
        for start in range(0, m, batch_size):
            batch = z0[order[start : start + batch_size]]
            loss = prior._loss(batch, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * batch.shape[0]
        losses.append(float(total) / m)
    prior.eval()
    return prior, losses


@torch.no_grad()
def encode_dataset(
    encoder: nn.Module,
    data_iterable: Iterable | torch.Tensor | dict,
    image_key: str = "image",
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Prototype activations of a whole data set, streamed batch by batch without gradients.

    Args:
        encoder: a ``PatronusUNet`` (its ``encode`` is used) or a ``PrototypeEncoder`` (called), or any module
            with an ``encode(images) -> (N, K)`` method or whose call returns ``(N, K)``.
        data_iterable: an iterable of batches (e.g. a ``DataLoader``); a batch is a dict holding ``image_key``,
            an image tensor ``(N, C, *spatial)``, or a tuple/list whose first item is the images. A single
            batch (tensor or dict) is also accepted.
        image_key: the images' key in dict batches.
        device: where to run the encoder; defaults to the encoder's device.

    Returns:
        ``(M, K)`` float32 activations on the CPU, in data order. The encoder's train/eval mode is restored.
    """
    owner = "encode_dataset"
    if not isinstance(encoder, nn.Module):
        raise TypeError(
            f"{owner}: encoder must be a PatronusUNet or a PrototypeEncoder (an nn.Module), got {type(encoder).__name__}."
        )
    encode = getattr(encoder, "encode", None)
    encode = encode if callable(encode) else encoder
    if device is None:
        param = next(iter(encoder.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    else:
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError) as e:
            raise ValueError(f"{owner}: device must be a torch device such as 'cpu' or 'cuda', got {device!r}.") from e

    was_training = encoder.training
    encoder.eval()
    out: list[torch.Tensor] = []
    try:
        for i, (_, images, _) in enumerate(iter_batches(data_iterable, owner, image_key, name="data_iterable")):
            s = encode(images.to(device=device, dtype=torch.float32))
            if isinstance(s, MetaTensor):
                s = s.as_tensor()
            if not isinstance(s, torch.Tensor) or s.ndim != 2 or s.shape[0] != images.shape[0]:
                got = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
                raise TypeError(f"{owner}: the encoder must return activations (N, K) for a batch of N images, got {got}.")
            if out and s.shape[1] != out[0].shape[1]:
                raise ValueError(f"{owner}: batch {i} gave K={s.shape[1]} activations, earlier batches K={out[0].shape[1]}.")
            out.append(s.detach().float().cpu())
    finally:
        encoder.train(was_training)
    if not out:
        raise ValueError(f"{owner}: data_iterable yielded no batches; give it at least one batch of images.")
    return torch.cat(out)
