"""The beat's tasks in an outage: the sweep, maintenance and generate log one line and leave the
retry to the next beat. They retried with Celery's own delay (180 s), three times, beside
the runs the beat kept sending, each failure with a traceback (an outage pass)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tasks import beat
from tasks.runtime import set_wm
from workmanager.errors import ConfigurationError, Unavailable


def test_the_beat_tasks_skip_a_beat_in_one_line(
    make_wm: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    wm = make_wm(db="sqlite", backend="database")

    def down(*args: Any, **kwargs: Any) -> Any:
        raise Unavailable("database unavailable: server closed the connection unexpectedly")

    monkeypatch.setattr(wm.sweeper, "sweep", down)
    monkeypatch.setattr(wm.maintenance, "run", down)
    monkeypatch.setattr(wm.generator, "run", down)
    set_wm(wm)
    try:
        with caplog.at_level(logging.ERROR):
            assert beat.sweep.run() == {"requeued": 0, "failed": 0}
            assert beat.maintain.run() == {}
            assert beat.generate.run() == {}
    finally:
        set_wm(None)
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "sweep skipped: database unavailable: server closed the connection unexpectedly;"
        " the next beat tries again",
        "maintenance skipped: database unavailable: server closed the connection"
        " unexpectedly; the next beat tries again",
        "generate skipped: database unavailable: server closed the connection"
        " unexpectedly; the next beat tries again",
    ]
    assert not any(r.exc_info for r in caplog.records)


def test_a_beat_task_refused_by_its_configuration_is_one_line(
    make_wm: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Both beat tasks answer a configuration refusal the same way (maintenance raised it
    through Celery, with a traceback, at every beat)."""
    wm = make_wm(db="sqlite", backend="database")

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise ConfigurationError("settings differ", hint="run it with the deployment's")

    monkeypatch.setattr(wm.sweeper, "sweep", refused)
    monkeypatch.setattr(wm.maintenance, "run", refused)
    monkeypatch.setattr(wm.generator, "run", refused)
    set_wm(wm)
    try:
        with caplog.at_level(logging.ERROR):
            assert beat.sweep.run() == {"requeued": 0, "failed": 0}
            assert beat.maintain.run() == {}
            assert beat.generate.run() == {}
    finally:
        set_wm(None)
    assert [r.getMessage() for r in caplog.records] == [
        "sweep refused: settings differ; hint: run it with the deployment's",
        "maintenance refused: settings differ; hint: run it with the deployment's",
        "generate refused: settings differ; hint: run it with the deployment's",
    ]
