"""A transaction PostgreSQL aborts as a deadlock victim is run again, not reported as 503."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from workmanager.db.session import Database

pytestmark = pytest.mark.postgres


def test_deadlock_victim_is_retried(pg_url: str) -> None:
    db = Database(pg_url)
    with db.engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS deadlock_probe"))
        conn.execute(text("CREATE TABLE deadlock_probe (id int primary key, n int)"))
        conn.execute(text("INSERT INTO deadlock_probe VALUES (1, 0), (2, 0)"))
    barrier = threading.Barrier(2)
    attempts = {"a": 0, "b": 0}
    errors: list[BaseException] = []

    def worker(name: str, first: int, second: int) -> None:
        def body(s) -> None:
            attempts[name] += 1
            s.execute(text("UPDATE deadlock_probe SET n = n + 1 WHERE id = :i"), {"i": first})
            if attempts[name] == 1:
                barrier.wait(timeout=10)  # both hold their first row: lock each other next
            s.execute(text("UPDATE deadlock_probe SET n = n + 1 WHERE id = :i"), {"i": second})

        try:
            db.run(body)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=worker, args=("a", 1, 2)),
        threading.Thread(target=worker, args=("b", 2, 1)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert attempts["a"] + attempts["b"] == 3  # exactly one victim, run again
    with db.engine.begin() as conn:
        assert conn.execute(text("SELECT sum(n) FROM deadlock_probe")).scalar() == 4
        conn.execute(text("DROP TABLE deadlock_probe"))
    db.dispose()
