"""The bundle configuration a run logs, and self-contained model configs for the model registry."""

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

    MONAI's ``save_execute_config`` writes the merged config only under ``--tracking``; a default bundle run
    (tracking on, no ``--tracking``) has no other way to its parser than the call stack.
    """
    frame = inspect.currentframe().f_back  # no reference to this frame: no cycle
    while frame is not None and not isinstance(frame.f_locals.get("self"), ConfigParser):
        frame = frame.f_back
    return None if frame is None else frame.f_locals["self"]


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
    """The config of component ``config_id`` (e.g. ``"network_def"``) with every reference and expression
    replaced by its value and referenced components inlined: ``ConfigParser(result).get_parsed_content()``
    rebuilds it outside the bundle. ``exclude``: top-level keys to leave out.

    Raises:
        ValueError: ``config_id`` is not a component, or a value cannot be written as plain JSON.
    """
    raw = parser.get(config_id)
    if not isinstance(raw, Mapping) or "_target_" not in raw:
        raise ValueError(
            f"literal_config: {config_id!r} is not a component config (a dict with '_target_'), got {raw!r}."
        )

    def walk(value: object, path: str) -> object:
        if isinstance(value, Mapping):
            return {k: walk(v, f"{path}#{k}") for k, v in value.items() if not (path == config_id and k in exclude)}
        if isinstance(value, list):
            return [walk(v, f"{path}#{i}") for i, v in enumerate(value)]
        if isinstance(value, str) and _REFERENCE.fullmatch(value):
            target = value[1:]
            referenced = parser.get(target)
            if isinstance(referenced, str):
                return _literal(parser.get_parsed_content(target), target)
            return walk(referenced, target)
        if isinstance(value, str) and value.startswith("$"):
            return _literal(parser.get_parsed_content(path), path)
        return value

    return walk(raw, config_id)


def bundle_config_record(parser: ConfigParser) -> tuple[dict, dict]:
    """``(config, resolved)``: the merged configuration as written, and every top-level id whose value is plain
    (or an expression the run has already evaluated to a plain value) with that value. Nothing is evaluated
    here; datalists are left out (they may name patients' files; the dataset fingerprint stands for them).
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
        items = value if isinstance(value, list) else [value]
        code = isinstance(value, list) and any(isinstance(v, str) and v.startswith("$") for v in value)  # imports, run
        if not code and all(isinstance(v, _SCALARS) for v in items):
            resolved[key] = value
    return config, resolved
