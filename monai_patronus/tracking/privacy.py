"""Pseudonymous image ids and redacted configs for everything a run logs (patient privacy).

Whatever leaves a run (MLflow params, tags, artifacts, figures) names an image only by its pseudonym, a keyed
hash (HMAC-SHA256) of its id; the key stays on the training machine, and its holder maps pseudonyms back
(:meth:`Pseudonymizer.map_back`). Logged configuration goes through :func:`redact_config` (file paths,
credentials and secret-named values replaced), printed or logged tracking URIs through :func:`redact_uri`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import stat
import urllib.parse
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ["KEY_ENV", "REDACTED", "REDACTED_PATH", "Pseudonymizer", "pseudonymizer_for", "redact_config", "redact_uri"]

logger = logging.getLogger("monai_patronus.tracking")

#: environment variable holding the pseudonym key (hex, at least 16 bytes); wins over a key file
KEY_ENV = "PATRONUS_PSEUDONYM_KEY"


class Pseudonymizer:
    """Keyed-hash pseudonyms of image ids: ``"img-" + HMAC-SHA256(key, id)[:16 hex]``, the same in every run
    with the same key, revealing nothing without it.

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
                    "Pseudonymizer: key must be bytes or a hex string (e.g. secrets.token_hex(32)); "
                    "got a string that is not hex."
                ) from err
        if len(key) < 16:
            raise ValueError(
                f"Pseudonymizer: key must hold at least 16 bytes, got {len(key)}; use secrets.token_hex(32)."
            )
        self._key = key

    @property
    def key_id(self) -> str:
        """A fingerprint of the key (not the key): which key made a run's pseudonyms."""
        return hashlib.sha256(b"patronus-key-id:" + self._key).hexdigest()[:12]

    def __call__(self, image_id: object, prefix: str | None = None) -> str:
        """``prefix`` (default ``"img-"``) and 16 hex digits of the keyed hash of ``str(image_id)``."""
        digest = hmac.new(self._key, str(image_id).encode("utf-8"), hashlib.sha256).hexdigest()
        return (self.prefix if prefix is None else prefix) + digest[:16]

    def map_back(self, pseudonyms: Iterable[str], image_ids: Iterable[object]) -> dict[str, str]:
        """``{pseudonym: id}``, hashing every candidate id (e.g. the datalist's).

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
                f.flush()
                os.fsync(f.fileno())
        mode = path.stat().st_mode
        if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
            logger.warning(
                "pseudonym key file %s can be read by other users (mode %o); restrict it: chmod 600 %s",
                path,
                stat.S_IMODE(mode),
                path,
            )
        try:
            return cls(path.read_text().strip())
        except ValueError as err:  # empty (e.g. killed while creating it), truncated or not hex
            raise ValueError(
                f"Pseudonymizer.from_key_file: the key file {path} holds no valid key ({err}). If this run never "
                "logged anything with it, delete the file and a new key is made; otherwise restore it from your backup "
                "(pseudonyms made with another key cannot be mapped back)."
            ) from None


def pseudonymizer_for(output_dir: str | os.PathLike, key: bytes | str | None = None) -> Pseudonymizer:
    """The run's pseudonymizer: ``key`` if given, else ``$PATRONUS_PSEUDONYM_KEY``, else the key file
    ``<output_dir>/pseudonym.key`` (created on first use, never logged)."""
    if key is not None:
        return Pseudonymizer(key)
    if os.environ.get(KEY_ENV):
        return Pseudonymizer(os.environ[KEY_ENV])
    return Pseudonymizer.from_key_file(Path(output_dir) / "pseudonym.key")


# -------------------------------------------------------------------------------------------------- redaction
#: what replaces a secret value, and a file path, in anything a run logs
REDACTED = "<redacted>"
REDACTED_PATH = "<path>"
# config keys whose values are secrets: key, token, password, secret, credential(s) as a whole word of the key
_SECRET_NAME = re.compile(
    r"(^|[_\-.#])(key|token|password|passwd|secret|credentials?|api_?key)($|[_\-.#])", re.IGNORECASE
)
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_QUOTED = re.compile(r"(['\"])((?:(?!\1).)*)\1")


def redact_uri(uri: str) -> str:
    """``uri`` without credentials: ``user:token@`` becomes ``***@`` and secret-named query values (``token=``,
    ``password=`` ...) ``<redacted>``; anything that is not a URI is returned unchanged."""
    if not isinstance(uri, str) or not _URI.match(uri):
        return uri
    parts = urllib.parse.urlsplit(uri)
    pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if "@" not in parts.netloc and not any(_SECRET_NAME.search(k) for k, _ in pairs):
        return uri  # nothing to hide; rebuilding would normalise it (sqlite:////abs loses a slash)
    netloc = parts.netloc if "@" not in parts.netloc else "***@" + parts.netloc.rsplit("@", 1)[1]
    query = urllib.parse.urlencode([(k, REDACTED if _SECRET_NAME.search(k) else v) for k, v in pairs], safe="<>")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _redact_text(text: str) -> str:
    if text.startswith("$"):  # an expression: redact the string literals in it that are paths or URIs
        return _QUOTED.sub(lambda m: m.group(1) + _redact_text(m.group(2)) + m.group(1), text)
    if text.startswith(("sqlite:", "file:")):  # a local store: its path is a file path
        return text.split(":", 1)[0] + ":///" + REDACTED_PATH
    if _URI.match(text):
        return redact_uri(text)
    if text.startswith(("@", "%")):
        return text
    if "/" in text or "\\" in text or text.startswith("~"):
        return REDACTED_PATH
    return text


def redact_config(value: object, name: str = "") -> object:
    """A copy of a (bundle) config value fit to leave the machine: values under secret-named keys
    (``pseudonym_key``, ``api_token`` ...) become ``<redacted>``, file paths (PACS folders may be patient ids)
    ``<path>``, URIs lose their credentials, and string literals inside ``$`` expressions are treated the same."""
    if name and _SECRET_NAME.search(str(name)) and not isinstance(value, (Mapping, list, tuple)):
        return REDACTED if value not in (None, "", False) else value
    if isinstance(value, Mapping):
        return {k: redact_config(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_config(v, name) for v in value]
    if isinstance(value, str):
        return _redact_text(value)
    return value
