from __future__ import annotations

from .digits import load_digits_images
from .mni152 import mni152_template_path, prepare_mni152_slices, prepare_mni152_volumes
from .natural import (
    NATURAL_PRESETS,
    CelebAReader,
    DictDatasetAdapter,
    ImageFiles,
    celeba,
    cifar10,
    create_natural_dataset,
    fashion_mnist,
    image_folder,
)

__all__ = [
    "NATURAL_PRESETS",
    "CelebAReader",
    "DictDatasetAdapter",
    "ImageFiles",
    "celeba",
    "cifar10",
    "create_natural_dataset",
    "fashion_mnist",
    "image_folder",
    "load_digits_images",
    "mni152_template_path",
    "prepare_mni152_slices",
    "prepare_mni152_volumes",
]
