"""Import ``pkg.mod:name`` references named in configuration."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback
from collections.abc import Callable
from types import ModuleType
from typing import Any

from .errors import ConfigurationError
from .usercode import USER_CODE_FAILURES

log = logging.getLogger("workmanager")


def import_module(name: str, variable: str, hint: str | None = None) -> ModuleType:
    """Import the module a setting (``variable``) names. One that cannot be found is a
    ConfigurationError in one line; one whose own code raised while it was imported is
    logged with its traceback (the user's code: once, where it belongs), then the same
    one-line ConfigurationError naming the module and what it raised."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ConfigurationError(f"{variable}: cannot import {name!r}: {exc}", hint=hint) from exc
    except Exception as exc:  # SyntaxError, or whatever the module's top level raised
        log.exception("importing %r (%s) raised", name, variable)
        raise ConfigurationError(
            f"{variable}: importing {name!r} raised {type(exc).__name__}: {exc}",
            hint=_where(exc),
        ) from exc


def call_user_hook(fn: Callable[[], Any], what: str, variable: str) -> Any:
    """Run configuration code of the user's (a module's ``register(registry)``): what it
    raises is logged with its traceback, then a one-line ConfigurationError."""
    try:
        return fn()
    except ConfigurationError:
        raise
    except USER_CODE_FAILURES as exc:
        log.exception("%s (%s) raised", what, variable)
        raise ConfigurationError(
            f"{variable}: {what} raised {type(exc).__name__}: {exc}",
            hint=_where(exc),
        ) from exc


def _where(exc: BaseException) -> str:
    """Where the user's code raised (the line of a SyntaxError, else the traceback's last
    frame): the hint names it, since a console command prints one line, no traceback."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"fix it at {exc.filename}:{exc.lineno} (the module's own code)"
    # the last frame of the user's code: not workmanager's nor importlib's (frozen); of
    # those, one outside the installed libraries when there is one (a module installed in
    # site-packages has none: its own last frame, then)
    ours = ("<", os.path.dirname(__file__) + os.sep)
    theirs = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(ours)]
    libraries = (sys.prefix, sys.base_prefix)
    frames = [f for f in theirs if not f.filename.startswith(libraries)] or theirs
    if not frames:
        return "the module's own code raised it: fix it there"
    last = frames[-1]
    return f"fix it at {last.filename}:{last.lineno} (the module's own code raised it there)"


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
    module = import_module(module_name, variable, f"{hint}; is its package on PYTHONPATH?")
    try:
        found = getattr(module, attr)
    except AttributeError as exc:
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
