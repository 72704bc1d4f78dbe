"""``WORK_MANAGER_AUTH=none`` is said loudly at start-up by both network servers (SPEC §2):
``serve`` and ``mcp --transport http``. The servers themselves are not started here."""

from __future__ import annotations

from typing import Any

import pytest
import uvicorn

from tests.cli.conftest import Console

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
    console: Console = console_for(auth="none")
    result = console(*command)
    assert "WARNING: WORK_MANAGER_AUTH=none" in result.stderr
    assert len(started) == 1  # and then the server starts


@pytest.mark.parametrize("command", COMMANDS, ids=["serve", "mcp-http"])
def test_token_auth_starts_quietly(console_for: Any, started: list[Any], command) -> None:
    result = console_for()(*command)
    assert "WARNING" not in result.stderr and len(started) == 1
