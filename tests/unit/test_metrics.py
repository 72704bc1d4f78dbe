"""Metrics drivers (SPEC §4.8): line formats, tag styles, and a failing driver is harmless."""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest

from workmanager import Registry, Settings
from workmanager.errors import ConfigurationError
from workmanager.metrics.base import Metrics
from workmanager.metrics.factory import build_metrics
from workmanager.metrics.prometheus import PrometheusDriver
from workmanager.metrics.simple import LogDriver, MemoryDriver, NullDriver
from workmanager.metrics.statsd import StatsdDriver, tagged


def test_log_driver_line_matches_the_spec(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics(LogDriver(), "work_manager")
    with caplog.at_level(logging.INFO, logger="workmanager.metrics"):
        metrics.increment("orders_created_total", type="customer.research", priority=0)
    assert caplog.messages == [
        "[Metric] COUNTER work_manager.orders_created_total = 1 "
        "{type=customer.research, priority=0}"
    ]


def test_log_driver_writes_a_callers_label_value_escaped(caplog: pytest.LogCaptureFixture) -> None:
    """A tenant or a failure's code is the caller's: a newline in one started a forged
    line (``ERROR workmanager.api: …``) in the server's log."""
    metrics = Metrics(LogDriver(), "work_manager")
    with caplog.at_level(logging.INFO, logger="workmanager.metrics"):
        metrics.increment(
            "items_failed_total", type="t", error_code="x\nERROR workmanager.api: forged\x1b[2J"
        )
    (line,) = caplog.messages
    assert "\n" not in line and "\x1b" not in line
    assert line.endswith("error_code=x\\nERROR workmanager.api: forged\\x1b[2J}")


@pytest.mark.parametrize(
    ("style", "expected"),
    [
        ("influxdb", "m,type=a,agent_id=b"),
        ("graphite", "m;type=a;agent_id=b"),
        ("dogstatsd", "m"),
        ("none", "m"),
    ],
)
def test_tag_styles(style: str, expected: str) -> None:
    assert tagged("m", {"type": "a", "agent_id": "b"}, style) == expected


@pytest.mark.parametrize("style", ["influxdb", "dogstatsd", "graphite", "none"])
def test_statsd_driver_sends_udp_lines(style: str) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(2)
    driver = StatsdDriver("127.0.0.1", listener.getsockname()[1], style)
    metrics = Metrics(driver, "work_manager")
    metrics.increment("leases_acquired_total", type="t", agent_id="a-1")
    metrics.histogram("order_apply_duration_seconds", 0.25, type="t")
    metrics.gauge("queue_depth", 7, type="t")
    lines = [listener.recv(1024).decode() for _ in range(3)]
    listener.close()
    base = {"influxdb": ",type=t", "graphite": ";type=t"}.get(style, "")
    assert lines[0].startswith(f"work_manager.leases_acquired_total{base}")
    assert ":1|c" in lines[0]
    assert ":250.000000|ms" in lines[1]
    assert ":7|g" in lines[2]
    if style == "dogstatsd":
        assert lines[0].endswith("|#type:t,agent_id:a-1")


@pytest.mark.parametrize("style", ["influxdb", "dogstatsd", "graphite"])
def test_large_values_are_sent_exactly(style: str, caplog: pytest.LogCaptureFixture) -> None:
    """Found by an observability pass: DogStatsD lines and the log driver wrote values with
    ``%g``, so a gauge of 1,234,567 was ``1.23457e+06`` (1,234,570 on a dashboard)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(2)
    metrics = Metrics(StatsdDriver("127.0.0.1", listener.getsockname()[1], style), "wm")
    metrics.gauge("queue_depth", 1234567, type="t")
    metrics.increment("leases_expired_total", 2500000, type="t")
    lines = [listener.recv(1024).decode() for _ in range(2)]
    listener.close()
    assert ":1234567|g" in lines[0] and ":2500000|c" in lines[1]
    with caplog.at_level(logging.INFO, logger="workmanager.metrics"):
        Metrics(LogDriver(), "wm").gauge("queue_depth", 1234567, type="t")
    assert caplog.messages == ["[Metric] GAUGE wm.queue_depth = 1234567 {type=t}"]


def test_an_ipv6_statsd_host_gets_the_metrics() -> None:
    """``WORK_MANAGER_STATSD_HOST=::1`` (or a name with only IPv6 addresses) made an IPv4
    socket: every metric dropped for good, the warning blaming the name's lookup."""
    if not socket.has_ipv6:
        pytest.skip("this machine has no IPv6")
    listener = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        listener.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    listener.settimeout(2)
    for style in ("influxdb", "dogstatsd"):
        metrics = Metrics(StatsdDriver("::1", listener.getsockname()[1], style), "wm")
        metrics.gauge("queue_depth", 3, type="t")
        assert ":3|g" in listener.recv(1024).decode()
    listener.close()


def test_statsd_driver_uses_the_package_public_api_only() -> None:
    """No private attribute of the statsd client is touched (the design card): the
    driver's calls go through incr, gauge and timing."""
    import inspect
    import re

    from workmanager.metrics import statsd as module

    source = inspect.getsource(module)
    assert not re.search(r"client\._", source), "private statsd API used"
    calls: list[tuple[str, object, object]] = []

    class Client:
        def incr(self, stat: str, count: object = 1) -> None:
            calls.append(("incr", stat, count))

        def gauge(self, stat: str, value: object) -> None:
            calls.append(("gauge", stat, value))

        def timing(self, stat: str, ms: object) -> None:
            calls.append(("timing", stat, ms))

    driver = StatsdDriver("127.0.0.1", 8125, "influxdb")
    driver.client = Client()
    driver.increment("c", 2, {"type": "t"})
    driver.gauge("g", -3)
    driver.histogram("h", 0.5)
    assert calls == [("incr", "c,type=t", 2), ("gauge", "g", -3), ("timing", "h", 500.0)]


class Exploding:
    def increment(self, *args: object) -> None:
        raise OSError("metrics endpoint down")

    gauge = histogram = increment


def test_a_failing_driver_never_fails_the_operation(make_wm) -> None:
    from tests.support.types import Simple

    wm = make_wm(registry=Registry([Simple()]))
    wm.ctx.metrics = Metrics(Exploding(), "work_manager")  # type: ignore[arg-type]
    order_id = wm.propose("test.simple", {"n": 1})
    lease = wm.agent.checkout("agent-1")
    assert lease is not None
    assert wm.agent.submit(lease, {"answer": 1}).order_submitted
    wm.approve(order_id)
    assert wm.executor.apply(order_id).recorded


def test_prometheus_driver_exposes_counters_gauges_histograms() -> None:
    from prometheus_client import generate_latest

    driver = PrometheusDriver()
    metrics = Metrics(driver, "work_manager")
    metrics.increment("orders_created_total", type="t", priority=0)
    metrics.gauge("queue_depth", 3, type="t")
    metrics.histogram("order_apply_duration_seconds", 0.5, type="t")
    text = generate_latest(driver.registry).decode()
    assert 'work_manager_orders_created_total{priority="0",type="t"} 1.0' in text
    assert 'work_manager_queue_depth{type="t"} 3.0' in text
    assert 'work_manager_order_apply_duration_seconds_count{type="t"} 1.0' in text
    # an approval after an hour lands in a bucket, not +Inf (a metrics pass: the default
    # buckets stopped at 10 s); the buckets are the StatsD exporter mapping's
    metrics.histogram("order_time_to_approval_seconds", 3000.0, type="t")
    text = generate_latest(driver.registry).decode()
    assert 'work_manager_order_time_to_approval_seconds_bucket{le="3600.0",type="t"} 1.0' in text
    assert 'work_manager_order_time_to_approval_seconds_bucket{le="300.0",type="t"} 0.0' in text


def test_the_prometheus_buckets_are_the_statsd_exporters() -> None:
    from pathlib import Path

    import yaml

    from workmanager.metrics.prometheus import BUCKETS

    mapping = Path(__file__).resolve().parents[2] / "deploy/statsd-exporter/mapping.yml"
    exported = yaml.safe_load(mapping.read_text())["defaults"]["histogram_options"]["buckets"]
    assert [*exported, float("inf")] == list(BUCKETS)


def test_factory_picks_drivers_by_alias_and_by_path() -> None:
    assert isinstance(build_metrics(Settings(metrics_driver="null")).driver, NullDriver)
    assert isinstance(build_metrics(Settings(metrics_driver="log")).driver, LogDriver)
    custom = build_metrics(Settings(metrics_driver="workmanager.metrics.simple:MemoryDriver"))
    assert isinstance(custom.driver, MemoryDriver)
    with pytest.raises(ConfigurationError, match="WORK_MANAGER_METRICS_DRIVER"):
        build_metrics(Settings(metrics_driver="nowhere.mod:Nothing"))


def test_disabled_metrics_send_nothing() -> None:
    memory = MemoryDriver()
    Metrics(memory, "work_manager", enabled=False).increment("orders_created_total")
    assert memory.total("orders_created_total") == 0


def test_the_tenant_label_names_the_tenant_or_none_and_can_be_dropped() -> None:
    on, off = MemoryDriver(), MemoryDriver()
    for driver, kept in ((on, True), (off, False)):
        metrics = Metrics(driver, "", tenant_label=kept)
        metrics.increment("c", type="t", tenant="acme")
        metrics.increment("c", type="t", tenant=None)
    assert {dict(labels).get("tenant") for (_n, labels) in on.counters} == {"acme", "none"}
    assert {dict(labels).get("tenant") for (_n, labels) in off.counters} == {None}
    assert sum(off.counters.values()) == 2


def test_the_priority_label_is_bounded() -> None:
    """A pass at what a hostile producer costs: each priority it picked (any 32-bit
    integer) was a series of its own, 2,000 proposals 4,000 lines on ``/metrics``."""
    memory = MemoryDriver()
    metrics = Metrics(memory, "")
    for priority in (-100, 0, 7, 100, 101, -101, 2**31 - 1, *range(1000, 3000)):
        metrics.increment("orders_created_total", type="t", priority=priority)
    said = {dict(labels)["priority"] for (_n, labels) in memory.counters}
    assert said == {"-100", "0", "7", "100", "other"}


def test_a_statsd_host_that_does_not_resolve_never_stops_the_process(caplog, monkeypatch) -> None:
    """Was: ``socket.gaierror`` from the driver's constructor, a traceback from every
    process (server, worker, agent, CLI) started with the exporter's name not yet in DNS.
    Now one warning; metrics are dropped while the name does not resolve, and the later
    lookups run off the caller's thread. (The resolver is replaced by one that fails, so
    the test does not depend on this machine's DNS.)"""
    import logging
    import socket
    import threading

    from workmanager.metrics import statsd as statsd_driver

    lookups: list[str] = []

    def no_such_host(host: str, *args: object, **kwargs: object) -> list[object]:
        lookups.append(threading.current_thread().name)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    caplog.set_level(logging.WARNING, "workmanager.metrics")
    for style in ("influxdb", "dogstatsd"):
        driver = StatsdDriver("statsd.example", 8125, style)
        driver.increment("c", 1, {"type": "t"})
        driver.gauge("g", 1)
        driver.histogram("h", 0.5)
    warnings = [r for r in caplog.records if "cannot be reached" in r.getMessage()]
    assert len(warnings) == 2  # one per driver, not one per metric
    assert "statsd.example" in warnings[0].getMessage()
    assert lookups == ["MainThread", "MainThread"]  # once each at start-up, not per metric
    monkeypatch.setattr(statsd_driver, "RESOLVE_EVERY_SECONDS", 0.0)
    driver._next_lookup = 0.0
    driver.increment("c", 1)  # due again: looked up on a thread of its own
    for thread in threading.enumerate():
        if thread.name == "statsd-lookup":
            thread.join(5)
    assert lookups[-1] == "statsd-lookup"


@pytest.mark.parametrize("style", ["influxdb", "dogstatsd", "graphite"])
def test_a_label_value_cannot_add_a_line_or_break_one(style: str) -> None:
    """An agent's error code and a producer's tenant reach the labels: a newline in one
    sent a counter of its choosing, a ``:`` or ``|`` made the line unreadable. Each
    datagram is one well-formed line, whatever the values."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(2)
    metrics = Metrics(StatsdDriver("127.0.0.1", listener.getsockname()[1], style), "wm")
    forged = "x:1|c\nwm.orders_approved_total,type=t:1000|c\nz"
    metrics.increment("items_failed_total", type="t", error_code=forged)
    metrics.increment("items_failed_total", type="t", error_code="http:503", tenant="a=b;c,d #e")
    lines = [listener.recv(4096).decode() for _ in range(2)]
    listener.close()
    for line in lines:
        assert "\n" not in line and line.count("|") == (2 if style == "dogstatsd" else 1), line
        assert line.count(":") == (1 + line.count(",") + 1 if style == "dogstatsd" else 1), line
    assert "orders_approved_total" in lines[0] and "x_1_c_wm.orders_approved_total" in lines[0]
    assert "http_503" in lines[1] and "a_b_c_d__e" in lines[1]


def test_a_driver_with_timing_gets_the_histograms_and_one_without_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A metrics pass: SPEC §4.8's protocol has ``histogram``/``timing``, yet a driver
    with ``timing`` lost both histograms (a warning each), and any class at all started,
    then dropped every metric."""
    import sys
    import types

    class Timing:
        def __init__(self) -> None:
            self.seen: list[tuple[str, float]] = []

        def increment(self, name: str, value: float = 1, labels: Any = None) -> None: ...

        def gauge(self, name: str, value: float, labels: Any = None) -> None: ...

        def timing(self, name: str, seconds: float, labels: Any = None) -> None:
            self.seen.append((name, seconds))

    class Nothing:
        pass

    module = types.ModuleType("wm_test_drivers")
    module.Timing, module.Nothing = Timing, Nothing  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wm_test_drivers", module)
    metrics = build_metrics(Settings(metrics_driver="wm_test_drivers:Timing"))
    metrics.histogram("order_apply_duration_seconds", 0.25, type="t")
    assert metrics.driver.seen == [("work_manager.order_apply_duration_seconds", 0.25)]  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError, match="has no increment, gauge, histogram"):
        build_metrics(Settings(metrics_driver="wm_test_drivers:Nothing"))


def test_the_apply_duration_is_the_body_s_time_not_the_recording_s(make_wm) -> None:
    """A metrics pass: ``order_apply_duration_seconds`` ("time in before_apply + apply")
    took in the recording after the body, and the waits of a database outage during it."""
    import time

    from tests.support.types import Simple

    wm = make_wm(registry=Registry([Simple()]))
    order_id = wm.propose("test.simple", {"n": 1})
    lease = wm.agent.checkout("agent-1")
    assert lease is not None
    wm.agent.submit(lease, {"answer": 1})
    wm.approve(order_id)
    record = wm.executor.store.record_apply

    def slow_record(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.5)
        return record(*args, **kwargs)

    wm.executor.store.record_apply = slow_record
    assert wm.executor.apply(order_id).recorded
    [(_, took)] = [
        (k, v) for k, v in wm.metrics.driver.histograms.items() if "apply_duration" in k[0]
    ] or [(None, None)]
    assert took is not None and max(took) < 0.4, took
