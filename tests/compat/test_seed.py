"""The seed document's configuration lines and its custom provenance enricher example."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.api.conftest import PREFIX, start_server
from workmanager.db.models import Provenance
from workmanager.db.session import Database
from workmanager.errors import ConfigurationError
from workmanager.settings import Settings

ROOT = Path(__file__).resolve().parents[2]

SEED_LINES = {
    "WORK_MANAGER_LEASE_BACKEND": "redis",
    "WORK_MANAGER_REDIS_CONNECTION": "default",
    "WORK_MANAGER_MAX_LEASES_PER_AGENT": "null",
    "WORK_MANAGER_MAX_LEASES_PER_TYPE": "10",
    "WORK_MANAGER_METRICS_DRIVER": "statsd",
    "WORK_MANAGER_QUEUE_CONNECTION": "redis",
    "WORK_MANAGER_LEASE_TTL": "300",
}


def test_the_seed_configuration_lines_work() -> None:
    s = Settings.from_env(SEED_LINES)
    assert s.lease_backend == "redis" and s.redis_url == Settings.redis_url
    assert s.broker_url == s.redis_url  # a Laravel connection name: the configured Redis
    assert s.max_leases_per_agent is None and s.max_leases_per_type == 10
    assert s.metrics_driver == "statsd" and s.lease_ttl_seconds == 300
    custom = Settings.from_env({**SEED_LINES, "WORK_MANAGER_REDIS_URL": "redis://10.0.0.5:6380/3"})
    assert custom.redis_url == custom.broker_url == "redis://10.0.0.5:6380/3"
    database = Settings.from_env({"WORK_MANAGER_QUEUE_CONNECTION": "database"})
    assert database.broker_url == "sqla+" + database.database_url


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("WORK_MANAGER_REDIS_CONNECTION", "work", "a Redis URL"),
        ("WORK_MANAGER_QUEUE_CONNECTION", "sqs", "a broker URL"),
        ("WORK_MANAGER_QUEUE_CONNECTION", "sync", "Laravel connection name"),
    ],
)
def test_other_connection_names_are_refused_naming_the_variable(
    variable: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({variable: value})
    assert str(info.value).startswith(f"{variable}: expected ") and expected in str(info.value)
    assert repr(value) in str(info.value)


def test_the_enricher_example_is_the_documented_one() -> None:
    example = (ROOT / "tests/compat/enricher_example.py").read_text()
    assert "```python\n" + example + "```" in (ROOT / "docs/configuration.md").read_text()


@pytest.mark.postgres
def test_the_custom_enricher_example_works_in_a_server(
    api_db_url: str, tokens: dict[str, str]
) -> None:
    srv = start_server(
        api_db_url,
        tokens,
        "database",
        None,
        WORK_MANAGER_PROVENANCE_ENRICHER="tests.compat.enricher_example:TeamEnricher",
    )
    try:
        client = srv.client("agent-a", "seed-agent-1")
        headers = {"X-Team": "blue", "X-Idempotency-Key": uuid.uuid4().hex}
        body = {"type": "test.simple", "payload": {}}
        r = client.post(f"{PREFIX}/propose", json=body, headers=headers)
        assert r.status_code == 201, r.text
        r = client.post(f"{PREFIX}/checkout")
        assert r.status_code == 200, r.text
    finally:
        srv.close()
    db = Database(api_db_url)
    with db.engine.connect() as conn:
        rows = conn.execute(select(Provenance.action, Provenance.extra)).all()
    db.dispose()
    extras = {action: extra for action, extra in rows}
    assert extras["propose"] == {"team": "blue", "label": "seed-agent-1:propose"}
    assert extras["checkout"] == {"team": "unknown", "label": "seed-agent-1:checkout"}
