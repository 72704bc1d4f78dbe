"""The embedded broker (kombu's SQLAlchemy transport on SQLite, ``tasks/embedded_transport``)
when two processes declare a new queue at the same moment: the one whose insert loses
still publishes, and so does every later publish on its channel."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection

import tasks  # noqa: F401  (installs the project's transport under kombu's ``sqla`` alias)


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    yield f"sqla+sqlite:///{tmp_path}/broker.db"


def test_a_queue_declared_by_another_process_in_between_is_used_not_lost(url: str) -> None:
    other = Connection(url)
    mine = Connection(url)
    try:
        channel = mine.default_channel
        assert type(channel).__module__ == "tasks.embedded_transport"
        query = channel.session.query
        missed: list[str] = []

        def late_query(*entities: Any) -> Any:
            """The first lookups of the queue's row miss it, as they do when the other
            process commits its row just after them (kombu looks twice before inserting)."""
            if entities == (channel.queue_cls,) and len(missed) < 2:
                missed.append("miss")
                if len(missed) == 2:  # between kombu's second look and its insert
                    other.SimpleQueue("workmanager.agents.demo").put({"from": "other"})
                return query(entities[0]).filter(channel.queue_cls.name == "no such queue")
            return query(*entities)

        channel.session.query = late_query  # type: ignore[method-assign]
        mine.SimpleQueue("workmanager.agents.demo").put({"from": "mine"})
        channel.session.query = query  # type: ignore[method-assign]
        assert missed == ["miss", "miss"]
        # the session was rolled back: later publishes on this channel still go out
        mine.SimpleQueue("workmanager.agents.later").put({"from": "mine, later"})
        got = other.SimpleQueue("workmanager.agents.demo")
        bodies = sorted(got.get(timeout=5).payload["from"] for _ in range(2))
        assert bodies == ["mine", "other"]
        later = other.SimpleQueue("workmanager.agents.later").get(timeout=5).payload
        assert later == {"from": "mine, later"}
    finally:
        mine.release()
        other.release()


def test_a_put_after_the_queues_insert_waited_out_the_lock_goes_out(
    url: str, tmp_path: Path
) -> None:
    """Found by an adversarial pass: when the queue's insert waits out SQLite's lock,
    kombu rolls back and hands ``_put`` an unsaved queue; another process's row exists
    by then, so the message's insert failed on the queue's unique name and left the
    session needing a rollback: that message and every later one were not sent."""
    other = Connection(url)
    mine = Connection(url)
    try:
        channel = mine.default_channel
        other.SimpleQueue("workmanager.agents.locked").put({"from": "other"})
        real = channel._get_or_create
        calls: list[str] = []

        def after_a_lock_timeout(queue: str) -> Any:
            calls.append(queue)
            if len(calls) == 1:  # what kombu hands _put after its lock-timeout rollback
                return channel.queue_cls(queue)
            return real(queue)

        channel._get_or_create = after_a_lock_timeout  # type: ignore[method-assign]
        message = channel.prepare_message("mine")
        channel._put("workmanager.agents.locked", message)
        channel._put("workmanager.agents.later", channel.prepare_message("later"))
        channel._get_or_create = real  # type: ignore[method-assign]
    finally:
        mine.release()
        other.release()
    with closing(sqlite3.connect(tmp_path / "broker.db")) as db:
        stored = db.execute(
            "SELECT q.name, count(*) FROM kombu_message m JOIN kombu_queue q"
            " ON m.queue_id = q.id GROUP BY q.name ORDER BY q.name"
        ).fetchall()
    assert stored == [("workmanager.agents.later", 1), ("workmanager.agents.locked", 2)]
