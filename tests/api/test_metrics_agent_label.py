"""The ``agent_id`` label is bounded (``WORK_MANAGER_METRICS_AGENT_LABEL``): agent ids a
client invents under an unbound token must not make one Prometheus series each (issue 11)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.types import Simple
from workmanager import Registry, Settings, WorkManager
from workmanager.api import create_app
from workmanager.metrics.base import Metrics
from workmanager.metrics.simple import MemoryDriver
from workmanager.services.tokens import TokenService
from workmanager.types import AgentInfo

pytestmark = pytest.mark.postgres


def agent_series(scraped: str, metric: str) -> set[str]:
    pattern = re.compile(rf'^{metric}\{{[^}}]*agent_id="([^"]*)"', re.M)
    return set(pattern.findall(scraped))


def test_unbound_agent_ids_share_one_series(make_wm: Any, pg_url: str) -> None:
    make_wm(db="postgres")  # creates and truncates the tables
    settings = Settings(
        database_url=pg_url,
        metrics_driver="prometheus",  # the real driver and registry, scraped at /metrics
        idempotency_enforce_on=(),
    )
    wm = WorkManager(settings, registry=Registry([Simple()]))
    tokens = TokenService(wm.ctx)
    unbound = tokens.create("label-free", "propose,checkout,view")[0]
    bound = tokens.create("label-bound", "propose,checkout,view", "bound-label-1")[0]
    client = TestClient(create_app(wm))
    try:
        for n in range(50):
            headers = {"Authorization": f"Bearer {unbound}", "X-Agent-ID": f"invented-{n}"}
            body = {"type": "test.simple", "payload": {}}
            assert client.post("/agent/work/propose", json=body, headers=headers).status_code == 201
            assert client.post("/agent/work/checkout", headers=headers).status_code == 200
        headers = {"Authorization": f"Bearer {bound}"}
        client.post(
            "/agent/work/propose", json={"type": "test.simple", "payload": {}}, headers=headers
        )
        assert client.post("/agent/work/checkout", headers=headers).status_code == 200
        # the unbound token's own name (no X-Agent-ID) is the operator's, not invented: it
        # keeps its series (a metrics pass: it was reported as `other`)
        own = {"Authorization": f"Bearer {unbound}"}
        client.post("/agent/work/propose", json={"type": "test.simple", "payload": {}}, headers=own)
        assert client.post("/agent/work/checkout", headers=own).status_code == 200
        scraped = client.get("/metrics").text
    finally:
        client.close()
        wm.close()
    assert agent_series(scraped, "work_manager_leases_acquired_total") == {
        "other",
        "bound-label-1",
        "label-free",
    }
    other = re.search(
        r'^work_manager_leases_acquired_total\{[^}]*"other"[^}]*\} (\S+)', scraped, re.M
    )
    assert other is not None and float(other.group(1)) == 50.0


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("bound", {"other": 1.0, "mine": 1.0, "bare": 1.0}),
        ("all", {"chosen": 1.0, "mine": 1.0, "bare": 1.0}),
        ("none", {None: 3.0}),
    ],
)
def test_agent_label_policies(policy: str, expected: dict[str | None, float]) -> None:
    driver = MemoryDriver()
    metrics = Metrics(driver, "", agent_label=policy)
    metrics.increment("c", agent_id=AgentInfo("chosen", self_named=True))
    metrics.increment("c", agent_id=AgentInfo("mine"))
    metrics.increment("c", agent_id="bare")  # a bare id: the calling code vouches for it
    counted = {dict(labels).get("agent_id"): n for (_name, labels), n in driver.counters.items()}
    assert counted == expected


@pytest.mark.parametrize(("policy", "label"), [("bound", "other"), ("all", "invented-7")])
def test_an_operators_release_labels_the_holder_as_the_policy_says(
    make_wm: Any, policy: str, label: str
) -> None:
    """``leases release`` counted the holder's id as one the code vouched for: an id a
    client invented under an unbound token became a series of its own."""
    from workmanager.reads.leases import LeaseSelector
    from workmanager.services.lease_admin import LeaseAdmin

    wm = make_wm(db="sqlite", registry=Registry([Simple()]))
    driver = MemoryDriver()
    wm.ctx.metrics = Metrics(driver, "", agent_label=policy)
    wm.propose("test.simple", {})
    assert wm.agent.checkout(AgentInfo("invented-7", self_named=True)) is not None
    LeaseAdmin(wm.ctx).release(LeaseSelector(all=True))
    counted = {
        dict(labels).get("agent_id")
        for (name, labels), _n in driver.counters.items()
        if name == "leases_released_total"
    }
    assert counted == {label}
