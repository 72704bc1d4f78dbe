"""The hint of a send the broker did not take says what to do about that broker."""

from __future__ import annotations

from pathlib import Path

from kombu.exceptions import OperationalError

from tasks.broker import broker_unavailable


def test_a_locked_embedded_broker_is_not_said_to_be_down(tmp_path: Path) -> None:
    """Found by an upgrade pass: `orders create` while another process held the embedded
    broker's SQLite lock said "is the broker running?", though the file was fine."""
    url = f"sqla+sqlite:///{tmp_path}/broker.db"
    locked = broker_unavailable(
        url, OperationalError("(sqlite3.OperationalError) database is locked")
    )
    assert locked.code == "unavailable"
    assert locked.message.endswith("database is locked")
    assert locked.hint is not None
    assert locked.hint.startswith("another process held the embedded broker's SQLite lock")
    down = broker_unavailable("redis://127.0.0.1:1/0", OperationalError("Connection refused"))
    assert down.hint == "is the broker running? check WORK_MANAGER_BROKER_URL"


def test_enqueue_order_says_a_broker_that_is_not_there_in_one_error() -> None:
    """Only the CLI translated it: ``workmanager demo`` (and any producer) got kombu's
    traceback, 129 lines, for a broker that was not running."""
    import pytest
    from celery import Celery

    from tasks.producer import enqueue_order
    from tests.support.types import Simple
    from workmanager.errors import Unavailable
    from workmanager.registry import Registry

    app = Celery("down", broker="redis://:S3cret@127.0.0.1:1/0")
    app.conf.broker_connection_retry = False
    app.conf.broker_connection_max_retries = 0
    app.conf.broker_transport_options = {"max_retries": 0}
    with pytest.raises(Unavailable) as raised:
        enqueue_order("test.simple", {}, app=app, registry=Registry([Simple()]))
    assert raised.value.hint == "is the broker running? check WORK_MANAGER_BROKER_URL"
    assert "S3cret" not in raised.value.text()
