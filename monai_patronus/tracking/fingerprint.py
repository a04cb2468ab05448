"""Which data trained a model: a content fingerprint of the datalist and of its files.

Nothing here logs a path or an id: the fingerprint is made of SHA-256 digests and counts only, so it can be
logged as run tags and compared between runs ("was this model trained on data version X?").
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

__all__ = ["dataset_fingerprint"]

_CHUNK = 1 << 20


def _file_digest(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _files_of(value: object) -> list[Path]:
    """The existing files a datalist value names: a file, every file under a folder (a DICOM series), or none."""
    if isinstance(value, (str, os.PathLike)):
        path = Path(value)
        if path.is_file():
            return [path]
        if path.is_dir():
            return sorted(p for p in path.rglob("*") if p.is_file())
        return []
    if isinstance(value, (list, tuple)):
        return [p for v in value for p in _files_of(v)]
    return []


def _canonical(value: object, roots: Sequence[Path]) -> object:
    """The datalist value with file paths made relative to ``roots`` (so moving the data keeps the digest)."""
    if isinstance(value, Mapping):
        return {str(k): _canonical(v, roots) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v, roots) for v in value]
    if isinstance(value, (str, os.PathLike)) and Path(value).is_absolute():
        for root in roots:
            try:
                return Path(value).relative_to(root).as_posix()
            except ValueError:
                continue
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def dataset_fingerprint(
    data: Sequence[Mapping] | str | os.PathLike,
    file_keys: Iterable[str] = ("image",),
    hash_files: bool = True,
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
            raise ValueError(f"dataset_fingerprint: data {str(root)!r} is not a folder; pass a datalist or a dataset folder.")
        files = sorted(p for p in root.rglob("*") if p.is_file())
        listing = [p.relative_to(root).as_posix() for p in files]
        datalist_digest = hashlib.sha256(json.dumps(listing).encode()).hexdigest()
        items = len(files)
    elif isinstance(data, Sequence) and all(isinstance(item, Mapping) for item in data):
        files = []
        for i, item in enumerate(data):
            for key in file_keys:
                if key in item:
                    found = _files_of(item[key])
                    if not found:
                        raise ValueError(
                            f"dataset_fingerprint: item {i} names no existing file under {key!r}; fix the datalist "
                            "or drop the item."
                        )
                    files.extend(found)
        parents = [p.parent for p in files]
        roots = [Path(os.path.commonpath(parents))] if parents else []
        canonical = [_canonical(item, roots) for item in data]
        datalist_digest = hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()
        items = len(data)
    else:
        raise TypeError(
            f"dataset_fingerprint: data must be a datalist (a sequence of dicts) or a folder, got {type(data).__name__}."
        )
    files_digest, total = None, 0
    if hash_files:
        h = hashlib.sha256()
        for path in files:
            digest, size = _file_digest(path)
            h.update(digest.encode())
            total += size
        files_digest = h.hexdigest()
    else:
        total = sum(p.stat().st_size for p in files)
    return {
        "datalist_sha256": datalist_digest,
        "files_sha256": files_digest,
        "num_items": items,
        "num_files": len(files),
        "num_bytes": total,
    }
