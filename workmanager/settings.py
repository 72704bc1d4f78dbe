"""The one settings object, and the only module that reads the environment.

``Settings.from_env()`` reads ``WORK_MANAGER_*`` variables (SPEC §2), and the TOML file
named by ``WORK_MANAGER_CONFIG`` when set (its keys are the variable names, with or
without the ``WORK_MANAGER_`` prefix, in any case); the environment wins. Every value is
validated as it is read (:mod:`.settings_parsing`: each name's parser, in
:mod:`.settings_values` and :mod:`.settings_urls`), and a bad one
raises :class:`ConfigurationError` naming the variable; laravel-work-manager's names are
honoured or refused (:mod:`.settings_upstream`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import settings_upstream as upstream
from .errors import ConfigurationError
from .jsonvalues import DEFAULT_MAX_JSON_DEPTH
from .ratelimit.rate import Rate
from .settings_parsing import SPECS, check_known, read_toml, warn_misspelled
from .settings_urls import ConnectionName, check_broker, check_cluster
from .settings_values import DEFAULT_ENFORCE_ON, PREFIX

EMBEDDED_BROKER = "sqla+sqlite:///./var/broker.db"


def auth_none_warning(server: str) -> str:
    """What a network server says at start-up when ``WORK_MANAGER_AUTH=none``."""
    return (
        f"WORK_MANAGER_AUTH=none: {server} accepts every request without a token and with "
        "every scope. Use this for local development only, never on a reachable network."
    )


@dataclass(frozen=True)
class Settings:
    """Every setting of a workmanager deployment (SPEC §2). Build with :meth:`from_env`."""

    database_url: str = "sqlite:///./var/workmanager.db"
    broker_url: str = EMBEDDED_BROKER
    #: Seconds a delivered, unacknowledged message stays with its worker before the broker
    #: (Redis, the embedded one) delivers it again: a worker that died loses nothing.
    broker_visibility_timeout_seconds: int = 3600
    result_backend: str | None = None
    lease_backend: str = "database"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "work:lease:"
    #: The lease store is a Redis Cluster (``RedisCluster``, keys hash-tagged per item).
    redis_cluster: bool = False
    lease_ttl_seconds: int = 600
    heartbeat_every_seconds: int = 120
    max_leases_per_agent: int | None = None
    max_leases_per_type: int | None = None
    #: Leases held at once by the items of one tenant (``None``: unlimited).
    max_leases_per_tenant: int | None = None
    default_max_attempts: int = 3
    retry_backoff_seconds: float = 60.0
    retry_jitter_seconds: float = 20.0
    sweep_interval_seconds: float = 15.0
    #: Beat period of ``workmanager.maintenance.run`` (the tests shorten it).
    maintenance_interval_seconds: float = 60.0
    sweep_batch_size: int = 500
    apply_max_retries: int = 3
    apply_retry_backoff_seconds: float = 10.0
    apply_recovery_seconds: int = 300
    #: How far a process's clock may be from the database server's (PostgreSQL) before
    #: it refuses to start or to judge leases (``deployment.check_clock``); 0: unchecked.
    max_clock_skew_seconds: float = 5.0
    #: Maintenance re-announces queued items untouched this long (0 = never); see docs.
    reannounce_after_seconds: int = 600
    #: The order types whose items are announced on ``agents.<type>`` for Celery consumer
    #: agents: ``*`` every type; none in an HTTP/MCP-only deployment, where those
    #: messages were never read and piled up in the broker, one per item.
    announced_types: tuple[str, ...] = ("*",)
    metrics_enabled: bool = True
    metrics_driver: str = "log"
    metrics_namespace: str = "work_manager"
    #: The ``agent_id`` label: ``bound`` (ids callers chose themselves become ``other``),
    #: ``all`` (every id: one series per id a client invents), ``none`` (no label).
    metrics_agent_label: str = "bound"
    #: The ``tenant`` label on lease and submit counters (``none`` for orders of no
    #: tenant); off drops it (tenant ids an unbound token proposes are client-chosen).
    metrics_tenant_label: bool = True
    statsd_host: str = "127.0.0.1"
    statsd_port: int = 8125
    statsd_tag_style: str = "influxdb"
    order_types: tuple[str, ...] = ()
    provenance_enricher: str | None = None
    provenance_anonymize_ip: bool = False
    idempotency_header: str = "X-Idempotency-Key"
    idempotency_enforce_on: tuple[str, ...] = DEFAULT_ENFORCE_ON
    idempotency_ttl_hours: float = 24.0
    max_parts_per_item: int = 100
    max_part_payload_bytes: int = 1_048_576
    max_body_bytes: int = 4_194_304
    #: Items one order's plan may make (413 ``payload_too_large`` beyond, on every surface).
    max_items_per_order: int = 10_000
    #: Canonical-JSON size of an order's payload plus its items' inputs (an item without an
    #: input of its own stores a copy of the payload), 413 beyond, on every surface.
    max_order_bytes: int = 67_108_864
    #: JSON nested deeper than this is refused (400 ``malformed_json``) on every surface.
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    #: ``approve?wait=`` requests waiting at once per process (each holds a server thread);
    #: more are 503 ``unavailable`` before anything is approved.
    approve_wait_max_waiters: int = 8
    #: Rate limits (token buckets, workmanager/ratelimit/): checkouts and API requests per
    #: agent and per tenant, ``<count>/<s|m|h>``; ``None`` = no limit (and no round trip).
    rate_limit_checkout_per_agent: Rate | None = None
    rate_limit_checkout_per_tenant: Rate | None = None
    rate_limit_requests_per_agent: Rate | None = None
    rate_limit_requests_per_tenant: Rate | None = None
    #: Every bucket's capacity (the burst it allows); ``None``: the rate's own count.
    rate_limit_burst: int | None = None
    api_prefix: str = "/agent/work"
    auth: str = "tokens"
    #: ``false``: a request without ``X-Lease-Token`` acts on the caller's current lease when
    #: the caller holds it (upstream agents); any process that can act as that agent id can
    #: then act on its leases. With the header the token is always checked.
    lease_token_required: bool = True
    #: Orders listed per page when the caller names no size: HTTP, MCP ``work.list``
    #: (upstream's ``query.default_page_size_http|mcp``); no page is ever larger than the max.
    default_page_size_http: int = 50
    default_page_size_mcp: int = 20
    max_page_size: int = 100
    #: Origins allowed to call the MCP HTTP/SSE transports from a browser (CORS): empty =
    #: no CORS headers, ``*`` = any origin (bearer tokens, not cookies, authenticate).
    mcp_cors_origins: tuple[str, ...] = ()
    dead_letter_after_hours: float = 48.0
    stale_order_hours: float = 24.0
    #: maintenance warns (log + ``stale_orders`` gauge) about stale orders; ``false`` turns
    #: the check off (upstream's ``maintenance.enable_alerts``)
    enable_alerts: bool = True
    #: Celery workers start sending task events (what Flower shows); off by default, as
    #: Celery's: Flower switches them on in the workers while it runs (celeryconfig.py)
    worker_task_events: bool = False
    #: Celery queue names (upstream's ``queues.*``): the control plane's tasks, apply, and
    #: the prefix of the per-type agent queues (``<prefix><type>``)
    control_queue: str = "workmanager"
    apply_queue: str = "workmanager.apply"
    agent_queue_prefix: str = "agents."
    # Provenance of Celery consumer agents (``workmanager agent``); HTTP agents send headers.
    agent_name: str = "celery-agent"
    agent_version: str | None = None
    agent_model: str | None = None
    agent_runtime: str = "python"
    #: SIGTERM on ``workmanager agent``: handlers get this long to finish, then the leases
    #: still held are released (requeued) and the process exits.
    agent_shutdown_grace_seconds: int = 30
    #: SIGTERM on ``workmanager serve``: in-flight requests get this long to finish.
    api_shutdown_grace_seconds: int = 30
    #: A request body must have arrived this long after the request started (408 after).
    api_body_timeout_seconds: int = 60
    #: OpenTelemetry traces (workmanager/tracing.py): ``off``, ``otlp`` (the exporter reads
    #: the standard ``OTEL_*`` variables) or ``console``.
    tracing: str = "off"
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # every value held to its variable's rule, however it was given: ``Settings(...)``
        # and ``replace()`` took anything (``lease_backend="Memory"`` ran on Redis, a
        # negative TTL granted leases already expired, text for a number failed deep in)
        for spec in SPECS:
            value = getattr(self, spec.field)
            if _number(value):
                # a number from Python code: any size the code takes (a test's 0.3 s
                # heartbeat), but a number of 0 or more
                if not math.isfinite(value) or value < 0:
                    raise ConfigurationError(
                        f"{spec.names[0]}: expected a number of 0 or more, got {value!r}"
                    )
            elif isinstance(value, str) and value is not _DEFAULTS.get(spec.field):
                read = spec.parse(spec.names[0], value)  # as the variable's text is read
                if read != value and not isinstance(read, ConnectionName):
                    object.__setattr__(self, spec.field, read)
            # other values (a Rate, a tuple, a bool) are Python's own: taken as given
        if self.redis_cluster:
            check_cluster(self.redis_url, self.redis_prefix)
        elif "," in self.redis_url.partition("://")[2].partition("/")[0].rpartition("@")[2]:
            raise ConfigurationError(
                "WORK_MANAGER_REDIS_URL lists several nodes, which only a Redis Cluster takes",
                hint="set WORK_MANAGER_REDIS_CLUSTER=true, or name one Redis server",
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read settings from ``environ`` (default ``os.environ``) and the optional TOML file."""
        env = dict(os.environ if environ is None else environ)
        config_file = env.get(PREFIX + "CONFIG")
        from_file = read_toml(config_file) if config_file else {}
        check_known(from_file, upstream.NAMES)
        warn_misspelled(env, upstream.NAMES)
        values: dict[str, Any] = {}
        for spec in SPECS:
            # The environment wins over the file under any of a setting's names (an alias
            # in the environment beats the canonical name in the file); in the environment
            # the canonical name beats its alias, but a bad value under the alias is still
            # refused, not ignored (QUEUE_CONNECTION=sqs beside a BROKER_URL).
            for name in spec.names[1:]:
                if name in env and spec.names[0] in env:
                    spec.parse(name, env[name])
            found = spec.lookup(env) or spec.lookup(from_file)
            if found is not None:
                name, value = found
                values[spec.field] = spec.parse(name, value)
        upstream.apply(env, from_file, values)
        return cls(**_resolve_connections(values))

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied (handy in tests)."""
        return dataclasses.replace(self, **changes)

    def announces(self, order_type: str) -> bool:
        """Whether items of ``order_type`` are announced to consumer agents."""
        return "*" in self.announced_types or order_type in self.announced_types

    def agent_queue(self, order_type: str) -> str:
        """The queue of one order type's agent messages (``agents.<type>`` by default)."""
        return f"{self.agent_queue_prefix}{order_type}"

    @property
    def heartbeat_interval(self) -> float:
        """How often an agent should beat: ``HEARTBEAT_EVERY_SECONDS``, at most a third of
        the lease TTL (a lease held by an agent following the advice never expires between
        two beats, whatever the two settings say), and at least 0.2 s."""
        return max(0.2, min(self.heartbeat_every_seconds, self.lease_ttl_seconds / 3))

    @property
    def advised_heartbeat_seconds(self) -> int:
        """:attr:`heartbeat_interval` in the whole seconds agents are told
        (``heartbeat_every_seconds`` of a lease), at least 1."""
        return max(1, int(self.heartbeat_interval))

    @property
    def uses_embedded_broker(self) -> bool:
        return self.broker_url.startswith("sqla+sqlite")


#: Each setting's default (checked once, by the tests: ``test_settings``).
_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in dataclasses.fields(Settings) if f.default is not dataclasses.MISSING
}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _without_client_options(url: str) -> str:
    """The lease store's Redis URL as a broker's: redis-py's options (``socket_timeout``…)
    are none of kombu's and are left out; its TLS ones (``ssl_…``) are both's; the
    database and the login given as options (``?db=7``, ``?username=&password=``) are
    moved where kombu reads them (the path, the user part), never dropped."""
    from urllib.parse import parse_qsl, quote, urlencode, urlsplit

    parts = urlsplit(url)
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    # redis-py reads ?db= before the path, and the user part before ?username=/?password=
    path = "/" + options["db"].strip() if options.get("db", "").strip() else parts.path
    netloc = parts.netloc
    user, password = options.get("username"), options.get("password")
    if "@" not in netloc and (user or password):
        login = quote(user or "", safe="") + (":" + quote(password, safe="") if password else "")
        netloc = f"{login}@{netloc}"
    kept = [(k, v) for k, v in options.items() if k.startswith("ssl")]
    return parts._replace(netloc=netloc, path=path.rstrip("/"), query=urlencode(kept)).geturl()


def _resolve_connections(values: dict[str, Any]) -> dict[str, Any]:
    """Turn Laravel connection names into URLs: ``default``/``redis`` → the configured
    Redis URL; ``QUEUE_CONNECTION=database`` → ``sqla+`` the database URL."""
    redis = values.get("redis_url")
    if isinstance(redis, ConnectionName):
        values["redis_url"] = redis = Settings.redis_url
    broker = values.get("broker_url")
    if isinstance(broker, ConnectionName):
        if broker.name == "redis":
            values["broker_url"] = _without_client_options(redis or Settings.redis_url)
        else:
            values["broker_url"] = "sqla+" + values.get("database_url", Settings.database_url)
        # as the broker reads it (a unix:// or a cluster's node list is no broker)
        check_broker(broker.variable, values["broker_url"])
    return values
