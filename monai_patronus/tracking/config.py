"""The bundle configuration a run logs, and self-contained model configs for the model registry.

A bundle run (``python -m monai.bundle run``) builds every object through a :class:`monai.bundle.ConfigParser`
that holds the merged configuration: all config files plus the command line overrides.
:func:`find_bundle_parser` finds that parser from inside an object it is building (the tracking handler),
:func:`bundle_config_record` turns it into what a run logs, and :func:`literal_config` rewrites a component's
config (e.g. ``network_def``) without ``@`` references or ``$`` expressions, so it can rebuild the network
outside the bundle (the MLflow model).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping

import torch
from monai.bundle import ConfigParser

__all__ = ["bundle_config_record", "find_bundle_parser", "literal_config"]

_REFERENCE = re.compile(r"@[\w#:]+")
_SCALARS = (str, int, float, bool, type(None))


def find_bundle_parser() -> ConfigParser | None:
    """The bundle :class:`ConfigParser` that is building the caller (``None`` outside a bundle run).

    Walks up the call stack to the nearest ``ConfigParser`` method, which is where a bundle instantiates its
    components; a component built in plain Python has none.
    """
    frame = inspect.currentframe()
    try:
        while frame is not None:
            owner = frame.f_locals.get("self")
            if isinstance(owner, ConfigParser):
                return owner
            frame = frame.f_back
    finally:
        del frame
    return None


def _literal(value: object, where: str) -> object:
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, (list, tuple)):
        return [_literal(v, where) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _literal(v, where) for k, v in value.items()}
    raise ValueError(
        f"literal_config: {where!r} resolves to a {type(value).__name__}, which a self-contained config cannot "
        "hold; give that argument a plain value (number, string, list) in the bundle config."
    )


def literal_config(parser: ConfigParser, config_id: str, exclude: tuple[str, ...] = ()) -> dict:
    """The config of component ``config_id`` with every reference and expression replaced by its value.

    A reference to another component (``"encoder": "@encoder"``) is inlined as that component's config, so the
    result instantiates on its own with ``ConfigParser(result).get_parsed_content()``.

    Args:
        parser: the bundle's parser (its content must already be parsed, as in a running bundle).
        config_id: id of a component config (a dict with ``_target_``), e.g. ``"network_def"``.
        exclude: top-level keys to leave out (e.g. ``("_target_", "scheduler")`` for keyword arguments).

    Raises:
        ValueError: ``config_id`` is not a component, or a value cannot be written as plain JSON.
    """
    raw = parser.get(config_id)
    if not isinstance(raw, Mapping) or "_target_" not in raw:
        raise ValueError(f"literal_config: {config_id!r} is not a component config (a dict with '_target_'), got {raw!r}.")

    def walk(value: object, path: str) -> object:
        if isinstance(value, Mapping):
            return {k: walk(v, f"{path}#{k}") for k, v in value.items() if not (path == config_id and k in exclude)}
        if isinstance(value, list):
            return [walk(v, f"{path}#{i}") for i, v in enumerate(value)]
        if isinstance(value, str) and _REFERENCE.fullmatch(value):
            target = value[1:]
            referenced = parser.get(target)
            if isinstance(referenced, Mapping) and "_target_" in referenced:
                return walk(referenced, target)
            return walk(referenced, target) if not isinstance(referenced, str) else _literal(parser.get_parsed_content(target), target)
        if isinstance(value, str) and value.startswith("$"):
            return _literal(parser.get_parsed_content(path), path)
        return value

    return walk(raw, config_id)


def bundle_config_record(parser: ConfigParser) -> tuple[dict, dict]:
    """What a run logs of its bundle configuration.

    Returns:
        ``(config, resolved)``: ``config`` is the merged configuration (all files and overrides, as written,
        expressions unevaluated); ``resolved`` maps every top-level id whose value is a plain value (or an
        expression the run has already evaluated to one: a path, a device, ...) to that value. Nothing is
        evaluated here, so building the record never loads data; datalists and other containers of dicts are
        left out of ``resolved`` (they may name patients' files; the dataset fingerprint stands for them).
    """
    config = parser.get()
    cache = parser.ref_resolver.resolved_content
    resolved = {}
    for key, value in config.items():
        if isinstance(value, str) and value.startswith("$"):
            if key not in cache:
                continue
            value = cache[key]
        try:
            value = _literal(value, key)
        except ValueError:
            continue
        code = isinstance(value, list) and any(isinstance(v, str) and v.startswith("$") for v in value)  # imports, run
        if isinstance(value, (str, int, float, bool, type(None))) or (
            isinstance(value, list) and not code and all(isinstance(v, (str, int, float, bool, type(None))) for v in value)
        ):
            resolved[key] = value
    return config, resolved
