"""Adds the prototype distinct loss to a MONAI trainer's loss, as a separately logged term."""

from __future__ import annotations

from ignite.engine import Events
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys

from monai_patronus.handlers.utils import unwrap_network
from monai_patronus.losses import PrototypeDistinctLoss

__all__ = ["PrototypeDistinctLossHandler"]


class PrototypeDistinctLossHandler:
    """On ``IterationEvents.LOSS_COMPLETED`` add ``weight * distinct(prototypes)`` to ``state.output["loss"]``.

    ``SupervisedTrainer`` back-propagates ``state.output["loss"]`` after that event, so this gives the
    same gradients as a combined loss function while keeping MONAI's trainer (AMP, gradient accumulation)
    unchanged. The unweighted term is stored as ``state.output[output_key]`` so ``StatsHandler`` or
    ``MLFlowHandler`` can log it on its own.

    Args:
        weight: λ, the weight of the term (paper's public code: off, i.e. don't attach the handler).
        delta: the margin δ of :class:`PrototypeDistinctLoss` (paper: 0.2).
        output_key: where the unweighted term goes in ``engine.state.output``.
    """

    def __init__(self, weight: float, delta: float = 0.2, output_key: str = "distinct_loss") -> None:
        if weight < 0:
            raise ValueError(f"PrototypeDistinctLossHandler: weight must be a float >= 0, got {weight!r}.")
        self.weight = float(weight)
        self.loss = PrototypeDistinctLoss(delta)
        self.output_key = output_key

    def attach(self, engine) -> None:
        # a trainer attaches its handlers before it sets ``engine.network``: check the network once, at the start
        engine.add_event_handler(Events.STARTED, self._check_network)
        engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self)

    @staticmethod
    def _check_network(engine) -> None:
        network = unwrap_network(engine.network)
        if not hasattr(network, "prototype_encoder"):
            raise TypeError(
                f"PrototypeDistinctLossHandler: the trainer's network ({type(network).__name__}) has no "
                "prototype_encoder; use a PatronusUNet."
            )

    def __call__(self, engine) -> None:
        term = self.loss(unwrap_network(engine.network).prototype_encoder.prototypes)
        engine.state.output[CommonKeys.LOSS] = engine.state.output[CommonKeys.LOSS] + self.weight * term
        engine.state.output[self.output_key] = term.detach()
