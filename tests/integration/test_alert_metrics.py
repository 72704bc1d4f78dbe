"""The values of every metric the alert rules (deploy/prometheus/alerts.yml) use.

The system is driven so each metric is reported: leases acquired and expired (the expiry
rate), a queue deep enough to fire the queue-depth alert, an apply whose retries are spent,
a maintenance run (the stalled-maintenance alert's gauge).
Each value is read twice: from the in-memory driver, and as Prometheus would see it, from
real StatsD datagrams on a UDP listener turned into series by
deploy/statsd-exporter/mapping.yml, carrying the labels each rule groups by.
"""

from __future__ import annotations

import re
import socket
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select

from tests.support.types import Flaky, Multi
from tests.support.waiting import wait_for
from workmanager import Registry, WorkManager
from workmanager.db.models import Item, utcnow
from workmanager.errors import ApplyFailed
from workmanager.metrics.base import Labels
from workmanager.metrics.simple import MemoryDriver
from workmanager.metrics.statsd import StatsdDriver

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())
MAPPING = yaml.safe_load((DEPLOY / "statsd-exporter/mapping.yml").read_text())
#: Every metric the rules use, and the labels the rules group it by.
USED = {
    "work_manager_queue_depth": {"type"},
    "work_manager_leases_expired_total": {"type"},
    "work_manager_leases_acquired_total": {"type"},
    "work_manager_orders_apply_failed_total": {"type", "exception"},
    "work_manager_maintenance_last_run_timestamp_seconds": set(),
}
DEEP = 1001  # queued items of one type: over the queue-depth alert's 1000


def rule_metrics() -> dict[str, set[str]]:
    """Each metric the rules name, with the ``by (...)`` labels of the expressions naming it."""
    used: dict[str, set[str]] = defaultdict(set)
    for group in RULES["groups"]:
        for rule in group["rules"]:
            expr = rule["expr"]
            by = {b.strip() for g in re.findall(r"by \(([^)]*)\)", expr) for b in g.split(",")}
            for name in re.findall(r"\bwork_manager_[a-z_]+", expr):
                used[name] |= by
    return dict(used)


def test_the_rules_use_the_metrics_this_module_checks() -> None:
    assert rule_metrics() == USED


class Both:
    """Sends every metric to the in-memory driver and to StatsD."""

    def __init__(self, *drivers: Any) -> None:
        self.drivers = drivers

    def increment(self, name: str, value: float = 1, labels: Labels | None = None) -> None:
        for d in self.drivers:
            d.increment(name, value, labels)

    def gauge(self, name: str, value: float, labels: Labels | None = None) -> None:
        for d in self.drivers:
            d.gauge(name, value, labels)

    def histogram(self, name: str, seconds: float, labels: Labels | None = None) -> None:
        for d in self.drivers:
            d.histogram(name, seconds, labels)


class Exporter:
    """What statsd_exporter makes of the datagrams, with deploy/'s mapping: counters
    summed and gauges set per (name, labels) series."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.series: dict[tuple[str, frozenset[tuple[str, str]]], float] = defaultdict(float)
        self.lines = 0

    def drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                return
            for line in data.decode().splitlines():
                self.lines += 1
                self._add(line)

    def _add(self, line: str) -> None:
        stat, sample = line.rsplit(":", 1)
        value, kind = sample.split("|")[:2]
        name, *tags = stat.split(",")
        labels = frozenset(tuple(t.split("=", 1)) for t in tags)
        mapped = self._map(name)
        if mapped is None:
            return
        key = (mapped, labels)
        if kind == "c":
            self.series[key] += float(value)
        elif kind == "g":
            self.series[key] = float(value)

    @staticmethod
    def _map(name: str) -> str | None:
        for rule in MAPPING["mappings"]:
            m = re.fullmatch(rule["match"], name)
            if m:
                return m.expand(re.sub(r"\$\{(\d+)\}", r"\\g<\1>", rule["name"]))
        return None

    def sum(self, metric: str, **labels: str) -> float:
        """``sum by (labels)`` of one metric, as a rule computes it."""
        want = set(labels.items())
        return sum(v for (n, lbl), v in self.series.items() if n == metric and want <= lbl)

    def label_names(self, metric: str) -> list[set[str]]:
        return [{k for k, _ in lbl} for (n, lbl) in self.series if n == metric]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    exp = Exporter()
    yield exp
    exp.close()


def memory(wm: WorkManager, name: str, **labels: str) -> float:
    driver = wm.metrics.driver
    assert isinstance(driver, Both)
    mem = driver.drivers[0]
    assert isinstance(mem, MemoryDriver)
    want = set(labels.items())
    counters = [v for (n, lbl), v in mem.counters.items() if n == name and want <= set(lbl)]
    gauges = [v for (n, lbl), v in mem.gauges.items() if n == name and want <= set(lbl)]
    return sum(counters) + sum(gauges)


@pytest.mark.parametrize(
    ("db", "backend"),
    [
        ("sqlite", "database"),
        pytest.param("postgres", "database", marks=pytest.mark.postgres),
        pytest.param("postgres", "redis", marks=[pytest.mark.postgres, pytest.mark.redis]),
    ],
)
def test_alert_metrics_have_the_values_of_what_happened(
    make_wm: Any, exporter: Exporter, db: str, backend: str
) -> None:
    wm: WorkManager = make_wm(
        db=db,
        backend=backend,
        registry=Registry([Multi(), Flaky(failures=99)]),
        lease_ttl_seconds=2,
        apply_max_retries=1,
        broker_url="memory://",
    )
    wm.metrics.driver = Both(MemoryDriver(), StatsdDriver("127.0.0.1", exporter.port))

    # Leases: 3 acquired, 1 submitted, 2 left to expire and swept.
    small = wm.propose("test.multi", {"count": 3})
    wm.propose("test.multi", {"count": DEEP})
    leases = [wm.agent.checkout(f"agent-{n}", order_id=small) for n in range(3)]
    assert all(lease is not None for lease in leases)
    wm.agent.submit(leases[0], {"answer": 1})  # type: ignore[arg-type]

    def expired() -> bool:
        with wm.db.transaction() as s:
            last = s.scalar(select(func.max(Item.lease_expires_at)))
        return last is not None and last < utcnow() and wm.sweeper.sweep().reclaimed > 0

    wait_for(expired, 30, "the two abandoned leases to expire and be swept")
    wait_for(lambda: wm.sweeper.sweep().reclaimed == 0 and leases_held(wm) == 0, 30, "none held")

    # An apply that fails on its first attempt (retried) and its last (retries spent).
    flaky = wm.propose("test.flaky", {})
    lease = wm.agent.checkout("agent-9", order_id=flaky)
    assert lease is not None
    wm.agent.submit(lease, {"answer": 1})
    wm.approve(flaky)
    for _ in range(2):
        with pytest.raises(ApplyFailed):
            wm.executor.apply(flaky)
    assert wm.queries.order_state(flaky) == "failed"

    wm.maintenance.run()  # reports the gauges, as beat's maintenance does every minute
    expected = {
        ("work_manager.leases_acquired_total", "test.multi"): 3,
        ("work_manager.leases_acquired_total", "test.flaky"): 1,
        ("work_manager.leases_expired_total", "test.multi"): 2,
        ("work_manager.leases_expired_total", "test.flaky"): 0,
        ("work_manager.orders_apply_failed_total", "test.flaky"): 1,
        ("work_manager.orders_apply_failed_total", "test.multi"): 0,
        ("work_manager.queue_depth", "test.multi"): DEEP + 2,  # the two requeued count
        ("work_manager.queue_depth", "test.flaky"): 0,
    }
    for (name, order_type), value in expected.items():
        assert memory(wm, name, type=order_type) == value, (name, order_type)
    assert memory(wm, "work_manager.orders_apply_failed_total", exception="RuntimeError") == 1

    # As Prometheus sees them: the mapped names, the labels the rules group by, the values.
    def received() -> bool:
        exporter.drain()
        return all(
            exporter.sum(name.replace(".", "_"), type=order_type) == value
            for (name, order_type), value in expected.items()
        )

    wait_for(received, 10, "the StatsD datagrams of every metric")
    ran = wm.ctx.clock().timestamp()  # WorkManagerMaintenanceStalled: this gauge's age
    wait_for(
        lambda: (
            ran - 60 < exporter.sum("work_manager_maintenance_last_run_timestamp_seconds") <= ran
        ),
        10,
        "the maintenance run's time, as a unix time",
    )
    for metric, by in USED.items():
        names = exporter.label_names(metric)
        assert names and all(by <= n for n in names), (metric, names)
    failures = exporter.sum(
        "work_manager_orders_apply_failed_total", type="test.flaky", exception="RuntimeError"
    )
    assert failures == 1  # WorkManagerApplyFailures: increase(...) > 0 fires
    expiry_ratio = exporter.sum("work_manager_leases_expired_total", type="test.multi") / max(
        exporter.sum("work_manager_leases_acquired_total", type="test.multi"), 1e-9
    )
    assert expiry_ratio == pytest.approx(2 / 3)  # WorkManagerLeaseExpiryRateHigh: > 0.2
    assert exporter.sum("work_manager_queue_depth", type="test.multi") > 1000  # QueueDepthHigh


def leases_held(wm: WorkManager) -> int:
    with wm.db.transaction() as s:
        return int(
            s.scalar(select(func.count()).where(Item.state.in_(["leased", "in_progress"]))) or 0
        )
