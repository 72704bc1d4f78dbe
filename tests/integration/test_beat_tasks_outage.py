"""The beat's tasks in an outage: the sweep and maintenance log one line and leave the
retry to the next beat. They retried with Celery's own delay (180 s), three times, beside
the runs the beat kept sending, each failure with a traceback (an outage pass)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tasks import leases, maintenance
from tasks.runtime import set_wm
from workmanager.errors import Unavailable


def test_the_sweep_and_maintenance_skip_a_beat_in_one_line(
    make_wm: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    wm = make_wm(db="sqlite", backend="database")

    def down(*args: Any, **kwargs: Any) -> Any:
        raise Unavailable("database unavailable: server closed the connection unexpectedly")

    monkeypatch.setattr(wm.sweeper, "sweep", down)
    monkeypatch.setattr(wm.maintenance, "run", down)
    set_wm(wm)
    try:
        with caplog.at_level(logging.ERROR):
            assert leases.sweep.run() == {"requeued": 0, "failed": 0}
            assert maintenance.run.run() == {}
    finally:
        set_wm(None)
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "sweep skipped: database unavailable: server closed the connection unexpectedly;"
        " the next beat tries again",
        "maintenance skipped: database unavailable: server closed the connection"
        " unexpectedly; the next beat tries again",
    ]
    assert not any(r.exc_info for r in caplog.records)
