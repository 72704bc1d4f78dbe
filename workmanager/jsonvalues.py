"""Strict JSON: what can be stored in a JSON column on every backend.

Python's ``json`` accepts ``NaN``/``Infinity`` and any string; PostgreSQL's jsonb refuses
non-finite numbers and NUL characters, SQLite stores them and then nothing can render
them again. Values are checked once, at the edge, so nothing unstorable gets in.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from .errors import ValidationFailed

#: NUL, which jsonb refuses, and lone UTF-16 surrogates (``"\\ud800"`` in JSON), which no
#: UTF-8 encoder takes: neither can be stored, hashed or sent on.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _why(text: str) -> str:
    if "\x00" in text:
        return "must not contain NUL characters"
    return "must not contain lone surrogates (unpaired \\ud800-\\udfff escapes)"


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def loads(text: str | bytes) -> Any:
    """``json.loads`` that refuses ``NaN``, ``Infinity`` and ``-Infinity``."""
    return json.loads(text, parse_constant=_reject_constant)


def problems(value: Any, path: str = "$") -> list[dict[str, str]]:
    """Where ``value`` holds something no JSON column can store."""
    found: list[dict[str, str]] = []
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, v = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            found.append({"path": where, "message": "must be a finite number", "validator": "type"})
        elif isinstance(v, str) and _UNSTORABLE.search(v):
            found.append({"path": where, "message": _why(v), "validator": "pattern"})
        elif isinstance(v, dict):
            for k, item in v.items():
                if isinstance(k, str) and _UNSTORABLE.search(k):
                    why = "keys " + _why(k)
                    found.append({"path": where, "message": why, "validator": "pattern"})
                stack.append((f"{where}.{k}", item))
        elif isinstance(v, list | tuple):
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(v))
        elif not (v is None or isinstance(v, bool | int | float | str)):
            found.append(
                {"path": where, "message": f"{type(v).__name__} is not JSON", "validator": "type"}
            )
    return sorted(found, key=lambda e: e["path"])


def json_value(value: Any, path: str = "$") -> Any:
    """Return ``value`` when it is storable JSON, else raise :class:`ValidationFailed`."""
    found = problems(value, path)
    if found:
        raise ValidationFailed(found, f"{path} is not storable JSON")
    return value
