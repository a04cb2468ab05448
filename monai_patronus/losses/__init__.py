from __future__ import annotations

from .distinct import PrototypeDistinctLoss

__all__ = ["PrototypeDistinctLoss"]
