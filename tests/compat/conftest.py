"""Upstream (laravel-work-manager) scenarios replayed against a real server.

The server is the API suite's (``workmanager serve`` on PostgreSQL, tests/api/conftest.py),
started as a porting user would configure it: ``WORK_MANAGER_LEASE_TOKEN_REQUIRED=false``
(upstream agents send no lease token) and keys enforced on ``submit`` and ``finalize`` only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.api.conftest import Server, start_server

#: How a porting user configures the server for upstream agents.
UPSTREAM_ENV = {
    "WORK_MANAGER_LEASE_TOKEN_REQUIRED": "false",
    "WORK_MANAGER_IDEMPOTENCY_ENFORCE_ON": "submit,finalize",
}


def start_upstream(api_db_url: str, tokens: dict[str, str], **extra: str) -> Server:
    """A server configured as :data:`UPSTREAM_ENV` (and ``extra``), database leases."""
    return start_server(api_db_url, tokens, "database", None, **{**UPSTREAM_ENV, **extra})


@pytest.fixture(scope="module")
def upstream(api_db_url: str, tokens: dict[str, str]) -> Iterator[Any]:
    srv = start_upstream(api_db_url, tokens)
    yield srv
    srv.close()
