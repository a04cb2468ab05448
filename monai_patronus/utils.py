"""Small shared helpers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from monai.metrics import PSNRMetric

__all__ = ["json_safe", "psnr", "save_png_grid"]


def json_safe(value: object, digits: int | None = None) -> object:
    """``value`` made JSON-serialisable: dict keys as str, tuples/arrays/tensors as lists, numpy scalars as
    Python numbers, NaN/inf floats as ``None`` (never NaN in a report), floats rounded to ``digits`` if given."""
    if isinstance(value, dict):
        return {str(k): json_safe(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, digits) for v in value]
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return json_safe(value.tolist(), digits)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value):
            return None
        return round(value, digits) if digits is not None else value
    if isinstance(value, np.integer):
        return int(value)
    return value


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Per-sample PSNR in dB of batches ``(N, ...)`` by ``monai.metrics.PSNRMetric`` (range 2: images in [-1, 1]),
    capped at its value for MSE = 1e-12 so that identical images give a finite number (as tracked metrics need)."""
    cap = 10 * math.log10(data_range**2 / 1e-12)
    return PSNRMetric(data_range, reduction="none")(a.float(), b.float()).squeeze(1).clamp(max=cap)


def save_png_grid(rows: list[torch.Tensor], path: str | Path, scale: int = 4) -> Path:
    """Write rows of 2-D images ``(N, C, H, W)`` in [-1, 1] as one PNG grid (a row per tensor, 1-px gaps, each
    pixel ``scale`` x ``scale``); rows may differ in length, ``C`` is 1 or 3. Returns the path written.

    PIL rather than ``torchvision.utils.make_grid``: torchvision is only in the ``natural`` extra, and
    ``make_grid`` lays out one flat batch, not ragged rows.
    """
    from PIL import Image

    shapes = {tuple(r.shape[1:]) for r in rows}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3 or next(iter(shapes))[0] not in (1, 3):
        raise ValueError(
            f"save_png_grid: every row must be (N, C, H, W) with one shared C in (1, 3) and H, W; got {shapes}."
        )
    c, h, w = next(iter(shapes))
    canvas = torch.full((c, (h + 1) * len(rows) + 1, (w + 1) * max(len(r) for r in rows) + 1), 255, dtype=torch.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(((row.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)):
            canvas[:, 1 + i * (h + 1) : (i + 1) * (h + 1), 1 + j * (w + 1) : (j + 1) * (w + 1)] = img
    canvas = canvas.repeat_interleave(scale, 1).repeat_interleave(scale, 2).permute(1, 2, 0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((canvas[..., 0] if c == 1 else canvas).numpy()).save(path)
    return path
