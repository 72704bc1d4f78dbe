"""Queue names and the stale-order alerts are configurable (upstream's ``queues.*`` and
``maintenance.enable_alerts``); the defaults stay ``workmanager``, ``workmanager.apply`` and
``agents.<type>``."""

from __future__ import annotations

import importlib
import sys
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tasks.dispatcher import APPLY, CHECK_AUTO_APPROVAL, CeleryDispatcher
from workmanager.errors import ConfigurationError
from workmanager.settings import Settings


class SendRecorder:
    """Stands in for the Celery app: only ``send_task`` is used by the dispatcher."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str | None]] = []

    def send_task(
        self, name: str, kwargs: Any = None, queue: str | None = None, **options: Any
    ) -> None:
        self.sent.append((name, queue))


def _announce(settings: Settings | None) -> list[tuple[str, str | None]]:
    from celery import Celery

    chain = CeleryDispatcher(Celery("t"), settings).approval_chain(uuid.uuid4())
    sent = [(task.name, task.options["queue"]) for task in chain.tasks]
    app = SendRecorder()
    dispatcher = CeleryDispatcher(app, settings)  # type: ignore[arg-type]
    dispatcher.order_approved(uuid.uuid4())
    dispatcher.items_available("shop.restock", [uuid.uuid4()])
    return sent + app.sent


def test_default_queue_names_are_unchanged() -> None:
    assert _announce(None) == [
        (CHECK_AUTO_APPROVAL, "workmanager"),
        (APPLY, "workmanager.apply"),  # the chain's child
        (APPLY, "workmanager.apply"),
        ("workmanager.agents.shop.restock", "agents.shop.restock"),
    ]


def test_queue_names_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORK_MANAGER_CONTROL_QUEUE", "work:maintenance")
    monkeypatch.setenv("WORK_MANAGER_APPLY_QUEUE", "work:planning")
    monkeypatch.setenv("WORK_MANAGER_AGENT_QUEUE_PREFIX", "agents:")
    settings = Settings.from_env()
    assert _announce(settings) == [
        (CHECK_AUTO_APPROVAL, "work:maintenance"),
        (APPLY, "work:planning"),
        (APPLY, "work:planning"),
        ("workmanager.agents.shop.restock", "agents:shop.restock"),
    ]
    # celeryconfig routes and consumes the same names
    sys.modules.pop("celeryconfig", None)
    config = importlib.import_module("celeryconfig")
    try:
        assert config.task_default_queue == "work:maintenance"
        assert [q.name for q in config.task_queues] == ["work:maintenance", "work:planning"]
        assert config.task_routes["workmanager.orders.apply"] == {"queue": "work:planning"}
        assert config.task_routes["workmanager.*"] == {"queue": "work:maintenance"}
    finally:
        sys.modules.pop("celeryconfig", None)


@pytest.mark.parametrize("value", ["", "two words"])
def test_a_bad_queue_name_names_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("WORK_MANAGER_APPLY_QUEUE", value)
    with pytest.raises(ConfigurationError, match="WORK_MANAGER_APPLY_QUEUE"):
        Settings.from_env()


def test_enable_alerts_turns_the_stale_check_off(make_wm: Callable[..., Any]) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from tests.support.types import Simple
    from workmanager import Registry
    from workmanager.db.models import Order, utcnow

    for enabled, expected in ((True, 1), (False, 0)):
        wm = make_wm(registry=Registry([Simple()]), enable_alerts=enabled)
        order_id = wm.propose("test.simple", {"n": 1})
        with wm.db.transaction() as s:
            old = utcnow() - timedelta(days=3)
            s.execute(update(Order).where(Order.id == order_id).values(last_transitioned_at=old))
        report = wm.maintenance.run(dead_letter=False, purge_keys=False, recover_applies=False)
        assert len(report.stale_orders) == expected
        wm.close()
