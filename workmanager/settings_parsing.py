"""How a setting's value is read and checked: the table of every ``WORK_MANAGER_*`` name
(with its aliases) and its parser, the TOML file's keys, the settings that were removed,
and the one-line :class:`ConfigurationError` naming the variable and the expected form.
:class:`~workmanager.settings.Settings` is built from what this returns.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError
from .jsonvalues import MAX_JSON_DEPTH_CEILING
from .ratelimit.rate import FORM as RATE_FORM
from .ratelimit.rate import Rate, parse_rate
from .semver import is_semver

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


def read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"WORK_MANAGER_CONFIG: cannot read {path!r}: {exc}") from exc
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = key.upper()
        out[name if name.startswith(PREFIX) else PREFIX + name] = value
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
    for name in from_file:
        key = name.removeprefix(PREFIX).lower()
        if name in REMOVED:
            raise ConfigurationError(f"WORK_MANAGER_CONFIG: setting {key!r} {REMOVED[name]}")
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {close[0].removeprefix(PREFIX).lower()!r}?)" if close else ""
            raise ConfigurationError(f"WORK_MANAGER_CONFIG: unknown setting {key!r}{hint}")


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


def _int(minimum: int) -> Callable[[str, Any], int]:
    def parse(name: str, value: Any) -> int:
        try:
            number = int(str(value).strip())
        except ValueError:
            raise _fail(name, value, f"an integer >= {minimum}") from None
        if number < minimum:
            raise _fail(name, value, f"an integer >= {minimum}")
        return number

    return parse


def _int_range(minimum: int, maximum: int) -> Callable[[str, Any], int]:
    def parse(name: str, value: Any) -> int:
        number = _int(minimum)(name, value)
        if number > maximum:
            raise _fail(name, value, f"an integer from {minimum} to {maximum}")
        return number

    return parse


def _float(name: str, value: Any) -> float:
    try:
        number = float(str(value).strip())
    except ValueError:
        raise _fail(name, value, "a number >= 0") from None
    if number < 0 or number != number:
        raise _fail(name, value, "a number >= 0")
    return number


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
        raise _fail(name, value, "statsd, log, null, prometheus or pkg.mod:Class")
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


def _url(names: tuple[str, ...], expected: str) -> Callable[[str, Any], str | ConnectionName]:
    """A URL, or one of the Laravel connection ``names``."""

    def parse(name: str, value: Any) -> str | ConnectionName:
        text = _str(name, value)
        if "://" in text:
            return text
        if text.lower() in names:
            return ConnectionName(text.lower(), name)
        raise _fail(name, value, expected)

    return parse


_redis_url = _url(
    REDIS_CONNECTION_NAMES,
    "a Redis URL such as redis://127.0.0.1:6379/0, or a Laravel connection name ("
    + ", ".join(REDIS_CONNECTION_NAMES)
    + ") meaning WORK_MANAGER_REDIS_URL",
)
_broker_url = _url(
    QUEUE_CONNECTION_NAMES,
    "a broker URL (redis://…, amqp://…, sqla+sqlite:///…), or a Laravel connection name: "
    "redis (WORK_MANAGER_REDIS_URL) or database (the SQL database, via kombu's "
    "SQLAlchemy transport)",
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
    _spec("result_backend", _optional_str),
    _spec("lease_backend", _choice(*LEASE_BACKENDS)),
    _spec("redis_url", _redis_url, "REDIS_CONNECTION"),
    _spec("redis_prefix", _str),
    _spec("redis_cluster", parse_bool),
    _spec("lease_ttl_seconds", _int(1), "LEASE_TTL"),
    _spec("heartbeat_every_seconds", _int(1)),
    _spec("max_leases_per_agent", _optional_limit),
    _spec("max_leases_per_type", _optional_limit),
    _spec("max_leases_per_tenant", _optional_limit),
    _spec("default_max_attempts", _int(1)),
    _spec("retry_backoff_seconds", _float),
    _spec("retry_jitter_seconds", _float),
    _spec("sweep_interval_seconds", _float),
    _spec("maintenance_interval_seconds", _float),
    _spec("sweep_batch_size", _int(1)),
    _spec("apply_max_retries", _int(0)),
    _spec("apply_retry_backoff_seconds", _float),
    _spec("apply_recovery_seconds", _int(1)),
    _spec("reannounce_after_seconds", _int(0)),
    _spec("metrics_enabled", parse_bool),
    _spec("metrics_driver", _driver),
    _spec("metrics_namespace", _str),
    _spec("metrics_agent_label", _choice(*AGENT_LABELS)),
    _spec("metrics_tenant_label", parse_bool),
    _spec("statsd_host", _str),
    _spec("statsd_port", _int(1)),
    _spec("statsd_tag_style", _choice(*TAG_STYLES)),
    _spec("order_types", _csv),
    _spec("provenance_enricher", _optional_str),
    _spec("provenance_anonymize_ip", parse_bool),
    _spec("idempotency_header", _str),
    _spec("idempotency_enforce_on", _endpoints),
    _spec("idempotency_ttl_hours", _float),
    _spec("max_parts_per_item", _int(1)),
    _spec("max_part_payload_bytes", _int(1)),
    _spec("max_body_bytes", _int(1)),
    _spec("max_json_depth", _int_range(1, MAX_JSON_DEPTH_CEILING)),
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
    _spec("dead_letter_after_hours", _float),
    _spec("stale_order_hours", _float),
    _spec("enable_alerts", parse_bool),
    _spec("worker_task_events", parse_bool),
    _spec("control_queue", _queue_name),
    _spec("apply_queue", _queue_name),
    _spec("agent_queue_prefix", _queue_name),
    _spec("agent_name", _str),
    _spec("agent_version", _optional_semver),
    _spec("agent_model", _optional_str),
    _spec("agent_runtime", _str),
    _spec("agent_shutdown_grace_seconds", _int(0)),
    _spec("api_shutdown_grace_seconds", _int(0)),
    _spec("tracing", _choice(*TRACING_MODES)),
)
