"""How one setting's value is read: each parser takes the variable's name and the raw
value (from the environment or the TOML file) and returns it typed, or raises the one-line
:class:`ConfigurationError` naming the variable and the form expected. The table of which
name takes which parser is :mod:`.settings_parsing`'s; connection URLs are
:mod:`.settings_urls`'.
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable
from typing import Any

from .durations import MAX_SECONDS
from .errors import ConfigurationError
from .ratelimit.rate import FORM as RATE_FORM
from .ratelimit.rate import Rate, parse_rate
from .semver import is_semver

#: Every variable's prefix (SPEC §2).
PREFIX = "WORK_MANAGER_"
DEFAULT_ENFORCE_ON = ("propose", "submit", "submit-part", "finalize", "approve", "reject")
#: The mutating endpoints an idempotency key can be enforced on (SPEC §6, §6.3).
IDEMPOTENT_ENDPOINTS = (
    *DEFAULT_ENFORCE_ON,
    "checkout",
    "heartbeat",
    "release",
    "fail",
    "retry",
)

LEASE_BACKENDS = ("database", "redis", "memory")
TAG_STYLES = ("influxdb", "dogstatsd", "graphite", "none")
AUTH_MODES = ("tokens", "none")
AGENT_LABELS = ("bound", "all", "none")
#: ``WORK_MANAGER_TRACING``: no traces, OTLP/HTTP export (``OTEL_*``), or JSON on stderr.
TRACING_MODES = ("off", "otlp", "console")


#: The longest duration any setting may name: ten years, in seconds. No lease, backoff,
#: interval or grace period needs more, and every "now + duration" the services compute
#: (``timedelta``, ``datetime``, Redis's millisecond TTLs, thread timeouts) stays well inside
#: what they hold, so an absurd value stops the process at start-up instead of raising
#: OverflowError on every checkout or retry later. The ceiling is durations.py's, the one
#: every surface shares (``--older-than``, ``--seconds``, backoffs, the console's extend).
MAX_DURATION_SECONDS = MAX_SECONDS
MAX_DURATION_HOURS = MAX_DURATION_SECONDS // 3600
#: The largest count a setting may name (attempts, page sizes, batch sizes, limits): what a
#: PostgreSQL ``integer`` column (and every bind parameter) holds.
MAX_COUNT = 2**31 - 1
_TEN_YEARS = "(ten years)"


def _fail(name: str, value: Any, expected: str) -> ConfigurationError:
    return ConfigurationError(f"{name}: expected {expected}, got {value!r}")


def _text(name: str, value: Any) -> str:
    """``value`` as given, which must be text: the environment's always is; a TOML
    number, boolean, date, array or table where text is meant is refused rather than
    turned into its Python spelling (``True``, ``{'a': 1}``)."""
    if not isinstance(value, str):
        raise ConfigurationError(
            f"{name}: expected text, got {type(value).__name__} {value!r}",
            hint=f'in the TOML file, quote it: {name.removeprefix(PREFIX).lower()} = "…"',
        )
    return value


def _str(name: str, value: Any) -> str:
    text = _text(name, value).strip()
    if not text:
        raise _fail(name, value, "a non-empty string")
    return text


_ALNUM = frozenset(string.ascii_letters + string.digits)
#: RFC 3986's characters of a path segment, unescaped, and ``/``.
_PATH_CHARACTERS = _ALNUM | frozenset("-._~!$&'()*+,;=:@/")
#: RFC 9110's token characters (a header field's name).
_TOKEN_CHARACTERS = _ALNUM | frozenset("!#$%&'*+-.^_`|~")


def _queue_name(name: str, value: Any) -> str:
    text = _str(name, value)
    if any(c.isspace() for c in text) or len(text) > 200:
        raise _fail(name, value, "a queue name without spaces")
    return text


def _int(
    minimum: int, maximum: int = MAX_COUNT, expected: str | None = None
) -> Callable[[str, Any], int]:
    """Whole numbers from ``minimum`` to ``maximum`` (a bool from the file is refused:
    ``int("True")`` fails)."""
    expected = expected or f"an integer from {minimum} to {maximum}"

    def parse(name: str, value: Any) -> int:
        try:
            number = int(str(value).strip())
        except ValueError:
            raise _fail(name, value, expected) from None
        if not minimum <= number <= maximum:
            raise _fail(name, value, expected)
        return number

    return parse


def _whole_seconds(minimum: int) -> Callable[[str, Any], int]:
    return _int(
        minimum,
        MAX_DURATION_SECONDS,
        f"whole seconds from {minimum} to {MAX_DURATION_SECONDS} {_TEN_YEARS}",
    )


#: ``int ≥ 1`` seconds, at most :data:`MAX_DURATION_SECONDS` (settings_upstream.py's
#: ``WORK_MANAGER_IDEMPOTENCY_TTL`` too).
whole_seconds = _whole_seconds(1)
_port = _int(1, 65535, "a port number from 1 to 65535")


def _number(maximum: int, expected: str, *, positive: bool = False) -> Callable[[str, Any], float]:
    """Finite numbers from 0 (above 0 when ``positive``) to ``maximum``: ``nan``, ``inf``
    and ``1e400`` are refused."""

    def parse(name: str, value: Any) -> float:
        try:
            number = float(str(value).strip())
        except ValueError:
            raise _fail(name, value, expected) from None
        low_ok = number > 0 if positive else number >= 0
        if not (math.isfinite(number) and low_ok and number <= maximum):
            raise _fail(name, value, expected)
        return number

    return parse


_seconds = _number(
    MAX_DURATION_SECONDS, f"a number of seconds from 0 to {MAX_DURATION_SECONDS} {_TEN_YEARS}"
)
#: A period something runs every: 0 would be a busy loop.
_interval = _number(
    MAX_DURATION_SECONDS,
    f"a number of seconds above 0, at most {MAX_DURATION_SECONDS} {_TEN_YEARS}",
    positive=True,
)
_hours = _number(
    MAX_DURATION_HOURS, f"a number of hours from 0 to {MAX_DURATION_HOURS} {_TEN_YEARS}"
)


_UNLIMITED = ("", "none", "null", "unlimited")


def _optional_limit(name: str, value: Any) -> int | None:
    if str(value).strip().lower() in _UNLIMITED:
        return None
    return _int(1)(name, value)


def _optional_rate(name: str, value: Any) -> Rate | None:
    if str(value).strip().lower() in _UNLIMITED:
        return None
    try:
        return parse_rate(str(value))
    except ValueError:
        raise _fail(name, value, RATE_FORM) from None


def parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise _fail(name, value, "a boolean (true/false)")


def _choice(*choices: str) -> Callable[[str, Any], str]:
    def parse(name: str, value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise _fail(name, value, "one of " + ", ".join(choices))
        return text

    return parse


def _driver(name: str, value: Any) -> str:
    text = _str(name, value)
    if text.lower() in ("statsd", "log", "null", "prometheus", "memory"):
        return text.lower()
    if ":" not in text:
        raise _fail(name, value, "statsd, log, null, prometheus, memory or pkg.mod:Class")
    return text


def _csv(name: str, value: Any) -> tuple[str, ...]:
    """Comma-separated text, or (in the TOML file) an array of strings."""
    items = value if isinstance(value, list | tuple) else _text(name, value).split(",")
    return tuple(t for t in (_text(name, v).strip() for v in items) if t)


def _endpoints(name: str, value: Any) -> tuple[str, ...]:
    endpoints = _csv(name, value)
    unknown = [e for e in endpoints if e not in IDEMPOTENT_ENDPOINTS]
    if unknown:
        raise _fail(name, value, "a comma-separated list of " + ", ".join(IDEMPOTENT_ENDPOINTS))
    return endpoints


def _optional_str(name: str, value: Any) -> str | None:
    text = _text(name, value).strip()
    return text or None


def _optional_semver(name: str, value: Any) -> str | None:
    text = _optional_str(name, value)
    if text is not None and not is_semver(text):
        raise _fail(name, value, "a semantic version such as 1.2.3")
    return text


def _prefix(name: str, value: Any) -> str:
    """A mount path: ``/`` or a path starting with ``/``, its trailing ``/`` dropped
    (``/`` itself mounts at the root, held as ``""``, which is taken as it too)."""
    if value == "":
        return ""
    text = _str(name, value)
    if not text.startswith("/"):
        raise _fail(name, value, "a path starting with '/'")
    odd = sorted({c for c in text if c not in _PATH_CHARACTERS})
    if odd:
        raise ConfigurationError(
            f"{name}: {text!r} has characters a URL path does not carry as they are: "
            + " ".join(repr(c) for c in odd),
            hint="use letters, digits and - . _ ~ / (such as /api/work)",
        )
    text = text.rstrip("/")
    taken = [p for p in RESERVED_PATHS if text == p or text.startswith(p + "/")]
    if taken:
        raise ConfigurationError(
            f"{name}: {text!r} is where the server answers {taken[0]} itself",
            hint="choose another path, such as /agent/work (the default) or /api",
        )
    return text


#: Paths the HTTP server answers outside the API prefix: the API may not mount there.
RESERVED_PATHS = ("/ui", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/redoc")


def _header_name(name: str, value: Any) -> str:
    """An HTTP header's name: a token of RFC 9110 (letters, digits, ``!#$%&'*+-.^_`|~``),
    the only characters a client can send in one."""
    text = _str(name, value)
    odd = sorted({c for c in text if c not in _TOKEN_CHARACTERS})
    if odd:
        raise ConfigurationError(
            f"{name}: {text!r} cannot name an HTTP header: " + " ".join(repr(c) for c in odd),
            hint="header names are ASCII letters, digits and -, such as Idempotency-Key",
        )
    return text
