"""The beat's tasks when they cannot run: the sweep, maintenance and generate log one line
and leave the retry to the next beat. In an outage they retried with Celery's own delay
(180 s), three times, beside the runs the beat kept sending, each failure with a
traceback (an outage pass); maintenance raised a configuration refusal through Celery."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tasks import beat
from tasks.runtime import set_wm
from workmanager.errors import ConfigurationError, Unavailable, WorkManagerError

DOWN = Unavailable("database unavailable: server closed the connection unexpectedly")
REFUSED = ConfigurationError("settings differ", hint="run it with the deployment's")


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (DOWN, "skipped: database unavailable: server closed the connection unexpectedly;"
               " the next beat tries again"),
        (REFUSED, "refused: settings differ; hint: run it with the deployment's"),
    ],
)  # fmt: skip
def test_a_beat_task_that_cannot_run_says_so_in_one_line(
    make_wm: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: WorkManagerError,
    said: str,
) -> None:
    wm = make_wm(db="sqlite", backend="database")

    def cannot(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(wm.sweeper, "sweep", cannot)
    monkeypatch.setattr(wm.maintenance, "run", cannot)
    monkeypatch.setattr(wm.generator, "run", cannot)
    set_wm(wm)
    try:
        with caplog.at_level(logging.ERROR):
            assert beat.sweep.run() == {"requeued": 0, "failed": 0}
            assert beat.maintain.run() == {}
            assert beat.generate.run() == {}
    finally:
        set_wm(None)
    assert [r.getMessage() for r in caplog.records] == [
        f"{task} {said}" for task in ("sweep", "maintenance", "generate")
    ]
    assert not any(r.exc_info for r in caplog.records)


def test_a_generate_run_still_going_makes_the_next_one_skip(
    make_wm: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A ``discover()`` that never returned held one worker slot per beat (every 15
    minutes) until the control worker took nothing else (a type author's pass)."""
    import threading

    wm = make_wm(db="sqlite", backend="database")
    entered, release = threading.Event(), threading.Event()

    def hangs(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        release.wait(10)
        return type("Report", (), {"discovered": [], "created": 0, "existing": 0, "errors": []})

    monkeypatch.setattr(wm.generator, "run", hangs)
    set_wm(wm)
    first = threading.Thread(target=beat.generate.run)
    try:
        first.start()
        assert entered.wait(10)
        with caplog.at_level(logging.ERROR):
            assert beat.generate.run() == {}  # at once, not behind the first
        release.set()
        first.join(10)
    finally:
        release.set()
        set_wm(None)
    assert any("the previous run is still going" in r.getMessage() for r in caplog.records)
