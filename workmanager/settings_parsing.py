"""How a setting's value is read and checked: the table of every ``WORK_MANAGER_*`` name
(with its aliases) and its parser, the TOML file's keys, the settings that were removed,
and the one-line :class:`ConfigurationError` naming the variable and the expected form.
:class:`~workmanager.settings.Settings` is built from what this returns.
"""

from __future__ import annotations

import difflib
import functools
import logging
import math
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .durations import MAX_SECONDS
from .errors import ConfigurationError
from .jsonvalues import MAX_JSON_DEPTH_CEILING
from .ratelimit.rate import FORM as RATE_FORM
from .ratelimit.rate import Rate, parse_rate
from .semver import is_semver

log = logging.getLogger("workmanager.settings")

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


def read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except UnicodeDecodeError as exc:
        raise ConfigurationError(
            f"WORK_MANAGER_CONFIG: cannot read {path!r}: not UTF-8 text "
            f"(byte 0x{exc.object[exc.start]:02x} at offset {exc.start})",
            hint="TOML files are UTF-8; save the file as UTF-8",
        ) from exc
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"WORK_MANAGER_CONFIG: cannot read {path!r}: {exc}") from exc
    out: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, value in data.items():
        name = key.upper()
        name = name if name.startswith(PREFIX) else PREFIX + name
        if name in out:  # one would silently win over the other
            raise ConfigurationError(
                f"WORK_MANAGER_CONFIG: {spelled[name]!r} and {key!r} are the same setting",
                hint="keep one of them in the file",
            )
        out[name], spelled[name] = value, key
    return out


def check_cluster(url: str, prefix: str) -> None:
    """Redis Cluster has one database (0), and the lease keys carry their own hash tags."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise _fail(PREFIX + "REDIS_URL", url, "a redis:// or rediss:// URL of any cluster node")
    if parts.path.strip("/") not in ("", "0"):
        raise _fail(PREFIX + "REDIS_URL", url, "no database number but 0 (Redis Cluster)")
    if "{" in prefix or "}" in prefix:
        raise _fail(
            PREFIX + "REDIS_PREFIX",
            prefix,
            "no '{' or '}' with WORK_MANAGER_REDIS_CLUSTER=true (the keys are hash-tagged "
            "per item; a tag in the prefix would put every key in one slot)",
        )


#: Settings that existed once, and what became of them. In the file they are refused with
#: this line (as any key naming no setting is); in the environment, like any variable
#: naming no setting, they are ignored. (laravel-work-manager's variables are refused or
#: honoured in both: settings_upstream.py.)
REMOVED = {
    PREFIX + "PG_FAST_PATH": (
        "removed: on PostgreSQL checkout, heartbeat, submit and release always run on the "
        "raw-SQL path (there is no ORM path to switch to)"
    ),
}


def check_known(from_file: Mapping[str, Any], also: Iterable[str] = ()) -> None:
    """A key in the file that names no setting (nor one of ``also``: upstream's names,
    settings_upstream.py) is a typo: say so rather than ignore it."""
    known = {name for spec in SPECS for name in spec.names} | set(also)
    for spec in SPECS:
        both = [name.removeprefix(PREFIX).lower() for name in spec.names if name in from_file]
        if len(both) > 1:
            raise ConfigurationError(
                f"WORK_MANAGER_CONFIG: {' and '.join(map(repr, both))} name the same setting",
                hint="keep one of them in the file",
            )
    for name in from_file:
        key = name.removeprefix(PREFIX).lower()
        if name in REMOVED:
            raise ConfigurationError(f"WORK_MANAGER_CONFIG: setting {key!r} {REMOVED[name]}")
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {close[0].removeprefix(PREFIX).lower()!r}?)" if close else ""
            raise ConfigurationError(f"WORK_MANAGER_CONFIG: unknown setting {key!r}{hint}")


def warn_misspelled(environ: Mapping[str, Any], also: Iterable[str] = ()) -> None:
    """A ``WORK_MANAGER_*`` variable that names no setting but is spelled almost as one
    (``…_LEASE_TTL_SECS``, ``…_METRIC_DRIVER``: the names compared without the prefix) is
    most likely a typo: one warning per process naming the setting meant. It is not
    refused, as a key in the file is: other tools share the prefix, and a variable
    nothing resembles is left alone."""
    known = {name for spec in SPECS for name in spec.names} | set(also) | {PREFIX + "CONFIG"}
    for name in environ:
        if name.startswith(PREFIX) and name not in known and name not in REMOVED:
            meant = _closest(name.removeprefix(PREFIX), frozenset(known))
            if meant is not None:
                _warn_once(name, PREFIX + meant)


@functools.cache
def _closest(suffix: str, known: frozenset[str]) -> str | None:
    names = sorted(k.removeprefix(PREFIX) for k in known)
    close = difflib.get_close_matches(suffix, names, n=1, cutoff=0.85)
    return close[0] if close else None


@functools.cache
def _warn_once(name: str, meant: str) -> None:
    log.warning("%s is not a setting and is ignored: did you mean %s?", name, meant)


def _fail(name: str, value: Any, expected: str) -> ConfigurationError:
    return ConfigurationError(f"{name}: expected {expected}, got {value!r}")


def _str(name: str, value: Any) -> str:
    text = str(value).strip()
    if not text:
        raise _fail(name, value, "a non-empty string")
    return text


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
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    return tuple(str(v).strip() for v in items if str(v).strip())


def _endpoints(name: str, value: Any) -> tuple[str, ...]:
    endpoints = _csv(name, value)
    unknown = [e for e in endpoints if e not in IDEMPOTENT_ENDPOINTS]
    if unknown:
        raise _fail(name, value, "a comma-separated list of " + ", ".join(IDEMPOTENT_ENDPOINTS))
    return endpoints


def _optional_str(name: str, value: Any) -> str | None:
    text = str(value).strip()
    return text or None


def _optional_semver(name: str, value: Any) -> str | None:
    text = _optional_str(name, value)
    if text is not None and not is_semver(text):
        raise _fail(name, value, "a semantic version such as 1.2.3")
    return text


def _prefix(name: str, value: Any) -> str:
    text = _str(name, value).rstrip("/")
    if not text.startswith("/"):
        raise _fail(name, value, "a path starting with '/'")
    return text


#: Laravel connection names the seed's configuration uses (``REDIS_CONNECTION=default``,
#: ``QUEUE_CONNECTION=redis``): they mean "the configured Redis" (or, for the queue,
#: ``database``: the SQL database), resolved once every setting is read.
REDIS_CONNECTION_NAMES = ("default", "redis", "cache")
QUEUE_CONNECTION_NAMES = ("redis", "database")


@dataclass(frozen=True)
class ConnectionName:
    """A Laravel connection name read from ``variable``, resolved by
    :func:`_resolve_connections`."""

    name: str
    variable: str


def _url(
    names: tuple[str, ...], expected: str, check: Callable[[str, str], None]
) -> Callable[[str, Any], str | ConnectionName]:
    """A URL that ``check(name, url)`` accepts, or one of the Laravel connection ``names``."""

    def parse(name: str, value: Any) -> str | ConnectionName:
        text = _str(name, value)
        if "://" in text:
            check(name, text)
            return text
        if text.lower() in names:
            return ConnectionName(text.lower(), name)
        raise _fail(name, value, expected)

    return parse


#: What redis-py's ``from_url`` accepts.
REDIS_SCHEMES = ("redis", "rediss", "unix")


def _scheme(url: str) -> str:
    return url.partition("://")[0].strip().lower()


def _check_redis(name: str, url: str) -> None:
    if _scheme(url) not in REDIS_SCHEMES:
        # the scheme alone is shown: the rest of a URL may hold a password
        raise ConfigurationError(
            f"{name}: expected a redis://, rediss:// or unix:// URL, got one of scheme "
            f"{_scheme(url)!r}"
        )


def _check_broker(name: str, url: str) -> None:
    """Each URL (kombu reads ``;`` as failover alternates) must name one of kombu's
    transports: the scheme, or its part before ``+`` (``sqla+sqlite://`` is the ``sqla``
    transport on ``sqlite://``), as kombu resolves it when the first message is sent."""
    from kombu.transport import TRANSPORT_ALIASES

    known = sorted(t for t in TRANSPORT_ALIASES if t.islower())
    for alternate in url.split(";"):
        scheme = alternate.partition("://")[0].strip()
        # kombu lowercases a parsed scheme, but takes the part before "+" as written
        transport = scheme.partition("+")[0] if "+" in scheme else scheme.lower()
        if transport in TRANSPORT_ALIASES:
            continue
        close = difflib.get_close_matches(transport, known, n=1)
        raise ConfigurationError(
            f"{name}: unknown broker transport {transport!r} (expected redis://, amqp://, "
            "sqla+<database URL> or another of kombu's transports)",
            hint=(f"did you mean {close[0]}://? " if close else "")
            + "kombu's transports: "
            + ", ".join(known),
        )


_redis_url = _url(
    REDIS_CONNECTION_NAMES,
    "a Redis URL such as redis://127.0.0.1:6379/0, or a Laravel connection name ("
    + ", ".join(REDIS_CONNECTION_NAMES)
    + ") meaning WORK_MANAGER_REDIS_URL",
    _check_redis,
)
_broker_url = _url(
    QUEUE_CONNECTION_NAMES,
    "a broker URL (redis://…, amqp://…, sqla+sqlite:///…), or a Laravel connection name: "
    "redis (WORK_MANAGER_REDIS_URL) or database (the SQL database, via kombu's "
    "SQLAlchemy transport)",
    _check_broker,
)


#: Celery's result backends a workmanager deployment may name (docs/configuration.md):
#: Redis (also through Sentinel), RPC (results as messages back over the AMQP broker), and
#: a SQL database through SQLAlchemy as ``db+<database URL>``. Celery matches the scheme as
#: written (``REDIS://`` is no backend it knows).
RESULT_BACKEND_SCHEMES = ("redis", "rediss", "sentinel", "rpc")
RESULT_BACKEND_FORMS = (
    "redis://…, rediss://…, sentinel://…, rpc:// or db+<database URL> (db+sqlite:///…, "
    "db+postgresql+psycopg://…)"
)
#: Database URL schemes a user may give without Celery's ``db+`` (SQLAlchemy's dialects).
_SQL_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")


def _result_backend(name: str, value: Any) -> str | None:
    """``WORK_MANAGER_RESULT_BACKEND``: empty is unset (results ignored); else a URL of one
    of :data:`RESULT_BACKEND_SCHEMES`, or ``db+`` and a database URL, as Celery resolves it
    when a worker starts (``reddis://`` would pass, then kill every worker with
    ModuleNotFoundError). Only the scheme is shown: the rest may hold a password."""
    text = _optional_str(name, value)
    if text is None:
        return None
    scheme, sep, _ = text.partition("://")
    scheme = scheme.strip()
    if sep and scheme in RESULT_BACKEND_SCHEMES:
        return text
    backend, plus, database = scheme.partition("+")
    if sep and backend == "db" and plus and database:
        return text
    base = backend.lower()
    if not sep:
        got, hint = "a value that is not a URL", None
        close = difflib.get_close_matches(text.lower(), RESULT_BACKEND_SCHEMES, n=1)
        if close:
            hint = f"did you mean {close[0]}://…?"
    else:
        got, hint = f"one of scheme {scheme!r}", None
        if base == "db" or base == "database":
            hint = "did you mean db+<database URL>, e.g. db+sqlite:///results.db?"
        elif base in _SQL_SCHEMES:
            hint = f"did you mean db+{scheme}://…? (Celery's SQL result backend)"
        elif base == "amqp":
            hint = "did you mean rpc://? (Celery's amqp result backend was removed)"
        else:
            close = difflib.get_close_matches(base, (*RESULT_BACKEND_SCHEMES, "db"), n=1)
            if close:
                hint = "did you mean " + (
                    "db+<database URL>?" if close[0] == "db" else f"{close[0]}://?"
                )
    unset = "leave it unset: the pipeline needs no task results"
    raise ConfigurationError(
        f"{name}: expected a Celery result backend URL ({RESULT_BACKEND_FORMS}), got {got}",
        hint=f"{hint} Or {unset}" if hint else f"name one of those, or {unset}",
    )


@dataclass(frozen=True)
class _Spec:
    field: str
    names: tuple[str, ...]
    parse: Callable[[str, Any], Any]

    def lookup(self, raw: Mapping[str, Any]) -> tuple[str, Any] | None:
        for name in self.names:
            if name in raw:
                return name, raw[name]
        return None


def _spec(fieldname: str, parse: Callable[[str, Any], Any], *aliases: str) -> _Spec:
    names = (PREFIX + fieldname.upper(), *(PREFIX + a for a in aliases))
    return _Spec(fieldname, names, parse)


SPECS: tuple[_Spec, ...] = (
    _spec("database_url", _str),
    _spec("broker_url", _broker_url, "QUEUE_CONNECTION"),
    _spec("result_backend", _result_backend),
    _spec("lease_backend", _choice(*LEASE_BACKENDS)),
    _spec("redis_url", _redis_url, "REDIS_CONNECTION"),
    _spec("redis_prefix", _str),
    _spec("redis_cluster", parse_bool),
    _spec("lease_ttl_seconds", whole_seconds, "LEASE_TTL"),
    _spec("heartbeat_every_seconds", whole_seconds),
    _spec("max_leases_per_agent", _optional_limit),
    _spec("max_leases_per_type", _optional_limit),
    _spec("max_leases_per_tenant", _optional_limit),
    _spec("default_max_attempts", _int(1)),
    _spec("retry_backoff_seconds", _seconds),
    _spec("retry_jitter_seconds", _seconds),
    _spec("sweep_interval_seconds", _interval),
    _spec("maintenance_interval_seconds", _interval),
    _spec("sweep_batch_size", _int(1)),
    _spec("apply_max_retries", _int(0)),
    _spec("apply_retry_backoff_seconds", _seconds),
    _spec("apply_recovery_seconds", whole_seconds),
    _spec("reannounce_after_seconds", _whole_seconds(0)),
    _spec("metrics_enabled", parse_bool),
    _spec("metrics_driver", _driver),
    _spec("metrics_namespace", _str),
    _spec("metrics_agent_label", _choice(*AGENT_LABELS)),
    _spec("metrics_tenant_label", parse_bool),
    _spec("statsd_host", _str),
    _spec("statsd_port", _port),
    _spec("statsd_tag_style", _choice(*TAG_STYLES)),
    _spec("order_types", _csv),
    _spec("provenance_enricher", _optional_str),
    _spec("provenance_anonymize_ip", parse_bool),
    _spec("idempotency_header", _str),
    _spec("idempotency_enforce_on", _endpoints),
    _spec("idempotency_ttl_hours", _hours),
    _spec("max_parts_per_item", _int(1)),
    _spec("max_part_payload_bytes", _int(1)),
    _spec("max_body_bytes", _int(1)),
    _spec("max_items_per_order", _int(1)),
    _spec("max_order_bytes", _int(1)),
    _spec("max_json_depth", _int(1, MAX_JSON_DEPTH_CEILING)),
    _spec("approve_wait_max_waiters", _int(1)),
    _spec("rate_limit_checkout_per_agent", _optional_rate),
    _spec("rate_limit_checkout_per_tenant", _optional_rate),
    _spec("rate_limit_requests_per_agent", _optional_rate),
    _spec("rate_limit_requests_per_tenant", _optional_rate),
    _spec("rate_limit_burst", _optional_limit),
    _spec("api_prefix", _prefix),
    _spec("auth", _choice(*AUTH_MODES)),
    _spec("lease_token_required", parse_bool),
    _spec("default_page_size_http", _int(1)),
    _spec("default_page_size_mcp", _int(1)),
    _spec("max_page_size", _int(1)),
    _spec("mcp_cors_origins", _csv),
    _spec("dead_letter_after_hours", _hours),
    _spec("stale_order_hours", _hours),
    _spec("enable_alerts", parse_bool),
    _spec("worker_task_events", parse_bool),
    _spec("control_queue", _queue_name),
    _spec("apply_queue", _queue_name),
    _spec("agent_queue_prefix", _queue_name),
    _spec("agent_name", _str),
    _spec("agent_version", _optional_semver),
    _spec("agent_model", _optional_str),
    _spec("agent_runtime", _str),
    _spec("agent_shutdown_grace_seconds", _whole_seconds(0)),
    _spec("api_shutdown_grace_seconds", _whole_seconds(0)),
    _spec("api_body_timeout_seconds", whole_seconds),
    _spec("tracing", _choice(*TRACING_MODES)),
)
