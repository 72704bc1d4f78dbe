"""StatsD lines from real workers reach a UDP listener with their labels; Flower answers
and shows the workers and the named tasks."""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.request
from typing import Any

import pytest

from tasks.producer import enqueue_order

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_statsd_lines_reach_a_udp_listener(make_stack) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    stack = make_stack(metrics_driver="statsd", statsd_port=str(port), statsd_host="127.0.0.1")
    stack.worker()
    stack.agent("e2e.echo", "tests.support.pipeline:echo_handler", concurrency=1)
    enqueue_order("e2e.echo", {"n": 1}, priority=3, app=stack.app)
    lines: list[str] = []
    deadline = time.monotonic() + 60
    wanted = (
        "work_manager.orders_created_total,type=e2e.echo,priority=3:1|c",
        "work_manager.leases_acquired_total,type=e2e.echo,agent_id=agent-1,tenant=none:1|c",
        "work_manager.order_apply_duration_seconds,type=e2e.echo:",
    )
    while time.monotonic() < deadline and not all(any(w in x for x in lines) for w in wanted):
        try:
            lines.extend(listener.recv(65535).decode().splitlines())
        except TimeoutError:
            continue
    listener.close()
    for w in wanted:
        assert any(w in line for line in lines), (w, lines)
    assert any(line.endswith("|ms") for line in lines if "apply_duration" in line)


def get_json(url: str) -> object:
    """The JSON at ``url``, or None when Flower is too slow or not ready (callers poll)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())
    except OSError:
        return None


def test_flower_answers_and_shows_workers_and_tasks(make_stack, broker) -> None:
    stack = make_stack(broker=broker)
    stack.worker("control")
    port = free_port()
    stack.start(
        "flower",
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tasks",
            "flower",
            f"--port={port}",
            "--address=127.0.0.1",
        ],
        FLOWER_UNAUTHENTICATED_API="true",
    )  # Flower 2 guards its JSON API
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(base + "/healthcheck", timeout=2) as r:
                return r.read() == b"OK"
        except OSError:
            return False

    stack.wait_for(healthy, 60, "Flower to answer /healthcheck")

    def control_worker() -> dict[str, Any] | None:
        # Flower fills a worker's entry from several inspect replies; wait for the one
        # with its registered tasks rather than taking the first partial answer.
        workers = get_json(base + "/api/workers?refresh=1") or {}
        for name, info in workers.items():  # type: ignore[union-attr]
            if name.startswith("control-") and info.get("registered"):
                return dict(info)
        return None

    worker = stack.wait_for(control_worker, 60, "Flower to see the worker and its tasks")
    assert "workmanager.orders.apply" in worker["registered"]  # type: ignore[index]
    # The worker started without task events (celeryconfig.py: Celery's default); Flower
    # switches them on by its periodic enable_events broadcast. An order sent before that
    # reaches the worker is not shown: send one per try until Flower shows its create task.
    sent: list[str] = []

    def create_shown() -> Any:
        sent.append(str(enqueue_order("e2e.echo", {"n": 7}, app=stack.app)))
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            tasks = get_json(base + "/api/tasks?taskname=workmanager.orders.create")
            if tasks:
                return tasks
            time.sleep(0.2)
        return None

    tasks = stack.wait_for(create_shown, 60, "Flower to switch task events on and show a task")
    shown = json.dumps(tasks)
    assert any(order_id in shown for order_id in sent)  # readable JSON, not pickles
