"""Graceful shutdown with real processes: SIGTERM on an agent consumer (``workmanager
agent``) and on the HTTP API (``workmanager serve``)."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tasks.producer import enqueue_order
from workmanager.db.models import Event, Item
from workmanager.errors import NotFound
from workmanager.states import ItemState, OrderState

from .conftest import ROOT

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

GATED = "tests.support.pipeline:gated_handler"


def item_of(stack, order_id: uuid.UUID) -> Item:
    with stack.wm.db.transaction() as s:
        return s.scalars(select(Item).where(Item.order_id == order_id)).one()


def item_events(stack, order_id: uuid.UUID) -> list[str]:
    with stack.wm.db.transaction() as s:
        return list(s.scalars(select(Event.event).where(Event.order_id == order_id)))


def terminate(stack, name: str) -> tuple[Any, float]:
    """SIGTERM the process (not its group: Celery's own handler runs), then wait."""
    proc = stack.procs.pop(name)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=60)
    except Exception:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return code, time.monotonic() - started


def test_sigterm_lets_a_running_handler_finish_and_takes_no_new_message(
    make_stack, tmp_path
) -> None:
    stack = make_stack(agent_shutdown_grace_seconds="30")
    stack.worker()
    stack.agent("e2e.echo", GATED, concurrency=1)
    markers = tmp_path / "markers"
    first = enqueue_order("e2e.echo", {"n": 1}, app=stack.app)
    first_item = stack.wait_for(
        lambda: item_of(stack, first).id if _started(stack, first) else None,
        60,
        "the first handler to start",
    )
    second = enqueue_order("e2e.echo", {"n": 2}, app=stack.app)
    done: list[Any] = []
    stopper = threading.Thread(target=lambda: done.append(terminate(stack, "agent")))
    stopper.start()
    time.sleep(1.5)  # SIGTERM delivered; the handler is still working
    assert stopper.is_alive(), "the agent exited without waiting for its handler"
    (markers / f"go-{first_item}").touch()
    stopper.join(timeout=60)
    code, _ = done[0]
    assert code == 0
    assert stack.wait_for(
        lambda: stack.wm.queries.order(first)["state"] == OrderState.COMPLETED,
        60,
        "the finished handler's order to complete",
    )
    assert "released" not in item_events(stack, first)
    # The second message was not taken by the stopping consumer: its item is still queued.
    assert not _started(stack, second)
    assert item_of(stack, second).state == ItemState.QUEUED


def _started(stack, order_id: uuid.UUID) -> bool:
    markers = stack.tmp / "markers"
    try:
        item_id = item_of(stack, order_id).id
    except Exception:
        return False
    return bool(list(markers.glob(f"handler-start-{item_id}-*")))


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_sigterm_past_the_grace_releases_the_lease_and_another_agent_finishes(
    make_stack, tmp_path, pool: str
) -> None:
    """On ``--pool prefork`` the grace passed unseen (the handlers' leases are the
    children's) and the process waited for its handlers, releasing nothing."""
    stack = make_stack(agent_shutdown_grace_seconds="1")
    stack.worker()
    stack.agent("e2e.echo", GATED, concurrency=2, pool=pool)
    order_id = enqueue_order("e2e.echo", {"n": 1}, app=stack.app)
    stack.wait_for(lambda: _started(stack, order_id), 60, "the handler to start")
    leased = item_of(stack, order_id)
    assert leased.state in (ItemState.LEASED, ItemState.IN_PROGRESS)
    code, took = terminate(stack, "agent")
    assert code == 0 and took < 20, (code, took)
    item = item_of(stack, order_id)
    assert item.state == ItemState.QUEUED and item.leased_by_agent_id is None
    # the agent's own release; on prefork the operator's (the children's leases)
    released = "released" if pool == "threads" else "lease_released"
    assert released in item_events(stack, order_id)
    assert "releasing their leases" in stack.log("agent")
    # Nothing is lost: the next consumer takes the requeued item and the order completes.
    (tmp_path / "markers" / "go-all").touch()
    stack.agent("e2e.echo", GATED, concurrency=1, name="agent-2")
    stack.wait_for(
        lambda: stack.wm.queries.order(order_id)["state"] == OrderState.COMPLETED,
        90,
        "the released item to be done by the next agent",
    )
    assert item_of(stack, order_id).leased_by_agent_id is None


def test_celery_control_shutdown_gives_the_grace_too(make_stack) -> None:
    """``celery control shutdown`` sends no signal: the agent's pool waited for its
    handler without a limit, the lease heartbeating on, and the grace was never counted."""
    stack = make_stack(agent_shutdown_grace_seconds="1")
    stack.worker()
    stack.agent("e2e.echo", GATED, concurrency=1)
    order_id = enqueue_order("e2e.echo", {"n": 1}, app=stack.app)
    stack.wait_for(lambda: _started(stack, order_id), 60, "the handler to start")
    proc = stack.procs.pop("agent")
    started = time.monotonic()
    stack.app.control.shutdown(destination=[f"agent-1@{socket.gethostname()}"])
    try:
        code = proc.wait(timeout=60)
    except Exception:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    assert code == 0 and time.monotonic() - started < 20, code
    item = item_of(stack, order_id)
    assert item.state == ItemState.QUEUED and item.leased_by_agent_id is None
    assert "released" in item_events(stack, order_id)
    assert "releasing their leases" in stack.log("agent")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def serve_api(stack: Any) -> str:
    """Start ``workmanager serve`` in the stack on a free port; its base URL once it answers."""
    port = free_port()
    stack.start(
        "api",
        [str(Path(sys.executable).parent / "workmanager"), "serve", "--port", str(port)],
    )
    base = f"http://127.0.0.1:{port}"
    stack.wait_for(lambda: healthy(base), 60, "the API to answer")
    return base


def test_sigterm_on_the_api_drains_an_in_flight_request(make_stack) -> None:
    stack = make_stack(auth="none", api_shutdown_grace_seconds="20")
    base = serve_api(stack)
    order_id = stack.wm.propose("e2e.echo", {"n": 1})
    lease = stack.wm.agent.checkout("a", order_id=order_id)
    assert lease is not None
    stack.wm.agent.submit(lease, {"ok": True})
    # No control worker runs: approve?wait=30 holds its request until the server stops.
    answers: list[Any] = []

    def approve() -> None:
        request = urllib.request.Request(
            f"{base}/agent/work/orders/{order_id}/approve?wait=30",
            method="POST",
            data=b"",
            headers={"X-Idempotency-Key": uuid.uuid4().hex},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                answers.append((r.status, json.loads(r.read())))
        except urllib.error.HTTPError as exc:
            answers.append((exc.code, json.loads(exc.read())))
        except OSError as exc:
            answers.append(("error", str(exc)))

    caller = threading.Thread(target=approve)
    caller.start()
    time.sleep(1.0)  # the request is in flight
    started = time.monotonic()
    proc = stack.procs.pop("api")
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert not healthy(base), "a new connection was accepted after SIGTERM"
    code = proc.wait(timeout=30)
    caller.join(timeout=30)
    # uvicorn re-raises the SIGTERM it caught once it has drained, so the exit is by it.
    assert code in (0, -signal.SIGTERM), code
    # the request in flight was answered, not cut off: a waiting approval answers at once
    # when the server stops (202, the order as it stands), not at the end of its wait
    assert answers and answers[0][0] == 202, answers
    assert answers[0][1]["order"]["state"] == OrderState.APPROVED
    assert time.monotonic() - started < 15  # well before its 30 s wait and the 20 s grace
    assert stack.wm.queries.order(order_id)["state"] == OrderState.APPROVED


def test_sighup_restarts_the_agent_which_then_takes_work(make_stack) -> None:
    """Celery restarts a worker on SIGHUP by running ``sys.executable + sys.argv`` again:
    the agent, started as ``python -m workers.agent``, ran again as a path, failed on its
    relative imports and was gone (a signals pass)."""
    stack = make_stack()
    stack.worker()
    stack.agent("e2e.echo", "tests.support.pipeline:echo_handler", concurrency=1)
    stack.wait_for(lambda: "ready" in stack.log("agent"), 60, "the agent to start")
    agent = stack.procs["agent"]
    agent.send_signal(signal.SIGHUP)
    stack.wait_for(lambda: stack.log("agent").count("ready") >= 2, 60, "the agent to start again")
    assert agent.poll() is None, stack.log("agent")[-3000:]
    assert "Restarting celery worker" in stack.log("agent")
    order_id = enqueue_order("e2e.echo", {"n": 1}, app=stack.app)

    def completed() -> bool:
        try:
            return stack.wm.queries.order(order_id)["state"] == OrderState.COMPLETED
        except NotFound:  # the control worker has not created it yet
            return False

    stack.wait_for(completed, 90, "the restarted agent to do the work")


def test_a_second_agent_of_one_id_on_rabbitmq_is_one_line(make_stack) -> None:
    """Two agents given the same ``--agent-id`` on one host over RabbitMQ: the second
    ended with Celery's 22-frame traceback (``ResourceLocked`` on its control queue; a
    Celery pass). It is refused before it starts, in one line with a hint."""
    stack = make_stack(broker="rabbitmq")
    stack.agent("e2e.echo", "tests.support.pipeline:echo_handler", concurrency=1)
    stack.wait_for(lambda: "ready" in stack.log("agent"), 60, "the first agent to start")
    command = [sys.executable, "-m", "workers.agent", "--type", "e2e.echo", "--handler",
               "tests.support.pipeline:echo_handler", "--agent-id", "agent-1"]  # fmt: skip
    twin = stack.start("twin", command)
    assert twin.wait(timeout=60) == 1
    said = stack.log("twin")
    assert "error [configuration_error]: --agent-id: an agent named agent-1@" in said, said
    assert "Traceback" not in said and "hint: give each agent process its own" in said


def test_agent_json_keeps_stdout_for_json(make_stack, tmp_path: Path) -> None:
    """``workmanager agent --json``: Celery printed its multi-line banner on stdout, which a
    script reading the agent's JSON output could not parse. stdout carries JSON only; the
    worker's log lines stay on stderr."""
    import subprocess

    stack = make_stack()
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    command = [sys.executable, "-m", "workers.agent", "--type", "e2e.echo", "--handler",
               "tests.support.pipeline:echo_handler", "--json"]  # fmt: skip
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(command, env=stack.env, cwd=ROOT, stdout=stdout, stderr=stderr)
        stack.procs["json-agent"] = proc
        stack.wait_for(lambda: "ready" in err.read_text(), 60, "the agent to start")
        code, _ = terminate(stack, "json-agent")
    assert code == 0, err.read_text()[-2000:]
    for line in out.read_text().splitlines():
        json.loads(line)  # every line of stdout is JSON (there are none on a clean run)
    assert "celery@" not in out.read_text() and "[tasks]" not in out.read_text()


def test_a_group_sigterm_on_a_prefork_agent_spends_no_attempt(make_stack, tmp_path) -> None:
    """A signals pass: honcho, or a unit without ``KillMode=mixed``, sends SIGTERM to the
    whole group, and billiard ends each pool child with ``SystemExit(-241)`` in its
    handler, which the agent reported as the handler's failure: the attempt spent, and
    three stops failed the order for good. The lease is given back now, unspent."""
    stack = make_stack(agent_shutdown_grace_seconds="1")
    stack.worker()
    stack.agent("e2e.echo", GATED, concurrency=1, pool="prefork")
    order_id = enqueue_order("e2e.echo", {"n": 1}, app=stack.app)
    stack.wait_for(lambda: _started(stack, order_id), 60, "the handler to start")
    proc = stack.procs.pop("agent")
    os.killpg(proc.pid, signal.SIGTERM)  # the main process and its children alike
    try:
        proc.wait(timeout=60)
    except Exception:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    item = stack.wait_for(
        lambda: (i := item_of(stack, order_id)).state == ItemState.QUEUED and i,
        30,
        "the item back in the queue",
    )
    assert item.attempts == 0 and item.error is None, (item.attempts, item.error)
    assert "failed" not in item_events(stack, order_id)
    assert "handler failed" not in stack.log("agent")


def test_sighup_past_the_grace_restarts_the_agent(make_stack, tmp_path) -> None:
    """The same pass: SIGHUP (Celery's restart) with a handler running past the grace
    released the lease and ended the agent with ``os._exit``, which runs no exit function:
    the restart Celery had registered never ran, and the agent stayed down."""
    stack = make_stack(agent_shutdown_grace_seconds="1")
    stack.worker()
    stack.agent("e2e.echo", GATED, concurrency=1)
    order_id = enqueue_order("e2e.echo", {"n": 1}, app=stack.app)
    stack.wait_for(lambda: _started(stack, order_id), 60, "the handler to start")
    proc = stack.procs["agent"]
    proc.send_signal(signal.SIGHUP)
    stack.wait_for(
        lambda: item_of(stack, order_id).state == ItemState.QUEUED, 30, "the lease released"
    )
    (tmp_path / "markers" / "go-all").touch()  # the restarted agent finishes the item
    stack.wait_for(
        lambda: stack.wm.queries.order(order_id)["state"] == OrderState.COMPLETED,
        90,
        "the restarted agent to do the released item",
    )
    assert proc.poll() is None, "the agent ended instead of restarting"
    assert "Restarting celery worker" in stack.log("agent")


def test_a_request_the_grace_cuts_off_is_answered_in_the_envelope(make_stack) -> None:
    """A signals pass: a request still running when ``API_SHUTDOWN_GRACE_SECONDS`` ran out
    was cancelled by uvicorn, which answered a plain-text ``Internal Server Error`` and
    logged a traceback. It is a 503 ``unavailable`` envelope now, saying the request may
    or may not have been done."""
    from sqlalchemy import text

    stack = make_stack(auth="none", api_shutdown_grace_seconds="2")
    base = serve_api(stack)
    stack.wm.propose("e2e.echo", {"n": 1})
    answers: list[Any] = []

    def checkout() -> None:
        request = urllib.request.Request(
            f"{base}/agent/work/checkout", method="POST", data=b"",
            headers={"X-Idempotency-Key": uuid.uuid4().hex, "X-Agent-ID": "cut-off"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                answers.append((r.status, r.read()))
        except urllib.error.HTTPError as exc:
            answers.append((exc.code, exc.read()))

    with stack.wm.db.engine.connect() as held:
        held.execute(text("LOCK TABLE work_items IN ACCESS EXCLUSIVE MODE"))  # the checkout waits
        caller = threading.Thread(target=checkout)
        caller.start()
        time.sleep(1.5)  # the request is in flight, waiting on the lock
        proc = stack.procs.pop("api")
        proc.send_signal(signal.SIGTERM)
        caller.join(timeout=30)
        held.rollback()
    proc.wait(timeout=30)
    assert answers, "no answer"
    status, body = answers[0]
    assert status == 503, answers
    error = json.loads(body)["error"]
    assert error["code"] == "unavailable" and "may have been done or not" in error["message"]
    assert "Traceback" not in stack.log("api")
