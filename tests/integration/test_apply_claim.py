"""The apply claim (issue 11, item 6; ``services/apply.py``): at most one apply body runs
per order at a time, only the claim holder records success or failure, and maintenance sends
the apply again only for an order whose claim has lapsed. On PostgreSQL (the SQL path) and
on SQLite (the ORM path), with two WorkManagers standing for two workers."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from tests.support.types import Gated, WorkerDied
from workmanager import Registry, WorkManager
from workmanager.db.models import Order, utcnow
from workmanager.errors import ApplyFailed

PATHS = [
    pytest.param(("sqlite", "database"), id="sqlite"),
    pytest.param(("postgres", "database"), id="postgres", marks=pytest.mark.postgres),
]


class Clock:
    """The real time, moved forward by hand."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return utcnow() + self.offset


@pytest.fixture(params=PATHS)
def workers(
    request: pytest.FixtureRequest, make_wm: Callable[..., WorkManager]
) -> Callable[..., tuple[WorkManager, WorkManager]]:
    """Two WorkManagers (two workers) on one database, sharing a registry and a clock."""
    db, backend = request.param

    def build(gated: Gated, **settings: Any) -> tuple[WorkManager, WorkManager]:
        registry = Registry([gated])
        pair = [make_wm(db=db, backend=backend, registry=registry, **settings) for _ in "ab"]
        clock = Clock()
        for wm in pair:
            wm.ctx.clock = clock
        return pair[0], pair[1]

    return build


def approved_order(wm: WorkManager) -> uuid.UUID:
    order_id = wm.propose("test.gated", {})
    lease = wm.agent.checkout("agent-1", order_id=order_id)
    assert lease is not None
    wm.agent.submit(lease, {"ok": True})
    wm.approve(order_id)
    return order_id


def events(wm: WorkManager, order_id: uuid.UUID) -> list[str]:
    return [e["event"] for e in wm.queries.events(order_id)]


def applying(wm: WorkManager, order_id: uuid.UUID, outcome: dict[str, Any]) -> threading.Thread:
    """Run A: ``wm``'s apply of ``order_id`` on a thread of its own, started; its outcome
    (or what it raised) lands in ``outcome["a"]``."""

    def run_a() -> None:
        try:
            outcome["a"] = wm.executor.apply(order_id)
        except BaseException as exc:  # asserted by the tests
            outcome["a"] = exc

    thread = threading.Thread(target=run_a)
    thread.start()
    return thread


def claim_of(wm: WorkManager, order_id: uuid.UUID) -> tuple[str | None, datetime | None]:
    with wm.db.transaction() as s:
        order = s.get(Order, order_id)
        assert order is not None
        return order.apply_claim, order.apply_claim_expires_at


def test_a_duplicate_run_backs_off_and_cannot_fail_a_successful_apply(
    workers: Callable[..., tuple[WorkManager, WorkManager]],
) -> None:
    """Run A's body is slow and will succeed; run B (a duplicate delivery) would fail, and
    with no retries left would record ``failed``. B must back off without running its body;
    A's success is recorded once."""
    gated = Gated("wait", "fail")
    a, b = workers(gated, apply_max_retries=0)
    order_id = approved_order(a)
    outcome: dict[str, Any] = {}
    thread = applying(a, order_id, outcome)
    try:
        assert gated.entered.wait(30), "run A never started its body"
        claim, expires = claim_of(b, order_id)
        assert claim is not None and expires is not None and expires > utcnow()
        backed_off = b.executor.apply(order_id)  # B: the duplicate, while A runs
    finally:
        gated.release.set()
        thread.join(30)
    assert not backed_off.recorded and backed_off.order["state"] == "approved"
    assert backed_off.retry_after is not None and 0 < backed_off.retry_after <= 300
    assert gated.calls == 1 and gated.most_at_once == 1  # B's body never ran

    done = outcome["a"]
    assert not isinstance(done, BaseException), done
    assert done.recorded and done.order["state"] == "completed"
    names = events(a, order_id)
    assert names.count("applied") == 1
    assert "apply_failed" not in names and "apply_retrying" not in names
    assert claim_of(a, order_id) == (None, None)  # recording released the claim

    late = b.executor.apply(order_id)  # B's retry, after the fact: a no-op
    assert not late.recorded and late.retry_after is None
    assert late.order["state"] == "completed" and gated.calls == 1


def test_a_long_apply_keeps_its_claim_while_its_body_runs(
    workers: Callable[..., tuple[WorkManager, WorkManager]],
) -> None:
    """SPEC §13: at most one apply body per order at a time, however long it runs. A's
    body runs past the claim's lifetime (1 s) several times over; its claim is renewed
    meanwhile, so B (a duplicate delivery, or maintenance's resend) backs off instead of
    running a second body beside it. Once A's body ends, its claim is no longer renewed."""
    gated = Gated("wait", "ok")
    a, b = workers(gated, apply_recovery_seconds=1)
    order_id = approved_order(a)
    outcome: dict[str, Any] = {}
    thread = applying(a, order_id, outcome)
    try:
        assert gated.entered.wait(30), "run A never started its body"
        backed_off = []
        for _ in range(5):  # 2.5 s: the claim's lifetime 2.5 times over
            time.sleep(0.5)
            claim, expires = claim_of(b, order_id)
            assert claim is not None and expires is not None and expires > utcnow()
            backed_off.append(b.executor.apply(order_id))
        assert b.maintenance.stuck_applies() == []
    finally:
        gated.release.set()
        thread.join(30)
    assert all(not o.recorded and o.retry_after for o in backed_off), backed_off
    assert gated.calls == 1 and gated.most_at_once == 1  # B's body never ran
    done = outcome["a"]
    assert not isinstance(done, BaseException), done
    assert done.recorded and done.order["state"] == "completed"
    assert a.executor.renewer._due == {}  # nothing renewed after the body


def test_only_the_claim_holder_records_a_failure(
    workers: Callable[..., tuple[WorkManager, WorkManager]],
) -> None:
    """A's claim lapses mid-body (it ran past APPLY_RECOVERY_SECONDS); B takes it over and
    succeeds. A's late failure then records nothing: the order stays applied by B."""
    gated = Gated("wait-fail", "ok")
    a, b = workers(gated, apply_max_retries=0, apply_recovery_seconds=60)
    order_id = approved_order(a)
    outcome: dict[str, Any] = {}
    thread = applying(a, order_id, outcome)
    try:
        assert gated.entered.wait(30)
        b.ctx.clock.offset = timedelta(seconds=61)  # type: ignore[attr-defined]
        taken_over = b.executor.apply(order_id)  # A's claim lapsed: B takes it
        assert taken_over.recorded and taken_over.order["state"] == "completed"
    finally:
        gated.release.set()  # A's body now fails
        thread.join(30)
    assert isinstance(outcome["a"], ApplyFailed)
    assert outcome["a"].details["final"] is False  # nothing recorded for A
    names = events(a, order_id)
    assert names.count("applied") == 1 and "apply_failed" not in names
    assert a.queries.order(order_id)["state"] == "completed"


def test_maintenance_recovers_a_lapsed_claim_and_not_a_live_one(
    workers: Callable[..., tuple[WorkManager, WorkManager]],
) -> None:
    gated = Gated("die")
    a, b = workers(gated, apply_recovery_seconds=30)
    order_id = approved_order(a)
    with pytest.raises(WorkerDied):  # the worker died mid-apply: its claim stays behind
        a.executor.apply(order_id)
    claim, expires = claim_of(a, order_id)
    assert claim is not None and expires is not None

    # Nothing touched the order for an hour (as far as updated_at says), but the claim is
    # live: an apply may still be running, so it is not sent again.
    with a.db.transaction() as s:
        s.execute(
            update(Order)
            .where(Order.id == order_id)
            .values(updated_at=utcnow() - timedelta(hours=1))
        )
    assert b.maintenance.stuck_applies() == []
    assert b.maintenance.run().recovered_applies == []
    busy = b.executor.apply(order_id)
    assert busy.retry_after is not None and gated.calls == 1

    b.ctx.clock.offset = timedelta(seconds=31)  # type: ignore[attr-defined]  # lapsed
    report = b.maintenance.run()
    assert report.recovered_applies == [order_id]
    assert b.dispatcher.approved == [order_id]  # type: ignore[attr-defined]
    assert b.maintenance.run().recovered_applies == []  # once per window
    recovered = b.executor.apply(order_id)
    assert recovered.recorded and recovered.order["state"] == "completed"
    assert gated.calls == 2 and events(b, order_id).count("applied") == 1


@pytest.mark.parametrize("script", ["ok", "fail"])
def test_a_run_records_its_outcome_through_a_moment_the_database_is_away(
    workers: Callable[..., tuple[WorkManager, WorkManager]],
    monkeypatch: pytest.MonkeyPatch,
    script: str,
) -> None:
    """Found by a PostgreSQL outage pass: a statement timeout on the record after the body
    ran left the claim held by a run that had given up; the task's retry came with a new
    claim, met that one, and backed off until it lapsed (the order ``approved`` for
    ``APPLY_RECOVERY_SECONDS``, its body run a second time then). The run that holds the
    claim now tries its record again while the database is away."""
    from workmanager.errors import Unavailable
    from workmanager.services import apply as apply_module

    monkeypatch.setattr(apply_module.RECORDING, "first_wait", 0.01)
    gated = Gated(script)
    a, _ = workers(gated, apply_max_retries=0)
    order_id = approved_order(a)
    store = a.executor.store
    step = "record_apply" if script == "ok" else "fail_apply"
    real = getattr(store, step)
    outages = [Unavailable("database unavailable: canceling statement due to statement timeout")]

    def after_an_outage(*args: Any, **kwargs: Any) -> Any:
        if outages:
            raise outages.pop()
        return real(*args, **kwargs)

    monkeypatch.setattr(store, step, after_an_outage)
    if script == "ok":
        assert a.executor.apply(order_id).order["state"] == "completed"
    else:
        with pytest.raises(ApplyFailed):
            a.executor.apply(order_id)
        assert a.queries.order(order_id)["state"] == "failed"
    assert outages == [] and gated.calls == 1
    assert claim_of(a, order_id) == (None, None)


def cut_short(wm: WorkManager, order_id: uuid.UUID, runs: int) -> None:
    """``runs`` applies whose process dies mid-body, each claim left to lapse (31 s on)."""
    for _ in range(runs):
        with pytest.raises(WorkerDied):
            wm.executor.apply(order_id)
        wm.ctx.clock.offset += timedelta(seconds=31)  # type: ignore[attr-defined]  # lapsed


def test_an_apply_whose_process_dies_every_time_fails_once_its_retries_are_spent(
    workers: Callable[..., tuple[WorkManager, WorkManager]],
) -> None:
    """An apply that ends its process (``os._exit``, a time limit, the OOM killer) records
    nothing: its claim lapsed, maintenance sent it again, and it ran for ever, the order
    ``approved`` (a Celery pass: six runs past a limit of four). Past twice the runs the
    retries allow (room for runs overtaken after a stall), the order fails without a run."""
    gated = Gated(*["die"] * 6)
    a, _ = workers(gated, apply_max_retries=2, apply_recovery_seconds=30)
    order_id = approved_order(a)
    cut_short(a, order_id, 6)
    with pytest.raises(ApplyFailed) as failed:
        a.executor.apply(order_id)
    assert failed.value.details["final"] is True and "the process died" in failed.value.message
    assert gated.calls == 6  # the seventh run did not run the body
    assert a.queries.order(order_id)["state"] == "failed"
    assert "apply_failed" in events(a, order_id)


def test_an_apply_or_a_hook_calling_sys_exit_is_a_recorded_failure(
    workers: Callable[..., tuple[WorkManager, WorkManager]],
) -> None:
    """``sys.exit()`` in ``apply()`` passed every ``except Exception`` into Celery: the
    control worker hung on the message (threads pool), exited (solo), or the order came
    back for ever (prefork)."""

    class Exits(Gated):
        def apply(self, order: Any, ctx: Any) -> Any:
            raise SystemExit(3)

    a, _ = workers(Exits(), apply_max_retries=0)
    order_id = approved_order(a)
    with pytest.raises(ApplyFailed) as failed:
        a.executor.apply(order_id)
    assert failed.value.details["exception"] == "SystemExit"
    assert a.queries.order(order_id)["state"] == "failed"


def test_an_apply_stopped_by_a_signal_is_no_attempt(
    workers: Callable[..., tuple[WorkManager, WorkManager]],
) -> None:
    """A signals pass: a process group's SIGTERM reaches a prefork worker's child, where
    billiard raises ``SystemExit(-241)`` in the body: it was recorded as a failed attempt
    (with no retries left, the order failed). The exit goes on; nothing is recorded, and
    the claim lapses for the apply to be sent again, as after a crash."""

    class Stopped(Gated):
        def apply(self, order: Any, ctx: Any) -> Any:
            raise SystemExit(-(256 - 15))

    a, _ = workers(Stopped(), apply_max_retries=0)
    order_id = approved_order(a)
    with pytest.raises(SystemExit):
        a.executor.apply(order_id)
    assert a.queries.order(order_id)["state"] == "approved"
    assert "apply_failed" not in events(a, order_id)


def test_runs_cut_short_are_not_failures_of_the_retry_budget(
    workers: Callable[..., tuple[WorkManager, WorkManager]],
) -> None:
    """An approval pass: three runs a rolling restart cut short (their claims lapsed, the
    apply sent again) counted as attempts, so the first real failure after them failed the
    order with no retry (``APPLY_MAX_RETRIES`` 3). The budget counts recorded failures:
    each still gets its retry, the attempt number still counts every run."""
    gated = Gated("die", "die", "die", "fail", "fail", "fail", "fail")
    a, _ = workers(gated, apply_max_retries=3, apply_recovery_seconds=30)
    order_id = approved_order(a)
    cut_short(a, order_id, 3)
    finals = []
    for _ in range(4):
        with pytest.raises(ApplyFailed) as failed:
            a.executor.apply(order_id)
        finals.append((failed.value.details["failures"], failed.value.details["final"]))
    assert finals == [(1, False), (2, False), (3, False), (4, True)]
    assert failed.value.details["attempt"] == 7
    assert events(a, order_id).count("apply_retrying") == 3
    last_error = a.queries.order(order_id)["last_error"]
    assert (last_error["attempt"], last_error["failures"]) == (7, 4)


def test_runs_that_raised_are_not_counted_as_runs_cut_short(
    workers: Callable[..., tuple[WorkManager, WorkManager]],
) -> None:
    """A review of the budget's change: the cap on runs that ended without an outcome
    compared every run with it, those that raised too, so three failures and five restarts
    failed the order with "8 runs … ended without an outcome" and a retry still due."""
    gated = Gated("fail", "fail", "fail", "die", "die", "die", "die", "die")
    a, _ = workers(gated, apply_max_retries=3, apply_recovery_seconds=30)
    order_id = approved_order(a)
    for step in gated.script:
        with pytest.raises(ApplyFailed if step == "fail" else WorkerDied):
            a.executor.apply(order_id)
        a.ctx.clock.offset += timedelta(seconds=31)  # type: ignore[attr-defined]  # lapsed
    assert a.executor.apply(order_id).recorded  # the ninth run ran, and applied
    assert gated.calls == 9


@pytest.mark.parametrize("said", ["missing", None, "3"])
def test_an_upgrade_gives_no_retries_back_to_an_order_failing_its_apply(
    workers: Callable[..., tuple[WorkManager, WorkManager]], said: Any
) -> None:
    """A review of the budget's change: a failure recorded before ``failures`` was stored
    (a row from the version before, an old worker in a rolling deploy) counted as none, so
    an order with its three retries spent got three more runs of a failing apply after the
    upgrade. It counts as its run's ``attempt``, as the budget was counted then."""
    gated = Gated(*["fail"] * 5)
    a, _ = workers(gated, apply_max_retries=3)
    order_id = approved_order(a)
    for _ in range(3):
        with pytest.raises(ApplyFailed):
            a.executor.apply(order_id)
        a.ctx.clock.offset += timedelta(hours=1)  # type: ignore[attr-defined]  # backoff over
    with a.db.transaction() as s:
        order = s.get(Order, order_id)
        assert order is not None and order.last_error["failures"] == 3
        old = {k: v for k, v in order.last_error.items() if k != "failures"}
        if said != "missing":
            old["failures"] = said
        s.execute(update(Order).where(Order.id == order_id).values(last_error=old))
    with pytest.raises(ApplyFailed) as failed:
        a.executor.apply(order_id)
    assert failed.value.details["final"] is True and gated.calls == 4
    assert a.queries.order(order_id)["state"] == "failed"


class TwoRuns(Gated):
    """Run A's body fails once released; run B's (the second attempt) holds until told."""

    def __init__(self) -> None:
        super().__init__("wait-fail", "ok")
        self.b_entered, self.b_release = threading.Event(), threading.Event()

    def apply(self, order: Any, ctx: Any) -> Any:
        if ctx.attempt == 2:
            self.b_entered.set()
            assert self.b_release.wait(30), "the test never released run B"
        return super().apply(order, ctx)


def test_a_run_that_lost_its_claim_cannot_fail_the_order_while_another_runs(
    workers: Callable[..., tuple[WorkManager, WorkManager]],
) -> None:
    """A mutation pass: the claim check of a failure's record (``fail_apply``) could go
    unnoticed, as A failed only after B had completed. Here A fails while B, which took
    the lapsed claim, still runs: A's last failure must record nothing (the order would be
    ``failed`` with B's work done, and an operator's retry apply it twice)."""
    gated = TwoRuns()
    a, b = workers(gated, apply_max_retries=0, apply_recovery_seconds=60)
    order_id = approved_order(a)
    outcome: dict[str, Any] = {}
    thread_a = applying(a, order_id, outcome)
    b_outcome: dict[str, Any] = {}
    thread_b: threading.Thread | None = None
    try:
        assert gated.entered.wait(30)
        b.ctx.clock.offset = timedelta(seconds=61)  # type: ignore[attr-defined]  # A lapsed
        thread_b = applying(b, order_id, b_outcome)
        assert gated.b_entered.wait(30), "run B never took the lapsed claim"
        gated.release.set()  # A's body fails now, B's still runs
        thread_a.join(30)
        assert isinstance(outcome["a"], ApplyFailed) and outcome["a"].details["final"] is False
        assert a.queries.order(order_id)["state"] == "approved"
        assert "apply_failed" not in events(a, order_id)
    finally:
        gated.release.set()
        gated.b_release.set()
        thread_a.join(30)
        if thread_b is not None:
            thread_b.join(30)
    assert b_outcome["a"].recorded and a.queries.order(order_id)["state"] == "completed"
