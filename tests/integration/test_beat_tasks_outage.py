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
        with caplog.at_level(logging.WARNING):  # an outage a warning, a refusal an error
            for task in (beat.sweep, beat.maintain, beat.generate):
                assert task.run() == {"skipped": 1}  # not "nothing was due"
    finally:
        set_wm(None)
    assert [r.getMessage() for r in caplog.records] == [
        f"{task} {said}" for task in ("sweep", "maintenance", "generate")
    ]
    level = logging.WARNING if isinstance(error, Unavailable) else logging.ERROR
    assert {r.levelno for r in caplog.records} == {level}
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
            assert beat.generate.run() == {"skipped": 1}  # at once, not behind the first
        release.set()
        first.join(10)
    finally:
        release.set()
        set_wm(None)
    assert any("a previous run is still going" in r.getMessage() for r in caplog.records)


def test_a_long_run_keeps_its_hold_and_a_dead_ones_lapses_soon(
    make_wm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An allocator pass: the hold lasted an hour, renewed by nothing. A run killed
    mid-way kept every generate away for that hour ("a previous run is still going" with
    none going), and a ``discover()`` that hung took one more worker slot each hour. The
    hold is short and renewed while the run goes on."""
    import threading
    import time

    from workmanager import deployment

    monkeypatch.setattr(beat, "GENERATE_HOLD_SECONDS", 0.6)
    wm = make_wm(db="sqlite", backend="database")
    entered, release = threading.Event(), threading.Event()

    def long_run(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        release.wait(10)
        return type("Report", (), {"discovered": [], "created": 0, "existing": 0, "errors": []})

    monkeypatch.setattr(wm.generator, "run", long_run)
    set_wm(wm)
    first = threading.Thread(target=beat.generate.run)
    try:
        first.start()
        assert entered.wait(10)
        time.sleep(1.5)  # well past the hold's 0.6 s: renewed meanwhile
        assert beat.generate.run() == {"skipped": 1}  # still going: skipped
        release.set()
        first.join(10)
        # a run whose process died (its hold taken, never renewed nor given back)
        assert deployment.hold(wm.db, beat.GENERATING, 0.6)
        time.sleep(0.8)
        monkeypatch.setattr(wm.generator, "run", lambda: long_run())
        release.set()
        assert beat.generate.run()["created"] == 0  # taken over within the hold's time
    finally:
        release.set()
        set_wm(None)


def test_another_processs_run_makes_generate_skip_until_its_hold_runs_out(
    make_wm: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The guard was a lock of the process: on the default prefork pool each beat went to
    another child, and a hanging ``discover()`` took them all. The hold is the
    deployment's (a row): another process's, still in time, makes this one skip; one run
    out (its process died) is taken over."""
    from datetime import timedelta

    from workmanager.db.models import DeploymentRecord, utcnow

    wm = make_wm(db="sqlite", backend="database")
    runs: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        runs.append(1)
        return type("Report", (), {"discovered": [], "created": 0, "existing": 0, "errors": []})

    monkeypatch.setattr(wm.generator, "run", counted)

    def held_elsewhere(until: Any) -> None:
        with wm.db.transaction() as s:
            s.merge(
                DeploymentRecord(
                    key=beat.GENERATING,
                    value={"until": until.isoformat(), "by": "celery worker on h2 (pid 7)"},
                    recorded_by="celery worker on h2 (pid 7)",
                )
            )

    set_wm(wm)
    try:
        held_elsewhere(utcnow() + timedelta(minutes=5))
        with caplog.at_level(logging.ERROR):
            assert beat.generate.run() == {"skipped": 1}
        assert runs == []
        held_elsewhere(utcnow() - timedelta(seconds=1))  # its process died an hour ago
        assert beat.generate.run()["created"] == 0
        assert runs == [1]
        with wm.db.transaction() as s:  # given back after the run
            assert s.get(DeploymentRecord, beat.GENERATING) is None
    finally:
        set_wm(None)
    assert any("a previous run is still going" in r.getMessage() for r in caplog.records)


def test_each_request_a_generate_run_refused_is_one_line(
    make_wm: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The beat's run returned only how many were refused: which strategy, type and why
    were nowhere. A strategy that raised is logged where it raised, not twice."""
    wm = make_wm(db="sqlite", backend="database")
    errors = [
        {"strategy": "crm", "type": "no.such", "code": "unknown_order_type", "message": "m1"},
        {"strategy": "crm", "type": None, "code": "allocator_error", "message": "boom"},
    ]
    report = type(
        "Report", (), {"discovered": [1, 2], "created": 0, "existing": 0, "errors": errors}
    )
    monkeypatch.setattr(wm.generator, "run", lambda *a, **k: report)
    set_wm(wm)
    try:
        with caplog.at_level(logging.ERROR, logger="workmanager.worker"):
            assert beat.generate.run()["errors"] == 2
    finally:
        set_wm(None)
    assert [r.getMessage() for r in caplog.records] == [
        "generate: crm refused a request of no.such [unknown_order_type]: m1"
    ]
