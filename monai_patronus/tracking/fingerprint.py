"""Which data trained a model: a content fingerprint of the datalist and of its files.

The fingerprint holds SHA-256 digests and counts only (no path, no id), so it can be logged as run tags and
compared between runs. It is not ``mlflow.data``'s dataset digest, which hashes only a DataFrame's first 10,000
rows (``mlflow.data.digest_utils.MAX_ROWS``) into 8 hex digits: a change in row 10,001 keeps it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

__all__ = ["dataset_fingerprint"]


def _files_of(value: object) -> list[Path]:
    """The existing files a datalist value names: a file, every file under a folder (a DICOM series), or none."""
    if isinstance(value, (list, tuple)):
        return [p for v in value for p in _files_of(v)]
    if not isinstance(value, (str, os.PathLike)):
        return []
    path = Path(value)
    return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _relative(value: object, root: Path | None) -> object:
    """The datalist value with absolute paths under ``root`` made relative (so moving the data keeps the digest)."""
    if isinstance(value, Mapping):
        return {str(k): _relative(v, root) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_relative(v, root) for v in value]
    if root is not None and isinstance(value, (str, os.PathLike)) and Path(value).is_absolute():
        if Path(value).is_relative_to(root):
            return Path(value).relative_to(root).as_posix()
    return value


def dataset_fingerprint(
    data: Sequence[Mapping] | str | os.PathLike, file_keys: Iterable[str] = ("image",), hash_files: bool = True
) -> dict[str, object]:
    """SHA-256 fingerprint of a datalist (a list of dicts) and of the files it names, or of a folder's files.

    Args:
        data: a MONAI datalist (``[{"image": path, "label": ..., "id": ...}, ...]``), or the root folder of a
            dataset read through an adapter (CelebA, CIFAR-10, ...): then every file under it is hashed.
        file_keys: datalist keys that hold file or folder paths.
        hash_files: also hash the files' contents (reads every byte once); ``False`` hashes the datalist only.

    Returns:
        ``{"datalist_sha256", "files_sha256", "num_items", "num_files", "num_bytes"}``; ``files_sha256`` is
        ``None`` when ``hash_files`` is false. Paths enter the datalist digest relative to the data's common
        folder, so the same data moved elsewhere keeps its fingerprint; file digests follow datalist order.

    Raises:
        TypeError: ``data`` is neither a sequence of dicts nor a folder.
        ValueError: a folder that does not exist, or an item whose file is missing (naming the item's index).
    """
    file_keys = [file_keys] if isinstance(file_keys, str) else list(file_keys)
    if isinstance(data, (str, os.PathLike)):
        root = Path(data)
        if not root.is_dir():
            raise ValueError(f"dataset_fingerprint: data {str(root)!r} is not a folder; pass a datalist or a folder.")
        files = sorted(p for p in root.rglob("*") if p.is_file())
        listing = [p.relative_to(root).as_posix() for p in files]
    elif isinstance(data, Sequence) and all(isinstance(item, Mapping) for item in data):
        files = []
        for i, item in enumerate(data):
            for key in (key for key in file_keys if key in item):
                found = _files_of(item[key])
                if not found:
                    raise ValueError(
                        f"dataset_fingerprint: item {i} names no existing file under {key!r}; fix the "
                        "datalist or drop the item."
                    )
                files.extend(found)
        root = Path(os.path.commonpath([p.parent for p in files])) if files else None
        listing = [_relative(item, root) for item in data]
    else:
        raise TypeError(
            f"dataset_fingerprint: data must be a datalist (a sequence of dicts) or a folder, got "
            f"{type(data).__name__}."
        )
    files_digest = None
    if hash_files:
        h = hashlib.sha256()
        for path in files:
            h.update(_sha256(path).encode())
        files_digest = h.hexdigest()
    return {
        "datalist_sha256": hashlib.sha256(json.dumps(listing, sort_keys=True, default=str).encode()).hexdigest(),
        "files_sha256": files_digest,
        "num_items": len(listing),
        "num_files": len(files),
        "num_bytes": sum(p.stat().st_size for p in files),
    }
