"""The MetricsDriver protocol and the guard that keeps a failing driver harmless."""

from __future__ import annotations

import logging
from typing import Protocol

from ..types import AgentInfo

log = logging.getLogger("workmanager.metrics")

Labels = dict[str, str]
#: What the ``agent_id`` label of an agent whose id the caller chose itself reads; and the
#: ``priority`` label of a priority outside :data:`LABELLED_PRIORITIES`.
OTHER_AGENT = OTHER = "other"
#: The priorities the ``priority`` label names (a producer picks any 32-bit integer: one
#: series each, 2,000 distinct priorities put 4,000 lines on ``/metrics`` for good).
LABELLED_PRIORITIES = range(-100, 101)


class MetricsDriver(Protocol):
    """Where metrics go. Names arrive already prefixed with the namespace."""

    def increment(self, name: str, value: float = 1, labels: Labels | None = None) -> None:
        """Add ``value`` to a counter."""

    def gauge(self, name: str, value: float, labels: Labels | None = None) -> None:
        """Set a gauge to ``value``."""

    def histogram(self, name: str, seconds: float, labels: Labels | None = None) -> None:
        """Observe a duration in seconds (statsd sends a timer in ms)."""


class Metrics:
    """What services call. Prefixes names, stringifies labels, and never raises.

    The ``agent_id`` label is bounded here, the one place for every driver: a call passes
    the :class:`AgentInfo` (whose ``self_named`` says whether the caller chose the id), or
    a bare id its code vouches for, and ``agent_label`` says what is kept — ``bound``: ids a
    caller could not choose (a token's bound agent, a consumer agent, an in-process caller),
    the others as ``other``; ``all``; ``none``: no label. Every id a client invents would
    otherwise be one more series in Prometheus. So is every ``priority`` a producer picks:
    those outside -100…100 read ``other``. The ``tenant`` label (``none`` when the
    work belongs to no tenant) is kept unless ``tenant_label`` is off.
    """

    def __init__(
        self,
        driver: MetricsDriver,
        namespace: str = "work_manager",
        enabled: bool = True,
        agent_label: str = "bound",
        tenant_label: bool = True,
    ) -> None:
        self.driver = driver
        self.namespace = namespace
        self.enabled = enabled
        self.agent_label = agent_label
        self.tenant_label = tenant_label

    def close(self) -> None:
        """Close the driver's sockets, when it has any."""
        close = getattr(self.driver, "close", None)
        if close is not None:
            close()

    def _name(self, name: str) -> str:
        return f"{self.namespace}.{name}" if self.namespace else name

    def _labels(self, labels: dict[str, object]) -> Labels:
        out = {k: str(v) for k, v in labels.items() if k not in ("agent_id", "tenant")}
        if "priority" in labels and labels["priority"] not in LABELLED_PRIORITIES:
            out["priority"] = OTHER
        if "agent_id" in labels and self.agent_label != "none":
            out["agent_id"] = self._agent(labels["agent_id"])
        if "tenant" in labels and self.tenant_label:
            tenant = labels["tenant"]
            out["tenant"] = "none" if tenant is None else str(tenant)
        return out

    def _agent(self, agent: object) -> str:
        if isinstance(agent, AgentInfo):
            if agent.self_named and self.agent_label == "bound":
                return OTHER_AGENT
            return agent.id
        return str(agent)

    def increment(self, name: str, value: float = 1, **labels: object) -> None:
        self._call("increment", name, value, labels)

    def gauge(self, name: str, value: float, **labels: object) -> None:
        self._call("gauge", name, value, labels)

    def histogram(self, name: str, seconds: float, **labels: object) -> None:
        # SPEC §4.8's protocol has ``histogram``/``timing``: a driver of the second name
        # lost every histogram (its seconds, as ``histogram``'s)
        self._call(
            "histogram" if hasattr(self.driver, "histogram") else "timing", name, seconds, labels
        )

    def _call(self, method: str, name: str, value: float, labels: dict[str, object]) -> None:
        if not self.enabled:
            return
        try:
            getattr(self.driver, method)(self._name(name), value, self._labels(labels))
        except Exception:  # a metrics outage must never fail the operation reporting to it
            log.warning(
                "metrics driver %s failed on %s", type(self.driver).__name__, name, exc_info=True
            )


def number(value: float) -> int | float:
    """A metric's value as lines say it, exactly: ``7.0`` as ``7`` (StatsD servers expect
    counts whole), ``1234567`` as itself (``%g`` said ``1.23457e+06``)."""
    return int(value) if float(value).is_integer() else value
