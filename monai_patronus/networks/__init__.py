from __future__ import annotations

from .activation_prior import ActivationPriorUNet
from .patronus_unet import PatronusUNet
from .prototype_encoder import ENCODER_PRESETS, PrototypeActivations, PrototypeEncoder, init_prototypes_from_data
from .receptive_field import ReceptiveField

__all__ = [
    "ActivationPriorUNet",
    "ENCODER_PRESETS",
    "PatronusUNet",
    "PrototypeActivations",
    "PrototypeEncoder",
    "ReceptiveField",
    "init_prototypes_from_data",
]
