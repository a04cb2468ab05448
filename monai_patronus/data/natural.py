"""Natural-image datasets (CIFAR-10, Fashion-MNIST, CelebA, FFHQ / any image folder) as MONAI dict samples
``{"image": (C, H, W) float32 in [-1, 1], "label": tensor, "id": str}``, with the paper's settings
(:data:`NATURAL_PRESETS`, Weng et al., "Patronus", ICLR 2026, arXiv:2503.22782). Nothing is downloaded: the
factories read the official on-disk formats and refuse ``download=True``.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import CenterSpatialCrop
from monai.utils import convert_to_tensor, look_up_option, optional_import
from PIL import Image

from ..transforms import to_channels

v2, _ = optional_import("torchvision.transforms.v2")
tv_datasets, _ = optional_import("torchvision.datasets")
tv_mnist, _ = optional_import("torchvision.datasets.mnist")

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
]

#: Paper settings per dataset: image side, image channels, number of prototypes K, training batch size.
NATURAL_PRESETS: dict[str, dict[str, int]] = {
    "cifar10": {"image_size": 32, "in_channels": 3, "num_prototypes": 100, "batch_size": 128},
    "fashion_mnist": {"image_size": 32, "in_channels": 1, "num_prototypes": 30, "batch_size": 128},
    "celeba": {"image_size": 64, "in_channels": 3, "num_prototypes": 100, "batch_size": 64},
    "ffhq": {"image_size": 64, "in_channels": 3, "num_prototypes": 100, "batch_size": 64},
}

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg")
_PIL_TO_RGB = {"P", "PA", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}
_PIL_TO_L = {"1", "LA", "La"}


def _center_crop(x: torch.Tensor, side: int) -> torch.Tensor:
    return convert_to_tensor(CenterSpatialCrop((side, side))(x), track_meta=False)


class DictDatasetAdapter(torch.utils.data.Dataset):
    """Wrap a map-style dataset of ``(image, target)`` pairs so that it yields MONAI dict samples
    ``{"image": (C, H, W) float32 in [-1, 1], "label": tensor, "id": str}``.

    Images: whatever ``v2.ToImage`` takes, 1, 3 or 4 channels (alpha dropped); float images must lie in [0, 1].
    They are centre-cropped to ``crop_size``, then to a square, then resized (antialiased) or, for ``fit="pad"``,
    black-padded to ``image_size``. Targets: ``None`` -> ``torch.zeros(0)``, else ``torch.as_tensor`` (float32
    with ``attribute_names``).

    Args:
        dataset: map-style dataset whose items are ``(image, target)``.
        image_size: output side length (square output); ``None`` keeps the size (after ``crop_size``).
        channels: 1 or 3 output channels; ``None`` keeps the input's (RGBA gives 3).
        crop_size: side of a centre crop taken before anything else; ``None`` for none.
        fit: ``"resize"`` or ``"pad"``: how a smaller image reaches ``image_size``.
        attribute_names: names of the binary attributes the label holds (e.g. CelebA's 40).
        id_prefix: prepended to every id.
        ids: one id per item (e.g. file names); ``None`` uses the item index.
        transform: callable applied to the output dict (e.g. a MONAI ``Compose`` of dict transforms).
    """

    def __init__(
        self,
        dataset: Any,
        image_size: int | None = None,
        channels: int | None = None,
        crop_size: int | None = None,
        fit: str = "resize",
        attribute_names: Sequence[str] | None = None,
        id_prefix: str = "",
        ids: Sequence[str] | None = None,
        transform: Callable | None = None,
    ) -> None:
        for name, value in (("image_size", image_size), ("crop_size", crop_size)):
            if value is not None and value < 1:
                raise ValueError(f"DictDatasetAdapter: {name} must be a positive int or None, got {value!r}.")
        if channels not in (None, 1, 3):
            raise ValueError(f"DictDatasetAdapter: channels must be 1, 3 or None, got {channels!r}.")
        if ids is not None and len(ids) != len(dataset):
            raise ValueError(
                f"DictDatasetAdapter: ids must be a sequence with one str per item ({len(dataset)}), got "
                f"{len(ids)} ids."
            )
        self.dataset = dataset
        self.image_size = image_size
        self.channels = channels
        self.crop_size = crop_size
        self.fit = look_up_option(fit, ("resize", "pad"))
        self.attribute_names = None if attribute_names is None else list(attribute_names)
        self.id_prefix = id_prefix
        self.ids = None if ids is None else [str(i) for i in ids]
        self.transform = transform
        self.to_unit = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = range(len(self))[index]
        item = self.dataset[index]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(
                f"DictDatasetAdapter: item {index} must be an (image, target) pair, got {type(item).__name__}."
            )
        image, target = item
        sample = {
            "image": self._image(image, index),
            "label": self._label(target, index),
            "id": self.id_prefix + (self.ids[index] if self.ids is not None else str(index)),
        }
        return self.transform(sample) if self.transform is not None else sample

    def _image(self, image: Any, index: int) -> torch.Tensor:
        if isinstance(image, Image.Image) and image.mode in _PIL_TO_RGB | _PIL_TO_L:
            image = image.convert("L" if image.mode in _PIL_TO_L else "RGB")
        if not isinstance(image, (Image.Image, np.ndarray, torch.Tensor)):
            raise TypeError(f"DictDatasetAdapter: item {index} has an image of type {type(image).__name__}.")
        x = self.to_unit(image).as_subclass(torch.Tensor)  # (C, H, W) float32
        if x.ndim != 3 or x.shape[0] not in (1, 3, 4):
            raise ValueError(
                f"DictDatasetAdapter: item {index} has an image of shape {tuple(image.shape)}; expected 1, 3 or 4 "
                "channels (numpy arrays are (H, W[, C]), tensors ([C, ]H, W))."
            )
        lo, hi = torch.aminmax(x)
        if not (float(lo) >= -1e-6 and float(hi) <= 1.0 + 1e-6):  # also catches NaN
            raise ValueError(
                f"DictDatasetAdapter: item {index} is a float image with values in [{float(lo):g}, {float(hi):g}]; "
                "float images must lie in [0, 1] (divide 0..255 images by 255, map [-1, 1] by (x + 1) / 2)."
            )
        if self.crop_size is not None:
            if self.crop_size > min(x.shape[1:]):
                raise ValueError(
                    f"DictDatasetAdapter: item {index} is {x.shape[1]}x{x.shape[2]}, smaller than "
                    f"crop_size={self.crop_size}; lower crop_size or pass crop_size=None."
                )
            x = _center_crop(x, self.crop_size)
        if self.image_size is not None:
            side = min(x.shape[1:])
            x = _center_crop(x, side)
            if side > self.image_size or (side < self.image_size and self.fit == "resize"):
                x = v2.Resize((self.image_size,) * 2, antialias=True)(x).clamp(0.0, 1.0)
            elif side < self.image_size:
                pad = self.image_size - side
                x = v2.Pad([pad // 2, pad // 2, pad - pad // 2, pad - pad // 2], fill=0.0)(x)
        x = to_channels(x[:3], self.channels or min(x.shape[0], 3))
        return (x * 2.0 - 1.0).clamp(-1.0, 1.0).contiguous()

    def _label(self, target: Any, index: int) -> torch.Tensor:
        if target is None:
            return torch.zeros(0)
        label = torch.as_tensor(np.asarray(target) if isinstance(target, (list, tuple)) else target)
        if self.attribute_names is not None:
            label = label.reshape(-1).to(torch.float32)
            if label.numel() != len(self.attribute_names):
                raise ValueError(
                    f"DictDatasetAdapter: item {index} has {label.numel()} attribute values but "
                    f"{len(self.attribute_names)} attribute_names; pass matching attribute_names or None."
                )
        return label


def _refuse_download(name: str, download: bool) -> None:
    if download:
        raise ValueError(
            f"{name}: download=True is not supported (nothing is downloaded at run time); fetch the dataset "
            "yourself, place it under root in the layout the docstring gives, and pass download=False."
        )


def _require_files(name: str, paths: Sequence[Path], layout: str, hint: str = "") -> None:
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{name}: missing {', '.join(missing)}. Expected layout: {layout}.{(' ' + hint) if hint else ''}"
        )


def _tensor_dataset(name: str, images: torch.Tensor, labels: torch.Tensor, where: Path, classes=None):
    if len(images) != len(labels):
        raise ValueError(
            f"{name}: {where} holds {len(images)} images but {len(labels)} labels; the files do not match."
        )
    base = torch.utils.data.TensorDataset(images, labels)
    base.classes = classes
    return base


def _load_pil(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        return im.copy()


class CelebAReader(torch.utils.data.Dataset):
    """CelebA's official aligned-image layout, as a dataset of ``(PIL RGB image, attributes)``::

        root/celeba/img_align_celeba/000001.jpg ...
        root/celeba/list_attr_celeba.txt       # line 1: count; line 2: 40 names; then "000001.jpg -1  1 ..."
        root/celeba/list_eval_partition.txt    # "000001.jpg 0"  (0 train, 1 valid, 2 test)

    ``root`` may also be the ``celeba`` folder. Attributes are mapped from -1/1 to 0/1 (float32), rows in
    partition-file order. (torchvision's ``CelebA`` also needs md5 and three more files.)

    Args:
        root: folder holding ``celeba/`` (or the ``celeba`` folder).
        split: ``"train"``, ``"valid"``, ``"test"`` or ``"all"``.
    """

    splits = {"train": 0, "valid": 1, "test": 2, "all": None}
    layout = "root/celeba/img_align_celeba/*.jpg, root/celeba/list_attr_celeba.txt, root/celeba/list_eval_partition.txt"

    def __init__(self, root: str | os.PathLike, split: str = "train") -> None:
        wanted = look_up_option(split, self.splits)
        root = Path(root).expanduser()
        folder = root if (root / "list_attr_celeba.txt").is_file() and root.name == "celeba" else root / "celeba"
        _require_files("celeba", [folder / "list_attr_celeba.txt", folder / "list_eval_partition.txt"], self.layout)
        if not (folder / "img_align_celeba").is_dir():
            raise FileNotFoundError(
                f"celeba: missing folder {folder / 'img_align_celeba'}. Expected layout: {self.layout}."
            )
        self.folder = folder
        self.image_folder = folder / "img_align_celeba"
        self.split = split
        names, attrs = self._read_attributes(folder / "list_attr_celeba.txt")
        self.attribute_names: list[str] = names
        filenames, rows = [], []
        path = folder / "list_eval_partition.txt"
        for lineno, line in enumerate(path.read_text().splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                raise ValueError(f"celeba: {path} line {lineno} is {line!r}; expected '<file name> <0|1|2>'.")
            if wanted is None or int(fields[1]) == wanted:
                if fields[0] not in attrs:
                    raise ValueError(
                        f"celeba: {path} line {lineno} names {fields[0]!r}, which has no row in "
                        f"{folder / 'list_attr_celeba.txt'}; use matching list files."
                    )
                filenames.append(fields[0])
                rows.append(attrs[fields[0]])
        self.filenames: list[str] = filenames
        self.attributes = torch.tensor(rows, dtype=torch.float32).reshape(len(rows), len(names))

    @staticmethod
    def _read_attributes(path: Path) -> tuple[list[str], dict[str, list[float]]]:
        lines = path.read_text().splitlines()
        if len(lines) < 2 or not lines[0].strip().isdigit():
            raise ValueError(
                f"celeba: {path} must start with the image count on line 1 and the attribute names on line 2, "
                f"got {lines[:1]!r}."
            )
        names = lines[1].split()
        attrs: dict[str, list[float]] = {}
        for lineno, line in enumerate(lines[2:], start=3):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != len(names) + 1 or any(v not in ("-1", "1") for v in fields[1:]):
                raise ValueError(
                    f"celeba: {path} line {lineno} must be a file name then {len(names)} values of -1 or 1, "
                    f"got {line[:80]!r}."
                )
            attrs[fields[0]] = [1.0 if v == "1" else 0.0 for v in fields[1:]]
        if int(lines[0]) != len(attrs):
            raise ValueError(
                f"celeba: {path} line 1 announces {int(lines[0])} images but {len(attrs)} rows follow; "
                "the file is truncated or edited."
            )
        return names, attrs

    def __len__(self) -> int:
        return len(self.filenames)

    def __getitem__(self, index: int) -> tuple[Image.Image, torch.Tensor]:
        image = _load_pil(self.image_folder / self.filenames[index])
        return (image if image.mode == "RGB" else image.convert("RGB")), self.attributes[index]


class ImageFiles(torch.utils.data.Dataset):
    """All image files under a folder (recursive, sorted by relative path), as ``(PIL image, target)``.

    The target is ``None``, or with ``class_subfolders`` (ImageFolder's ``root/<class>/**/<image>`` layout) the
    index of the class in sorted ``self.classes``.

    Args:
        root: the folder.
        extensions: file suffixes to keep (case-insensitive).
        class_subfolders: use the first-level sub-folders as classes.
    """

    def __init__(
        self, root: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS, class_subfolders: bool = False
    ) -> None:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"image_folder: root {root} is not a folder; pass a folder of image files.")
        exts = tuple("." + e.lower().lstrip(".") for e in ([extensions] if isinstance(extensions, str) else extensions))
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.suffix.lower() in exts)
        files = [f for f in files if (root / f).is_file()]
        if class_subfolders:
            files = [f for f in files if "/" in f]
        if not files:
            where = "in a class sub-folder of" if class_subfolders else "under"
            raise ValueError(
                f"image_folder: found no {'/'.join(exts)} file {where} {root}; point root at the image folder "
                "or pass other extensions."
            )
        self.classes: list[str] = sorted({f.split("/")[0] for f in files}) if class_subfolders else []
        self.root = root
        self.relative_paths = files
        self.files = [root / f for f in files]
        self.targets = [self.classes.index(f.split("/")[0]) if class_subfolders else None for f in files]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Image.Image, int | None]:
        return _load_pil(self.files[index]), self.targets[index]


def cifar10(
    root: str | os.PathLike,
    train: bool = True,
    image_size: int | None = 32,
    channels: int | None = 3,
    transform: Callable | None = None,
    download: bool = False,
    check_md5: bool = False,
) -> DictDatasetAdapter:
    """CIFAR-10 from ``root/cifar-10-batches-py/{data_batch_1 .. data_batch_5, test_batch, batches.meta}``
    (Python pickles: only read files you trust). Label: class index, named by ``adapter.dataset.classes``.
    Ids: ``cifar10-{split}-<index>``.

    Args:
        root: folder holding ``cifar-10-batches-py``.
        train: training batches (50,000 images) or ``test_batch``.
        image_size: output side (32 = native).
        channels: output channels (3 = native, 1 = grey).
        transform: applied to each output dict.
        download: must be False.
        check_md5: read with torchvision's ``CIFAR10``, which checks the official md5 of all files.
    """
    _refuse_download("cifar10", download)
    folder = Path(root).expanduser() / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    layout = "root/cifar-10-batches-py/{data_batch_1..data_batch_5, test_batch, batches.meta}"
    _require_files("cifar10", [folder / n for n in [*names, "batches.meta"]], layout)
    if check_md5:
        try:
            base = tv_datasets.CIFAR10(str(folder.parent), train=train, download=False)
        except RuntimeError as err:
            raise ValueError(
                f"cifar10: torchvision's md5 check failed for {folder} ({err}); the files are not the official "
                "ones (or test_batch / data_batch_* is missing); pass check_md5=False to read them anyway."
            ) from None
    else:
        batches = [pickle.loads((folder / n).read_bytes(), encoding="latin1") for n in names]
        images = torch.from_numpy(np.concatenate([b["data"] for b in batches]).reshape(-1, 3, 32, 32))
        labels = torch.tensor([label for b in batches for label in b["labels"]])
        meta = pickle.loads((folder / "batches.meta").read_bytes(), encoding="latin1")
        base = _tensor_dataset("cifar10", images, labels, folder, classes=meta["label_names"])
    split = "train" if train else "test"
    return DictDatasetAdapter(
        base, image_size=image_size, channels=channels, id_prefix=f"cifar10-{split}-", transform=transform
    )


def fashion_mnist(
    root: str | os.PathLike,
    train: bool = True,
    image_size: int | None = 32,
    channels: int | None = 1,
    fit: str = "pad",
    transform: Callable | None = None,
    download: bool = False,
) -> DictDatasetAdapter:
    """Fashion-MNIST from ``root/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (uncompressed).
    The paper pads 28 -> 32 with black (``fit="pad"``). Label: class index. Ids: ``fashion_mnist-{split}-<index>``.

    Args:
        root: folder holding ``FashionMNIST/raw``.
        train: training (60,000) or test (10,000) split.
        image_size: output side.
        channels: output channels (1 = native, 3 = repeated grey).
        fit: ``"pad"`` or ``"resize"``.
        transform: applied to each output dict.
        download: must be False.
    """
    _refuse_download("fashion_mnist", download)
    raw = Path(root).expanduser() / "FashionMNIST" / "raw"
    prefix = "train" if train else "t10k"
    paths = [raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"]
    gz = [p for p in paths if not p.is_file() and p.with_name(p.name + ".gz").is_file()]
    hint = f"Decompress the archives first: gunzip -k {' '.join(str(p) + '.gz' for p in gz)}" if gz else ""
    layout = "root/FashionMNIST/raw/{train,t10k}-images-idx3-ubyte and {train,t10k}-labels-idx1-ubyte (uncompressed)"
    _require_files("fashion_mnist", paths, layout, hint)
    images, labels = tv_mnist.read_image_file(str(paths[0])), tv_mnist.read_label_file(str(paths[1]))
    base = _tensor_dataset("fashion_mnist", images, labels, raw, classes=list(tv_datasets.FashionMNIST.classes))
    prefix = f"fashion_mnist-{'train' if train else 'test'}-"
    return DictDatasetAdapter(
        base, image_size=image_size, channels=channels, fit=fit, id_prefix=prefix, transform=transform
    )


def celeba(
    root: str | os.PathLike,
    split: str = "train",
    image_size: int | None = 64,
    crop_size: int | None = 140,
    channels: int | None = 3,
    transform: Callable | None = None,
    download: bool = False,
) -> DictDatasetAdapter:
    """CelebA (aligned 178x218 images) read by :class:`CelebAReader`, centre-cropped to ``crop_size`` then resized.
    Label: the 40 float 0/1 attributes named by ``adapter.attribute_names``. Id: the image file name.

    Args:
        root: folder holding ``celeba/`` (see :class:`CelebAReader`).
        split: ``"train"``, ``"valid"``, ``"test"`` or ``"all"``.
        image_size: output side.
        crop_size: centre crop before resizing; ``None`` for none.
        channels: output channels.
        transform: applied to each output dict.
        download: must be False.
    """
    _refuse_download("celeba", download)
    base = CelebAReader(root, split)
    return DictDatasetAdapter(
        base,
        image_size=image_size,
        crop_size=crop_size,
        channels=channels,
        attribute_names=base.attribute_names,
        ids=base.filenames,
        transform=transform,
    )


def image_folder(
    root: str | os.PathLike,
    image_size: int | None = 64,
    channels: int | None = 3,
    class_subfolders: bool = False,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    transform: Callable | None = None,
) -> DictDatasetAdapter:
    """FFHQ, or any folder of PNG / JPEG files, read by :class:`ImageFiles`, centre-cropped square and resized.
    Label: ``torch.zeros(0)``, or the class index with ``class_subfolders=True``. Id: the path relative to ``root``.

    Args:
        root: the folder.
        image_size: output side.
        channels: output channels.
        class_subfolders: use the first-level sub-folders as classes.
        extensions: file suffixes to keep.
        transform: applied to each output dict.
    """
    base = ImageFiles(root, extensions=extensions, class_subfolders=class_subfolders)
    return DictDatasetAdapter(
        base, image_size=image_size, channels=channels, ids=base.relative_paths, transform=transform
    )


def create_natural_dataset(name: str, root: str | os.PathLike, split: str = "train", **overrides: Any):
    """Build a dataset by preset name with the paper's image size and channels (see :data:`NATURAL_PRESETS`).

    Args:
        name: ``"cifar10"``, ``"fashion_mnist"``, ``"celeba"`` or ``"ffhq"`` (:func:`image_folder`).
        root: the dataset root, as the factory expects it.
        split: ``"train"``/``"test"``; CelebA also ``"valid"``, ``"all"``; FFHQ ``"train"`` or ``"all"`` (the folder).
        overrides: keyword arguments of the factory (e.g. ``image_size=16``, ``transform=...``).

    Returns:
        the :class:`DictDatasetAdapter`.
    """
    preset = look_up_option(name, NATURAL_PRESETS)
    kwargs: dict[str, Any] = {"image_size": preset["image_size"], "channels": preset["in_channels"], **overrides}
    if name in ("cifar10", "fashion_mnist"):
        if split not in ("train", "test"):
            raise ValueError(f"create_natural_dataset: {name} split must be 'train' or 'test', got {split!r}.")
        return (cifar10 if name == "cifar10" else fashion_mnist)(root, train=split == "train", **kwargs)
    if name == "celeba":
        return celeba(root, split=split, **kwargs)
    if split not in ("train", "all"):
        raise ValueError(
            f"create_natural_dataset: ffhq has no official split; split must be 'train' or 'all' (the whole "
            f"folder), got {split!r}; point root at a folder holding only the images you want."
        )
    return image_folder(root, **kwargs)
