"""Many hosts, simulated on one: 3 API servers (requests spread over them), 2 control-plane
workers, 4 agent consumers and beat, on PostgreSQL, RabbitMQ and the Redis lease store.
Mid-run one of each kind is SIGKILLed and started again. Every order completes, is
applied exactly once, and no item is ever leased twice at a time.

``make test`` runs 150 orders (about 25 s); ``make soak`` (``-m slow``) the full
2,000 — ten Python processes and a few thousand tasks are many minutes of the two cores
these machines have (docs/operations.md). RabbitMQ is the broker because a SIGKILLed worker's
unacknowledged messages come back as soon as its connection drops; on Redis they would
wait for the visibility timeout (an hour), longer than the test (docs: choosing a broker).
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from workmanager.db.models import Event, Order
from workmanager.states import OrderState

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

TYPE = "e2e.echo"
HANDLER = "tests.support.pipeline:echo_handler"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """The processes of the simulated hosts, over one Stack."""

    def __init__(self, stack: Any) -> None:
        self.stack = stack
        self.ports = [free_port() for _ in range(3)]
        self.served = Counter[int]()
        self.retried = 0
        self.lock = threading.Lock()

    def api(self, n: int) -> None:
        exe = str(Path(sys.executable).parent / "workmanager")
        self.stack.start(f"api-{n}", [exe, "serve", "--port", str(self.ports[n])])

    def beat(self) -> None:
        schedule = self.stack.tmp / f"beat-{uuid.uuid4().hex[:6]}"
        command = [sys.executable, "-m", "celery", "-A", "tasks", "beat", "--schedule"]
        self.stack.start("beat", [*command, str(schedule), "--loglevel", "INFO"])

    def agent(self, n: int) -> None:
        self.stack.agent(TYPE, HANDLER, concurrency=2, name=f"agent-{n}")

    def up(self, port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def propose(self, n: int) -> None:
        """One order through one of the servers; another one when that one is down. The
        dedupe key makes a retry of a request that did land return the same order."""
        body = json.dumps({"type": TYPE, "payload": {"n": n}, "dedupe_key": f"order-{n}"})
        deadline = time.monotonic() + 120
        attempt = 0
        while time.monotonic() < deadline:
            port = self.ports[(n + attempt) % len(self.ports)]
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/agent/work/propose",
                data=body.encode(),
                method="POST",
                headers={"Content-Type": "application/json", "X-Idempotency-Key": uuid.uuid4().hex},
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    assert response.status in (200, 201), response.status
                with self.lock:
                    self.served[port] += 1
                return
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    raise AssertionError(f"order {n}: {exc.code} {exc.read()!r}") from exc
            except OSError:
                pass
            with self.lock:
                self.retried += 1
            attempt += 1
            time.sleep(0.1)
        raise AssertionError(f"order {n} could not be proposed")


def count(stack: Any, *where: Any) -> int:
    with stack.wm.db.transaction() as s:
        return int(s.scalar(select(func.count()).select_from(Order).where(*where)) or 0)


def run_many_hosts(make_stack: Any, orders: int, timeout: float) -> None:
    stack = make_stack(
        broker="rabbitmq",
        lease_backend="redis",
        auth="none",
        lease_ttl_seconds="4",
        sweep_interval_seconds="1",
        retry_backoff_seconds="0",
        retry_jitter_seconds="0",
        default_max_attempts="20",
        apply_recovery_seconds="5",
        # beat's maintenance recovers the apply a killed worker left claimed: every 2 s,
        # not every minute, so the test does not wait a minute for the last order
        maintenance_interval_seconds="2",
        reannounce_after_seconds="10",
        metrics_driver="null",
    )
    cluster = Cluster(stack)
    for n in range(3):
        cluster.api(n)
    for n in range(2):
        stack.worker(f"control-{n}", concurrency=4)
    for n in range(4):
        cluster.agent(n)
    cluster.beat()
    for port in cluster.ports:
        stack.wait_for(lambda p=port: cluster.up(p), 90, f"the API on {port}")

    with ThreadPoolExecutor(max_workers=6) as pool:
        sent = [pool.submit(cluster.propose, n) for n in range(orders)]
        stack.wait_for(
            lambda: count(stack, Order.state == OrderState.COMPLETED) >= orders // 4,
            timeout,
            "a quarter of the orders completed",
        )
        # One of each kind dies mid-run, then comes back.
        for name in ("api-0", "control-0", "agent-0", "beat"):
            stack.kill(name)
        cluster.api(0)
        stack.worker("control-0", concurrency=4)
        cluster.agent(0)
        cluster.beat()
        for future in sent:
            future.result()

    stack.wait_for(
        lambda: count(stack, Order.state == OrderState.COMPLETED) == orders,
        timeout,
        f"all {orders} orders completed",
    )
    assert count(stack) == orders  # one order per dedupe key, retries included
    assert all(cluster.served[p] >= orders // 20 for p in cluster.ports), cluster.served
    check_exactly_once(stack, orders)
    print(f"served {dict(cluster.served)}, {cluster.retried} requests sent again")


def check_exactly_once(stack: Any, orders: int) -> None:
    with stack.wm.db.transaction() as s:
        rows = s.execute(select(Event.order_id, Event.item_id, Event.event)).all()
    applied = Counter(o for o, _, e in rows if e == "applied")
    assert len(applied) == orders and set(applied.values()) == {1}
    per_item: dict[Any, Counter[str]] = {}
    for _, item_id, event in rows:
        if item_id is not None:
            per_item.setdefault(item_id, Counter())[event] += 1
    assert len(per_item) == orders
    for item_id, events in per_item.items():
        assert events["submitted"] == 1, (item_id, events)
        # A second grant of an item only ever follows the end of the one before it.
        ended = events["lease_expired"] + events["released"] + events["failed"]
        assert events["leased"] <= 1 + ended, (item_id, events)


def test_many_hosts_with_one_of_each_killed_and_restarted(make_stack) -> None:
    run_many_hosts(make_stack, orders=150, timeout=240)


@pytest.mark.slow
def test_many_hosts_soak_two_thousand_orders(make_stack) -> None:
    run_many_hosts(make_stack, orders=2000, timeout=1800)
