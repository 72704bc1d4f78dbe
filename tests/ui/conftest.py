"""The console tests' WorkManager (SQLite, the console's order types) and its tokens."""

from __future__ import annotations

from typing import Any

import pytest

from workmanager import Registry, WorkManager
from workmanager.services.tokens import TokenService

from .types import register


@pytest.fixture
def wm(make_wm: Any) -> WorkManager:
    registry = Registry()
    register(registry)
    made: WorkManager = make_wm(db="sqlite", backend="database", registry=registry)
    return made


@pytest.fixture
def tokens(wm: WorkManager) -> dict[str, str]:
    service = TokenService(wm.ctx)
    made = {}
    for name, scopes in {
        "reviewer": "view,approve,reject",
        "viewer": "view",
        "operator": "admin",
        "proposer": "propose",
    }.items():
        made[name], _ = service.create(name, scopes)
    return made
