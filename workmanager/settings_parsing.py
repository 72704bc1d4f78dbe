"""Where settings come from and which name takes which parser: the table of every
``WORK_MANAGER_*`` name (with its aliases) and its parser (:mod:`.settings_values`,
:mod:`.settings_urls`), the TOML file and its keys, the settings that were removed, and
the variables spelled almost as a setting. :class:`~workmanager.settings.Settings` is
built from what this returns.
"""

from __future__ import annotations

import difflib
import functools
import logging
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError
from .jsonvalues import MAX_JSON_DEPTH_CEILING
from .settings_urls import _broker_url, _redis_url, _result_backend, database_url
from .settings_values import (
    AGENT_LABELS,
    AUTH_MODES,
    LEASE_BACKENDS,
    PREFIX,
    TAG_STYLES,
    TRACING_MODES,
    _choice,
    _csv,
    _driver,
    _endpoints,
    _header_name,
    _hours,
    _int,
    _interval,
    _optional_limit,
    _optional_rate,
    _optional_semver,
    _optional_str,
    _port,
    _prefix,
    _queue_name,
    _seconds,
    _str,
    _whole_seconds,
    parse_bool,
    whole_seconds,
)

log = logging.getLogger("workmanager.settings")


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
    if close:
        return close[0]
    # two letters swapped in a short name (CONIFG) fall under the ratio's cutoff
    swapped = [n for n in names if sorted(n) == sorted(suffix)]
    return swapped[0] if swapped else None


@functools.cache
def _warn_once(name: str, meant: str) -> None:
    log.warning("%s is not a setting and is ignored: did you mean %s?", name, meant)


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
    _spec("database_url", database_url),
    _spec("broker_url", _broker_url, "QUEUE_CONNECTION"),
    _spec("broker_visibility_timeout_seconds", whole_seconds),
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
    _spec("retry_jitter_seconds", _seconds, "RETRY_BACKOFF_JITTER_SECONDS"),  # SPEC §2 "…_JITTER"
    _spec("sweep_interval_seconds", _interval),
    _spec("maintenance_interval_seconds", _interval),
    _spec("sweep_batch_size", _int(1)),
    _spec("apply_max_retries", _int(0)),
    _spec("apply_retry_backoff_seconds", _seconds),
    _spec("apply_recovery_seconds", whole_seconds),
    _spec("max_clock_skew_seconds", _seconds),
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
    _spec("announced_types", _csv),
    _spec("provenance_enricher", _optional_str),
    _spec("provenance_anonymize_ip", parse_bool),
    _spec("idempotency_header", _header_name),
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
