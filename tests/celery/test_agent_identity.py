"""The Celery consumer agent's identity (SPEC §8.3): ``--agent-id``, else
``agent-<host>-<pid>``, with the name, version and model from settings."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from tasks.app import app
from tasks.runtime import set_wm
from tests.support.types import Simple
from workers.agent import build
from workmanager import Registry, WorkManager

TASK = "workmanager.agents.test.simple"


@pytest.fixture
def wm(make_wm: Any) -> Iterator[WorkManager]:
    manager: WorkManager = make_wm(
        registry=Registry([Simple()]), agent_model="m-1", agent_version="2.0.0"
    )
    yield manager
    set_wm(None)
    app.tasks.pop(TASK, None)  # the shared app keeps no task bound to this closed manager


def test_the_default_agent_id_names_host_and_process(wm: WorkManager) -> None:
    _, consumer = build("test.simple", "tests.support.pipeline:echo_handler", None, wm)
    assert consumer.agent.id == f"agent-{socket.gethostname()}-{os.getpid()}"
    assert (consumer.agent.model_name, consumer.agent.version) == ("m-1", "2.0.0")
    assert consumer.agent.runtime is not None and consumer.agent.runtime.startswith("celery/")


def test_an_explicit_agent_id_wins(wm: WorkManager) -> None:
    _, consumer = build("test.simple", "tests.support.pipeline:echo_handler", "researcher-7", wm)
    assert consumer.agent.id == "researcher-7"


def test_the_agent_task_is_bound_to_its_app_alone(wm: WorkManager) -> None:
    """Registered on the agent's app only: another app finalized later in the process does
    not get it, so a second consumer's task never collides with the first one's there
    (Celery's ``DuplicateTaskNameWarning``)."""
    agent_app, _ = build("test.simple", "tests.support.pipeline:echo_handler", "a-1", wm)
    assert TASK in agent_app.tasks
    other = Celery("elsewhere", set_as_current=False)
    other.finalize()
    assert TASK not in other.tasks
