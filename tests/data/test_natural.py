"""Natural-image adapters: every test writes tiny files in the dataset's official on-disk format."""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from monai_patronus.data.natural import (
    NATURAL_PRESETS,
    CelebAReader,
    DictDatasetAdapter,
    celeba,
    cifar10,
    create_natural_dataset,
    fashion_mnist,
    image_folder,
)

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()


def unit(values) -> torch.Tensor:
    """uint8 values -> the adapter's [-1, 1] scale, computed the documented way."""
    return torch.as_tensor(np.array(values), dtype=torch.float32) / 255.0 * 2.0 - 1.0


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to float32 rounding (torchvision scales uint8 by a multiplication with 1 / 255)."""
    return a.shape == b.shape and torch.allclose(a, b, rtol=0.0, atol=1e-6)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    return ((image + 1.0) / 2.0 * 255.0).round().to(torch.uint8).numpy()


# ---------------------------------------------------------------------------------------------------------
# writers of the official formats
# ---------------------------------------------------------------------------------------------------------


def write_cifar10(
    root,
    per_batch: int = 2,
    batches=("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"),
):
    """``cifar-10-batches-py``: pickled dicts (``data`` (N, 3072) uint8 as R, G, B planes, ``labels``)."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for name in batches:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=per_batch).tolist()
        entry = {
            "batch_label": name,
            "labels": labels,
            "data": data,
            "filenames": [f"{name}_{i}.png" for i in range(per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
        written[name] = (data, labels)
    meta = {
        "num_cases_per_batch": per_batch,
        "num_vis": 3072,
        "label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
    }
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return written


def write_idx(path, array: np.ndarray) -> None:
    """idx format: magic 0x0000 08 <ndim> (unsigned byte), big-endian int32 dims, then the bytes."""
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_fashion_mnist(root, n: int = 5, prefix: str = "train", labels_n: int | None = None):
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=labels_n or n, dtype=np.uint8)
    write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
    write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return images, labels


def write_celeba(root, partitions=(0, 0, 1, 2, 0, 2), size=(178, 218)):
    """Official aligned CelebA: JPGs, ``list_attr_celeba.txt`` (count, names, ``-1``/`` 1`` rows) and
    ``list_eval_partition.txt``. Attribute rows are written in reverse order to exercise the join by name."""
    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    rng = np.random.default_rng(2)
    names = [f"{i + 1:06d}.jpg" for i in range(len(partitions))]
    attrs = rng.choice([-1, 1], size=(len(names), len(CELEBA_ATTRIBUTES)))
    for name in names:
        pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "img_align_celeba" / name, quality=95)
    rows = [f"{name} " + " ".join(f"{v:2d}" for v in row) for name, row in zip(names, attrs)]
    (folder / "list_attr_celeba.txt").write_text(
        f"{len(names)}\n" + " ".join(CELEBA_ATTRIBUTES) + " \n" + "\n".join(reversed(rows)) + "\n"
    )
    (folder / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in zip(names, partitions)))
    return names, attrs


# ---------------------------------------------------------------------------------------------------------
# adapter
# ---------------------------------------------------------------------------------------------------------


def test_adapter_on_pil_int_pairs():
    rng = np.random.default_rng(3)
    pixels = [rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8) for _ in range(3)]
    data = [(Image.fromarray(p), i + 4) for i, p in enumerate(pixels)]
    ds = DictDatasetAdapter(data, id_prefix="toy-")
    assert len(ds) == 3
    sample = ds[1]
    assert set(sample) == {"image", "label", "id"}
    assert sample["image"].dtype == torch.float32 and sample["image"].shape == (3, 6, 6)
    assert close(sample["image"], unit(pixels[1]).permute(2, 0, 1))
    assert np.array_equal(to_uint8(sample["image"]).transpose(1, 2, 0), pixels[1])
    assert sample["label"].dtype == torch.long and int(sample["label"]) == 5
    assert sample["id"] == "toy-1" and ds[-1]["id"] == "toy-2"
    with pytest.raises(IndexError):
        ds[3]
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 3, 6, 6) and batch["label"].tolist() == [4, 5, 6]
    assert batch["id"] == ["toy-0", "toy-1", "toy-2"]


def test_adapter_array_and_tensor_inputs():
    grey = np.array([[0, 255], [51, 102]], dtype=np.uint8)
    hwc_float = np.full((2, 2, 3), 0.25, dtype=np.float64)
    chw = torch.tensor([[[0.0, 1.0], [0.5, 0.75]]])
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 7
    ds = DictDatasetAdapter([(grey, 0), (hwc_float, 1), (chw, 2), (rgba, 3), (np.ones((2, 2), bool), None)])
    assert close(ds[0]["image"], unit(grey)[None])
    assert ds[1]["image"].shape == (3, 2, 2) and torch.allclose(ds[1]["image"], torch.full((3, 2, 2), -0.5))
    assert close(ds[2]["image"], chw * 2 - 1)
    assert close(ds[3]["image"], torch.stack([torch.ones(2, 2), -torch.ones(2, 2), -torch.ones(2, 2)]))
    assert close(ds[4]["image"], torch.ones(1, 2, 2)) and ds[4]["label"].shape == (0,)
    deep = torch.tensor([[0, 32768, 65535]], dtype=torch.uint16)  # (H, W) uint16 tensor
    expected = torch.tensor([[[-1.0, 32768 / 65535 * 2 - 1, 1.0]]])
    assert torch.allclose(DictDatasetAdapter([(deep, 0)])[0]["image"], expected)


def test_adapter_16_bit_png(tmp_path):
    values = np.array([[0, 1000], [40000, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    sample = DictDatasetAdapter([(Image.open(tmp_path / "deep.png"), 0)])[0]
    expected = torch.as_tensor(values.astype(np.float32))[None] / 65535.0 * 2 - 1
    assert torch.allclose(sample["image"], expected, atol=1e-6)


def test_adapter_channel_conversion():
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[0, 1] = (0, 255, 0)
    rgb[1, 0] = (0, 0, 255)
    rgb[1, 1] = (255, 255, 255)
    grey = DictDatasetAdapter([(rgb, 0)], channels=1)[0]["image"]
    assert grey.shape == (1, 2, 2)
    expected = torch.tensor([[0.299, 0.587], [0.114, 1.0]]) * 2 - 1  # ITU-R 601-2 luma, as PIL's "L"
    assert torch.allclose(grey[0], expected, atol=1e-6)
    pil_l = np.asarray(Image.fromarray(rgb).convert("L")).astype(np.float32)  # PIL rounds to 8 bits
    assert np.abs(to_uint8(grey)[0].astype(np.float32) - pil_l).max() <= 1
    mono = np.array([[10, 200], [30, 40]], dtype=np.uint8)
    rgb_out = DictDatasetAdapter([(Image.fromarray(mono), 0)], channels=3)[0]["image"]
    assert rgb_out.shape == (3, 2, 2) and all(close(rgb_out[c], unit(mono)) for c in range(3))
    palette = Image.fromarray(rgb).convert("P")
    assert DictDatasetAdapter([(palette, 0)])[0]["image"].shape == (3, 2, 2)


def test_adapter_square_crop_resize_and_pad():
    wide = np.tile(np.arange(8, dtype=np.uint8) * 30, (4, 1))  # (H=4, W=8), column c has value 30 c
    cropped = DictDatasetAdapter([(wide, 0)], image_size=4)[0]["image"]
    assert close(cropped[0], unit(wide[:, 2:6]))  # centre square, no resize needed
    odd = DictDatasetAdapter([(wide[:, :7], 0)], image_size=4)[0]["image"]
    assert close(odd[0], unit(wide[:, 1:5]))  # odd excess: the extra column is dropped on the right
    const = np.full((10, 10, 3), 200, dtype=np.uint8)
    small = DictDatasetAdapter([(const, 0)], image_size=4)[0]["image"]
    assert small.shape == (3, 4, 4) and torch.allclose(small, unit(200).expand(3, 4, 4), atol=1e-6)
    ramp = np.tile(np.linspace(0, 255, 16).astype(np.uint8), (16, 1))
    down = DictDatasetAdapter([(ramp, 0)], image_size=4)[0]["image"][0]
    assert down.shape == (4, 4) and bool((down[:, 1:] > down[:, :-1]).all())  # still a left-to-right ramp
    assert float(down.min()) >= -1.0 and float(down.max()) <= 1.0
    up = DictDatasetAdapter([(const, 0)], image_size=16)[0]["image"]
    assert up.shape == (3, 16, 16)
    padded = DictDatasetAdapter([(const, 0)], image_size=13, fit="pad")[0]["image"]
    assert padded.shape == (3, 13, 13)
    assert close(padded[:, 1:11, 1:11], unit(const).permute(2, 0, 1))  # 3 px: 1 before, 2 after
    assert bool((padded[:, 0] == -1).all() and (padded[:, 11:] == -1).all() and (padded[:, :, 11:] == -1).all())
    tall = np.arange(12 * 6, dtype=np.uint8).reshape(12, 6)
    face = DictDatasetAdapter([(tall, 0)], crop_size=4)[0]["image"]
    assert close(face[0], unit(tall[4:8, 1:5]))


def test_adapter_attributes_and_transform():
    data = [(np.zeros((2, 2), np.uint8), np.array([1, 0, 1])), (np.zeros((2, 2), np.uint8), [0, 0, 1])]
    seen = []

    def transform(d):
        seen.append(d["id"])
        return {**d, "flipped": d["image"].flip(-1)}

    ds = DictDatasetAdapter(data, attribute_names=["a", "b", "c"], ids=["x.png", "y.png"], transform=transform)
    sample = ds[0]
    assert sample["label"].dtype == torch.float32 and sample["label"].tolist() == [1.0, 0.0, 1.0]
    assert ds.attribute_names == ["a", "b", "c"] and sample["id"] == "x.png" and "flipped" in sample
    assert ds[1]["label"].tolist() == [0.0, 0.0, 1.0] and seen == ["x.png", "y.png"]
    with pytest.raises(ValueError, match="item 0 has 3 attribute values but 2"):
        DictDatasetAdapter(data, attribute_names=["a", "b"])[0]


@pytest.mark.parametrize(
    "item, error, words",
    [
        (("not an image", 0), TypeError, "item 1 has an image of type str"),
        ((np.zeros((2, 2), np.uint8),), TypeError, "item 1 must be an \\(image, target\\) pair"),
        (np.zeros((2, 2), np.uint8), TypeError, "item 1 must be an \\(image, target\\) pair, got ndarray"),
        ((np.zeros((2, 2, 5), np.uint8), 0), ValueError, "item 1 has an image of shape \\(2, 2, 5\\)"),
        ((torch.zeros(1, 1, 2, 2), 0), ValueError, "item 1 has an image of shape \\(1, 1, 2, 2\\)"),
        ((np.full((2, 2), 255.0), 0), ValueError, "item 1 is a float image with values in \\[255, 255\\]"),
        ((torch.full((1, 2, 2), float("nan")), 0), ValueError, "item 1 is a float image"),
        ((np.zeros((2, 2), np.uint8), object()), RuntimeError, "Could not infer dtype of object"),
    ],
)
def test_adapter_bad_items(item, error, words):
    ds = DictDatasetAdapter([(np.zeros((2, 2), np.uint8), 0), item])
    assert ds[0]["image"].shape == (1, 2, 2)
    with pytest.raises(error, match=words):
        ds[1]


def test_adapter_crop_larger_than_image():
    with pytest.raises(ValueError, match="item 0 is 2x3, smaller than crop_size=5"):
        DictDatasetAdapter([(np.zeros((2, 3), np.uint8), 0)], crop_size=5)[0]


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        (dict(image_size=0), ValueError, "image_size"),
        (dict(crop_size=0), ValueError, "crop_size"),
        (dict(channels=2), ValueError, "channels must be 1, 3 or None, got 2"),
        (dict(fit="stretch"), ValueError, "Unsupported option 'stretch'"),
        (dict(ids=["only-one"]), ValueError, "one str per item \\(2\\), got 1 ids"),
    ],
)
def test_adapter_bad_arguments(kwargs, error, words):
    kwargs = {"dataset": [(np.zeros((2, 2), np.uint8), 0)] * 2, **kwargs}
    with pytest.raises(error, match=words):
        DictDatasetAdapter(**kwargs)


# ---------------------------------------------------------------------------------------------------------
# CIFAR-10
# ---------------------------------------------------------------------------------------------------------


def test_cifar10_reads_official_batches(tmp_path):
    written = write_cifar10(tmp_path)
    train = cifar10(tmp_path)
    assert len(train) == 10 and train.dataset.classes[3] == "cat"
    sample = train[3]  # data_batch_2, row 1
    data, labels = written["data_batch_2"]
    assert sample["image"].shape == (3, 32, 32) and sample["id"] == "cifar10-train-3"
    assert int(sample["label"]) == labels[1]
    assert close(sample["image"], unit(data[1].reshape(3, 32, 32)))
    assert float(sample["image"][1, 5, 7]) == float(unit(data[1][1024 + 5 * 32 + 7]))  # G plane, row 5, col 7
    test = cifar10(tmp_path, train=False, image_size=16, channels=1)
    data, labels = written["test_batch"]
    assert len(test) == 2 and test[1]["image"].shape == (1, 16, 16) and int(test[1]["label"]) == labels[1]
    assert test[0]["id"] == "cifar10-test-0"
    assert float(test[1]["image"].min()) >= -1 and float(test[1]["image"].max()) <= 1


def test_cifar10_md5_and_missing_files(tmp_path):
    write_cifar10(tmp_path, batches=("test_batch",))
    assert len(cifar10(tmp_path, train=False)) == 2  # only the requested split's files are needed
    with pytest.raises(FileNotFoundError, match="data_batch_1.*cifar-10-batches-py"):
        cifar10(tmp_path, train=True)
    with pytest.raises(ValueError, match="md5"):
        cifar10(tmp_path, train=False, check_md5=True)  # test-written files are not the official ones
    with pytest.raises(ValueError, match="download=True is not supported"):
        cifar10(tmp_path, download=True)
    (tmp_path / "cifar-10-batches-py" / "batches.meta").unlink()
    with pytest.raises(FileNotFoundError, match="batches.meta"):
        cifar10(tmp_path, train=False)


# ---------------------------------------------------------------------------------------------------------
# Fashion-MNIST
# ---------------------------------------------------------------------------------------------------------


def test_fashion_mnist_reads_idx_and_pads(tmp_path):
    images, labels = write_fashion_mnist(tmp_path, n=5)
    ds = fashion_mnist(tmp_path)
    assert len(ds) == 5 and ds.dataset.classes[9] == "Ankle boot"
    sample = ds[2]
    assert sample["image"].shape == (1, 32, 32) and int(sample["label"]) == int(labels[2])
    assert close(sample["image"][0, 2:30, 2:30], unit(images[2]))  # the paper's 28 -> 32 pad
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert bool((sample["image"][0][border] == -1).all()) and sample["id"] == "fashion_mnist-train-2"
    resized = fashion_mnist(tmp_path, fit="resize", channels=3)[2]["image"]
    assert resized.shape == (3, 32, 32) and not bool((resized[0][border] == -1).all())


def test_fashion_mnist_errors(tmp_path):
    write_fashion_mnist(tmp_path, n=3, prefix="t10k", labels_n=4)
    with pytest.raises(ValueError, match="3 images but 4 labels"):
        fashion_mnist(tmp_path, train=False)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.*FashionMNIST/raw"):
        fashion_mnist(tmp_path, train=True)
    raw = tmp_path / "FashionMNIST" / "raw"
    (raw / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(FileNotFoundError, match="gunzip -k .*train-images-idx3-ubyte.gz"):
        fashion_mnist(tmp_path, train=True)
    with pytest.raises(ValueError, match="download"):
        fashion_mnist(tmp_path, download=True)


# ---------------------------------------------------------------------------------------------------------
# CelebA
# ---------------------------------------------------------------------------------------------------------


def test_celeba_reads_official_layout(tmp_path):
    names, attrs = write_celeba(tmp_path)
    train = celeba(tmp_path, image_size=None)  # default 140-px centre crop, no resize
    assert len(train) == 3 and train.attribute_names == CELEBA_ATTRIBUTES
    assert [train[i]["id"] for i in range(3)] == [names[0], names[1], names[4]]
    sample = train[2]
    assert sample["label"].shape == (40,) and sample["label"].dtype == torch.float32
    assert close(sample["label"], torch.as_tensor((attrs[4] + 1) / 2, dtype=torch.float32))
    decoded = np.asarray(Image.open(tmp_path / "celeba" / "img_align_celeba" / names[4]))  # (218, 178, 3)
    assert sample["image"].shape == (3, 140, 140)
    assert close(sample["image"], unit(decoded[39:179, 19:159]).permute(2, 0, 1))
    small = celeba(tmp_path, split="test")
    assert len(small) == 2 and small[0]["image"].shape == (3, 64, 64) and small[1]["id"] == names[5]
    assert float(small[0]["image"].min()) >= -1 and float(small[0]["image"].max()) <= 1
    assert len(celeba(tmp_path, split="valid")) == 1 and len(CelebAReader(tmp_path, "all")) == 6
    assert len(CelebAReader(tmp_path / "celeba", "train")) == 3  # root may be the celeba folder itself


def test_celeba_errors(tmp_path):
    write_celeba(tmp_path, partitions=(0, 1), size=(8, 8))
    with pytest.raises(ValueError, match="'val' is not a valid value"):
        celeba(tmp_path, split="val")
    with pytest.raises(ValueError, match="download"):
        celeba(tmp_path, download=True)
    attr_file = tmp_path / "celeba" / "list_attr_celeba.txt"
    text = attr_file.read_text()
    attr_file.write_text("3" + text[1:])
    with pytest.raises(ValueError, match="announces 3 images but 2 rows"):
        celeba(tmp_path)
    attr_file.write_text(text.replace(" 1", " 2", 1))
    with pytest.raises(ValueError, match="line 3 must be a file name then 40 values of -1 or 1"):
        celeba(tmp_path)
    attr_file.write_text(text)
    (tmp_path / "celeba" / "list_eval_partition.txt").unlink()
    with pytest.raises(FileNotFoundError, match="list_eval_partition.txt.*img_align_celeba"):
        celeba(tmp_path)


# ---------------------------------------------------------------------------------------------------------
# image folder (FFHQ)
# ---------------------------------------------------------------------------------------------------------


def test_image_folder_nested_sorted(tmp_path):
    rng = np.random.default_rng(4)
    square = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    wide = rng.integers(0, 256, size=(8, 12, 3), dtype=np.uint8)
    (tmp_path / "b" / "c").mkdir(parents=True)
    (tmp_path / "a").mkdir()
    Image.fromarray(square).save(tmp_path / "b" / "c" / "a.png")  # sorted by relative path, not by name
    Image.fromarray(wide).save(tmp_path / "a" / "x.PNG")
    Image.fromarray(square[..., 0]).save(tmp_path / "z.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    ds = image_folder(tmp_path, image_size=8)
    assert [ds[i]["id"] for i in range(len(ds))] == ["a/x.PNG", "b/c/a.png", "z.jpg"]
    assert close(ds[0]["image"], unit(wide[:, 2:10]).permute(2, 0, 1))  # centre square of 8x12
    assert close(ds[1]["image"], unit(square).permute(2, 0, 1))
    assert ds[2]["image"].shape == (3, 8, 8) and close(ds[2]["image"][0], ds[2]["image"][2])
    assert ds[1]["label"].shape == (0,)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 3, 8, 8) and batch["label"].shape == (3, 0)
    classes = image_folder(tmp_path, image_size=4, class_subfolders=True)
    assert classes.dataset.classes == ["a", "b"] and len(classes) == 2
    assert [int(classes[i]["label"]) for i in range(2)] == [0, 1]
    ffhq = create_natural_dataset("ffhq", tmp_path)
    assert ffhq[0]["image"].shape == (3, 64, 64)


def test_image_folder_errors(tmp_path):
    with pytest.raises(ValueError, match=f"found no .png/.jpg/.jpeg file under {tmp_path}"):
        image_folder(tmp_path)
    (tmp_path / "flat.png").write_bytes(b"")
    with pytest.raises(ValueError, match="in a class sub-folder of"):
        image_folder(tmp_path, class_subfolders=True)
    with pytest.raises(FileNotFoundError, match="missing_dir is not a folder"):
        image_folder(tmp_path / "missing_dir")


# ---------------------------------------------------------------------------------------------------------
# presets
# ---------------------------------------------------------------------------------------------------------


def test_presets_match_the_paper():
    assert NATURAL_PRESETS == {
        "cifar10": {"image_size": 32, "in_channels": 3, "num_prototypes": 100, "batch_size": 128},
        "fashion_mnist": {"image_size": 32, "in_channels": 1, "num_prototypes": 30, "batch_size": 128},
        "celeba": {"image_size": 64, "in_channels": 3, "num_prototypes": 100, "batch_size": 64},
        "ffhq": {"image_size": 64, "in_channels": 3, "num_prototypes": 100, "batch_size": 64},
    }


def test_create_natural_dataset(tmp_path):
    write_cifar10(tmp_path)
    write_fashion_mnist(tmp_path, prefix="t10k")
    write_celeba(tmp_path, size=(20, 24))
    assert create_natural_dataset("cifar10", tmp_path, split="test")[0]["image"].shape == (3, 32, 32)
    assert create_natural_dataset("fashion_mnist", tmp_path, split="test")[0]["image"].shape == (1, 32, 32)
    faces = create_natural_dataset("celeba", tmp_path, split="valid", image_size=16, crop_size=20)
    assert len(faces) == 1 and faces[0]["image"].shape == (3, 16, 16) and faces.attribute_names[-1] == "Young"
    with pytest.raises(ValueError, match="Unsupported option 'mnist'"):
        create_natural_dataset("mnist", tmp_path)
    with pytest.raises(ValueError, match="split must be 'train' or 'test', got 'valid'"):
        create_natural_dataset("cifar10", tmp_path, split="valid")
    with pytest.raises(TypeError, match="unexpected keyword argument 'crop_size'"):
        create_natural_dataset("cifar10", tmp_path, crop_size=20)
    with pytest.raises(ValueError, match="ffhq has no official split"):
        create_natural_dataset("ffhq", tmp_path, split="test")
