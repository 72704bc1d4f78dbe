"""What PostgreSQL says of itself or of the role, on a real server: read-only (a standby
after a failover, ``default_transaction_read_only``), a privilege missing. They were
driver errors no rule translated: HTTP 500 ``internal_error``, CLI tracebacks, and
Celery's create task dropped the proposal ("raised unexpected: ReadOnlySqlTransaction",
no retry). They are ``unavailable`` with a hint: 503 over HTTP, a retry for tasks, and
``/readyz`` not ready while the server takes no writes (an outage pass)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.conftest import PG_ADMIN_DSN
from tests.support.types import Simple
from workmanager import Registry, Settings, WorkManager
from workmanager.api import create_app
from workmanager.db.driver_errors import translate
from workmanager.db.session import Database
from workmanager.errors import Unavailable

pytestmark = pytest.mark.postgres
ROLE = f"wm_limited_{os.getpid()}"


def admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


@pytest.fixture
def own_db(pg_url: str) -> Iterator[tuple[str, str]]:
    name = pg_url.rsplit("/", 1)[1] + "_states"
    admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin(f'CREATE DATABASE "{name}"')
    url = pg_url.rsplit("/", 1)[0] + "/" + name
    db = Database(url)
    db.create_all()
    db.dispose()
    yield name, url
    admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin(f'DROP ROLE IF EXISTS "{ROLE}"')


def work_manager(url: str) -> WorkManager:
    settings = Settings(
        database_url=url, metrics_driver="null", lease_backend="database", auth="none"
    )
    return WorkManager(settings, registry=Registry([Simple()]))


def test_a_read_only_server_is_unavailable_everywhere_until_it_takes_writes(
    own_db: tuple[str, str],
) -> None:
    name, url = own_db
    before = work_manager(url)
    before.propose("test.simple", {"n": 1})
    before.close()
    admin(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    wm = work_manager(url)
    try:
        for call in (
            lambda: wm.propose("test.simple", {"n": 2}),  # the order store
            lambda: wm.agent.checkout("agent-1"),  # the lease store's raw connection
            wm.ctx.db.ping,  # readiness
        ):
            with pytest.raises(Unavailable) as caught:
                call()
            assert "the server is read-only" in caught.value.message
            assert caught.value.hint is not None and "primary" in caught.value.hint
        with TestClient(create_app(wm)) as client:
            body = {"type": "test.simple", "payload": {"n": 3}}
            made = client.post("/agent/work/propose", json=body, headers={"X-Idempotency-Key": "k"})
            assert made.status_code == 503, made.text
            assert made.json()["error"]["code"] == "unavailable"
            assert client.get("/readyz").status_code == 503
    finally:
        wm.close()
    admin(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
    after = work_manager(url)
    try:
        assert after.agent.checkout("agent-1") is not None  # the first order, untouched
        after.ctx.db.ping()
    finally:
        after.close()


def test_a_role_without_a_privilege_is_told_what_to_grant(own_db: tuple[str, str]) -> None:
    name, url = own_db
    admin(f'CREATE ROLE "{ROLE}" LOGIN')
    with psycopg.connect(PG_ADMIN_DSN, dbname=name, autocommit=True) as conn:
        conn.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{ROLE}"')  # type: ignore[arg-type]
    limited = url.replace("postgres@", f"{ROLE}@", 1)
    wm = work_manager(limited)
    try:
        with pytest.raises(Unavailable) as caught:
            wm.propose("test.simple", {"n": 1})
    finally:
        wm.close()
    assert "the database role lacks a privilege" in caught.value.message
    assert caught.value.hint is not None and "grant the role" in caught.value.hint


@pytest.mark.parametrize(
    ("sqlstate", "says"),
    [
        ("25006", "the server is read-only"),
        ("25P03", "the server ended a transaction left idle"),
        ("42501", "the database role lacks a privilege"),
        ("3F000", "no schema to work in"),
    ],
)
def test_each_server_state_is_translated_whatever_the_drivers_class(
    sqlstate: str, says: str
) -> None:
    class Refused(Exception):  # psycopg classes these as InternalError, ProgrammingError
        pass

    error = Refused("what the server said")
    error.sqlstate = sqlstate  # type: ignore[attr-defined]
    translated = translate(error)
    assert isinstance(translated, Unavailable) and says in translated.message


def test_db_upgrade_under_a_search_path_naming_no_schema_says_so(own_db: tuple[str, str]) -> None:
    """``serve`` said "run `workmanager db upgrade`", which then printed a traceback
    (``InvalidSchemaName``)."""
    from workmanager.db.migrate import upgrade

    _name, url = own_db
    admin(f'CREATE ROLE "{ROLE}" LOGIN')
    admin(f'ALTER ROLE "{ROLE}" SET search_path = nothere')
    db = Database(url.replace("postgres@", f"{ROLE}@", 1))
    try:
        with pytest.raises(Unavailable) as caught:
            upgrade(db)
    finally:
        db.dispose()
    assert "no schema to work in" in caught.value.message
    assert caught.value.hint is not None and "search_path" in caught.value.hint


def test_a_full_server_says_what_to_do_not_whether_it_runs() -> None:
    """ "too many clients already" was answered with "is the server running and is the
    URL right?" (a PostgreSQL pass)."""

    class Full(Exception):
        pass

    said = translate(Full("connection failed: FATAL:  sorry, too many clients already"),
                     operational=True)  # fmt: skip
    assert isinstance(said, Unavailable) and "max_connections" in (said.hint or "")
