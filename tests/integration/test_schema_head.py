"""The schema must be at the migrations' head (issue 12): there is no slower path to fall
back on when the code needs a table, column or SQL function of a later migration. A schema
behind it is found at start-up (``workmanager serve`` and Celery workers refuse to start
with one line, ``error [schema_outdated]: … run `workmanager db upgrade```) and by
``/readyz`` (503), on a real database the migrations left at an older revision."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from workmanager import Registry, Settings, WorkManager
from workmanager.api import create_app
from workmanager.db.migrate import current, head, require_head, upgrade
from workmanager.db.session import Database
from workmanager.errors import SchemaBehind
from workmanager.services.housekeeping import Housekeeping

from ..conftest import PG_ADMIN_DSN, PG_DB, PG_HOST_URL, need
from .test_migrations import assert_delete_cascades

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
OLDER = "0009"
UPGRADE = "run `workmanager db upgrade`"


def _admin(statement: str) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=3) as conn:
        conn.execute(statement)


def empty_pg(name: str) -> str:
    """The URL of a new, empty PostgreSQL database ``name`` (dropped first if left over);
    skipped when PostgreSQL is not there, a failure in CI."""
    try:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        _admin(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        need("PostgreSQL", str(exc))
    return f"{PG_HOST_URL}/{name}"


@pytest.fixture
def old_pg() -> Iterator[str]:
    """A PostgreSQL database the migrations brought to ``OLDER``, one before the head."""
    name = f"{PG_DB}_schema_head"
    url = empty_pg(name)
    db = Database(url)
    upgrade(db, OLDER)
    assert current(db) == OLDER != head()
    db.dispose()
    yield url
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def env_for(url: str, redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORK_MANAGER_")}
    env |= {
        "PYTHONPATH": str(ROOT),
        "WORK_MANAGER_DATABASE_URL": url,
        "WORK_MANAGER_BROKER_URL": redis_url,
        "WORK_MANAGER_METRICS_DRIVER": "null",
    }
    return env


def the_one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done.stdout + done.stderr
    [line] = [x for x in done.stderr.splitlines() if x.startswith("error [")]
    assert line.startswith("error [schema_outdated]: ") and line.endswith(UPGRADE), line
    assert OLDER in line and head() in line, line
    assert "Traceback" not in done.stderr and "hint:" not in done.stderr, done.stderr
    return line


@pytest.mark.postgres
@pytest.mark.redis
def test_readyz_is_503_until_the_schema_is_upgraded(old_pg: str, redis_url: str) -> None:
    settings = Settings(
        database_url=old_pg, broker_url=redis_url, metrics_driver="null", auth="none"
    )
    wm = WorkManager(settings, registry=Registry())
    client = TestClient(create_app(wm))
    try:
        r = client.get("/readyz")
        assert r.status_code == 503 and r.headers["Retry-After"], r.text
        reason = r.json()["checks"]["database"]
        assert reason.startswith("down: [schema_outdated] ") and reason.endswith(UPGRADE), reason
        assert f"at revision {OLDER}, behind this code's {head()}" in reason
        assert r.json()["checks"]["broker"] == "ok"
        ops_check = Housekeeping(wm.ctx).check()  # `workmanager ops check` says the same
        assert ops_check["components"]["database"] == reason and not ops_check["ok"]
        upgrade(wm.db)
        r = client.get("/readyz")
        assert r.status_code == 200, r.text
        assert r.json()["checks"] == {"database": "ok", "broker": "ok", "deployment": "ok"}
    finally:
        client.close()
        wm.close()


@pytest.mark.postgres
@pytest.mark.redis
def test_serve_refuses_to_start_on_an_older_schema(old_pg: str, redis_url: str) -> None:
    done = subprocess.run(
        [str(BIN / "workmanager"), "serve", "--port", "1", "--dispatcher", "none"],
        env=env_for(old_pg, redis_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = the_one_error_line(done)
    assert done.stderr.strip().splitlines() == [line]  # nothing else: no log, no hint


@pytest.mark.postgres
@pytest.mark.redis
def test_a_celery_worker_refuses_to_start_on_an_older_schema(old_pg: str, redis_url: str) -> None:
    broker = redis_url.rsplit("/", 1)[0] + "/" + os.environ.get("WM_TEST_BROKER_DB", "14")
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-P", "solo"],
        env=env_for(old_pg, broker),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    the_one_error_line(done)


def test_a_schema_built_from_the_models_is_at_head(make_wm: Any) -> None:
    """``create_all`` (tests, scaffolds) builds the head's schema and records it."""
    wm = make_wm(db="sqlite", backend="database")
    assert current(wm.db) == head()
    require_head(wm.db)


def test_no_schema_and_an_unknown_revision(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/wm.db")
    db.allow_create()
    with db.engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))  # a database, but no migration ran
    with pytest.raises(SchemaBehind) as caught:
        require_head(db)
    assert "no workmanager schema" in caught.value.message
    assert caught.value.message.endswith(UPGRADE)
    upgrade(db, OLDER)
    with pytest.raises(SchemaBehind):
        require_head(db)
    upgrade(db)
    require_head(db)
    # A revision these migrations do not know: newer code migrated the database (a rolling
    # deploy). The processes of the code before stay ready.
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffff_newer'"))
    require_head(db)
    db.dispose()


@pytest.mark.postgres
def test_upgrades_started_at_once_take_turns() -> None:
    """Every web host's ``ExecStartPre`` runs ``workmanager db upgrade`` at once on a new
    database: one of three failed with a UniqueViolation on alembic_version (a traceback)
    or waited on the others' locks. They now take turns on an advisory lock; each later
    one finds the head and does nothing."""
    name = f"{PG_DB}_upgrades_at_once"
    url = empty_pg(name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORK_MANAGER_")}
    env["WORK_MANAGER_DATABASE_URL"] = url
    command = [sys.executable, "-c", "from workmanager.cli import main\nmain(['db', 'upgrade'])"]
    runs: list[subprocess.Popen[str]] = []
    try:
        runs += [
            subprocess.Popen(command, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
            for _ in range(3)
        ]
        said = [run.communicate(timeout=60)[1] for run in runs]
        assert [run.returncode for run in runs] == [0, 0, 0], said
        assert not any("Traceback" in text for text in said), said
        db = Database(url)
        assert current(db) == head()
        db.dispose()
    finally:
        for run in runs:
            run.kill()
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.postgres
def test_a_tables_only_restore_is_named_and_mended_by_the_upgrade() -> None:
    """``pg_dump -t 'work_*' -t alembic_version`` (the recipe the docs gave) restores the
    tables without the functions and the audit trigger: every check said the schema was at
    head, ``db upgrade`` changed nothing, and every checkout was a 503 telling to run it.
    The check names what is missing, and the upgrade makes it again."""
    url = empty_pg(f"{PG_DB}_tables_only")
    db = Database(url)
    upgrade(db)
    with db.engine.begin() as conn:  # what the restore leaves: the tables alone
        conn.execute(text("DROP TRIGGER work_orders_delete_audit ON work_orders"))
        conn.execute(text("DROP FUNCTION work_orders_delete_audit()"))
        conn.execute(text("DROP FUNCTION workmanager_start_order(uuid,timestamptz,text,text)"))
    with pytest.raises(SchemaBehind) as caught:
        require_head(db)
    message = caught.value.message
    assert "workmanager_start_order(" in message and "trigger work_orders_delete_audit" in message
    assert message.endswith(UPGRADE)
    upgrade(db)
    require_head(db)
    upgrade(db)  # at head with nothing missing: nothing to do
    assert_delete_cascades(db)  # a checkout and a submit (the functions), then the trigger
    db.dispose()


def test_an_upgrade_behind_another_sqlite_writer_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holding the SQLite file's write lock past the busy timeout: the
    upgrade's ``BEGIN IMMEDIATE`` was a 75-line traceback; it is ``Unavailable`` with its
    hint, as every other command's."""
    import sqlite3

    from workmanager.db import session
    from workmanager.errors import Unavailable

    monkeypatch.setattr(session, "SQLITE_BUSY_MS", 200)
    path = tmp_path / "wm.db"
    db = Database(f"sqlite:///{path}")
    upgrade(db, OLDER)
    db.dispose()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        db = Database(f"sqlite:///{path}")
        with pytest.raises(Unavailable) as caught:
            upgrade(db)
        assert "write lock" in (caught.value.hint or "") + caught.value.message
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    upgrade(db)
    assert current(db) == head()
    db.dispose()
