"""An exhausted connection pool (issue 11, item 9): 503 ``unavailable`` with ``Retry-After``,
like every other transient database failure, and nothing changed; never a 500.

On PostgreSQL a proposal is written on the SQL path, through its own pool of psycopg
connections (``workmanager/db/rawpool.py``); reads and ``/readyz`` go through the
engine's. Each pool is made one connection deep with a short wait, and that connection is
lent out while the calls that need it are made."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine

from tests.support.types import Simple
from workmanager import Registry, Settings, WorkManager
from workmanager.api import create_app
from workmanager.db import raw
from workmanager.db.session import Database
from workmanager.errors import Unavailable

pytestmark = pytest.mark.postgres
PROPOSE = {"type": "test.simple", "payload": {}}
WAIT = 0.3


def orders_count(pg_url: str) -> int:
    dsn = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM work_orders").fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def api(make_wm: Any, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """(client, WorkManager) over pools of one connection each, waited for ``WAIT`` s."""
    make_wm(db="postgres")  # creates and truncates the tables
    for name, value in (("POOL_SIZE", 1), ("MAX_OVERFLOW", 0), ("POOL_TIMEOUT", WAIT)):
        monkeypatch.setattr(raw, name, value)  # read when the SQL path's pool is built
    engine = create_engine(pg_url, pool_size=1, max_overflow=0, pool_timeout=WAIT)
    settings = Settings(
        database_url=pg_url, metrics_driver="null", auth="none", idempotency_enforce_on=()
    )
    wm = WorkManager(
        settings, registry=Registry([Simple()]), database=Database(pg_url, engine=engine)
    )
    client = TestClient(create_app(wm))
    try:
        yield client, wm
    finally:
        client.close()
        wm.close()


def test_an_exhausted_pool_is_503_with_retry_after(api: Any, pg_url: str) -> None:
    client, wm = api
    assert client.post("/agent/work/propose", json=PROPOSE).status_code == 201
    before = orders_count(pg_url)
    pool = wm.db.raw.pool
    held = pool.checkout()  # the SQL path's only connection, lent out
    try:
        r = client.post("/agent/work/propose", json=PROPOSE)
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] == "5"
        assert r.json()["error"]["code"] == "unavailable"
        with pytest.raises(Unavailable):  # the Python API the same way
            wm.propose("test.simple", {})
    finally:
        pool.checkin(held, healthy=True)
    assert orders_count(pg_url) == before
    with wm.db.engine.connect() as lent:  # the engine's only connection, lent out
        lent.exec_driver_sql("SELECT 1")
        r = client.get("/agent/work/orders")
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] == "5" and r.json()["error"]["code"] == "unavailable"
        assert client.get("/readyz").status_code == 503
    r = client.post("/agent/work/propose", json=PROPOSE)
    assert r.status_code == 201, r.text  # the connections back: served again
    assert client.get("/agent/work/orders").status_code == 200
    assert orders_count(pg_url) == before + 1
