"""Pseudonymous image ids for everything a run logs (issue: patient privacy).

Image ids often carry patient identifiers (CheXpert's ``patient00001/study1/...``, DICOM file names that are
SOP Instance UIDs, PACS folders named by Patient ID). Whatever leaves a run (MLflow params, tags, artifacts,
figures) names an image only by its pseudonym: a keyed hash (HMAC-SHA256) of its id. The key never leaves the
machine that trained the model; a holder of the key maps pseudonyms back by hashing the ids of the datalist
(:meth:`Pseudonymizer.map_back`). The key's own fingerprint (:attr:`Pseudonymizer.key_id`) is logged so a
reviewer knows which key a run used.

DICOM headers never reach MLflow at all: :class:`monai_patronus.data.DicomReader` keeps no identifying
tags, and nothing here logs a datalist or a file path.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

__all__ = ["KEY_ENV", "Pseudonymizer", "pseudonymizer_for"]

#: environment variable holding the pseudonym key (hex, at least 16 bytes); wins over a key file
KEY_ENV = "PATRONUS_PSEUDONYM_KEY"

class Pseudonymizer:
    """Keyed-hash pseudonyms of image ids: ``"img-" + HMAC-SHA256(key, id)[:16 hex]``.

    The same key gives the same pseudonym for an id in every run, so provenance tables of several runs can be
    compared; without the key a pseudonym reveals nothing about the id.

    Args:
        key: the secret, at least 16 bytes (``bytes``, or a hex string).
    """

    prefix = "img-"

    def __init__(self, key: bytes | str) -> None:
        if isinstance(key, str):
            try:
                key = bytes.fromhex(key.strip())
            except ValueError as err:
                raise ValueError(
                    "Pseudonymizer: key must be bytes or a hex string (e.g. secrets.token_hex(32)); got a string "
                    "that is not hex."
                ) from err
        if not isinstance(key, bytes):
            raise TypeError(f"Pseudonymizer: key must be bytes or a hex string, got {type(key).__name__}.")
        if len(key) < 16:
            raise ValueError(f"Pseudonymizer: key must hold at least 16 bytes, got {len(key)}; use secrets.token_bytes(32).")
        self._key = key

    @property
    def key_id(self) -> str:
        """A fingerprint of the key (not the key): which key made a run's pseudonyms."""
        return hashlib.sha256(b"patronus-key-id:" + self._key).hexdigest()[:12]

    def __call__(self, image_id: object) -> str:
        """The pseudonym of ``image_id`` (any value; it is hashed as ``str(image_id)``)."""
        digest = hmac.new(self._key, str(image_id).encode("utf-8"), hashlib.sha256).hexdigest()
        return self.prefix + digest[:16]

    def map_back(self, pseudonyms: Iterable[str], image_ids: Iterable[object]) -> dict[str, str]:
        """Map pseudonyms back to ids: hash every candidate id (e.g. the datalist's) and look them up.

        Returns:
            ``{pseudonym: id}`` for each pseudonym whose id is among ``image_ids``.

        Raises:
            ValueError: naming the pseudonyms whose id is not among ``image_ids`` (wrong key or wrong datalist).
        """
        table = {self(i): str(i) for i in image_ids}
        wanted = list(pseudonyms)
        missing = [p for p in wanted if p not in table]
        if missing:
            raise ValueError(
                f"Pseudonymizer.map_back: {len(missing)} pseudonym(s) match no given id, e.g. {missing[:3]}; "
                f"check that the key (id {self.key_id}) and the datalist are the run's."
            )
        return {p: table[p] for p in wanted}

    @classmethod
    def from_key_file(cls, path: str | os.PathLike, create: bool = True) -> Pseudonymizer:
        """The pseudonymizer whose key is in ``path`` (hex); a new random key is written there (mode 0600)
        when the file is missing and ``create`` is true."""
        path = Path(path)
        if not path.exists():
            if not create:
                raise ValueError(f"Pseudonymizer.from_key_file: no key file at {path}; pass create=True to make one.")
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
        return cls(path.read_text().strip())


def pseudonymizer_for(output_dir: str | os.PathLike, key: bytes | str | None = None) -> Pseudonymizer:
    """The run's pseudonymizer: ``key`` if given, else ``$PATRONUS_PSEUDONYM_KEY``, else the key file
    ``<output_dir>/pseudonym.key`` (created on first use, never logged)."""
    if key is not None:
        return Pseudonymizer(key)
    if os.environ.get(KEY_ENV):
        return Pseudonymizer(os.environ[KEY_ENV])
    return Pseudonymizer.from_key_file(Path(output_dir) / "pseudonym.key")
