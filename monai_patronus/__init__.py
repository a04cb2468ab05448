"""monai-patronus: Patronus interpretable diffusion models with prototypes, as a MONAI plugin.

Sub-packages mirror MONAI's namespaces: ``networks``, ``inferers``, ``losses``, ``engines``, ``handlers``,
``data``, ``transforms``; ``interpret`` explains a trained model and ``evaluation`` diagnoses and scores it.
``tracking`` (MLflow runs, provenance, registry, reviews) imports MLflow and is imported on its own:
``import monai_patronus.tracking``.
"""

from __future__ import annotations

__version__ = "0.1.0"

# MONAI-style: one import gives all
from . import data, engines, evaluation, handlers, inferers, interpret, losses, networks, transforms

__all__ = [
    "data",
    "engines",
    "evaluation",
    "handlers",
    "inferers",
    "interpret",
    "losses",
    "networks",
    "transforms",
    "__version__",
]
