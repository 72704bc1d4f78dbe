"""``WORK_MANAGER_AUTH=none`` is said loudly at start-up by both network servers (SPEC §2):
``serve`` and ``mcp --transport http``. The servers themselves are not started here."""

from __future__ import annotations

from typing import Any

import pytest
import uvicorn

from tests.cli.conftest import Console
from workmanager.errors import ConfigurationError

COMMANDS = [["serve", "--port", "1"], ["mcp", "--transport", "http", "--port", "1"]]


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Replaces ``uvicorn.run`` (``mcp``) and ``uvicorn.Server.run`` (``serve``, whose
    server class answers waiting approvals when it stops): records the app it was given
    instead of serving it."""
    apps: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **_: apps.append(app))
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, **_: apps.append(self.config.app))
    return apps


@pytest.mark.parametrize("command", COMMANDS, ids=["serve", "mcp-http"])
def test_auth_none_is_announced_loudly(console_for: Any, started: list[Any], command) -> None:
    console: Console = console_for(auth="none", backend="database")
    result = console(*command)
    assert "WARNING: WORK_MANAGER_AUTH=none" in result.stderr
    assert len(started) == 1  # and then the server starts


@pytest.mark.parametrize("command", COMMANDS, ids=["serve", "mcp-http"])
def test_token_auth_starts_quietly(console_for: Any, started: list[Any], command) -> None:
    result = console_for(backend="database")(*command)
    assert "WARNING" not in result.stderr and len(started) == 1


@pytest.mark.parametrize("command", COMMANDS, ids=["serve", "mcp-http"])
def test_the_memory_lease_backend_is_refused_by_a_server(
    console_for: Any, started: list[Any], command: list[str]
) -> None:
    """A configuration pass: ``LEASE_BACKEND=memory`` (one process's memory, for tests) was
    taken by ``serve`` and the workers alike, and a worker's sweep took back every lease
    the API granted. A server refuses it in one line."""
    result = console_for(backend="memory")(*command, code=1)
    refused = result.exception  # in process; the command line prints its one line
    assert isinstance(refused, ConfigurationError) and started == []
    assert "WORK_MANAGER_LEASE_BACKEND=memory keeps the leases in one process" in refused.message
