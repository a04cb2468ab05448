from __future__ import annotations

from .trainer import create_patronus_trainer

__all__ = ["create_patronus_trainer"]
