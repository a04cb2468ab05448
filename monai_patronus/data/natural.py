"""Natural-image datasets (CIFAR-10, Fashion-MNIST, CelebA, FFHQ / any image folder) as MONAI dict samples.

Every dataset here yields ``{"image": (C, H, W) float32 in [-1, 1], "label": tensor, "id": str}``, the
dictionary layout MONAI's dict transforms, ``DataLoader`` and ``DiffusionPrepareBatch`` expect.
:class:`DictDatasetAdapter` turns any map-style dataset of ``(image, target)`` pairs into that layout; the
factories read each dataset's official on-disk format and apply the paper's settings
(:data:`NATURAL_PRESETS`, Weng et al., "Patronus", ICLR 2026, arXiv:2503.22782).

Nothing is downloaded: every factory reads files that are already on disk and refuses ``download=True``.

Checksums: torchvision checks the md5 of CIFAR-10's six batch files and of CelebA's five text files against
the official archives. :func:`cifar10` reads with torchvision's own ``CIFAR10`` code through a subclass whose
only change is that it checks that the files of the requested split exist instead of comparing their md5
(pass ``check_md5=True`` for torchvision's unmodified class and its checks). torchvision's ``CelebA`` also
requires the identity, bounding-box and landmark files, so :class:`CelebAReader` is a small reader of the same
official text format needing only the images, ``list_attr_celeba.txt`` and ``list_eval_partition.txt``.
torchvision's ``FashionMNIST`` does no md5 check on the extracted files; it is used unchanged except that
only the requested split's two files must exist.
"""

from __future__ import annotations

import inspect
import operator
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.utils import optional_import
from PIL import Image

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

_tv_datasets, _HAS_TORCHVISION = optional_import("torchvision.datasets")
_TORCHVISION_HINT = "pip install 'monai-patronus[natural]' (or torchvision)"

#: Paper settings per dataset: image side, image channels, number of prototypes K, training batch size.
NATURAL_PRESETS: dict[str, dict[str, int]] = {
    "cifar10": {"image_size": 32, "in_channels": 3, "num_prototypes": 100, "batch_size": 128},
    "fashion_mnist": {"image_size": 32, "in_channels": 1, "num_prototypes": 30, "batch_size": 128},
    "celeba": {"image_size": 64, "in_channels": 3, "num_prototypes": 100, "batch_size": 64},
    "ffhq": {"image_size": 64, "in_channels": 3, "num_prototypes": 100, "batch_size": 64},
}

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg")
# ITU-R 601-2 luma, the weights PIL uses for RGB -> "L"
_LUMA = (0.299, 0.587, 0.114)
_PIL_TO_RGB = {"P", "PA", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}
_PIL_TO_L = {"1", "LA", "La"}


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


# ---------------------------------------------------------------------------------------------------------
# adapter
# ---------------------------------------------------------------------------------------------------------


class DictDatasetAdapter(torch.utils.data.Dataset):
    """Wrap a map-style dataset of ``(image, target)`` pairs so that it yields MONAI dict samples.

    Each item becomes ``{"image": (C, H, W) float32 in [-1, 1], "label": tensor, "id": str}``.

    Images may be a PIL image, a numpy array ``(H, W)`` or ``(H, W, C)``, or a tensor ``(H, W)`` or
    ``(C, H, W)``, with 1, 3 or 4 channels (4 = RGBA: alpha is dropped). ``uint8`` maps 0..255 and ``uint16``
    (e.g. 16-bit PNG) 0..65535 to [-1, 1]; ``bool`` maps False/True to -1/1; float images must lie in [0, 1].
    PIL palette, CMYK etc. are converted to RGB, and 1-bit / grey+alpha to grey first.

    Geometry, in this order: centre crop to ``crop_size`` (CelebA-style face crop); centre crop to a square
    (if ``image_size`` is set and the image is not square; an odd excess loses its extra row / column at the
    bottom / right); then, when the side differs from ``image_size``, bilinear resize with antialiasing
    (``fit="resize"``) or, for ``fit="pad"``, a centred pad with black (-1) when the image is smaller (larger
    images are still resized), as the paper does for Fashion-MNIST (28 -> 32). Then channels are converted:
    grey -> RGB by repetition, RGB -> grey by ITU-R 601-2 luma (PIL's weights, without its rounding to 8 bits).

    Targets: ``None`` -> ``torch.zeros(0)`` (no label); int / numpy / tensor -> ``torch.as_tensor``;
    with ``attribute_names`` the label must hold one value per name and becomes float32.

    Args:
        dataset: map-style dataset (``__getitem__`` and ``__len__``) whose items are ``(image, target)``.
        image_size: output side length (square output); ``None`` keeps the size (after ``crop_size``).
        channels: 1 or 3 output channels; ``None`` keeps the input's (RGBA gives 3).
        crop_size: side of a centre crop taken before anything else; ``None`` for none.
        fit: ``"resize"`` or ``"pad"``: how a smaller image reaches ``image_size``.
        attribute_names: names of the binary attributes the label holds (e.g. CelebA's 40); kept as
            ``self.attribute_names``.
        id_prefix: prepended to every id.
        ids: one id per item (e.g. file names); ``None`` uses the item index.
        transform: callable applied to the output dict (e.g. a MONAI ``Compose`` of dict transforms).

    Raises:
        TypeError: ``dataset`` is not map-style, ``transform`` is not callable, or an item / image has an
            unsupported type.
        ValueError: a bad argument, or an item whose shape, channel count, dtype or value range is unusable;
            item errors name the index.
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
        if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
            raise TypeError(
                f"DictDatasetAdapter: dataset must be a map-style dataset with __getitem__ and __len__, "
                f"got {type(dataset).__name__}; wrap an iterable in a list first."
            )
        if image_size is not None and not _is_positive_int(image_size):
            raise ValueError(f"DictDatasetAdapter: image_size must be a positive int or None, got {image_size!r}.")
        if crop_size is not None and not _is_positive_int(crop_size):
            raise ValueError(f"DictDatasetAdapter: crop_size must be a positive int or None, got {crop_size!r}.")
        if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
            raise ValueError(f"DictDatasetAdapter: channels must be 1, 3 or None, got {channels!r}.")
        if fit not in ("resize", "pad"):
            raise ValueError(f"DictDatasetAdapter: fit must be 'resize' or 'pad', got {fit!r}.")
        if attribute_names is not None:
            if isinstance(attribute_names, str) or not all(isinstance(n, str) for n in attribute_names):
                raise TypeError(
                    f"DictDatasetAdapter: attribute_names must be a list of str, got {attribute_names!r}."
                )
            attribute_names = list(attribute_names)
        if not isinstance(id_prefix, str):
            raise TypeError(f"DictDatasetAdapter: id_prefix must be a str, got {type(id_prefix).__name__}.")
        if ids is not None:
            if isinstance(ids, str) or len(ids) != len(dataset):
                got = "a str" if isinstance(ids, str) else f"{len(ids)} ids"
                raise ValueError(
                    f"DictDatasetAdapter: ids must be a sequence with one str per item ({len(dataset)}), got {got}."
                )
            ids = [str(i) for i in ids]
        if transform is not None and not callable(transform):
            raise TypeError(f"DictDatasetAdapter: transform must be callable or None, got {type(transform).__name__}.")
        self.dataset = dataset
        self.image_size = image_size
        self.channels = channels
        self.crop_size = crop_size
        self.fit = fit
        self.attribute_names = attribute_names
        self.id_prefix = id_prefix
        self.ids = ids
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            index = operator.index(index)
        except TypeError:
            raise TypeError(
                f"DictDatasetAdapter: index must be an int, got {type(index).__name__}; "
                "use torch.utils.data.Subset for slices."
            ) from None
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"DictDatasetAdapter: index {index} is out of range for {n} items.")
        index %= n
        item = self.dataset[index]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(
                f"DictDatasetAdapter: item {index} must be an (image, target) pair, got {type(item).__name__}"
                f"{f' of length {len(item)}' if isinstance(item, (tuple, list)) else ''}."
            )
        image, target = item
        sample = {
            "image": self._image(image, index),
            "label": self._label(target, index),
            "id": self.id_prefix + (self.ids[index] if self.ids is not None else str(index)),
        }
        return self.transform(sample) if self.transform is not None else sample

    # -- image ------------------------------------------------------------------------------------------

    def _image(self, image: Any, index: int) -> torch.Tensor:
        x = _to_unit_chw(image, index)  # (C, H, W) float32 in [0, 1]
        if self.crop_size is not None:
            h, w = x.shape[1:]
            if self.crop_size > min(h, w):
                raise ValueError(
                    f"DictDatasetAdapter: item {index} is {h}x{w}, smaller than crop_size={self.crop_size}; "
                    "lower crop_size or pass crop_size=None."
                )
            x = _center_crop(x, self.crop_size)
        pad = 0
        if self.image_size is not None:
            side = min(x.shape[1:])
            x = _center_crop(x, side)
            if side > self.image_size or (side < self.image_size and self.fit == "resize"):
                x = F.interpolate(
                    x[None], size=(self.image_size,) * 2, mode="bilinear", align_corners=False, antialias=True
                )[0].clamp_(0.0, 1.0)
            elif side < self.image_size:
                pad = self.image_size - side
        x = self._convert_channels(x)
        x = x * 2.0 - 1.0
        if pad:
            x = F.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2), value=-1.0)
        return x.contiguous()

    def _convert_channels(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 4:  # RGBA: drop alpha
            x = x[:3]
        if self.channels is None or x.shape[0] == self.channels:
            return x
        if self.channels == 3:  # grey -> RGB
            return x.expand(3, -1, -1)
        weights = torch.tensor(_LUMA, dtype=x.dtype).view(3, 1, 1)
        return (x * weights).sum(0, keepdim=True).clamp_(0.0, 1.0)

    # -- label ------------------------------------------------------------------------------------------

    def _label(self, target: Any, index: int) -> torch.Tensor:
        if target is None:
            label = torch.zeros(0)
        else:
            try:
                label = torch.as_tensor(np.asarray(target) if isinstance(target, (list, tuple)) else target)
            except (TypeError, ValueError, RuntimeError) as err:
                raise TypeError(
                    f"DictDatasetAdapter: item {index} has a target of type {type(target).__name__} that is not "
                    f"convertible to a tensor ({err}); use int, float, numpy or tensor targets, or None."
                ) from None
        if self.attribute_names is not None:
            label = label.reshape(-1).to(torch.float32)
            if label.numel() != len(self.attribute_names):
                raise ValueError(
                    f"DictDatasetAdapter: item {index} has {label.numel()} attribute values but "
                    f"{len(self.attribute_names)} attribute_names; pass matching attribute_names or None."
                )
        return label


def _to_unit_chw(image: Any, index: int) -> torch.Tensor:
    """Any supported image -> ``(C, H, W)`` float32 in [0, 1], C in {1, 3, 4}."""
    if isinstance(image, Image.Image):
        if image.mode in _PIL_TO_RGB:
            image = image.convert("RGB")
        elif image.mode in _PIL_TO_L:
            image = image.convert("L")
        arr = np.asarray(image)
        if image.mode == "I" and arr.size and (arr.min() < 0 or arr.max() > 65535):  # Pillow's 16-bit PNG mode
            raise ValueError(
                f"DictDatasetAdapter: item {index} is a PIL mode 'I' image with values outside 0..65535; "
                "convert it to a float array in [0, 1] first."
            )
        x, layout, sixteen_bit = _from_numpy(arr), "HWC", image.mode.startswith("I")
    elif isinstance(image, np.ndarray):
        x, layout, sixteen_bit = _from_numpy(image), "HWC", image.dtype.kind == "u" and image.dtype.itemsize == 2
    elif isinstance(image, torch.Tensor):
        x, layout, sixteen_bit = image.detach().cpu(), "CHW", image.dtype == torch.uint16
    else:
        raise TypeError(
            f"DictDatasetAdapter: item {index} has an image of type {type(image).__name__}; "
            "supported are PIL.Image.Image, numpy.ndarray (H, W[, C]) and torch.Tensor ([C, ]H, W)."
        )
    shape = tuple(x.shape)
    if sixteen_bit:
        x = x.to(torch.float32) / 65535.0
    elif x.dtype == torch.uint8:
        x = x.to(torch.float32) / 255.0
    elif x.dtype == torch.bool or x.dtype.is_floating_point:
        x = x.to(torch.float32)
    else:
        raise ValueError(
            f"DictDatasetAdapter: item {index} has an image of dtype {x.dtype}; use uint8 (0..255), "
            "uint16 (0..65535), bool, or a float image in [0, 1]."
        )
    return _check_unit(_as_chw(x, layout, index, shape), index)


def _from_numpy(arr: np.ndarray) -> torch.Tensor:
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 2:
        arr = arr.astype(np.int32)  # torch's uint16 support is thin; values stay 0..65535
    elif arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return torch.from_numpy(np.array(arr, copy=True, order="C"))


def _as_chw(x: torch.Tensor, layout: str, index: int, shape: tuple[int, ...]) -> torch.Tensor:
    if x.ndim == 2:
        x = x[None]
    elif x.ndim == 3 and layout == "HWC":
        x = x.permute(2, 0, 1)
    elif x.ndim != 3:
        raise ValueError(
            f"DictDatasetAdapter: item {index} has an image of shape {shape}; expected (H, W) or "
            f"{'(H, W, C)' if layout == 'HWC' else '(C, H, W)'}."
        )
    if x.shape[0] not in (1, 3, 4) or min(x.shape[1:]) < 1:
        axis, form = ("last", "numpy arrays are (H, W, C)") if layout == "HWC" else ("first", "tensors are (C, H, W)")
        raise ValueError(
            f"DictDatasetAdapter: item {index} has an image of shape {shape}: the {axis} axis must hold 1, 3 "
            f"or 4 channels (4 = RGBA) and H, W must be >= 1; {form}."
        )
    return x


def _check_unit(x: torch.Tensor, index: int) -> torch.Tensor:
    lo, hi = torch.aminmax(x)
    if not (float(lo) >= -1e-6 and float(hi) <= 1.0 + 1e-6):  # also catches NaN
        raise ValueError(
            f"DictDatasetAdapter: item {index} is a float image with values in [{float(lo):g}, {float(hi):g}]; "
            "float images must lie in [0, 1] (divide 0..255 images by 255, map [-1, 1] by (x + 1) / 2)."
        )
    return x.clamp(0.0, 1.0)


def _center_crop(x: torch.Tensor, side: int) -> torch.Tensor:
    h, w = x.shape[1:]
    top, left = (h - side) // 2, (w - side) // 2
    return x[:, top : top + side, left : left + side]


# ---------------------------------------------------------------------------------------------------------
# readers of on-disk formats
# ---------------------------------------------------------------------------------------------------------


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


def _load_pil(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        return im.copy()


class CelebAReader(torch.utils.data.Dataset):
    """CelebA's official aligned-image layout, as a dataset of ``(PIL RGB image, attributes)``.

    Layout (as distributed, and as torchvision expects)::

        root/celeba/img_align_celeba/000001.jpg ...
        root/celeba/list_attr_celeba.txt       # line 1: count; line 2: 40 names; then "000001.jpg -1  1 ..."
        root/celeba/list_eval_partition.txt    # "000001.jpg 0"  (0 train, 1 valid, 2 test)

    ``root`` may also be the ``celeba`` folder itself. Attributes are mapped from -1/1 to 0/1 (float32,
    one per name). Rows are in partition-file order and joined to the attribute file by file name.
    torchvision's ``CelebA`` reads the same files but insists on the md5 of the official text files and on
    three more (identity, boxes, landmarks); this reader needs only the two lists and the images.

    Args:
        root: folder holding ``celeba/`` (or the ``celeba`` folder).
        split: ``"train"``, ``"valid"``, ``"test"`` or ``"all"``.

    Raises:
        FileNotFoundError: a list file or the image folder is missing (the message gives the layout).
        ValueError: bad ``split`` or a malformed list file (the message names file and line).
    """

    splits = {"train": 0, "valid": 1, "test": 2, "all": None}
    layout = (
        "root/celeba/img_align_celeba/*.jpg, root/celeba/list_attr_celeba.txt, "
        "root/celeba/list_eval_partition.txt"
    )

    def __init__(self, root: str | os.PathLike, split: str = "train") -> None:
        if split not in self.splits:
            raise ValueError(f"CelebAReader: split must be one of {list(self.splits)}, got {split!r}.")
        root = Path(root).expanduser()
        folder = root if (root / "list_attr_celeba.txt").is_file() and root.name == "celeba" else root / "celeba"
        _require_files(
            "celeba", [folder / "list_attr_celeba.txt", folder / "list_eval_partition.txt"], self.layout
        )
        if not (folder / "img_align_celeba").is_dir():
            raise FileNotFoundError(
                f"celeba: missing folder {folder / 'img_align_celeba'}. Expected layout: {self.layout}."
            )
        self.folder = folder
        self.image_folder = folder / "img_align_celeba"
        self.split = split
        names, attrs = self._read_attributes(folder / "list_attr_celeba.txt")
        self.attribute_names: list[str] = names
        wanted = self.splits[split]
        filenames, rows = [], []
        path = folder / "list_eval_partition.txt"
        for lineno, line in enumerate(path.read_text().splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                raise ValueError(
                    f"celeba: {path} line {lineno} is {line!r}; expected '<file name> <0|1|2>'."
                )
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

    Without ``class_subfolders`` the target is ``None`` (the adapter turns it into ``torch.zeros(0)``):
    FFHQ and other unlabelled sets. With ``class_subfolders=True`` the layout is ImageFolder's,
    ``root/<class>/**/<image>``, the target is the index of the class in sorted ``self.classes``, and files
    directly in ``root`` are ignored.

    Args:
        root: the folder.
        extensions: file suffixes to keep (case-insensitive).
        class_subfolders: use the first-level sub-folders as classes.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: no image with one of ``extensions`` was found.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        class_subfolders: bool = False,
    ) -> None:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"image_folder: root {root} is not a folder; pass a folder of image files.")
        if isinstance(extensions, str):
            extensions = (extensions,)
        exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
        files = sorted(
            (p for p in root.rglob("*") if p.suffix.lower() in exts and p.is_file()),
            key=lambda p: p.relative_to(root).as_posix(),
        )
        self.classes: list[str] = []
        targets: list[int | None] = []
        if class_subfolders:
            files = [p for p in files if len(p.relative_to(root).parts) > 1]
            self.classes = sorted({p.relative_to(root).parts[0] for p in files})
            lookup = {c: i for i, c in enumerate(self.classes)}
            targets = [lookup[p.relative_to(root).parts[0]] for p in files]
        else:
            targets = [None] * len(files)
        if not files:
            where = "in a class sub-folder of" if class_subfolders else "under"
            raise ValueError(
                f"image_folder: found no {'/'.join(exts)} file {where} {root}; point root at the image folder "
                "or pass other extensions."
            )
        self.root = root
        self.files = files
        self.targets = targets
        self.relative_paths = [p.relative_to(root).as_posix() for p in files]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Image.Image, int | None]:
        return _load_pil(self.files[index]), self.targets[index]


if _HAS_TORCHVISION:

    class _CIFAR10Files(_tv_datasets.CIFAR10):
        """torchvision's CIFAR10 with one change: the requested split's batch files and ``batches.meta``
        must exist, instead of all six batch files matching the official md5."""

        meta = {**_tv_datasets.CIFAR10.meta, "md5": None}  # `_load_meta` then checks existence only

        def _check_integrity(self) -> bool:
            files = [name for name, _ in (self.train_list if self.train else self.test_list)]
            return all(os.path.isfile(os.path.join(self.root, self.base_folder, f)) for f in files)

    class _FashionMNISTFiles(_tv_datasets.FashionMNIST):
        """torchvision's FashionMNIST needing only the requested split's two raw files."""

        @property
        def raw_folder(self) -> str:
            return os.path.join(self.root, "FashionMNIST", "raw")

        @property
        def processed_folder(self) -> str:
            return os.path.join(self.root, "FashionMNIST", "processed")

        def _check_exists(self) -> bool:
            return all(os.path.isfile(os.path.join(self.raw_folder, f)) for f in _fashion_files(self.train))


def _require_torchvision(name: str) -> None:
    if not _HAS_TORCHVISION:
        raise ImportError(f"{name} needs torchvision: {_TORCHVISION_HINT}.")


def _fashion_files(train: bool) -> tuple[str, str]:
    prefix = "train" if train else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _check_counts(name: str, images: int, labels: int, where: Path) -> None:
    if images != labels:
        raise ValueError(f"{name}: {where} holds {images} images but {labels} labels; the files do not match.")


# ---------------------------------------------------------------------------------------------------------
# factories
# ---------------------------------------------------------------------------------------------------------


def cifar10(
    root: str | os.PathLike,
    train: bool = True,
    image_size: int | None = 32,
    channels: int | None = 3,
    transform: Callable | None = None,
    download: bool = False,
    check_md5: bool = False,
) -> DictDatasetAdapter:
    """CIFAR-10 from the official python version, read by torchvision's ``CIFAR10`` code.

    Layout: ``root/cifar-10-batches-py/{data_batch_1 .. data_batch_5, test_batch, batches.meta}``
    (pickled dicts with ``data`` ``(N, 3072)`` uint8 rows of R, G, B planes and ``labels``). The files are
    Python pickles: only read files you trust.

    Label: class index (``long``); ``adapter.dataset.classes`` holds the names from ``batches.meta``.
    Ids: ``cifar10-train-<index>`` / ``cifar10-test-<index>``.

    Args:
        root: folder holding ``cifar-10-batches-py``.
        train: training batches (50,000 images) or ``test_batch``.
        image_size: output side (32 = native).
        channels: output channels (3 = native, 1 = grey).
        transform: applied to each output dict.
        download: must be False.
        check_md5: use torchvision's unmodified ``CIFAR10``, which requires all six batch files and the
            metadata to match the official md5 (slower; fails on re-packed files). By default only the
            existence of the needed files is checked.

    Raises:
        ValueError: ``download=True``; md5 mismatch with ``check_md5=True``; images and labels differ in number.
        FileNotFoundError: a needed file is missing (the message names it and gives the layout).
        ImportError: torchvision is not installed.
    """
    _refuse_download("cifar10", download)
    _require_torchvision("cifar10")
    folder = Path(root).expanduser() / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    layout = "root/cifar-10-batches-py/{data_batch_1..data_batch_5, test_batch, batches.meta}"
    _require_files("cifar10", [folder / n for n in [*names, "batches.meta"]], layout)
    if check_md5:
        try:
            base = _tv_datasets.CIFAR10(str(folder.parent), train=train, download=False)
        except RuntimeError as err:
            raise ValueError(
                f"cifar10: torchvision's md5 check failed for {folder} ({err}); the files are not the official "
                "ones (or test_batch / data_batch_* is missing); pass check_md5=False to read them anyway."
            ) from None
    else:
        base = _CIFAR10Files(str(folder.parent), train=train, download=False)
    _check_counts("cifar10", len(base.data), len(base.targets), folder)
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
    """Fashion-MNIST from its idx files, read by torchvision's ``FashionMNIST`` code (which checks no md5).

    Layout: ``root/FashionMNIST/raw/{train-images-idx3-ubyte, train-labels-idx1-ubyte,
    t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte}``, uncompressed (``gunzip`` the ``.gz`` files);
    only the requested split's two files are needed.

    The paper pads 28 -> 32 with black (``fit="pad"``); ``fit="resize"`` resizes instead.
    Label: class index (``long``). Ids: ``fashion_mnist-train-<index>`` / ``fashion_mnist-test-<index>``.

    Args:
        root: folder holding ``FashionMNIST/raw``.
        train: training (60,000) or test (10,000) split.
        image_size: output side.
        channels: output channels (1 = native, 3 = repeated grey).
        fit: ``"pad"`` or ``"resize"``.
        transform: applied to each output dict.
        download: must be False.

    Raises:
        ValueError: ``download=True``; images and labels differ in number.
        FileNotFoundError: a needed file is missing (the message names it, gives the layout, and says to
            ``gunzip`` when only the ``.gz`` file is there).
        ImportError: torchvision is not installed.
    """
    _refuse_download("fashion_mnist", download)
    _require_torchvision("fashion_mnist")
    raw = Path(root).expanduser() / "FashionMNIST" / "raw"
    paths = [raw / f for f in _fashion_files(train)]
    gz = [p for p in paths if not p.is_file() and p.with_name(p.name + ".gz").is_file()]
    hint = f"Decompress the archives first: gunzip -k {' '.join(str(p) + '.gz' for p in gz)}" if gz else ""
    layout = "root/FashionMNIST/raw/{train,t10k}-images-idx3-ubyte and {train,t10k}-labels-idx1-ubyte (uncompressed)"
    _require_files("fashion_mnist", paths, layout, hint)
    base = _FashionMNISTFiles(str(Path(root).expanduser()), train=train, download=False)
    _check_counts("fashion_mnist", len(base.data), len(base.targets), raw)
    split = "train" if train else "test"
    return DictDatasetAdapter(
        base, image_size=image_size, channels=channels, fit=fit, id_prefix=f"fashion_mnist-{split}-",
        transform=transform,
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
    """CelebA (aligned 178x218 images) with its 40 binary attributes, read by :class:`CelebAReader`.

    Layout: ``root/celeba/img_align_celeba/*.jpg``, ``root/celeba/list_attr_celeba.txt``,
    ``root/celeba/list_eval_partition.txt`` (see :class:`CelebAReader`; torchvision's ``CelebA`` is not used
    because it requires the official md5 and three more annotation files).

    Each image is centre-cropped to ``crop_size`` (140 px, the usual face crop of the aligned images),
    then resized to ``image_size``. Label: 40 float 0/1 attributes, named by ``adapter.attribute_names``
    (the header of ``list_attr_celeba.txt``). Id: the image file name.

    Args:
        root: folder holding ``celeba/``.
        split: ``"train"``, ``"valid"``, ``"test"`` or ``"all"``.
        image_size: output side.
        crop_size: centre crop before resizing; ``None`` for none.
        channels: output channels.
        transform: applied to each output dict.
        download: must be False.

    Raises:
        ValueError: ``download=True``, a bad ``split``, or a malformed list file.
        FileNotFoundError: a list file or the image folder is missing.
    """
    _refuse_download("celeba", download)
    base = CelebAReader(root, split)
    return DictDatasetAdapter(
        base, image_size=image_size, crop_size=crop_size, channels=channels,
        attribute_names=base.attribute_names, ids=base.filenames, transform=transform,
    )


def image_folder(
    root: str | os.PathLike,
    image_size: int | None = 64,
    channels: int | None = 3,
    class_subfolders: bool = False,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    transform: Callable | None = None,
) -> DictDatasetAdapter:
    """FFHQ, or any folder of PNG / JPEG files, read by :class:`ImageFiles`.

    Files are found recursively and sorted by relative path. Non-square images are centre-cropped to a
    square, then resized to ``image_size`` with antialiasing. Label: ``torch.zeros(0)`` (unlabelled), or the
    class index with ``class_subfolders=True`` (``root/<class>/...``, classes sorted). Id: the path
    relative to ``root``, with ``/`` separators.

    Args:
        root: the folder.
        image_size: output side.
        channels: output channels.
        class_subfolders: use the first-level sub-folders as classes.
        extensions: file suffixes to keep.
        transform: applied to each output dict.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: no image file was found.
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
        split: ``"train"`` or ``"test"`` for CIFAR-10 / Fashion-MNIST; ``"train"``, ``"valid"``, ``"test"``
            or ``"all"`` for CelebA; FFHQ has no official split: ``"train"`` or ``"all"`` both read the whole
            folder.
        overrides: keyword arguments of the factory (e.g. ``image_size=16``, ``transform=...``).

    Returns:
        the :class:`DictDatasetAdapter`.

    Raises:
        ValueError: unknown ``name`` or ``split``.
        TypeError: an override the factory does not take.
    """
    if name not in NATURAL_PRESETS:
        raise ValueError(f"create_natural_dataset: name must be one of {sorted(NATURAL_PRESETS)}, got {name!r}.")
    preset = NATURAL_PRESETS[name]
    factory = {"cifar10": cifar10, "fashion_mnist": fashion_mnist, "celeba": celeba, "ffhq": image_folder}[name]
    allowed = [p for p in inspect.signature(factory).parameters if p not in ("root", "train", "split")]
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise TypeError(
            f"create_natural_dataset: {name} does not take {unknown}; valid overrides are {allowed}."
        )
    kwargs: dict[str, Any] = {"image_size": preset["image_size"], "channels": preset["in_channels"], **overrides}
    if name in ("cifar10", "fashion_mnist"):
        if split not in ("train", "test"):
            raise ValueError(f"create_natural_dataset: {name} split must be 'train' or 'test', got {split!r}.")
        return factory(root, train=split == "train", **kwargs)
    if name == "celeba":
        return factory(root, split=split, **kwargs)
    if split not in ("train", "all"):
        raise ValueError(
            f"create_natural_dataset: ffhq has no official split; split must be 'train' or 'all' (the whole "
            f"folder), got {split!r}; point root at a folder holding only the images you want."
        )
    return factory(root, **kwargs)
