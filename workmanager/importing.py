"""Import ``pkg.mod:name`` references named in configuration."""

from __future__ import annotations

import importlib
from typing import Any

from .errors import ConfigurationError


def import_extra(module: str, needs: str, extra: str) -> Any:
    """Import ``module`` of an optional extra; missing, a ConfigurationError saying what
    ``needs`` it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigurationError(f"{needs}: pip install 'workmanager[{extra}]'") from exc


def import_object(reference: str, variable: str) -> Any:
    """Import ``pkg.mod:attr``, a function or class (every caller calls it); a bad
    reference, or one naming something that cannot be called (a module, a constant),
    raises ConfigurationError naming ``variable``."""
    module_name, _, attr = reference.partition(":")
    hint = "expected module:function (or module:Class), e.g. myapp.agents:summarize"
    if not module_name or not attr:
        raise ConfigurationError(
            f"{variable}: expected 'pkg.mod:name', got {reference!r}", hint=hint
        )
    try:
        module = importlib.import_module(module_name)
        found = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            f"{variable}: cannot import {reference!r}: {exc}",
            hint=f"{hint}; is its package on PYTHONPATH?",
        ) from exc
    if not callable(found):
        raise ConfigurationError(
            f"{variable}: {reference!r} is a {type(found).__name__}, not a function or class",
            hint=hint,
        )
    return found
