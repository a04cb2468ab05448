from __future__ import annotations

import pytest
import torch

from monai_patronus.data import load_digits_images


def test_shapes_range_and_filter():
    images, labels = load_digits_images(size=16, num_images=20, digits=(0, 1))
    assert images.shape == (20, 1, 16, 16) and labels.shape == (20,)
    assert set(labels.tolist()) <= {0, 1}
    assert float(images.min()) == -1.0 and float(images.max()) <= 1.0
    raw, _ = load_digits_images(size=8, num_images=3)
    assert torch.equal(torch.unique(((raw + 1) * 8).round()), torch.unique((raw + 1) * 8))  # 17 grey levels


@pytest.mark.parametrize(
    "kwargs, words", [(dict(size=4), "size"), (dict(num_images=0), "num_images"), (dict(digits=(11,)), "digits")]
)
def test_invalid_arguments(kwargs, words):
    with pytest.raises(ValueError, match=words):
        load_digits_images(**kwargs)
