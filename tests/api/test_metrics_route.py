"""``GET /metrics``: the prometheus driver's registry, scrapeable from the API process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.support.types import Simple
from workmanager import Registry, Settings, WorkManager
from workmanager.api import create_app


def test_the_prometheus_driver_is_scraped_at_metrics(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/wm.db",
        lease_backend="database",
        metrics_driver="prometheus",  # as configured: make_wm's drivers are in memory
        auth="none",
    )
    wm = WorkManager(settings, registry=Registry([Simple()]))
    wm.db.create_all()
    try:
        client = TestClient(create_app(wm))
        wm.propose("test.simple", {})
        wm.propose("test.simple", {})
        scraped = client.get("/metrics")
    finally:
        wm.close()
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    lines = scraped.text.splitlines()
    created = [line for line in lines if line.startswith("work_manager_orders_created_total{")]
    assert created and created[0].endswith(" 2.0"), created
    assert 'type="test.simple"' in created[0]


def test_other_drivers_answer_404_with_the_envelope(make_wm: Any) -> None:
    wm = make_wm(registry=Registry([Simple()]), auth="none")  # the null driver
    answer = TestClient(create_app(wm)).get("/metrics")
    assert answer.status_code == 404
    assert answer.json()["error"]["details"] == {"metrics_driver": "null"}
