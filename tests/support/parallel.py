"""How ``make test`` shares the suite among ``pytest-xdist`` workers (``-n 3 --dist
loadgroup``): most of the suite's time is spent waiting (leases expiring, servers and
workers starting), so three workers on two cores finish in about half the time.

Which tests may run at the same time is decided here, by path, in the scheduler rather
than with ``xdist_group`` marks (pytest 9 ignores the node-id suffix through which
pytest-xdist 3.8 passes marks to its scheduler):

- tests that share one Celery broker (a Redis database, RabbitMQ's queues) run one after
  the other on one worker (``BROKER``);
- tests that are independent of each other and of their order are spread one by one
  (``SPREAD``);
- every other module runs whole on one worker, so its module and session fixtures
  (servers, clusters, browsers) start once.

Each worker has its own PostgreSQL database (``tests/conftest.py``: named after the
process) and its own Redis key prefix per test; a test that needs a Redis database to
itself names one no other test uses (``make_stack`` outside the broker group: the
``broker_db`` fixture, which it refuses to leave at the broker group's db).
"""

from __future__ import annotations

from typing import Any

import pytest

BROKER = ("tests/celery/", "tests/integration/test_schema_head.py")
SPREAD = ("tests/contract/", "tests/integration/", "tests/unit/")


def scope_of(nodeid: str) -> str:
    """The unit of work a test belongs to: tests of one unit run on one worker, in order."""
    path = nodeid.split("::", 1)[0]
    if path.startswith(BROKER):
        return "broker"
    if path.startswith(SPREAD):
        return nodeid
    return path


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class PathGroups(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

    return PathGroups(config, log)
