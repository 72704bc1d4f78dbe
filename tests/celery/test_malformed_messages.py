"""A hand-built task message that is malformed is refused, one logged line, and the worker
lives on (tasks/guard.py). The task names are public (SPEC §8.1): a body that is not
``[args, kwargs, embed]`` or a ``timelimit`` header that is not two numbers made Celery
raise an "Unrecoverable error" and exit, the message went back to the queue, and every
worker started after it died on it too; an ``embed`` that is not an object was taken and
never run. A real ``celery -A tasks worker`` here, on Redis."""

from __future__ import annotations

import sys
import uuid
from typing import Any

import pytest
import redis

from tests.celery.conftest import Stack
from workmanager.db.models import Order

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

CREATE = "workmanager.orders.create"


def send_raw(stack: Stack, body: Any, without: str = "", **headers: Any) -> str:
    """A ``workmanager.orders.create`` message as Celery builds it, its body (and headers;
    ``without``: one taken out) then replaced: what a hand-built producer may send.
    Returns the message's task id."""
    task_id = str(uuid.uuid4())
    message = stack.app.amqp.as_task_v2(task_id, CREATE, args=(), kwargs={})
    message.headers.update(headers)
    message.headers.pop(without, None)
    tampered = message._replace(body=body)
    with stack.app.producer_or_acquire() as producer:
        stack.app.amqp.send_task_message(producer, CREATE, tampered, queue="workmanager")
    return task_id


def order_state(stack: Stack, order_id: uuid.UUID) -> str | None:
    with stack.wm.db.transaction() as s:
        order = s.get(Order, order_id)
        return order.state if order else None


def test_malformed_messages_are_discarded_and_the_worker_lives_on(make_stack: Any) -> None:
    stack = make_stack()
    stack.worker(concurrency=2)
    poisoned = [
        send_raw(stack, {"type": "e2e.echo"}),  # an object, not [args, kwargs, embed]
        send_raw(stack, [[], {"type": "e2e.echo", "payload": {}}, "oops"]),  # embed
        send_raw(stack, [[], {"type": "e2e.echo", "payload": {}}, {}], timelimit="x"),
        send_raw(stack, "not even a list"),
        # a mutation pass: each of these ended the worker, or would have with one check less
        send_raw(stack, [[], {"type": "e2e.echo", "payload": {}}, {}, "extra"]),
        send_raw(stack, [[], {"type": "e2e.echo", "payload": {}}, {}], timelimit=[5]),
        send_raw(stack, [[], {"type": "e2e.echo", "payload": {}}, {}], timelimit=[1, 2, 3]),
        # a hybrid body (an object with "args") skipped the header checks: worker dead
        send_raw(stack, {"args": [], "kwargs": {"type": "e2e.echo"}}, stamped_headers=5),
        send_raw(stack, {"args": [], "kwargs": {"type": "e2e.echo"}}, timelimit="x"),
        send_raw(stack, {"args": 5, "kwargs": {"type": "e2e.echo", "payload": {}}}),
    ]
    # an id header that is no id, or none: the request could not be built (one line each)
    unhashable = send_raw(stack, [[], {"type": "e2e.echo", "payload": {}}, {}], id=["x"])
    send_raw(stack, [[], {"type": "e2e.echo", "payload": {}}, {}], without="id")
    hybrid = uuid.uuid4()  # a readable hybrid is run as before
    send_raw(stack, {"args": [], "kwargs": {"type": "e2e.echo", "payload": {},
                                            "order_id": str(hybrid)}})  # fmt: skip
    # a task this worker does not have, and a body that is not JSON: Celery's dozen lines
    # with a traceback each, now one line too
    unknown = stack.app.send_task("workmanager.orders.nope", queue="workmanager").id
    undecodable = str(uuid.uuid4())
    with stack.app.producer_or_acquire() as producer:
        producer.publish(
            b"not json{",
            routing_key="workmanager",
            content_type="application/json",
            content_encoding="utf-8",
            headers={"task": CREATE, "id": undecodable, "lang": "py"},
        )
    good = uuid.uuid4()
    stack.app.send_task(
        CREATE,
        kwargs={"type": "e2e.echo", "payload": {}, "order_id": str(good)},
        queue="workmanager",
    )
    stack.wait_for(lambda: order_state(stack, good) is not None, 60, "the valid order")
    stack.wait_for(lambda: order_state(stack, hybrid) is not None, 30, "the hybrid order")
    proc = stack.procs["control"]
    assert proc.poll() is None, stack.log("control")[-3000:]  # still running
    log = stack.log("control")
    assert "Unrecoverable error" not in log, log[-3000:]
    for task_id in poisoned:
        assert f"{CREATE} message {task_id}" in log, (task_id, log[-3000:])
    assert f"{CREATE} message ['x'] cannot be read" in log and unhashable
    assert f"{CREATE} message (no id) cannot be read" in log, log[-3000:]
    assert log.count("the message was discarded") == len(poisoned) + 4
    assert "Traceback" not in log, log[-3000:]
    assert "the timelimit header is not [hard, soft] seconds" in log
    assert "no task named 'workmanager.orders.nope' on this worker" in log, log[-3000:]
    assert "a message of content type 'application/json' could not be decoded" in log
    assert "the stamped_headers header is not a list of names" in log
    assert unknown and log.count("refused [invalid_message]") == len(poisoned) + 4
    # nothing left behind: not queued again, not held unacknowledged
    broker = redis.Redis.from_url(stack.settings.broker_url)
    assert broker.llen("workmanager") == 0
    stack.wait_for(lambda: broker.hlen("unacked") == 0, 30, "no message held unacknowledged")


def test_arguments_a_task_cannot_use_are_one_logged_line_each(make_stack: Any) -> None:
    """Decodable messages whose arguments are wrong: an id that is not a UUID (create,
    check_auto_approval, apply; apply without one) is one line naming the task and the
    argument, no traceback; a requester the contract does not know is a refused proposal
    recorded under the producer's id, and so is one whose type cannot be stored (a NUL in
    it: shown readable)."""
    stack = make_stack()
    stack.worker(concurrency=2)
    send = stack.app.send_task
    control = {"queue": "workmanager"}
    send(CREATE, kwargs={"type": "e2e.echo", "payload": {}, "order_id": "not-a-uuid"}, **control)
    send("workmanager.orders.check_auto_approval", kwargs={"order_id": 12345}, **control)
    send("workmanager.orders.apply", kwargs={"order_id": "zzz"}, queue="workmanager.apply")
    send("workmanager.orders.apply", kwargs={}, queue="workmanager.apply")
    send("workmanager.orders.apply", args=[str(uuid.uuid4())], queue="workmanager.apply")
    nul_id = uuid.uuid4()
    nul = {"type": "e2e.echo\x00", "payload": {}, "order_id": str(nul_id)}
    send(CREATE, kwargs=nul, **control)
    martian = uuid.uuid4()
    send(
        CREATE,
        kwargs={
            "type": "e2e.echo",
            "payload": {},
            "order_id": str(martian),
            "requested_by_type": "martian",
        },
        **control,
    )
    # By hand, with an argument create does not take, or without the payload: a TypeError
    # before the task ran, and the proposal lost; now refused under the sender's id.
    coloured, bare = uuid.uuid4(), uuid.uuid4()
    send(CREATE, kwargs={"type": "e2e.echo", "payload": {}, "order_id": str(coloured),
                         "colour": "red"}, **control)  # fmt: skip
    send(CREATE, kwargs={"type": "e2e.echo", "order_id": str(bare)}, **control)
    # A pass at what a hostile sender costs: the refused value went whole into one log line
    # (a 1 MB id, a 1 MB string quoted by the schema's message): 1 MB of log a message.
    huge = uuid.uuid4()
    send(CREATE, kwargs={"type": "e2e.strict", "payload": {"n": "Z" * 100_000},
                         "order_id": str(huge)}, **control)  # fmt: skip
    send(CREATE, kwargs={"type": "e2e.echo", "payload": {}, "order_id": "Y" * 100_000}, **control)
    for refused in (martian, coloured, bare, huge):
        stack.wait_for(lambda r=refused: order_state(stack, r) == "failed", 60, "refusals")
        order = stack.wm.queries.order(refused)
        assert order["last_error"]["code"] == "validation_failed", order["last_error"]
    assert "colour" in stack.wm.queries.order(coloured)["last_error"]["message"]
    said = stack.wait_for(lambda: "got 'YYY" in (t := stack.log("control")) and t, 30, "Y")
    assert max(map(len, said.splitlines())) < 2_000
    log = stack.wait_for(
        lambda: (text := stack.log("control")).count("refused [validation_failed]") >= 4 and text,
        30,
        "the four bad ids refused",
    )
    for line in (
        "orders.create refused [validation_failed]: order_id must be a UUID string",
        "orders.check_auto_approval refused [validation_failed]: order_id must be a UUID",
        "orders.apply refused [validation_failed]: order_id must be a UUID string, got 'zzz'",
        "orders.apply refused [validation_failed]: order_id must be a UUID string, got None",
        "orders.apply refused [validation_failed]: order_id must be given by name",
    ):
        assert line in log, (line, log[-3000:])
    # a NUL in the type: recorded too, the type shown readable (it could not be stored)
    stack.wait_for(lambda: order_state(stack, nul_id) == "failed", 30, "the NUL type")
    assert stack.wm.queries.order(nul_id)["type"] == "e2e.echo\ufffd"
    assert "Traceback" not in stack.log("control"), stack.log("control")[-3000:]


def test_arguments_that_do_not_fit_a_task_are_refused_before_it_runs(make_stack: Any) -> None:
    """A missing, extra or repeated argument raised TypeError in the task's call, with a
    traceback, after the message was taken (and a create's proposal was lost). The guard
    now refuses such a message in one line (create records too many positional arguments
    as a refused order under the producer's id); an agent's message naming an item that
    is not a UUID, or an item of another type, is one line too, and nothing is leased."""
    stack = make_stack()
    stack.worker(concurrency=2)
    stack.agent("e2e.echo", "tests.support.pipeline:echo_handler", concurrency=1)
    send = stack.app.send_task
    control = {"queue": "workmanager"}
    extra = uuid.uuid4()
    args = ["e2e.echo", {}, 0, None, None, str(extra), "system", None, None, "one too many"]
    send(CREATE, args=args, **control)
    send(CREATE, args=["e2e.echo"], kwargs={"type": "e2e.echo", "payload": {}}, **control)
    check = "workmanager.orders.check_auto_approval"
    send(check, kwargs={"order_id": str(uuid.uuid4()), "x": 1}, **control)
    send(check, kwargs={}, **control)
    send("workmanager.leases.sweep", args=[1, 2], **control)
    agents = {"queue": "agents.e2e.echo"}
    send("workmanager.agents.e2e.echo", kwargs={"item_id": "zzz"}, **agents)
    send("workmanager.agents.e2e.echo", kwargs={}, **agents)
    other = stack.wm.propose("e2e.slow", {})  # nobody's agent: its item must stay queued
    (item,) = stack.wm.queries.order(other)["items"]
    send("workmanager.agents.e2e.echo", kwargs={"item_id": item["id"]}, **agents)

    stack.wait_for(lambda: order_state(stack, extra) == "failed", 60, "too many arguments")
    assert "positional" in stack.wm.queries.order(extra)["last_error"]["message"]
    control_log = stack.wait_for(
        lambda: (t := stack.log("control")).count("the arguments do not fit") >= 4 and t,
        60,
        "the four messages refused by the guard",
    )
    for said in ("multiple values for argument 'type'", "unexpected keyword argument 'x'",
                 "missing a required argument: 'order_id'", "too many positional"):  # fmt: skip
        assert said in control_log, (said, control_log[-3000:])
    agent_log = stack.wait_for(
        lambda: (
            (t := stack.log("agent")).count("refused [validation_failed]") >= 2
            and "the arguments do not fit" in t
            and t
        ),
        60,
        "the agent's three bad messages",
    )
    assert "item_id must be a UUID string, got 'zzz'" in agent_log
    assert "it is of type 'e2e.slow', not this agent's 'e2e.echo'" in agent_log
    assert "Traceback" not in control_log + agent_log, (control_log + agent_log)[-3000:]
    assert stack.wm.queries.item(uuid.UUID(item["id"]))["state"] == "queued"
    assert stack.wm.queries.item(uuid.UUID(item["id"]))["attempts"] == 0


def test_messages_that_ended_a_prefork_worker_are_refused_and_it_lives_on(
    make_stack: Any,
) -> None:
    """Found by a producer's pass: a ``stamped_headers`` header that is not a list (Celery
    iterates it once the task is reserved) and a body nested ~500 levels (handing it to a
    pool child pickles it, recursively) each ended the worker with an "Unrecoverable
    error", the message went back, and every worker after it died on it too. Both are
    refused before the request is built; a value as deep as the tasks refuse themselves
    is still the task's (a create is recorded)."""
    stack = make_stack()
    stack.start(
        "control",
        [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-Q", "workmanager",
         "-P", "prefork", "-c", "1", "-n", f"pf-{uuid.uuid4().hex[:6]}@%h",
         "--without-gossip", "--without-mingle", "--loglevel", "INFO"],
    )  # fmt: skip
    good = {"type": "e2e.echo", "payload": {}}
    deep: Any = "x"
    for _ in range(600):
        deep = [deep]
    poisoned = [
        send_raw(stack, [[], good, {}], stamped_headers=5),
        send_raw(stack, [[], good, {}], stamped_headers=["a"], stamps="not an object"),
        send_raw(stack, [[], {"type": "e2e.echo", "payload": {"deep": deep}}, {}]),
    ]
    shallow: Any = {}
    for _ in range(200):  # past MAX_JSON_DEPTH: the task's own refusal, recorded
        shallow = {"a": shallow}
    recorded = uuid.uuid4()
    stack.app.send_task(
        CREATE,
        kwargs={"type": "e2e.echo", "payload": shallow, "order_id": str(recorded)},
        queue="workmanager",
    )
    after = uuid.uuid4()
    stack.app.send_task(CREATE, kwargs={**good, "order_id": str(after)}, queue="workmanager")
    stack.wait_for(lambda: order_state(stack, after) is not None, 90, "the good order")
    stack.wait_for(lambda: order_state(stack, recorded) == "failed", 30, "the deep one")
    assert stack.procs["control"].poll() is None, stack.log("control")[-3000:]
    log = stack.log("control")
    assert "Unrecoverable error" not in log and "Traceback" not in log, log[-3000:]
    for task_id in poisoned:
        assert f"{CREATE} message {task_id}" in log, (task_id, log[-3000:])
    assert "the stamped_headers header is not a list of names" in log
    assert "the stamps header is not an object" in log
    assert "the body nests deeper than 256 levels" in log


def test_text_no_database_stores_is_a_recorded_refusal_not_a_traceback(make_stack: Any) -> None:
    """A lone surrogate in the type, the dedupe key, the tenant or the requester raised
    UnicodeEncodeError with a traceback and the order id the producer had never
    resolved; a requester of 5,000 characters or a tenant with a NUL was refused but
    "could not be recorded" (the record stored the same value). Each is now a ``failed``
    order under the sender's id, the bad text shown readable."""
    stack = make_stack()
    stack.worker(concurrency=2)
    sent: dict[uuid.UUID, dict[str, Any]] = {}
    for odd in (
        {"type": "e2e.echo\ud800"},
        {"dedupe_key": "key\ud800"},
        {"tenant_id": "t\ud800"},
        {"tenant_id": "t\x00"},
        {"requested_by_id": "u\ud800"},
        {"requested_by_id": "u" * 5000},
        {"requested_by_id": "u\x00"},
    ):
        order_id = uuid.uuid4()
        kwargs = {"type": "e2e.echo", "payload": {}, "order_id": str(order_id), **odd}
        stack.app.send_task(CREATE, kwargs=kwargs, queue="workmanager")
        sent[order_id] = odd
    for order_id, odd in sent.items():
        stack.wait_for(lambda o=order_id: order_state(stack, o) == "failed", 60, str(odd))
        order = stack.wm.queries.order(order_id)
        assert order["last_error"]["code"] in ("validation_failed", "unknown_order_type"), odd
        assert order["tenant_id"] is None, odd
    log = stack.log("control")
    assert "Traceback" not in log and "could not be recorded" not in log, log[-3000:]
