"""The Prometheus driver: counters, gauges and histograms in a ``prometheus_client`` registry."""

from __future__ import annotations

import threading
from typing import Any

from ..importing import import_extra
from .base import Labels

#: The histograms' buckets in seconds, the same as deploy/statsd-exporter/mapping.yml's
#: (a test pins them): prometheus_client's default stops at 10 s, so every approval a
#: person made (minutes to days) fell in ``+Inf``.
BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300, 3600, float("inf"))


class PrometheusDriver:
    """Creates each metric on first use; expose ``registry`` with ``make_asgi_app``."""

    def __init__(self, registry: Any = None) -> None:
        prometheus_client = import_extra(
            "prometheus_client",
            "WORK_MANAGER_METRICS_DRIVER=prometheus needs prometheus-client",
            "prometheus",
        )
        self._prom = prometheus_client
        self.registry = registry or prometheus_client.CollectorRegistry()
        self._metrics: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _metric(self, kind: str, name: str, labels: Labels | None) -> Any:
        flat = name.replace(".", "_")
        with self._lock:
            metric = self._metrics.get(flat)
            if metric is None:
                cls = getattr(self._prom, kind)
                options = {"buckets": BUCKETS} if kind == "Histogram" else {}
                metric = cls(flat, flat, sorted(labels or {}), registry=self.registry, **options)
                self._metrics[flat] = metric
        return metric.labels(**labels) if labels else metric

    def increment(self, name: str, value: float = 1, labels: Labels | None = None) -> None:
        self._metric("Counter", name.removesuffix("_total"), labels).inc(value)

    def gauge(self, name: str, value: float, labels: Labels | None = None) -> None:
        self._metric("Gauge", name, labels).set(value)

    def histogram(self, name: str, seconds: float, labels: Labels | None = None) -> None:
        self._metric("Histogram", name, labels).observe(seconds)
