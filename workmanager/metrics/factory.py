"""Build the metrics driver named by settings: an alias or ``pkg.mod:Class``."""

from __future__ import annotations

from ..errors import ConfigurationError
from ..importing import import_object
from ..settings import Settings
from .base import Metrics, MetricsDriver


def _driver(settings: Settings) -> MetricsDriver:
    name = settings.metrics_driver
    if name == "log":
        from .simple import LogDriver

        return LogDriver()
    if name in ("null", "memory"):
        from .simple import MemoryDriver, NullDriver

        return NullDriver() if name == "null" else MemoryDriver()
    if name == "statsd":
        from .statsd import StatsdDriver

        return StatsdDriver(settings.statsd_host, settings.statsd_port, settings.statsd_tag_style)
    if name == "prometheus":
        from .prometheus import PrometheusDriver

        return PrometheusDriver()
    driver: MetricsDriver = import_object(name, "WORK_MANAGER_METRICS_DRIVER")()
    lacking = [m for m in ("increment", "gauge") if not callable(getattr(driver, m, None))]
    if not any(callable(getattr(driver, m, None)) for m in ("histogram", "timing")):
        lacking.append("histogram (or timing)")
    if lacking:  # it started, then dropped every metric with a warning each
        raise ConfigurationError(
            f"WORK_MANAGER_METRICS_DRIVER={name}: {type(driver).__name__} has no "
            + ", ".join(lacking),
            hint="a driver has increment(name, value, labels), gauge(name, value, labels)"
            " and histogram(name, seconds, labels) (or timing: SPEC §4.8)",
        )
    return driver


def build_metrics(settings: Settings) -> Metrics:
    return Metrics(
        _driver(settings),
        settings.metrics_namespace,
        settings.metrics_enabled,
        agent_label=settings.metrics_agent_label,
        tenant_label=settings.metrics_tenant_label,
    )
