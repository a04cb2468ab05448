from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from monai_patronus.utils import psnr, save_png_grid


def test_psnr_matches_formula():
    a = torch.zeros(2, 1, 4, 4)
    b = a.clone()
    b[0] += 0.1
    b[1, 0, 0, 0] = 1.0
    values = psnr(a, b)
    assert float(values[0]) == pytest.approx(10 * math.log10(4 / 0.01), rel=1e-5)
    assert float(values[1]) == pytest.approx(10 * math.log10(4 / (1 / 16)), rel=1e-5)
    with pytest.raises(ValueError, match="shapes dont match"):  # MONAI PSNRMetric's message
        psnr(a, b[:1])


def test_png_grid_pixels(tmp_path):
    row1 = torch.full((2, 1, 3, 3), -1.0)
    row2 = torch.full((1, 1, 3, 3), 1.0)
    path = save_png_grid([row1, row2], tmp_path / "g.png", scale=1)
    img = np.asarray(Image.open(path))
    assert img.shape == (2 * 4 + 1, 2 * 4 + 1)
    assert (img[1:4, 1:4] == 0).all() and (img[5:8, 1:4] == 255).all() and (img[5:8, 5:8] == 255).all()
    with pytest.raises(ValueError, match="every row must be"):
        save_png_grid([row1, torch.zeros(1, 2, 3, 3)], tmp_path / "bad.png")


def test_json_safe_never_writes_nan():
    import json

    import numpy as np
    import torch

    from monai_patronus.utils import json_safe

    value = {1: (np.float32(0.1234567), np.nan, np.int64(3)), "t": torch.tensor([1.5, float("inf")]), "a": np.ones(2)}
    out = json_safe(value, digits=3)
    assert out == {"1": [0.123, None, 3], "t": [1.5, None], "a": [1.0, 1.0]}
    json.dumps(out, allow_nan=False)
    assert json_safe(np.float64(0.1234567)) == 0.1234567
