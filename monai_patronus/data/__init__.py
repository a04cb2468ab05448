from __future__ import annotations

from .digits import load_digits_images

__all__ = ["load_digits_images"]
