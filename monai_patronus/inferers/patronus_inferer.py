"""Training forward, sampling, DDIM inversion/reconstruction and denoising trajectories for Patronus."""

from __future__ import annotations

import contextlib
import inspect
from collections import deque
from collections.abc import Iterator
from typing import NamedTuple

import torch
from monai.inferers import DiffusionInferer
from monai.networks.schedulers import Scheduler
from monai.utils import look_up_option
from torch import nn
from tqdm.auto import tqdm

__all__ = ["PatronusInferer", "DenoisingStep"]

_AUTOCAST_DTYPES = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "float32": None,
    "none": None,
}


class DenoisingStep(NamedTuple):
    """One reverse-diffusion step: ``timestep`` ``t``, ``sample`` ``x_t``, ``pred_original`` ``x̂0(t)`` and
    ``prev_sample`` (``x`` at the next smaller timestep, or at ``alpha = final_alpha_cumprod`` after ``t = 0``)."""

    timestep: int
    sample: torch.Tensor
    pred_original: torch.Tensor
    prev_sample: torch.Tensor


class PatronusInferer(DiffusionInferer):
    """MONAI ``DiffusionInferer`` for models conditioned on prototype activations (e.g. :class:`PatronusUNet`).

    A DDIM-type scheduler (with ``reversed_step``) steps between consecutive points of ``DDIMScheduler``'s grid
    ``t_0 = 0 < ... < t_{N-1} = T - 1`` by the DDIM update (Song et al. 2021, eqs. 12 and 16), its state untouched;
    a DDPM scheduler steps ``t -> t-1`` over all ``T``. :meth:`invert` goes ``t_0 -> t_{N-1}``, :meth:`reconstruct`
    back, and :meth:`sample` also takes the final step to ``alpha = final_alpha_cumprod``.

    Args:
        scheduler: a MONAI scheduler (``DDIMScheduler(clip_sample=False)`` for inversion, or ``DDPMScheduler``).
        autocast_dtype: ``None`` (float32), or ``torch.bfloat16`` / ``"bfloat16"`` (float16 on CUDA) to run the
            network under ``torch.autocast``. Outputs are float32.
        inversion_iterations: default ``fixed_point_iterations`` of :meth:`invert` (0: plain reverse DDIM).
        guidance_scale: classifier-free guidance ``ε = ε(∅) + w (ε(s) - ε(∅))`` (Ho & Salimans 2022) in every
            inference pass, never in training; 1: none, ``w != 1`` needs ``condition_dropout > 0`` in training.
        sample_clip: clamp ``x̂0`` to ``[-sample_clip, sample_clip]`` when generating from noise only; ``None``: no.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        autocast_dtype: torch.dtype | str | None = None,
        inversion_iterations: int = 0,
        guidance_scale: float = 1.0,
        sample_clip: float | None = None,
    ) -> None:
        if not isinstance(scheduler, Scheduler):
            raise TypeError(f"PatronusInferer: scheduler must be a MONAI Scheduler, got {type(scheduler).__name__}.")
        if isinstance(autocast_dtype, str):
            autocast_dtype = look_up_option(autocast_dtype, _AUTOCAST_DTYPES)
        if autocast_dtype not in (None, torch.bfloat16, torch.float16):
            raise ValueError(f"PatronusInferer: autocast_dtype must be bfloat16, float16 or None, got {autocast_dtype}")
        if inversion_iterations < 0:
            raise ValueError(f"PatronusInferer: inversion_iterations must be an int >= 0, got {inversion_iterations}.")
        if not guidance_scale >= 0:
            raise ValueError(f"PatronusInferer: guidance_scale must be a float >= 0 (1: none), got {guidance_scale}.")
        if sample_clip is not None and not (sample_clip > 0 and hasattr(scheduler, "reversed_step")):
            raise ValueError(
                f"PatronusInferer: sample_clip must be a float > 0 (e.g. 1.0) or None, got {sample_clip!r}, and "
                f"needs a DDIM-type scheduler (for {type(scheduler).__name__} set its own clip_sample instead)."
            )
        super().__init__(scheduler)
        self.guidance_scale = float(guidance_scale)
        self.sample_clip = None if sample_clip is None else float(sample_clip)
        self.autocast_dtype = autocast_dtype
        self.inversion_iterations = inversion_iterations
        self._step_takes_generator = "generator" in inspect.signature(scheduler.step).parameters

    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        diffusion_model: nn.Module,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        condition: torch.Tensor | None = None,
        mode: str = "crossattn",
        seg: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Noise prediction for ``add_noise(inputs, noise, timesteps)`` given ``s(inputs)`` or ``condition``."""

        if mode != "crossattn":
            raise ValueError(f"PatronusInferer: mode must be 'crossattn', got {mode!r}.")
        condition = inputs if condition is None else condition
        with self._autocast(inputs.device):
            prediction = super().__call__(inputs, diffusion_model, noise, timesteps, condition=condition)
        return prediction.float()

    def trajectory(
        self,
        input_noise: torch.Tensor,
        diffusion_model: nn.Module,
        conditioning: torch.Tensor,
        num_inference_steps: int | None = None,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        verbose: bool = False,
        depth: int | None = None,
    ) -> Iterator[DenoisingStep]:
        """Generate from ``input_noise``, yielding a :class:`DenoisingStep` per network evaluation (no gradients).

        Args:
            input_noise: ``x_T``, ``(N, C, *spatial)`` (e.g. ``torch.randn`` or from :meth:`invert`).
            diffusion_model: the conditional ε-predictor.
            conditioning: ``(N, K)`` (or ``(1, K)``) activation vector, or clean images to encode.
            num_inference_steps: ``N``; defaults to the scheduler's training timesteps ``T``.
            eta: DDIM stochasticity (0: deterministic DDIM, 1: DDPM-like); needs a DDIM-type scheduler.
            generator: random generator for the noise added when ``eta > 0`` or with DDPM.
            verbose: show a progress bar.
            depth: ``None`` samples from noise over the whole grid; an int ``m`` retraces :meth:`invert` with the
                same ``depth``, from ``t_m`` down to ``t_0`` (``m = N - 1``: a full reconstruction).
        """
        self._check_images("input_noise", input_noise)
        s = self._activations(diffusion_model, input_noise, conditioning)
        grid = self._grid(num_inference_steps).tolist()
        # generation order; -1 stands for the final step to alpha = final_alpha_cumprod
        down = grid[::-1] + [-1] if depth is None else grid[: self._check_depth(depth, len(grid)) + 1][::-1]
        clip = self.sample_clip if depth is None else None
        if eta < 0 or (eta != 0 and not self._is_ddim):
            raise ValueError(
                f"PatronusInferer: eta must be a float >= 0, got {eta!r} (eta != 0 needs a DDIM-type scheduler: "
                f"{type(self.scheduler).__name__}.step takes no eta)."
            )
        steps = list(zip(down[:-1], down[1:]))
        return self._denoise_steps(input_noise, diffusion_model, s, steps, float(eta), generator, verbose, clip)

    def sample(  # type: ignore[override]
        self,
        input_noise: torch.Tensor,
        diffusion_model: nn.Module,
        conditioning: torch.Tensor,
        num_inference_steps: int | None = None,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        verbose: bool = False,
    ) -> torch.Tensor:
        """Generate images from ``input_noise`` given ``conditioning`` (see :meth:`trajectory`); returns ``x_0``."""
        steps = self.trajectory(
            input_noise,
            diffusion_model,
            conditioning,
            num_inference_steps,
            eta=eta,
            generator=generator,
            verbose=verbose,
        )
        return deque(steps, maxlen=1)[0].prev_sample

    @torch.no_grad()
    def invert(
        self,
        inputs: torch.Tensor,
        diffusion_model: nn.Module,
        conditioning: torch.Tensor | None = None,
        num_inference_steps: int = 50,
        verbose: bool = False,
        depth: int | None = None,
        fixed_point_iterations: int | None = None,
    ) -> torch.Tensor:
        """Deterministic DDIM inversion ``x_0 -> x_T``, conditioned on ``s(inputs)`` by default.

        ``fixed_point_iterations = m > 0`` refines each step ``m`` times by ``x_{t'} <- DDIM(ε(x_{t'}, t'); x_t,
        t -> t')``, whose fixed point :meth:`reconstruct` undoes exactly; ``None``: ``inversion_iterations``.
        Returns ``x`` at ``t_{N-1}``, or at ``t_depth`` for a partial inversion (``depth`` in 1 .. N-1).
        """
        self._check_images("inputs", inputs)
        if not self._is_ddim or self.scheduler.clip_sample:
            raise ValueError(
                f"PatronusInferer.invert: needs a scheduler with reversed_step and clip_sample=False (clipping makes "
                f"inversion inexact), got {type(self.scheduler).__name__}: use DDIMScheduler(clip_sample=False)."
            )
        s = self._activations(diffusion_model, inputs, inputs if conditioning is None else conditioning)
        grid = self._grid(num_inference_steps)
        depth = len(grid) - 1 if depth is None else self._check_depth(depth, len(grid))
        if fixed_point_iterations is None:
            fixed_point_iterations = self.inversion_iterations
        if fixed_point_iterations < 0:
            raise ValueError(f"PatronusInferer: fixed_point_iterations must be >= 0, got {fixed_point_iterations}.")
        x, grid = inputs.float(), grid.tolist()
        for t, t_next in tqdm(list(zip(grid[:depth], grid[1 : depth + 1])), "inverting", disable=not verbose):
            x_next, _ = self._ddim_step(self._predict(diffusion_model, x, t, s), t, t_next, x)
            for _ in range(fixed_point_iterations):
                out = self._predict(diffusion_model, x_next, t_next, s)
                x_next, _ = self._ddim_step(out, t, t_next, x, at=(t_next, x_next))
            x = x_next
        return x

    @torch.no_grad()
    def reconstruct(
        self,
        latents: torch.Tensor,
        diffusion_model: nn.Module,
        conditioning: torch.Tensor,
        num_inference_steps: int = 50,
        verbose: bool = False,
        depth: int | None = None,
    ) -> torch.Tensor:
        """Deterministic DDIM from inverted ``latents`` back to ``t_0``, retracing :meth:`invert` (same ``depth``);
        give the inverted image's ``s`` (or the image) to reconstruct it, or an edited vector to edit it."""
        self._check_images("latents", latents)
        depth = len(self._grid(num_inference_steps)) - 1 if depth is None else depth
        steps = self.trajectory(
            latents, diffusion_model, conditioning, num_inference_steps, verbose=verbose, depth=depth
        )
        return deque(steps, maxlen=1)[0].prev_sample.float()

    @torch.no_grad()
    def _denoise_steps(self, x, diffusion_model, s, steps, eta, generator, verbose, clip) -> Iterator[DenoisingStep]:
        """Run the ``(t, t_next)`` steps fixed by :meth:`trajectory` (nothing read from the scheduler's state)."""
        kwargs = {"generator": generator} if self._step_takes_generator else {}
        x = x.float()
        for t, t_next in tqdm(steps, "denoising", disable=not verbose):
            out = self._predict(diffusion_model, x, t, s)
            if self._is_ddim:
                prev, pred_original = self._ddim_step(out, t, t_next, x, eta, generator, clip)
            else:  # DDPM: step() moves t -> t - 1 = t_next
                prev, pred_original = self.scheduler.step(out, t, x, **kwargs)
            yield DenoisingStep(t, x, pred_original, prev)
            x = prev

    @property
    def _is_ddim(self) -> bool:
        return hasattr(self.scheduler, "reversed_step")

    def _ddim_step(
        self, out, t: int, t_next: int, x, eta: float = 0.0, generator=None, clip: float | None = None, at=None
    ):
        """DDIM move of ``x`` from ``t`` to ``t_next`` (``-1``: ``final_alpha_cumprod``), Song et al. 2021 eqs. 12
        and 16, as ``DDIMScheduler.step``; returns ``(x_{t_next}, x̂0)``. ``at = (t_eval, x_eval)``: ``out`` was
        evaluated there (inversion's refinement), then ``x̂0 = (x - sqrt(1 - a_t) ε̂) / sqrt(a_t)``.
        """
        sch = self.scheduler
        a = sch.alphas_cumprod[t]
        a_next = sch.alphas_cumprod[t_next] if t_next >= 0 else sch.final_alpha_cumprod
        if at is None:
            pred_original = sch.step(out, t, x)[1]
            if clip is not None:  # as DDIMScheduler's clip_sample: x̂0 clamped, ε kept
                pred_original = pred_original.clamp(-clip, clip)
            eps = self._to_eps(out, t, x)
        else:
            eps = self._to_eps(out, *at)
            pred_original = (x - ((1 - a) ** 0.5) * eps) / (a**0.5)
        variance = ((1 - a_next) / (1 - a)) * (1 - a / a_next) if eta > 0 else 0.0
        std = eta * variance**0.5
        x_next = a_next**0.5 * pred_original + (1 - a_next - std**2) ** 0.5 * eps
        if eta > 0:
            noise = torch.randn(out.shape, dtype=out.dtype, generator=generator, device=out.device)
            x_next = x_next + variance**0.5 * eta * noise
        return x_next, pred_original

    def _to_eps(self, out, t: int, x):
        """The noise ``ε̂`` that the network output ``out``, evaluated at ``(x, t)``, stands for."""
        a = self.scheduler.alphas_cumprod[t]
        kind = self.scheduler.prediction_type
        if kind == "v_prediction":
            return (a**0.5) * out + ((1 - a) ** 0.5) * x
        if kind == "sample":
            return (x - (a**0.5) * out) / ((1 - a) ** 0.5)
        return out  # epsilon

    @staticmethod
    def _check_depth(depth: int, grid_size: int) -> int:
        if not isinstance(depth, int) or not 1 <= depth <= grid_size - 1:
            raise ValueError(f"PatronusInferer: depth must be an int in [1, {grid_size - 1}], got {depth!r}.")
        return depth

    def _grid(self, num_inference_steps: int | None) -> torch.Tensor:
        """Ascending timestep grid ``t_0 = 0 < ... < t_{N-1} = T - 1`` of sampling, inversion and reconstruction."""
        T = int(self.scheduler.num_train_timesteps)
        n = T if num_inference_steps is None else num_inference_steps
        if not isinstance(n, int) or not 2 <= n <= T:
            raise ValueError(f"PatronusInferer: num_inference_steps must be an int in [2, {T}], got {n}.")
        if self._is_ddim:  # DDIMScheduler.set_timesteps(n)'s grid (steps_offset 0), without touching the scheduler
            return torch.linspace(T - 1, 0, n).round().long().flip(0)
        if n != T:  # DDPM family: step() always moves t -> t - 1
            raise ValueError(
                f"PatronusInferer: {type(self.scheduler).__name__} steps t -> t-1, so num_inference_steps must be {T} "
                f"(got {n}); use DDIMScheduler for shorter schedules."
            )
        self.scheduler.set_timesteps(T)
        return torch.arange(T)

    def _predict(self, diffusion_model: nn.Module, x: torch.Tensor, t: int, s: torch.Tensor) -> torch.Tensor:
        """The network's output at ``(x, t)`` given ``s``, guided by ``guidance_scale`` (one batched call)."""
        n, w = x.shape[0], self.guidance_scale
        with self._autocast(x.device):
            if w == 1.0:
                return diffusion_model(x, timesteps=torch.full((n,), t, device=x.device), context=s).float()
            s2, unconditional = s.expand(n, -1), torch.arange(2 * n, device=x.device) >= n
            out = diffusion_model(
                torch.cat([x, x]),
                timesteps=torch.full((2 * n,), t, device=x.device),
                context=torch.cat([s2, s2]),
                unconditional=unconditional,
            ).float()
        return out[n:] + w * (out[:n] - out[n:])

    @torch.no_grad()
    def _activations(self, diffusion_model: nn.Module, x: torch.Tensor, conditioning: torch.Tensor) -> torch.Tensor:
        """Resolve ``conditioning`` (vector or clean images) to an ``(N, K)`` vector, encoding images once."""
        resolve = getattr(diffusion_model, "condition_vector", None)
        if resolve is None:
            raise TypeError(
                f"PatronusInferer: diffusion_model must be PatronusUNet, got {type(diffusion_model).__name__}"
            )
        with self._autocast(x.device):
            return resolve(x, context=conditioning.to(x.device)).float()

    def _autocast(self, device: torch.device):  # None: leave any outer autocast (e.g. the trainer's amp) alone
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast_dtype)

    @staticmethod
    def _check_images(name: str, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim < 3 or not x.dtype.is_floating_point:
            raise ValueError(
                f"PatronusInferer: {name} must be a float tensor (N, C, *spatial), got {type(x).__name__} "
                f"{tuple(getattr(x, 'shape', ()))} {getattr(x, 'dtype', '')}."
            )
