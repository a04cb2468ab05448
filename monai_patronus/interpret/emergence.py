"""When do prototypes emerge during denoising? (METHOD.md section 5, "When")

At every reverse-diffusion step the model's predicted clean image ``x̂0(t)`` is re-encoded; the curve
``s_k(x̂0(t))`` over ``t`` shows when pattern ``k`` appears. The emergence time of a prototype is the
first step at which it has made half of its total change from the first to the last step.
"""

from __future__ import annotations

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
    """

    timesteps: torch.Tensor
    activations: torch.Tensor
    final: torch.Tensor
    emergence_step: torch.Tensor
    emergence_timestep: torch.Tensor


def emergence_times(activations: torch.Tensor, fraction: float = 0.5) -> torch.Tensor:
    """Index of the first step at which ``|s(t) - s(first)|`` reaches ``fraction`` of ``|s(last) - s(first)|``.

    Args:
        activations: ``(S, ...)`` trajectories over ``S`` steps.
        fraction: in (0, 1].

    Returns:
        long tensor of the trailing shape; a trajectory with no net change emerges at step 0.
    """
    if not isinstance(activations, torch.Tensor) or activations.ndim < 1 or activations.shape[0] < 1:
        raise ValueError("emergence_times: activations must be a tensor (S, ...) with at least one step.")
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
) -> EmergenceResult:
    """Generate from ``input_noise`` (or, with ``depth``, from an inverted latent during an edit) and record
    every prototype's activation on the predicted clean image at each step.

    Arguments are those of :meth:`PatronusInferer.trajectory`; ``fraction`` sets the emergence threshold.
    """
    timesteps, curves, final = [], [], None
    for step in inferer.trajectory(
        input_noise, network, conditioning, num_inference_steps, eta=eta, generator=generator, depth=depth
    ):
        timesteps.append(step.timestep)
        curves.append(network.encode(step.pred_original))
        final = step.prev_sample
    activations = torch.stack(curves)
    steps = emergence_times(activations, fraction)
    timestep_values = torch.tensor(timesteps)
    return EmergenceResult(timestep_values, activations, final, steps, timestep_values[steps])
