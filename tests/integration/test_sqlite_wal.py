"""The embedded default's WAL file gives back the room a busy moment took."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from workmanager.db import session
from workmanager.db.session import Database

MIB = 1024 * 1024


def test_the_wal_shrinks_back_once_checkpointed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A volume pass: ``ops prune`` under traffic grew ``wm.db-wal`` to 800 MB beside a
    150 MB database, and it kept that size for good (SQLite truncates a WAL only to a
    ``journal_size_limit``, unset). The limit is set on every connection; here a small
    one, so the test writes little."""
    monkeypatch.setattr(session, "WAL_SIZE_LIMIT", MIB)
    sqlite3.connect(tmp_path / "wm.db").close()  # a database file (Database opens, not makes)
    db = Database(f"sqlite:///{tmp_path}/wm.db")
    wal = tmp_path / "wm.db-wal"
    try:
        with db.engine.begin() as conn:
            conn.execute(text("CREATE TABLE bulk (b BLOB)"))
            for _ in range(11):
                conn.execute(text("INSERT INTO bulk VALUES (zeroblob(1024 * 1024))"))
        assert wal.stat().st_size > 10 * MIB  # the busy moment
        checkpoint = sqlite3.connect(tmp_path / "wm.db", isolation_level=None)
        checkpoint.execute("PRAGMA wal_checkpoint(PASSIVE)")  # as SQLite's own at 1,000 pages
        checkpoint.close()
        with db.engine.begin() as conn:  # the next write starts the WAL over
            conn.execute(text("DELETE FROM bulk WHERE rowid = 1"))
        assert wal.stat().st_size <= MIB + 64 * 1024, wal.stat().st_size
    finally:
        db.dispose()


def test_the_probes_do_not_wait_behind_a_writer(tmp_path: Path) -> None:
    """An audit pass on the embedded default: while any process held SQLite's write lock
    for over 2 s (a slow hook, a prune batch), ``/readyz`` and ``ops check`` said the
    database was down: their ``SELECT 1`` began ``BEGIN IMMEDIATE`` as every transaction
    does, and queued for the lock. Under WAL a reader needs no lock: the probes read."""
    import threading

    from workmanager import deployment
    from workmanager.db.migrate import require_head

    db = Database(f"sqlite:///{tmp_path}/wm.db")
    db.create_all()
    writer = sqlite3.connect(tmp_path / "wm.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # the write lock, held
    writer.execute("DELETE FROM work_orders")
    done = threading.Event()

    def probe() -> None:  # what /readyz runs on the database
        db.ping()
        require_head(db)
        deployment.read(db)
        done.set()

    thread = threading.Thread(target=probe, daemon=True)
    try:
        thread.start()
        assert done.wait(10), "the probes waited for the writer's lock"
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        thread.join(40)
        db.dispose()
