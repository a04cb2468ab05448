"""Training forward, sampling, DDIM inversion/reconstruction and denoising trajectories for Patronus."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import NamedTuple

import torch
from monai.inferers import DiffusionInferer
from monai.networks.schedulers import Scheduler
from torch import nn

__all__ = ["PatronusInferer", "DenoisingStep"]

_AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


class DenoisingStep(NamedTuple):
    """One reverse-diffusion step.

    Attributes:
        timestep: the step's timestep ``t``.
        sample: ``x_t``, the input of the step.
        pred_original: the model's predicted clean image ``x̂0(t)``.
        prev_sample: the step's output, ``x`` at the next (smaller) timestep (after ``t = 0``: at
            ``alpha = final_alpha_cumprod``).
    """

    timestep: int
    sample: torch.Tensor
    pred_original: torch.Tensor
    prev_sample: torch.Tensor


class PatronusInferer(DiffusionInferer):
    """MONAI ``DiffusionInferer`` for models conditioned on prototype activations (e.g. :class:`PatronusUNet`).

    Timestep grids. With a DDIM-type scheduler (one that has ``reversed_step``) every method uses the grid of
    ``DDIMScheduler.set_timesteps(N)`` (with ``steps_offset = 0``), ascending: ``t_k = round(linspace(T - 1,
    0, N))[N - 1 - k]``, so ``t_0 = 0 < t_1 < ... < t_{N-1} = T - 1`` for every ``N`` in ``[2, T]``, spaced
    ``(T - 1) / (N - 1)`` apart up to rounding. Each step moves exactly between two consecutive grid points
    by the DDIM update (Song et al. 2021, eqs. 12 and 16) with the scheduler's ``alphas_cumprod``; the
    scheduler's own ``step`` (which moves by ``T // N``, off this grid for most ``N``) only supplies the
    predicted ``x̂0``. The scheduler's state is neither read nor changed, so calls can interleave freely.
    A DDPM scheduler steps ``t -> t-1``, so it samples over all ``T`` timesteps.

    Inversion takes the clean image as ``x`` at ``t_0 = 0`` and runs the ``N - 1`` deterministic
    reversed DDIM steps up to ``t_{N-1} = T - 1``; :meth:`reconstruct` runs the same ``N - 1`` steps back.
    :meth:`sample` starts from noise at ``t_{N-1} = T - 1`` and also takes the final step from ``t_0`` to
    ``alpha = final_alpha_cumprod`` (1 by default).

    Args:
        scheduler: a MONAI scheduler (``DDIMScheduler`` for short schedules and inversion, with
            ``clip_sample=False`` for inversion; or ``DDPMScheduler``).
        autocast_dtype: ``None`` for float32, or ``torch.bfloat16`` / ``"bfloat16"`` (or float16 on CUDA) to
            run the network under ``torch.autocast`` on the input's device (CPU or CUDA). Outputs are float32.
        inversion_iterations: default ``fixed_point_iterations`` of :meth:`invert` (0: plain reverse DDIM).
        guidance_scale: classifier-free guidance on ``s`` (Ho & Salimans 2022) at inference:
            ``ε = ε(∅) + w (ε(s) - ε(∅))``; 1 (default) is plain conditional prediction, ``w > 1`` makes generation
            follow ``s`` more closely. It applies to every inference pass (sampling, inversion, reconstruction,
            editing), so inversion and reconstruction stay exact inverses of each other; never to the training
            forward. ``w != 1`` needs a model trained with ``condition_dropout > 0``.
        sample_clip: clamp the predicted clean image ``x̂0`` to ``[-sample_clip, sample_clip]`` at every step of
            generation *from noise* (:meth:`sample`, :meth:`trajectory` without ``depth``), which keeps samples
            in the data range early in training. Inversion and reconstruction are never clipped (clipping
            makes inversion inexact). ``None`` (default): no clipping.
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
            if autocast_dtype not in _AUTOCAST_DTYPES and autocast_dtype not in ("float32", "none"):
                raise ValueError(
                    f"PatronusInferer: autocast_dtype must be one of {sorted(_AUTOCAST_DTYPES)}, 'float32' or None, "
                    f"got {autocast_dtype!r}."
                )
            autocast_dtype = _AUTOCAST_DTYPES.get(autocast_dtype)
        if autocast_dtype is not None and autocast_dtype not in (torch.bfloat16, torch.float16):
            raise ValueError(
                f"PatronusInferer: autocast_dtype must be torch.bfloat16, torch.float16 or None, got {autocast_dtype!r}."
            )
        if isinstance(inversion_iterations, bool) or not isinstance(inversion_iterations, int) or inversion_iterations < 0:
            raise ValueError(f"PatronusInferer: inversion_iterations must be an int >= 0, got {inversion_iterations!r}.")
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) or not guidance_scale >= 0:
            raise ValueError(f"PatronusInferer: guidance_scale must be a float >= 0 (1: no guidance), got {guidance_scale!r}.")
        if sample_clip is not None and (
            isinstance(sample_clip, bool) or not isinstance(sample_clip, (int, float)) or not sample_clip > 0
        ):
            raise ValueError(f"PatronusInferer: sample_clip must be a float > 0 (e.g. 1.0) or None, got {sample_clip!r}.")
        if sample_clip is not None and not hasattr(scheduler, "reversed_step"):
            raise ValueError(
                f"PatronusInferer: sample_clip needs a DDIM-type scheduler; for {type(scheduler).__name__} set its own "
                "clip_sample instead, and leave sample_clip None."
            )
        super().__init__(scheduler)
        self.guidance_scale = float(guidance_scale)
        self.sample_clip = None if sample_clip is None else float(sample_clip)
        self.autocast_dtype = autocast_dtype
        self.inversion_iterations = inversion_iterations
        self._step_takes_generator = "generator" in inspect.signature(scheduler.step).parameters

    # ------------------------------------------------------------------ training
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
        """Noise prediction for ``x_t = add_noise(inputs, noise, timesteps)`` conditioned on ``s(inputs)``.

        ``condition`` defaults to the clean ``inputs`` (encoded inside the model, so the denoising loss
        trains the encoder and prototypes); pass an ``(N, K)`` vector to condition on it instead.
        """
        if mode != "crossattn":
            raise ValueError(
                f"PatronusInferer: mode must be 'crossattn' (the condition goes through the model), got {mode!r}."
            )
        condition = inputs if condition is None else condition
        with self._autocast(inputs.device):
            prediction = super().__call__(inputs, diffusion_model, noise, timesteps, condition=condition)
        return prediction.float()

    # ------------------------------------------------------------------ generation
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
        """Generate from ``input_noise`` step by step, yielding ``x_t`` and the predicted clean image each step.

        Arguments are checked and the steps ``(t, t_next)`` fixed when called (other calls made before or
        during the iteration do not change them); the returned iterator runs one network evaluation per
        item (without gradients), so a caller can stop early or analyse each ``x̂0(t)`` as it comes.

        Args:
            input_noise: ``x_T``, ``(N, C, *spatial)`` (e.g. ``torch.randn(..., generator=g)`` or from :meth:`invert`).
            diffusion_model: the conditional ε-predictor.
            conditioning: ``(N, K)`` (or ``(1, K)``) activation vector, or clean images to encode.
            num_inference_steps: ``N``; defaults to the scheduler's training timesteps ``T``.
            eta: DDIM stochasticity (0: deterministic DDIM, 1: DDPM-like). Needs a scheduler whose step takes eta.
            generator: random generator for the noise added when ``eta > 0`` or with DDPM.
            verbose: show a progress bar.
            depth: ``None`` samples from noise over the whole grid (``t_{N-1} = T - 1`` down to ``t_0 = 0``),
                ending with the step to ``alpha = final_alpha_cumprod``.
                An int ``m`` retraces :meth:`invert` with the same ``depth``: from ``t_m`` down to ``t_0``
                (``m`` steps; ``m = N - 1`` is a full reconstruction).
        """
        self._check_images("input_noise", input_noise)
        s = self._activations(diffusion_model, input_noise, conditioning)
        grid = self._grid(num_inference_steps).tolist()
        # generation order; -1 stands for the final step to alpha = final_alpha_cumprod
        down = grid[::-1] + [-1] if depth is None else grid[: self._check_depth(depth, len(grid)) + 1][::-1]
        clip = self.sample_clip if depth is None else None
        return self._denoise(input_noise, diffusion_model, s, list(zip(down[:-1], down[1:])), eta, generator, verbose, clip)

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
        step = None
        for step in self.trajectory(input_noise, diffusion_model, conditioning, num_inference_steps, eta, generator, verbose):
            pass
        return step.prev_sample  # type: ignore[union-attr]

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
        """Deterministic DDIM inversion ``x_0 -> x_T`` (reverse DDIM), conditioned on ``s(inputs)`` by default.

        Plain reverse DDIM evaluates ε at the step's start ``x_t`` where the exact inverse of the DDIM step
        needs it at the step's end ``x_{t'}``; the error grows with the step size. With
        ``fixed_point_iterations = m > 0`` each step is refined ``m`` times by
        ``x_{t'} <- DDIM(ε(x_{t'}, t'); x_t, t -> t')``, whose fixed point is exactly what :meth:`reconstruct`
        undoes (for every prediction type: ε, x0 or v), so few steps reconstruct as well as many (``m``
        extra network calls per step). ``None`` takes the inferer's ``inversion_iterations``.

        Returns ``x`` at the top of the grid ``t_{N-1} = T - 1`` (see the class docstring), or at ``t_depth`` when
        ``depth`` (1 .. N-1) is given: a partial inversion, so that an edit only re-generates the later,
        finer steps (see the emergence analysis in ``monai_patronus.interpret``).
        """
        self._check_images("inputs", inputs)
        if not hasattr(self.scheduler, "reversed_step"):
            raise ValueError(
                f"PatronusInferer.invert: the scheduler ({type(self.scheduler).__name__}) has no reversed_step; "
                "use monai.networks.schedulers.DDIMScheduler(clip_sample=False)."
            )
        if getattr(self.scheduler, "clip_sample", False):
            raise ValueError(
                "PatronusInferer.invert: scheduler.clip_sample is True, which makes inversion inexact; "
                "build the DDIMScheduler with clip_sample=False."
            )
        s = self._activations(diffusion_model, inputs, inputs if conditioning is None else conditioning)
        grid = self._grid(num_inference_steps)
        depth = len(grid) - 1 if depth is None else self._check_depth(depth, len(grid))
        if fixed_point_iterations is None:
            fixed_point_iterations = self.inversion_iterations
        if isinstance(fixed_point_iterations, bool) or not isinstance(fixed_point_iterations, int) or fixed_point_iterations < 0:
            raise ValueError(
                f"PatronusInferer.invert: fixed_point_iterations must be an int >= 0, got {fixed_point_iterations!r}."
            )
        x, grid = inputs.float(), grid.tolist()
        for t, t_next in self._progress(list(zip(grid[:depth], grid[1 : depth + 1])), verbose, "inverting"):
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
        """Deterministic DDIM from inverted ``latents`` back to ``t_0``, retracing :meth:`invert`'s grid
        (with the same ``depth`` when the inversion was partial).

        Give the inverted image's ``s`` (or the image) to reconstruct it, or an edited vector to edit it.
        """
        self._check_images("latents", latents)
        full_depth = len(self._grid(num_inference_steps)) - 1
        x = latents
        for step in self.trajectory(
            latents, diffusion_model, conditioning, num_inference_steps, verbose=verbose,
            depth=full_depth if depth is None else depth,
        ):
            x = step.prev_sample
        return x.float()

    # ------------------------------------------------------------------ helpers
    def _denoise(self, x, diffusion_model, s, steps, eta, generator, verbose, clip=None) -> Iterator[DenoisingStep]:
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or eta < 0:
            raise ValueError(f"PatronusInferer: eta must be a float >= 0, got {eta!r}.")
        if eta != 0 and not self._is_ddim:
            raise ValueError(
                f"PatronusInferer: eta={eta} needs a DDIM-type scheduler; {type(self.scheduler).__name__}.step takes no eta."
            )
        return self._denoise_steps(x, diffusion_model, s, steps, float(eta), generator, verbose, clip)

    @torch.no_grad()
    def _denoise_steps(self, x, diffusion_model, s, steps, eta, generator, verbose, clip=None) -> Iterator[DenoisingStep]:
        """Run the explicit ``(t, t_next)`` steps fixed by :meth:`trajectory` (nothing read from the scheduler's state)."""
        kwargs = {"generator": generator} if self._step_takes_generator else {}
        x = x.float()
        for t, t_next in self._progress(steps, verbose, "denoising"):
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
        """DDIM move of ``x`` from ``t`` to ``t_next`` (down, or up for inversion with ``eta = 0``; ``t_next = -1``:
        ``alpha = final_alpha_cumprod``), Song et al. 2021 eqs. 12 and 16. Returns ``(x_{t_next}, x̂0)``.

        ``x̂0`` (prediction type, clipping) comes from the scheduler's ``step``, whose stride does not enter it;
        ``ε̂`` and the update follow ``DDIMScheduler.step`` operation by operation, so on a grid of stride
        ``T // N`` the result equals MONAI's ``step`` (same noise draw from ``generator`` when ``eta > 0``).

        ``at = (t_eval, x_eval)``: ``out`` was evaluated there rather than at ``(t, x)`` (the fixed-point
        refinement of inversion evaluates at the step's end). ``out`` is then converted to ``ε̂`` where it was
        evaluated, and ``x̂0 = (x - sqrt(1 - a_t) ε̂) / sqrt(a_t)``: the exact inverse of the reconstruction
        step for every prediction type.
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
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= grid_size - 1:
            raise ValueError(
                f"PatronusInferer: depth must be an int in [1, {grid_size - 1}] (steps of the {grid_size}-step grid), "
                f"got {depth!r}."
            )
        return depth

    def _grid(self, num_inference_steps: int | None) -> torch.Tensor:
        """Ascending timestep grid ``t_0 = 0 < ... < t_{N-1} = T - 1`` shared by sampling, inversion and reconstruction."""
        T = int(self.scheduler.num_train_timesteps)
        n = T if num_inference_steps is None else num_inference_steps
        if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= T:
            raise ValueError(f"PatronusInferer: num_inference_steps must be an int in [2, {T}], got {num_inference_steps!r}.")
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
        n = x.shape[0]
        w = self.guidance_scale
        with self._autocast(x.device):
            if w == 1.0:
                timesteps = torch.full((n,), t, device=x.device, dtype=torch.long)
                return diffusion_model(x, timesteps=timesteps, context=s).float()
            timesteps = torch.full((2 * n,), t, device=x.device, dtype=torch.long)
            unconditional = torch.arange(2 * n, device=x.device) >= n
            s2 = s.expand(n, -1)
            out = diffusion_model(
                torch.cat([x, x]), timesteps=timesteps, context=torch.cat([s2, s2]), unconditional=unconditional
            ).float()
        cond, uncond = out[:n], out[n:]
        return uncond + w * (cond - uncond)

    @torch.no_grad()
    def _activations(self, diffusion_model: nn.Module, x: torch.Tensor, conditioning: torch.Tensor) -> torch.Tensor:
        """Resolve ``conditioning`` (vector or clean images) to an ``(N, K)`` vector, encoding images once."""
        if not isinstance(conditioning, torch.Tensor):
            raise TypeError(
                f"PatronusInferer: conditioning must be a torch.Tensor (activations (N, K) or images), "
                f"got {type(conditioning).__name__}."
            )
        resolve = getattr(diffusion_model, "condition_vector", None)
        if resolve is None:
            raise TypeError(
                f"PatronusInferer: diffusion_model must be a PatronusUNet (or provide condition_vector), "
                f"got {type(diffusion_model).__name__}."
            )
        with self._autocast(x.device):
            return resolve(x, context=conditioning.to(x.device)).float()

    def _autocast(self, device: torch.device):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast_dtype)

    @staticmethod
    def _check_images(name: str, x: object) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"PatronusInferer: {name} must be a torch.Tensor, got {type(x).__name__}.")
        if x.ndim < 3 or not x.dtype.is_floating_point:
            raise ValueError(f"PatronusInferer: {name} must be a float tensor (N, C, *spatial), got {tuple(x.shape)} {x.dtype}.")

    @staticmethod
    def _progress(timesteps: torch.Tensor, verbose: bool, desc: str):
        if not verbose:
            return timesteps
        from tqdm.auto import tqdm

        return tqdm(timesteps, desc=desc)
