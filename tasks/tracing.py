"""Traces across Celery messages: one trace from a proposal to its apply (docs/operations.md).

When ``WORK_MANAGER_TRACING`` is on, :func:`install` sets tracing up
(:func:`workmanager.tracing.configure`) and hooks Celery: every message this process sends
carries the sender's W3C trace context in its headers (``traceparent``, ``tracestate``),
under a short ``send <task>`` producer span; every task it runs is a ``run/<task>`` span
(opentelemetry-instrumentation-celery) continuing the context its message carried. So
the create task, the agents' messages, the ``check_auto_approval | apply`` chain and
their retries all join the trace of the request or ``enqueue_order`` that began it.

The instrumentation's own publish hooks are replaced: for a task sent by name that the
sending process does not define (``workmanager.agents.<type>`` from the control plane,
``orders.create`` from a producer) they open a span they never close, which then stays
the current span of that thread. Nothing here imports ``opentelemetry`` when tracing is off.
"""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any, ParamSpec

from celery import signals

from workmanager import tracing
from workmanager.errors import WorkManagerError
from workmanager.settings import Settings

log = logging.getLogger("workmanager.tracing")
P = ParamSpec("P")

_lock = threading.Lock()
_hooked: list[bool] = []


def install(settings: Settings, service_name: str) -> bool:
    """Tracing on in this process, Celery hooked; once per process. Whether it is on."""
    if not tracing.configure(settings, service_name):
        return False
    with _lock:
        if not _hooked:
            _hook_celery()
            _hooked.append(True)
    return True


def _hook_celery() -> None:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    instrumentor = CeleryInstrumentor()  # type: ignore[no-untyped-call]
    instrumentor.instrument()
    for signal, hook in (
        (signals.before_task_publish, "_trace_before_publish"),
        (signals.after_task_publish, "_trace_after_publish"),
    ):
        if hasattr(instrumentor, hook):
            signal.disconnect(getattr(instrumentor, hook))
    signals.before_task_publish.connect(_carry_context, weak=False)


def _carry_context(
    sender: str | None = None,
    headers: dict[str, Any] | None = None,
    routing_key: str | None = None,
    **_: Any,
) -> None:
    """Put the current trace context in an outgoing message's headers, under a span."""
    if headers is None:
        return
    from opentelemetry import trace
    from opentelemetry.propagate import inject

    attributes = {
        "messaging.system": "celery",
        "messaging.destination.name": routing_key or "",
        "messaging.message.id": str(headers.get("id", "")),
        "celery.task_name": str(sender),
    }
    tracer = trace.get_tracer(tracing.TRACER)
    with tracer.start_as_current_span(
        f"send {sender}", kind=trace.SpanKind.PRODUCER, attributes=attributes
    ):
        inject(headers)


@signals.worker_init.connect  # type: ignore[untyped-decorator]
def _on_worker_start(**_: Any) -> None:
    """``celery worker`` (and ``workmanager agent``, which set up first under their own
    name): tracing before any task runs and before the WorkManager's engine exists."""
    install(Settings.from_env(), "workmanager-worker")


@functools.cache
def producer_tracing() -> bool:
    """A producer process (``enqueue_order``): tracing as its environment says, set up on
    the first enqueue. A process that set tracing up already keeps its set-up."""
    try:
        settings = Settings.from_env()
    except WorkManagerError:
        return False  # enqueue_order says what is wrong with the settings
    return install(settings, "workmanager-producer")


def traced_enqueue(enqueue: Callable[P, uuid.UUID]) -> Callable[P, uuid.UUID]:
    """``enqueue_order`` in a ``workmanager.enqueue_order`` span (type, tenant, the order
    id it returns) when tracing is on; the send inside carries that span's context."""

    @functools.wraps(enqueue)
    def inner(*args: P.args, **kwargs: P.kwargs) -> uuid.UUID:
        if not producer_tracing():
            return enqueue(*args, **kwargs)
        asked = {
            tracing.TYPE: tracing.arg(args, kwargs, 0, "type"),
            tracing.TENANT: kwargs.get("tenant_id"),
        }
        with tracing.span("workmanager.enqueue_order", asked) as span:
            order_id = enqueue(*args, **kwargs)
            span.set_attribute(tracing.ORDER, str(order_id))
            return order_id

    return inner
