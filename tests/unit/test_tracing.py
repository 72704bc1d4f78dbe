"""WORK_MANAGER_TRACING: validated; off costs no import; console writes the domain spans."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from workmanager.errors import ConfigurationError
from workmanager.settings import Settings
from workmanager.tracing import TENANT

ROOT = Path(__file__).resolve().parents[2]

#: One order through the agent API and apply, in a process of its own (tracing is global).
SCRIPT = """
import sys
from workmanager import Registry, Settings, WorkManager, tracing
from workmanager.types import AgentInfo
# the agent API, the producer, the tasks and the consumer (not the API: FastAPI imports
# opentelemetry's API itself)
import tasks.app, tasks.orders, tasks.producer, workers.agent
from tests.support.pipeline import register

settings = Settings.from_env()
tracing.configure(settings, "unit")
registry = Registry()
register(registry)
settings = settings.replace(database_url="sqlite://", lease_backend="memory")
wm = WorkManager(settings, registry=registry)
wm.db.create_all()
order_id = wm.propose("e2e.echo", {"n": 1}, tenant_id="acme-trace")
agent = AgentInfo(id="a-1")
lease = wm.agent.checkout(agent)
lease = wm.agent.heartbeat(lease, agent=agent)
wm.agent.submit(lease, {"ok": True}, agent=agent)
wm.orders.check_auto_approval(order_id)
wm.executor.apply(order_id)
print(str(order_id))
print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""


def run(mode: str) -> subprocess.CompletedProcess[str]:
    env = {"WORK_MANAGER_TRACING": mode, "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_the_setting_is_validated() -> None:
    assert Settings().tracing == "off"
    assert Settings.from_env({"WORK_MANAGER_TRACING": "Console"}).tracing == "console"
    with pytest.raises(ConfigurationError, match="WORK_MANAGER_TRACING"):
        Settings.from_env({"WORK_MANAGER_TRACING": "jaeger"})


def test_off_imports_nothing_of_opentelemetry() -> None:
    done = run("off")
    assert done.stdout.splitlines()[1] == "[]"


def test_console_writes_domain_spans_with_their_attributes() -> None:
    done = run("console")
    order_id = done.stdout.splitlines()[0]
    spans = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    by_name = {s["name"]: s for s in spans}
    for name in ("workmanager.propose", "workmanager.checkout", "workmanager.heartbeat"):
        assert by_name[name]["attributes"]["workmanager.order.id"] == order_id, name
    checkout = by_name["workmanager.checkout"]["attributes"]
    assert checkout["workmanager.agent.id"] == "a-1"
    assert checkout["workmanager.order.type"] == "e2e.echo"
    assert by_name["workmanager.submit"]["attributes"]["workmanager.item.id"]
    assert by_name["workmanager.apply"]["attributes"]["workmanager.order.type"] == "e2e.echo"
    assert by_name["workmanager.checkout"]["resource"]["attributes"]["service.name"] == "unit"
    names = ("propose", "checkout", "heartbeat", "submit", "apply")  # the calls that know it
    tenants = {n: by_name[f"workmanager.{n}"]["attributes"].get(TENANT) for n in names}
    assert tenants == dict.fromkeys(names, "acme-trace")
