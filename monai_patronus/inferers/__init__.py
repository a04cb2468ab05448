from __future__ import annotations

from .patronus_inferer import DenoisingStep, PatronusInferer

__all__ = ["DenoisingStep", "PatronusInferer"]
