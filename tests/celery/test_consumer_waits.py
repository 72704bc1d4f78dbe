"""What a consumer agent answers its Celery task for an item it cannot work on now
(``workers/agent.py``: ``AgentConsumer.handle`` returns ``(outcome, delay)``; the task
retries after the delay): a rate limit's ``retry_after``, an item backing off until it is
due, an item whose order is failed (skipped, never retried), and a parts handler's
``finalize_mode``. Found untested by a mutation pass: each could change and no test
failed. The consumer runs directly (no Celery) on SQLite and PostgreSQL."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from tests.support.types import Parts, Simple
from workers.agent import AgentConsumer
from workers.handlers import Heartbeats
from workmanager import AgentInfo, Registry, WorkManager
from workmanager.db.models import Item, Order, utcnow
from workmanager.errors import RateLimited, Unavailable


@pytest.fixture
def wm(make_wm: Any, database: str) -> WorkManager:
    manager: WorkManager = make_wm(
        db=database, backend="database", registry=Registry([Simple(), Parts()])
    )
    return manager


def answer(view: Any, lease: Any) -> dict[str, Any]:
    return {"answer": 1}


def one_item(wm: WorkManager, order_type: str = "test.simple") -> tuple[uuid.UUID, uuid.UUID]:
    order_id = wm.propose(order_type, {})
    (item,) = wm.queries.order(order_id)["items"]
    return uuid.UUID(str(order_id)), uuid.UUID(item["id"])


def test_a_rate_limited_checkout_waits_its_retry_after(
    wm: WorkManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/agents.md: retried after the limit's ``retry_after`` (at least 1 s)."""
    _, item_id = one_item(wm)

    def limited(*args: Any, **kwargs: Any) -> Any:
        raise RateLimited("slow down", retry_after=7)

    monkeypatch.setattr(wm.agent, "checkout", limited)
    assert AgentConsumer(wm, answer, AgentInfo(id="limited-1")).handle(item_id) == ("later", 7.0)


def test_an_item_backing_off_is_retried_when_it_is_due(wm: WorkManager) -> None:
    _, item_id = one_item(wm)
    with wm.db.transaction() as s:
        due = utcnow() + timedelta(seconds=30)
        s.execute(update(Item).where(Item.id == item_id).values(available_at=due))
    outcome, delay = AgentConsumer(wm, answer, AgentInfo(id="later-1")).handle(item_id)
    assert outcome == "later" and 25 < delay <= 31, (outcome, delay)


def test_an_item_of_a_failed_order_is_skipped_not_retried(wm: WorkManager) -> None:
    """Its message was retried every second for ever: the item stays queued until the
    order is retried (which announces it again) or dead-lettered."""
    order_id, item_id = one_item(wm)
    with wm.db.transaction() as s:
        s.execute(update(Order).where(Order.id == order_id).values(state="failed"))
    consumer = AgentConsumer(wm, answer, AgentInfo(id="skips-1"))
    assert consumer.handle(item_id) == ("skipped", 0.0)


class Some:
    """A parts handler that gives only part ``a`` of the two its items need."""

    def __init__(self, mode: str) -> None:
        self.finalize_mode = mode

    def parts(self, view: Any, lease: Any) -> Any:
        yield "a", {"v": 1}


@pytest.mark.parametrize(("mode", "outcome"), [("best_effort", "finalized"), ("strict", "refused")])
def test_a_parts_handler_finalizes_in_its_finalize_mode(
    wm: WorkManager, mode: str, outcome: str
) -> None:
    """docs/agents.md: ``best_effort`` assembles what there is; ``strict`` needs every
    required part."""
    _, item_id = one_item(wm, "test.parts")
    said, _ = AgentConsumer(wm, Some(mode), AgentInfo(id=f"parts-{mode}")).handle(item_id)
    assert said == outcome
    state = wm.queries.item(item_id)["state"]
    assert state == ("submitted" if mode == "best_effort" else "failed"), state


@pytest.mark.parametrize("failure", [Unavailable("the database is away"), RuntimeError("bug")])
def test_a_heartbeat_that_failed_is_tried_again_a_beat_later(
    wm: WorkManager, monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    """Not at once: a beat left due after an outage's failure was sent again and again,
    as fast as the thread could, for as long as the outage lasted (a mutation pass)."""
    order_id, _ = one_item(wm)
    lease = wm.agent.checkout("beats-1", order_id=order_id)
    assert lease is not None

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise failure

    monkeypatch.setattr(wm.agent, "heartbeat", failing)
    beats = Heartbeats(wm, lease.agent, every=60)
    with beats.holding(lease):
        [key] = list(beats._due)
        beats._due[key] = (time.monotonic(), lease)  # due now, as the thread found it
        beats._beat(key, lease)
        due, kept = beats._due[key]
    assert due > time.monotonic() + 50 and kept == lease
