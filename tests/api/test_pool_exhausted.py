"""An exhausted ORM pool (issue 11, item 9): 503 ``unavailable`` with ``Retry-After``, like
every other transient database failure, and nothing changed; never a 500."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine

from tests.support.types import Simple
from workmanager import Registry, Settings, WorkManager
from workmanager.api import create_app
from workmanager.db.session import Database
from workmanager.errors import Unavailable

pytestmark = pytest.mark.postgres


def orders_count(pg_url: str) -> int:
    dsn = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM work_orders").fetchone()
    assert row is not None
    return int(row[0])


def test_an_exhausted_pool_is_503_with_retry_after(make_wm: Any, pg_url: str) -> None:
    make_wm(db="postgres")  # creates and truncates the tables
    engine = create_engine(pg_url, pool_size=1, max_overflow=0, pool_timeout=0.3)
    settings = Settings(
        database_url=pg_url, metrics_driver="null", auth="none", idempotency_enforce_on=()
    )
    # The general path: every statement through the ORM's pool (the hot paths have their own).
    wm = WorkManager(
        settings.replace(pg_fast_path=False),
        registry=Registry([Simple()]),
        database=Database(pg_url, engine=engine),
    )
    client = TestClient(create_app(wm))
    propose = {"type": "test.simple", "payload": {}}
    try:
        assert client.post("/agent/work/propose", json=propose).status_code == 201
        before = orders_count(pg_url)
        with engine.connect() as held:  # the pool's only connection, lent out
            held.exec_driver_sql("SELECT 1")
            r = client.post("/agent/work/propose", json=propose)
            assert r.status_code == 503, r.text
            assert r.headers["Retry-After"] == "5"
            assert r.json()["error"]["code"] == "unavailable"
            with pytest.raises(Unavailable):  # the Python API the same way
                wm.propose("test.simple", {})
            assert client.get("/readyz").status_code == 503
        assert orders_count(pg_url) == before
        r = client.post("/agent/work/propose", json=propose)
        assert r.status_code == 201, r.text  # the connection back: served again
    finally:
        client.close()
        wm.close()
