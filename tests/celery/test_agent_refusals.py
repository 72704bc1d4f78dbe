"""A consumer agent whose handler returned, but whose output the service refused for good
(``validation_failed``, ``malformed_json``, …), says so in one log line without a
traceback, reports ``{code, message}`` naming the refused paths, not retryable;
a handler that raises is still a crash (traceback, retryable). The consumer runs directly
(no Celery) on SQLite and PostgreSQL; the last test runs a real agent process."""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from tasks.producer import enqueue_order
from tests.support.types import Parts, Simple
from workers.agent import AgentConsumer
from workmanager import AgentInfo, Registry, WorkManager
from workmanager.db.models import Item
from workmanager.states import ItemState

AGENT = "workmanager.agent"


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"answer": 1}
    for _ in range(depth):
        value = {"answer": 1, "in": value}
    return value


@pytest.fixture
def wm(make_wm: Any, database: str) -> WorkManager:
    manager: WorkManager = make_wm(
        db=database, backend="database", registry=Registry([Simple(), Parts()]), max_json_depth=8
    )
    return manager


def run(wm: WorkManager, order_type: str, handler: Any) -> tuple[str, dict[str, Any]]:
    """Propose one order, run the consumer on its one item; (outcome, the item after)."""
    order_id = wm.propose(order_type, {})
    (item,) = wm.queries.order(order_id)["items"]
    outcome, _ = AgentConsumer(wm, handler, AgentInfo(id="refusals-1")).handle(
        uuid.UUID(item["id"])
    )
    return outcome, wm.queries.item(uuid.UUID(item["id"]))


def agent_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The consumer's own lines (workers/agent.py), not the agent API's (services/)."""
    return [r for r in caplog.records if r.name == AGENT and "workers" in r.pathname]


@pytest.fixture
def reported(wm: WorkManager, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, bool]]:
    """Each (error, retryable) the consumer passes to ``fail``."""
    calls: list[tuple[Any, bool]] = []
    fail = wm.agent.fail

    def spy(lease: Any, error: Any, retryable: bool = True, agent: Any = None) -> Any:
        calls.append((error, retryable))
        return fail(lease, error, retryable=retryable, agent=agent)

    monkeypatch.setattr(wm.agent, "fail", spy)
    return calls


REFUSED = [
    pytest.param(
        {"answer": 1, "when": datetime(2024, 1, 2, tzinfo=UTC)},
        "validation_failed",
        "result.when: datetime is not JSON",
        id="datetime",
    ),
    pytest.param([{"answer": 1}], "validation_failed", "result: must be an object", id="list"),
    pytest.param(None, "validation_failed", "result: must be an object", id="none"),
    pytest.param(
        {"other": 1},
        "validation_failed",
        "result: 'answer' is a required property",
        id="result-schema",
    ),
    pytest.param(
        {"answer": "forbidden"}, "validation_failed", "result.answer: not allowed", id="hook"
    ),
    pytest.param(nested(12), "malformed_json", "nests deeper than 8 levels", id="too-deep"),
]


@pytest.mark.parametrize(("result", "code", "said"), REFUSED)
def test_a_refused_result_is_one_line_with_details_and_not_retryable(
    wm: WorkManager,
    reported: list[tuple[Any, bool]],
    caplog: pytest.LogCaptureFixture,
    result: Any,
    code: str,
    said: str,
) -> None:
    caplog.set_level(logging.INFO, logger=AGENT)
    outcome, item = run(wm, "test.simple", lambda view, lease: result)

    assert outcome == "refused"
    (record,) = [r for r in agent_records(caplog) if r.levelno >= logging.WARNING]
    line = record.getMessage()
    assert line.startswith(f"submit of {item['id']} refused [{code}]: ") and said in line, line
    # and the agent API says the item ended for good, with its order's id
    (ended,) = [r.getMessage() for r in caplog.records if "failed for good" in r.getMessage()]
    assert ended.startswith(f"item {item['id']} of order {item['order_id']} failed for good")
    assert record.exc_info is None  # the handler did not raise: no traceback
    assert "handler failed" not in caplog.text and "Traceback" not in caplog.text

    ((error, retryable),) = reported
    assert retryable is False
    assert error["code"] == code and said in error["message"]
    assert set(error) == {"code", "message"}  # what the item stores: the paths are in the message
    # not retryable: the item fails at once, its first attempt spent, the path recorded
    assert item["state"] == "failed" and item["attempts"] == 1
    assert item["error"]["code"] == code and said in item["error"]["message"]


def test_the_reported_message_names_the_services_paths(
    wm: WorkManager, reported: list[tuple[Any, bool]]
) -> None:
    run(wm, "test.simple", lambda view, lease: {"answer": 1, "when": datetime.now(UTC)})
    ((error, _),) = reported
    assert error == {"code": "validation_failed", "message": "result.when: datetime is not JSON"}


def test_a_refusal_with_many_problems_is_still_one_bounded_line(
    wm: WorkManager, reported: list[tuple[Any, bool]], caplog: pytest.LogCaptureFixture
) -> None:
    many = {"answer": 1, "when": [datetime.now(UTC)] * 200}
    outcome, item = run(wm, "test.simple", lambda view, lease: many)
    assert outcome == "refused"
    (line,) = [r.getMessage() for r in agent_records(caplog) if "refused" in r.getMessage()]
    assert line.startswith(f"submit of {item['id']} refused [validation_failed]: result.when[0]")
    assert "\n" not in line and len(line) <= 1100 and line.endswith("…")
    ((error, _),) = reported
    assert len(error["message"]) <= 1000 and item["state"] == "failed"


def test_a_handler_that_raises_is_still_a_crash(
    wm: WorkManager, reported: list[tuple[Any, bool]], caplog: pytest.LogCaptureFixture
) -> None:
    def broken(view: Any, lease: Any) -> dict[str, Any]:
        raise KeyError("url")

    caplog.set_level(logging.INFO, logger=AGENT)
    outcome, item = run(wm, "test.simple", broken)

    assert outcome == "failed"
    (record,) = [r for r in agent_records(caplog) if r.levelno >= logging.WARNING]
    assert record.getMessage().startswith("handler failed on ")
    assert record.exc_info is not None  # the user's code raised: its traceback, once
    assert " refused [" not in caplog.text
    assert reported == [({"code": "KeyError", "message": "'url'"}, True)]
    assert item["state"] == "queued" and item["attempts"] == 1  # retried with backoff


def test_a_handler_raising_a_workmanager_error_is_still_a_crash(
    wm: WorkManager, reported: list[tuple[Any, bool]], caplog: pytest.LogCaptureFixture
) -> None:
    """Only what the service refuses is a refusal: the same error raised by the handler's
    own code (say, validating its input) is the handler failing, retryable."""
    from workmanager.errors import ValidationFailed

    def strict(view: Any, lease: Any) -> dict[str, Any]:
        raise ValidationFailed.at("input.url", "missing", "required")

    outcome, item = run(wm, "test.simple", strict)
    assert outcome == "failed" and "handler failed on" in caplog.text
    ((error, retryable),) = reported
    assert retryable is True and error["code"] == "validation_failed"
    assert item["state"] == "queued"


class DictParts:
    """Yields a dict where a (part_key, payload) pair belongs."""

    def __init__(self) -> None:
        self.closed = False

    def parts(self, item: Any, lease: Any) -> Iterator[Any]:
        try:
            yield "a", {"v": 1}
            yield {"b": {"text": "..."}}
            yield "b", {"text": "never reached"}
        finally:
            self.closed = True


def test_parts_that_are_not_pairs_are_refused(
    wm: WorkManager, reported: list[tuple[Any, bool]], caplog: pytest.LogCaptureFixture
) -> None:
    handler = DictParts()
    caplog.set_level(logging.INFO, logger=AGENT)
    outcome, item = run(wm, "test.parts", handler)

    assert outcome == "refused"
    (record,) = [r for r in agent_records(caplog) if r.levelno >= logging.WARNING]
    line = record.getMessage()
    assert line == (
        f"submit of {item['id']} refused [validation_failed]: "
        "parts[1]: parts() must yield (part_key, payload) pairs, got dict"
    )
    assert record.exc_info is None
    assert "not enough values to unpack" not in caplog.text and "Traceback" not in caplog.text
    assert handler.closed  # the generator was closed, its cleanup ran
    ((error, retryable),) = reported
    assert retryable is False and error["code"] == "validation_failed"
    assert error["message"].startswith("parts[1]: ")
    assert item["state"] == "failed"
    assert "parts() must yield (part_key, payload) pairs" in item["error"]["message"]


class TripleParts:
    """Yields a triple where a pair belongs (a mutation pass: its third value was dropped
    and the part stored, the docs saying anything but a pair is refused)."""

    def parts(self, item: Any, lease: Any) -> Iterator[Any]:
        yield "a", {"v": 1}, "extra"


def test_a_part_that_is_a_triple_is_refused(
    wm: WorkManager, reported: list[tuple[Any, bool]]
) -> None:
    outcome, item = run(wm, "test.parts", TripleParts())
    assert outcome == "refused" and item["state"] == "failed"
    ((error, _),) = reported
    assert error["message"] == (
        "parts[0]: parts() must yield (part_key, payload) pairs, got tuple"
    ), error


class BadPart:
    """Part ``a`` must hold an integer ``v``."""

    def parts(self, item: Any, lease: Any) -> Iterator[tuple[str, Any]]:
        yield "a", {"v": "one"}


def test_a_refused_part_names_its_key(
    wm: WorkManager, reported: list[tuple[Any, bool]], caplog: pytest.LogCaptureFixture
) -> None:
    outcome, item = run(wm, "test.parts", BadPart())
    assert outcome == "refused"
    assert "refused [validation_failed]: part 'a': " in caplog.text
    assert "Traceback" not in caplog.text
    ((error, retryable),) = reported
    assert retryable is False and error["message"].startswith("part 'a': ")
    assert item["state"] == "failed"


class MissingPart:
    """Yields ``a`` only; strict finalize needs ``a`` and ``b``."""

    def parts(self, item: Any, lease: Any) -> Iterator[tuple[str, Any]]:
        yield "a", {"v": 1}


def test_a_refused_finalize_is_a_refusal(
    wm: WorkManager, reported: list[tuple[Any, bool]], caplog: pytest.LogCaptureFixture
) -> None:
    outcome, item = run(wm, "test.parts", MissingPart())
    assert outcome == "refused"
    assert "refused [missing_parts]: " in caplog.text
    assert "Traceback" not in caplog.text
    ((error, retryable),) = reported
    assert (error["code"], retryable) == ("missing_parts", False)
    assert item["state"] == "failed"


# --- a real agent process -------------------------------------------------------------


def dated_handler(item: Any, lease: Any) -> dict[str, Any]:
    """Returns a datetime: the agent process below must refuse it in one line."""
    return {"at": datetime(2024, 1, 2, tzinfo=UTC)}


@pytest.mark.postgres
@pytest.mark.redis
def test_the_agent_process_logs_a_refusal_in_one_line(make_stack: Any) -> None:
    stack = make_stack()
    stack.worker()
    stack.agent("e2e.echo", "tests.celery.test_agent_refusals:dated_handler", concurrency=1)
    order_id = enqueue_order("e2e.echo", {"n": 1}, app=stack.app)

    def failed_item() -> Any:
        with stack.wm.db.transaction() as s:
            return s.scalars(
                select(Item).where(Item.order_id == order_id, Item.state == ItemState.FAILED)
            ).first()

    item = stack.wait_for(failed_item, 60, "the item failed")
    assert item.attempts == 1  # not retried: the same result would be refused again
    assert item.error["code"] == "validation_failed"
    assert item.error["message"] == "result.at: datetime is not JSON"
    log = stack.log("agent")
    assert "refused [validation_failed]: result.at: datetime is not JSON" in log
    assert "handler failed" not in log and "Traceback" not in log


class Flaky(Simple):
    """A type whose submission check meets an outage (its own code raises)."""

    type = "test.flaky-check"

    def validate_submission(self, item: Any, result: Any) -> None:
        raise ConnectionError("the reference service did not answer")


def test_a_type_hook_that_crashes_is_retried_as_a_crash_not_refused(
    make_wm: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A crash in the order type's own check is a 422 ``hook_error`` to the caller, but
    the same result may pass once the outage is over: retryable, not a refusal that
    fails the order at once."""
    wm = make_wm(db="sqlite", backend="database", registry=Registry([Flaky()]))
    calls: list[tuple[Any, bool]] = []
    fail = wm.agent.fail

    def spy(lease: Any, error: Any, retryable: bool = True, agent: Any = None) -> Any:
        calls.append((error, retryable))
        return fail(lease, error, retryable=retryable, agent=agent)

    wm.agent.fail = spy  # type: ignore[method-assign]
    outcome, item = run(wm, "test.flaky-check", lambda view, lease: {"answer": 1})
    assert outcome == "failed"
    assert [retryable for _, retryable in calls] == [True]
    assert " refused [" not in caplog.text
    assert item["state"] == ItemState.QUEUED.value  # back in the queue for another attempt
    # said as the type's check failing, with its error, not as the handler failing: the
    # line and the recorded error name the hook's exception
    assert "handler failed" not in caplog.text
    assert "the order type's check failed on" in caplog.text
    ((error, _),) = calls
    assert error["code"] == "validation_failed"
    assert "ConnectionError: the reference service did not answer" in error["message"]


class NoParts:
    """parts() that returns None (a forgotten ``return``/``yield``)."""

    def parts(self, item: Any, lease: Any) -> Any:
        return None


def test_parts_that_returns_nothing_iterable_is_refused(
    wm: WorkManager, reported: list[tuple[Any, bool]], caplog: pytest.LogCaptureFixture
) -> None:
    """It was "handler failed" with a TypeError traceback, retried until the attempts
    were spent; it is the handler's output that is wrong, so a refusal, failed at once."""
    outcome, item = run(wm, "test.parts", NoParts())
    assert outcome == "refused" and "Traceback" not in caplog.text
    assert "parts() must return an iterable of (part_key, payload) pairs" in caplog.text
    ((error, retryable),) = reported
    assert error["code"] == "validation_failed"
    assert retryable is False and item["state"] == "failed"


def test_an_async_handler_is_refused_at_start_up() -> None:
    """It passed the start-up check, then every item failed with "result: must be an
    object" and a RuntimeWarning that a coroutine was never awaited."""
    from workers.handlers import load_handler
    from workmanager.errors import ConfigurationError

    for reference in ("tests.celery.test_agent_refusals:async_handler",
                      "tests.celery.test_agent_refusals:AsyncParts"):  # fmt: skip
        with pytest.raises(ConfigurationError, match="is async") as refused:
            load_handler(reference)
        assert refused.value.hint is not None and "asyncio.run" in refused.value.hint


async def async_handler(item: Any, lease: Any) -> dict[str, Any]:
    return {"answer": 1}


class AsyncParts:
    async def parts(self, item: Any, lease: Any) -> Any:
        yield "a", {"v": 1}


def test_a_heartbeat_that_meets_its_own_submit_says_nothing(
    make_wm: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by an adversarial pass: a beat on its way when the handler's submit ended the
    lease logged "heartbeat of … failed; trying again" with a traceback ending in
    ``IllegalStateTransition`` (half the items of a run, on the database backend)."""
    import logging

    from tests.support.types import Simple
    from workers.handlers import Heartbeats

    wm = make_wm(db="sqlite", backend="database", registry=Registry([Simple()]))
    order_id = wm.propose("test.simple", {})
    lease = wm.agent.checkout("a", order_id=order_id)
    assert lease is not None
    beats = Heartbeats(wm, lease.agent, every=3600)
    with caplog.at_level(logging.DEBUG, logger="workmanager.agent"), beats.holding(lease):
        wm.agent.submit(lease, {"answer": 1})  # the submit wins; the beat comes after it
        [key] = list(beats._due)
        beats._beat(key, lease)
        assert beats.held() == []  # stopped beating it
    assert wm.queries.item(lease.item_id)["state"] == "submitted"
    assert "Traceback" not in caplog.text and "trying again" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_an_item_gone_while_its_handler_ran_is_one_line(
    wm: WorkManager, reported: list[tuple[Any, bool]], caplog: pytest.LogCaptureFixture
) -> None:
    """Its order deleted (``ops prune``, ``forget``) or the database restored from an older
    backup while the handler worked: the submit finds no item. That was "handler failed"
    with a traceback, then a failed report of the failure; the handler did not fail."""
    from sqlalchemy import delete

    from workmanager.db.models import Order

    def outlived(view: Any, lease: Any) -> dict[str, Any]:
        with wm.db.transaction() as s:
            s.execute(delete(Order).where(Order.id == lease.order_id))
        return {"answer": 1}

    caplog.set_level(logging.INFO, logger=AGENT)
    order_id = wm.propose("test.simple", {})
    (item,) = wm.queries.order(order_id)["items"]
    consumer = AgentConsumer(wm, outlived, AgentInfo(id="refusals-1"))
    outcome, _ = consumer.handle(uuid.UUID(item["id"]))
    assert outcome == "lost" and reported == []
    (record,) = [r for r in agent_records(caplog) if r.levelno >= logging.WARNING]
    assert record.getMessage().startswith("item ") and "is gone" in record.getMessage()
    assert record.exc_info is None


class _Cancelled(BaseException):
    """As trio's or gevent's cancellations, pytest's outcomes: no Exception."""


@pytest.mark.parametrize(
    "raised", ["CancelledError", "GeneratorExit", "KeyboardInterrupt", "_Cancelled"]
)
def test_a_handler_raising_a_base_exception_is_a_crash_too(
    wm: WorkManager, reported: list[tuple[Any, bool]], raised: str
) -> None:
    """``asyncio.CancelledError``, ``GeneratorExit``, ``KeyboardInterrupt`` and any other
    BaseException got past the handler's ``except`` into Celery's thread pool, the slot
    hung for good, nothing was reported, and with one slot the agent took nothing more
    (a solo-pool agent ended)."""
    import asyncio

    error = {
        "CancelledError": asyncio.CancelledError(),
        "GeneratorExit": GeneratorExit(),
        "KeyboardInterrupt": KeyboardInterrupt(),
        "_Cancelled": _Cancelled(),
    }[raised]

    def cancelled(view: Any, lease: Any) -> dict[str, Any]:
        raise error

    outcome, item = run(wm, "test.simple", cancelled)
    assert outcome == "failed" and item["state"] == "queued"
    assert [(e["code"], retryable) for e, retryable in reported] == [(raised, True)]


def test_an_exception_whose_message_cannot_be_read_is_still_reported(
    wm: WorkManager, reported: list[tuple[Any, bool]]
) -> None:
    """``str(exc)`` raised in the report: no ``fail`` was sent, the lease was held to its
    TTL and the exception named nowhere."""

    class BadStr(Exception):
        def __str__(self) -> str:
            return self.never_set  # type: ignore[attr-defined,no-any-return]

    def raises(view: Any, lease: Any) -> dict[str, Any]:
        raise BadStr()

    outcome, item = run(wm, "test.simple", raises)
    assert outcome == "failed" and item["state"] == "queued"
    [(error, retryable)] = reported
    assert error == {"code": "BadStr", "message": "BadStr (its message could not be read)"}
    assert retryable


def test_a_handler_object_with_an_async_call_is_refused_at_start_up() -> None:
    """Only ``async def`` functions were seen: an object whose ``__call__`` is async
    started, and every item failed on a coroutine ("result: must be an object")."""
    import types

    from workers.handlers import load_handler
    from workmanager.errors import ConfigurationError

    class AsyncCall:
        async def __call__(self, view: Any, lease: Any) -> dict[str, Any]:
            return {"answer": 1}

    module = types.ModuleType("h13_async_handlers")
    module.AsyncCall = AsyncCall  # type: ignore[attr-defined]
    import sys

    sys.modules["h13_async_handlers"] = module
    try:
        with pytest.raises(ConfigurationError, match="is async"):
            load_handler("h13_async_handlers:AsyncCall")
    finally:
        del sys.modules["h13_async_handlers"]


def generator_handler(item: Any, lease: Any) -> Any:
    yield {"answer": 1}


class GeneratorHandle:
    def handle(self, item: Any, lease: Any) -> Any:
        yield {"answer": 1}


def test_a_generator_handler_is_refused_at_start_up() -> None:
    """A plain handler written as a generator started, then every item failed with
    "result: must be an object": only ``parts()`` yields."""
    from workers.handlers import load_handler
    from workmanager.errors import ConfigurationError

    for name in ("generator_handler", "GeneratorHandle"):
        with pytest.raises(ConfigurationError, match="is a generator") as refused:
            load_handler(f"tests.celery.test_agent_refusals:{name}")
        assert refused.value.hint is not None and "parts()" in refused.value.hint
    assert load_handler("tests.celery.test_agent_refusals:DictParts")  # parts() may yield


class MisspeltMode:
    finalize_mode = "best-effort"

    def parts(self, item: Any, lease: Any) -> Iterator[Any]:
        yield "a", {"x": 1}


def test_a_misspelt_finalize_mode_is_refused_at_start_up() -> None:
    """``finalize_mode = "best-effort"`` started, then every finalize was refused
    (``mode: must be strict or best_effort``) and every order failed for good."""
    from workers.handlers import load_handler
    from workmanager.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="finalize_mode 'best-effort'"):
        load_handler("tests.celery.test_agent_refusals:MisspeltMode")


class OutageInParts:
    def parts(self, item: Any, lease: Any) -> Iterator[Any]:
        from workmanager.errors import TransientError

        yield "a", {"v": 1}
        raise TransientError("the handler's own lookup timed out")


@pytest.mark.parametrize("where", ["handle", "parts"])
def test_a_handlers_own_transient_error_is_a_handler_failure(
    wm: WorkManager,
    reported: list[tuple[Any, bool]],
    caplog: pytest.LogCaptureFixture,
    where: str,
) -> None:
    """A TransientError raised by the handler's own code (a call of its own that met an
    outage) was logged as "could not deliver the work", as if the service had not taken
    its output: it is the handler failing, retried."""
    from workmanager.errors import TransientError

    def lookup(view: Any, lease: Any) -> dict[str, Any]:
        raise TransientError("the handler's own lookup timed out")

    caplog.set_level(logging.INFO, logger=AGENT)
    handler = lookup if where == "handle" else OutageInParts()
    outcome, item = run(wm, "test.simple" if where == "handle" else "test.parts", handler)
    assert outcome == "failed" and item["state"] == "queued"
    assert "could not deliver" not in caplog.text
    (record,) = [r for r in agent_records(caplog) if r.levelno >= logging.WARNING]
    assert record.getMessage().startswith("handler failed on ")
    assert [(e["code"], retryable) for e, retryable in reported] == [("internal_error", True)]


def test_a_handler_failure_saying_a_nul_is_still_reported(
    wm: WorkManager, reported: list[tuple[Any, bool]]
) -> None:
    """Found by an adversarial pass: the fail report carried the exception's text as it
    was, which ``fail`` refused (422) for a NUL or a lone surrogate in it: the item stayed
    leased until its TTL ran out and the error was lost."""

    def says(view: Any, lease: Any) -> dict[str, Any]:
        raise RuntimeError("tool said a\x00b")  # lone surrogates: test_jsonvalues

    outcome, item = run(wm, "test.simple", says)
    assert outcome == "failed" and item["state"] == "queued", item
    assert [e["message"] for e, _ in reported] == ["tool said a\ufffdb"]


def test_a_stop_signal_in_a_pool_child_gives_the_item_back_unspent(
    wm: WorkManager, reported: list[tuple[Any, bool]]
) -> None:
    """A signals pass: a process group's SIGTERM reaches a prefork agent's children, where
    billiard raises ``SystemExit(-241)`` in the handler. It was reported as the handler's
    failure, its attempt spent: three stops failed an order for good. The lease is released
    now (the attempt given back) and the exit goes on."""

    def stopped(view: Any, lease: Any) -> dict[str, Any]:
        raise SystemExit(-(256 - 15))

    order_id = wm.propose("test.simple", {})
    (item,) = wm.queries.order(order_id)["items"]
    consumer = AgentConsumer(wm, stopped, AgentInfo(id="stopped-1"))
    with pytest.raises(SystemExit):
        consumer.handle(uuid.UUID(item["id"]))
    after = wm.queries.item(uuid.UUID(item["id"]))
    assert after["state"] == "queued" and after["attempts"] == 0, after
    assert after["error"] is None and reported == []
    # a handler's own sys.exit(-1) is its failure still (a review pass: any negative code
    # was taken for a stop, and the item given back for ever)
    outcome, failed = run(wm, "test.simple", lambda view, lease: sys.exit(-1))
    assert outcome == "failed" and failed["error"]["code"] == "SystemExit", failed


def test_no_handler_starts_once_the_shutdown_began(wm: WorkManager, monkeypatch) -> None:
    """The same pass: a SIGTERM while a checkout was under way let its handler start after
    the grace had been judged (nothing held yet), and run on without a limit. A message
    the stopping agent meets is left to another agent; a lease its checkout got as the
    shutdown began is given back, the handler never run."""
    ran: list[str] = []

    def handler(view: Any, lease: Any) -> dict[str, Any]:
        ran.append(str(lease.item_id))
        return {"answer": 1}

    order_id = wm.propose("test.simple", {})
    (item,) = wm.queries.order(order_id)["items"]
    item_id = uuid.UUID(item["id"])
    consumer = AgentConsumer(wm, handler, AgentInfo(id="stopping-1"))
    consumer.stopping.set()
    assert consumer.handle(item_id) == ("later", 0.0)
    assert wm.queries.item(item_id)["state"] == "queued"

    consumer.stopping.clear()
    checkout = wm.agent.checkout

    def signalled_meanwhile(*args: Any, **kwargs: Any) -> Any:
        lease = checkout(*args, **kwargs)
        consumer.stopping.set()  # SIGTERM during the checkout's statement
        return lease

    monkeypatch.setattr(wm.agent, "checkout", signalled_meanwhile)
    assert consumer.handle(item_id) == ("released", 0.0)
    after = wm.queries.item(item_id)
    assert ran == [] and after["state"] == "queued" and after["attempts"] == 0, after
