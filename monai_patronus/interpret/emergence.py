"""When do prototypes emerge during denoising? (docs/method.md section 5, "When")

At every reverse-diffusion step the model's predicted clean image ``x̂0(t)`` is re-encoded; the curve
``s_k(x̂0(t))`` over ``t`` shows when pattern ``k`` appears. The emergence time of a prototype is the
first step at which it has made half of its total change from the first to the last step.

Clamping. ``x̂0 = (x_t - sqrt(1 - ᾱ_t) ε̂) / sqrt(ᾱ_t)`` divides the noise-prediction error by ``sqrt(ᾱ_t)``,
so at high ``t`` (and with the bundles' ``clip_sample=False`` scheduler) it leaves the data range by a wide
margin (values of ±39 were seen for images in [-1, 1]). The encoder was trained on images in that range
only, so encoding such an ``x̂0`` measures its amplified noise (a global effect on every prototype) rather than
which patterns it shows. The curves therefore re-encode ``x̂0`` clamped to the data range (``data_range``,
default ``(-1, 1)``), as a clipping DDIM sampler would; the generation itself is not changed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from monai_patronus.inferers import PatronusInferer

__all__ = ["EmergenceResult", "emergence_times", "prototype_emergence"]


@dataclass
class EmergenceResult:
    """Activation trajectories of one generation.

    Attributes:
        timesteps: ``(S,)`` the timestep of every step, in generation order (decreasing).
        activations: ``(S, N, K)``: ``s(x̂0(t))`` at every step.
        final: ``(N, C, *spatial)``, the generated images (identical to a plain sampling run).
        emergence_step: ``(N, K)`` long, index into ``timesteps`` of the half-change point.
        emergence_timestep: ``(N, K)`` long, the timestep value there.
        clamped_fraction: ``(S,)`` fraction of the values of ``x̂0(t)`` outside ``data_range`` at every step
            (what the clamp before re-encoding changed); ``None`` when re-encoded unclamped.
    """

    timesteps: torch.Tensor
    activations: torch.Tensor
    final: torch.Tensor
    emergence_step: torch.Tensor
    emergence_timestep: torch.Tensor
    clamped_fraction: torch.Tensor | None = None


def emergence_times(activations: torch.Tensor, fraction: float = 0.5) -> torch.Tensor:
    """Index of the first step at which ``|s(t) - s(first)|`` reaches ``fraction`` of ``|s(last) - s(first)|``.

    Args:
        activations: ``(S, ...)`` trajectories over ``S`` steps.
        fraction: in (0, 1].

    Returns:
        long tensor of the trailing shape; a trajectory with no net change emerges at step 0.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"emergence_times: fraction must be in (0, 1], got {fraction!r}.")
    change = activations - activations[0]
    total = change[-1]
    # progress along the final direction of change, so overshoots and sign both count correctly
    progress = change * torch.sign(total)
    reached = progress >= fraction * total.abs() - 1e-12
    reached[-1] = True
    return reached.float().argmax(dim=0)


@torch.no_grad()
def prototype_emergence(
    inferer: PatronusInferer,
    network: nn.Module,
    input_noise: torch.Tensor,
    conditioning: torch.Tensor,
    num_inference_steps: int = 50,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    depth: int | None = None,
    fraction: float = 0.5,
    data_range: Sequence[float] | None = (-1.0, 1.0),
) -> EmergenceResult:
    """Generate from ``input_noise`` (or, with ``depth``, from an inverted latent during an edit) and record
    every prototype's activation on the predicted clean image at each step.

    Arguments are those of :meth:`PatronusInferer.trajectory`; ``fraction`` sets the emergence threshold.

    Args:
        data_range: ``(low, high)``, the intensity range the encoder was trained on (default ``(-1, 1)``, the
            range of the bundles' images). Each ``x̂0(t)`` is clamped to it before it is re-encoded, so that the
            curves are not driven by the amplified noise of an early, out-of-range ``x̂0`` (module docstring).
            Only the encoder's input is clamped: the sampling steps and ``final`` are those of a plain
            :meth:`PatronusInferer.sample` run. ``None`` re-encodes ``x̂0`` unclamped.

    Raises:
        ValueError: for a ``data_range`` that is not two finite numbers with ``low < high``.
    """
    if data_range is not None and not (len(data_range) == 2 and -math.inf < data_range[0] < data_range[1] < math.inf):
        raise ValueError(
            f"prototype_emergence: data_range must be (low, high) with finite low < high, or None, got {data_range!r}."
        )
    bounds = None if data_range is None else (float(data_range[0]), float(data_range[1]))
    timesteps, curves, clamped, final = [], [], [], None
    for step in inferer.trajectory(
        input_noise, network, conditioning, num_inference_steps, eta=eta, generator=generator, depth=depth
    ):
        timesteps.append(step.timestep)
        x0 = step.pred_original
        if bounds is not None:
            clamped.append(((x0 < bounds[0]) | (x0 > bounds[1])).float().mean().cpu())
            x0 = x0.clamp(*bounds)
        curves.append(network.encode(x0))
        final = step.prev_sample
    activations = torch.stack(curves)
    steps = emergence_times(activations, fraction)
    timestep_values = torch.tensor(timesteps)
    return EmergenceResult(
        timestep_values,
        activations,
        final,
        steps,
        timestep_values[steps],
        torch.stack(clamped) if bounds is not None else None,
    )
