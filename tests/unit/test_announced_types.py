"""``WORK_MANAGER_ANNOUNCED_TYPES``: which types' items are announced on ``agents.<type>``.

In an HTTP/MCP-only deployment nobody consumes those queues, and every item planned,
released or requeued left one message there for good (about 1 KB each in Redis; one row
each in the embedded broker)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from celery import Celery

from tasks.dispatcher import CeleryDispatcher
from tests.support.environment import ROOT, clean_env
from workmanager import Settings
from workmanager.deployment import shared
from workmanager.errors import ConfigurationError


def waiting(app: Celery, queue: str) -> int:
    with app.connection_for_read() as conn:
        return int(conn.default_channel.queue_declare(queue, passive=False).message_count)


@pytest.mark.parametrize(
    ("announced", "expected"),
    [(("*",), {"t.x": 2, "t.y": 2}), (("t.y",), {"t.x": 0, "t.y": 2}), ((), {"t.x": 0, "t.y": 0})],
)
def test_only_the_announced_types_get_messages(
    announced: tuple[str, ...], expected: dict[str, int]
) -> None:
    app = Celery("announce", broker="memory://")
    prefix = f"agents{uuid.uuid4().hex}."  # the in-memory broker is the process's
    settings = Settings(announced_types=announced, agent_queue_prefix=prefix)
    dispatcher = CeleryDispatcher(app, settings)
    for order_type in expected:
        dispatcher.items_available(order_type, [uuid.uuid4(), uuid.uuid4()])
    assert {t: waiting(app, f"{prefix}{t}") for t in expected} == expected


def test_the_setting_reads_a_list_and_joins_the_deployment_record() -> None:
    assert Settings.from_env({}).announced_types == ("*",)
    settings = Settings.from_env({"WORK_MANAGER_ANNOUNCED_TYPES": " b.y, a.x "})
    assert settings.announced_types == ("b.y", "a.x")
    assert settings.announces("a.x") and not settings.announces("c.z")
    assert Settings.from_env({"WORK_MANAGER_ANNOUNCED_TYPES": ""}).announced_types == ()
    assert shared(settings)["announced_types"] == "a.x,b.y"  # as its variable reads


def test_a_consumer_agent_of_a_type_not_announced_is_refused(tmp_path: Path) -> None:
    """It would have waited on a queue nothing is sent to."""
    code = (
        "import sys\nfrom workers.agent import run\n"
        "sys.exit(run(['--type', 'demo.research', '--handler', 'workers.examples:research']))\n"
    )
    env = clean_env(
        WORK_MANAGER_DATABASE_URL=f"sqlite:///{tmp_path}/wm.db",
        WORK_MANAGER_ORDER_TYPES="workmanager.demo.types",
        WORK_MANAGER_ANNOUNCED_TYPES="other.type",
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines()[0] == (
        "error [configuration_error]: --type demo.research: its items are not announced to"
        " consumer agents (WORK_MANAGER_ANNOUNCED_TYPES is other.type)"
    )
    assert "hint: add demo.research to WORK_MANAGER_ANNOUNCED_TYPES" in done.stderr
    assert "Traceback" not in done.stderr
    assert ConfigurationError.code == "configuration_error"
