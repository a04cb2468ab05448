"""Small shared helpers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

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
    """Per-sample PSNR in dB between batches ``(N, ...)`` (default range 2 for images in [-1, 1])."""
    if a.shape != b.shape:
        raise ValueError(f"psnr: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}.")
    mse = ((a.float() - b.float()) ** 2).flatten(1).mean(1)
    return 10.0 * torch.log10(data_range**2 / mse.clamp_min(1e-12))


def save_png_grid(rows: list[torch.Tensor], path: str | Path, scale: int = 4) -> Path:
    """Write rows of 2-D images ``(N, C, H, W)`` in [-1, 1] as one PNG grid (a row per tensor).

    Rows may differ in length; ``C`` must be 1 or 3. Returns the path written.
    """
    from PIL import Image

    if not rows:
        raise ValueError("save_png_grid: rows must hold at least one (N, C, H, W) tensor.")
    shapes = {tuple(r.shape[1:]) for r in rows}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3 or next(iter(shapes))[0] not in (1, 3):
        raise ValueError(f"save_png_grid: every row must be (N, C, H, W) with one shared C in (1, 3) and H, W; got {shapes}.")
    c, h, w = next(iter(shapes))
    ncol = max(r.shape[0] for r in rows)
    pad = 1
    canvas = np.full(((h + pad) * len(rows) + pad, (w + pad) * ncol + pad, c), 255, dtype=np.uint8)
    for i, row in enumerate(rows):
        imgs = ((row.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        for j, img in enumerate(imgs):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            canvas[y : y + h, x : x + w] = img.permute(1, 2, 0).numpy()
    image = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
