"""OpenTelemetry traces, off unless ``WORK_MANAGER_TRACING`` says ``otlp`` or ``console``.

:func:`configure` sets the process's tracer provider up once, from an entry point
(``workmanager serve``, ``mcp``, the Celery worker and agent start, a producer's first
enqueue), and instruments SQLAlchemy, psycopg and Redis. The OTLP exporter reads the
standard ``OTEL_*`` variables itself (endpoint, headers, timeout), and the resource takes
``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` over the default service name.

Services mark their public operations with :func:`traced`: when tracing is off the call
costs one string comparison and nothing under ``opentelemetry`` is imported; when on it
runs in a span carrying the order, item, type, agent and tenant (:data:`ORDER` …).
The Celery side (W3C ``traceparent`` in message headers, a span per task run) lives in
``tasks/tracing.py``, since nothing here imports Celery.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from .errors import ConfigurationError
from .settings import Settings

log = logging.getLogger("workmanager.tracing")

#: The attributes of the domain spans.
ORDER = "workmanager.order.id"
ITEM = "workmanager.item.id"
TYPE = "workmanager.order.type"
AGENT = "workmanager.agent.id"
TENANT = "workmanager.tenant.id"

TRACER = "workmanager"
OFF = "off"

P = ParamSpec("P")
R = TypeVar("R")
Attributes = Mapping[str, object]
#: (positional args, keyword args, result or ``None`` before the call) → attributes
Describe = Callable[[tuple[Any, ...], dict[str, Any], Any], Attributes]

# The tracer provider is process-wide in OpenTelemetry's API; this remembers that this
# process has set it up (and how), so a second entry point in one process is a no-op.
_lock = threading.Lock()
_configured: dict[str, str] = {}


class _HasContext(Protocol):
    @property
    def ctx(self) -> Any: ...


def enabled(settings: Settings) -> bool:
    return settings.tracing != OFF


def configure(settings: Settings, service_name: str) -> bool:
    """Set up tracing in this process as ``settings.tracing`` says; returns whether it is
    on. Idempotent; the first caller's service name stands."""
    if not enabled(settings):
        return False
    with _lock:
        if not _configured:
            _set_up(settings.tracing, service_name)
            _configured["mode"] = settings.tracing
    return True


def _set_up(mode: str, service_name: str) -> None:
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import OTELResourceDetector, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise ConfigurationError(
            f"WORK_MANAGER_TRACING={mode} needs the tracing extra: "
            f"pip install 'workmanager[tracing]' ({exc})"
        ) from exc
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over the default name.
    resource = Resource.create({"service.name": service_name}).merge(
        OTELResourceDetector().detect()
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(_exporter(mode)))
    trace.set_tracer_provider(provider)
    _instrument_libraries()
    log.info("tracing on: %s, service %s", mode, resource.attributes.get("service.name"))


def _exporter(mode: str) -> Any:
    if mode == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        # one JSON object per line, so a log can be read back span by span
        return ConsoleSpanExporter(
            out=sys.stderr, formatter=lambda span: span.to_json(indent=None) + "\n"
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, _HEADERS, _TIMEOUT


#: The libraries' instrumentations: (module, class).
_INSTRUMENTORS = (
    ("opentelemetry.instrumentation.sqlalchemy", "SQLAlchemyInstrumentor"),
    ("opentelemetry.instrumentation.psycopg", "PsycopgInstrumentor"),
    ("opentelemetry.instrumentation.redis", "RedisInstrumentor"),
)


def _instrument_libraries() -> None:
    """SQLAlchemy engines created from now on, psycopg connections (the hot paths) and
    redis-py clients get spans of their own, children of the domain spans. An
    instrumentation that does not support the installed library's version (SQLAlchemy's
    supports < 2.1) is left out with one line at INFO, not the warning every process
    printed: on PostgreSQL every statement still has its span through psycopg's."""
    import importlib

    from opentelemetry.instrumentation.dependencies import get_dependency_conflicts

    instrumentors = []
    for module, name in _INSTRUMENTORS:
        try:  # the redis one imports redis-py, which only the redis extra installs
            instrumentors.append(getattr(importlib.import_module(module), name)())
        except ImportError as exc:
            log.info("tracing without %s: %s", name, exc)
    for instrumentor in instrumentors:
        conflict = get_dependency_conflicts(instrumentor.instrumentation_dependencies())
        if conflict is not None:
            log.info("tracing without %s: %s", type(instrumentor).__name__, conflict)
            continue
        try:
            instrumentor.instrument()
        except Exception:  # a library missing or of a version it refuses: keep the rest
            log.warning("could not instrument with %s", type(instrumentor).__name__, exc_info=True)


# --- domain spans ----------------------------------------------------------------------------


def traced(
    name: str, describe: Describe
) -> Callable[[Callable[Concatenate[Any, P], R]], Callable[Concatenate[Any, P], R]]:
    """Run a service method in span ``name`` when tracing is on. ``describe`` gives the
    span's attributes from the call's arguments, and again from its result."""

    def wrap(fn: Callable[Concatenate[Any, P], R]) -> Callable[Concatenate[Any, P], R]:
        @functools.wraps(fn)
        def inner(owner: _HasContext, /, *args: P.args, **kwargs: P.kwargs) -> R:
            if owner.ctx.settings.tracing == OFF:  # the whole cost when off
                return fn(owner, *args, **kwargs)
            with span(name, describe(args, kwargs, None)) as current:
                result = fn(owner, *args, **kwargs)
                current.set_attributes(_clean(describe(args, kwargs, result)))
                return result

        return inner

    return wrap


@contextlib.contextmanager
def span(name: str, attributes: Attributes) -> Iterator[Any]:
    """A span (the current one inside the block) with ``attributes``; only when tracing
    is on (callers check :func:`enabled` first)."""
    from opentelemetry import trace

    tracer = trace.get_tracer(TRACER)
    with tracer.start_as_current_span(name, attributes=_clean(attributes)) as current:
        yield current


def _clean(attributes: Attributes) -> dict[str, Any]:
    return {k: str(v) for k, v in attributes.items() if v is not None and v != ""}


def current_context(settings: Settings) -> object | None:
    """The caller's trace context, to continue in another thread (:func:`within`);
    ``None`` when tracing is off."""
    if not enabled(settings):
        return None
    from opentelemetry import context

    return context.get_current()


@contextlib.contextmanager
def within(carried: object | None) -> Iterator[None]:
    """Run the block in a context :func:`current_context` captured (or as is: ``None``)."""
    if carried is None:
        yield
        return
    from opentelemetry import context

    token = context.attach(carried)  # type: ignore[arg-type]
    try:
        yield
    finally:
        context.detach(token)


# --- what the domain spans carry ---------------------------------------------------------------


def arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str) -> Any:
    """A call's argument by position or keyword (``None`` when absent)."""
    return args[index] if len(args) > index else kwargs.get(name)


def of_lease(lease: Any) -> dict[str, object]:
    """Order, item, agent, type and tenant of a :class:`~workmanager.types.Lease`."""
    if lease is None:
        return {}
    item = getattr(lease, "item", None)
    return _known(
        {
            ORDER: lease.order_id,
            ITEM: lease.item_id,
            AGENT: lease.agent_id,
            TYPE: getattr(item, "order_type", None),
            TENANT: getattr(item, "tenant_id", None),
        }
    )


def of_order(order: Any) -> dict[str, object]:
    """Order id, type and tenant of an order view dict (or nothing for another value)."""
    if not isinstance(order, dict):
        return {}
    return _known({ORDER: order.get("id"), TYPE: order.get("type"), TENANT: order.get("tenant_id")})


def _known(attributes: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in attributes.items() if v is not None and v != ""}


def agent_id(agent: Any) -> object:
    """An :class:`~workmanager.types.AgentInfo`'s id, or the id given as a string."""
    return getattr(agent, "id", agent)


def checkout_call(args: tuple[Any, ...], kwargs: dict[str, Any], lease: Any) -> Attributes:
    """``AgentAPI.checkout(agent, order_id, type, min_priority, tenant_id, item_id)``."""
    asked = {
        AGENT: agent_id(arg(args, kwargs, 0, "agent")),
        ORDER: arg(args, kwargs, 1, "order_id"),
        TYPE: arg(args, kwargs, 2, "type"),
        TENANT: arg(args, kwargs, 4, "tenant_id"),
        ITEM: arg(args, kwargs, 5, "item_id"),
    }
    return {**asked, **of_lease(lease)}


def lease_call(args: tuple[Any, ...], kwargs: dict[str, Any], _: Any) -> Attributes:
    """A call whose first argument is the lease (heartbeat, submit, release, fail…)."""
    return of_lease(arg(args, kwargs, 0, "lease"))


def propose_call(args: tuple[Any, ...], kwargs: dict[str, Any], proposal: Any) -> Attributes:
    """``OrderService.propose(type, payload, …)``; the result's order when there is one."""
    asked = {
        TYPE: arg(args, kwargs, 0, "type"),
        ORDER: kwargs.get("order_id"),
        TENANT: kwargs.get("tenant_id"),
        AGENT: agent_id(kwargs.get("agent")),
    }
    return {**asked, **of_order(getattr(proposal, "order", None))}


def order_call(args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> Attributes:
    """A call whose first argument is the order id (approve, auto-approval, apply…); the
    result's order (a view dict, or an outcome holding one) when there is one."""
    order = result if isinstance(result, dict) else getattr(result, "order", None)
    return {ORDER: arg(args, kwargs, 0, "order_id"), **of_order(order)}


def instrument_app(app: Any) -> None:
    """A server span per HTTP request of a FastAPI app, continuing the caller's W3C
    ``traceparent`` (health probes left out)."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz")
