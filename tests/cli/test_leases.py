"""``workmanager leases …``: selectors, the refusal of no selector, dry runs, outcomes."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from tests.cli.conftest import Console
from workmanager.db.models import utcnow
from workmanager.durations import parse_duration
from workmanager.errors import InvalidQuery, ValidationFailed
from workmanager.lease_tokens import Holder
from workmanager.reads.leases import LeaseSelector
from workmanager.services.lease_admin import LeaseAdmin


def _hold(console: Console, count: int = 2, agents: tuple[str, ...] = ("a1", "a2")) -> None:
    wm = console.wm
    for _ in range(count):
        wm.propose("test.multi", {"count": len(agents)})
    for _ in range(count):
        for agent in agents:
            assert wm.agent.checkout(agent) is not None


def _snapshot(console: Console) -> list[tuple[str, str, int, int, str | None]]:
    rows = console.json("items", "list", "--limit", "1000")
    return sorted(
        (r["id"], r["state"], r["attempts"], r["lease_expires_at"] or "", r["leased_by_agent_id"])
        for r in rows
    )


@pytest.mark.parametrize("command", ["release", "extend"])
def test_no_selector_is_refused_and_changes_nothing(console: Console, command: str) -> None:
    _hold(console)
    before = _snapshot(console)
    extra = ["--seconds", "60"] if command == "extend" else []
    result = console("leases", command, *extra, code=2)
    assert "no lease selector" in result.output and "--all" in result.output
    assert _snapshot(console) == before


def test_service_refuses_an_empty_selector(console: Console) -> None:
    with pytest.raises(InvalidQuery):
        LeaseAdmin(console.wm.ctx).release(LeaseSelector())


def test_reclaim_without_selector_takes_only_expired_leases(
    console_for: Callable[..., Console],
) -> None:
    """SPEC §13: as upstream's lease:reclaim, ``leases reclaim`` alone reclaims the expired
    leases (event lease_expired) and leaves live ones; ``--dry-run`` lists them first."""
    console = console_for(backend="database")  # the rows are the leases: expiry by row
    _hold(console)
    wm = console.wm
    live = {i["item_id"] for i in console.json("leases", "list", "--agent", "a2")}
    # a1's two leases expire: their recorded expiry is pushed into the past
    from sqlalchemy import update

    from workmanager.db.models import Item

    with wm.ctx.db.transaction() as s:
        s.execute(
            update(Item)
            .where(Item.leased_by_agent_id == "a1")
            .values(lease_expires_at=utcnow() - timedelta(seconds=5))
        )
    before = _snapshot(console)
    preview = console.json("leases", "reclaim", "--dry-run")
    assert preview["counts"] == {"requeued": 2} and _snapshot(console) == before
    assert {r["agent_id"] for r in preview["leases"]} == {"a1"}
    report = console.json("leases", "reclaim")
    assert report["counts"] == {"requeued": 2} and report["dry_run"] is False
    assert {i["item_id"] for i in console.json("leases", "list")} == live
    events = [e["event"] for e in console.jsonl("ops", "tail", "-n", "50")]
    assert events.count("lease_expired") == 2 and "lease_reclaimed" not in events
    assert console.json("leases", "reclaim")["leases"] == []  # nothing expired any more
    # a selector narrows it: --expired with --agent takes only that agent's expired leases
    assert console.json("leases", "reclaim", "--expired", "--agent", "a2")["leases"] == []
    table_out = console("leases", "reclaim").stdout
    assert "no lease matched" in table_out


@pytest.mark.parametrize("command", ["reclaim", "release", "extend"])
def test_dry_run_reports_and_changes_nothing(console: Console, command: str) -> None:
    _hold(console)
    before, announced = _snapshot(console), len(console.dispatched.available)
    extra = ["--seconds", "60"] if command == "extend" else []
    report = console.json("leases", command, "--all", "--dry-run", *extra)
    assert report["dry_run"] is True and len(report["leases"]) == 4
    expected = {"reclaim": "requeued", "release": "released", "extend": "extended"}[command]
    assert report["counts"] == {expected: 4}
    assert _snapshot(console) == before
    assert len(console.dispatched.available) == announced


def test_release_by_agent_gives_the_attempt_back(console: Console) -> None:
    _hold(console)
    dispatched = len(console.dispatched.available)
    report = console.json("leases", "release", "--agent", "a1")
    assert report["counts"] == {"released": 2}
    assert {r["agent_id"] for r in report["leases"]} == {"a1"}
    items = console.json("items", "list")
    released = [i for i in items if i["state"] == "queued"]
    assert len(released) == 2 and all(i["attempts"] == 0 for i in released)
    assert all(i["available_at"] is None for i in released)
    held = [i for i in items if i["leased_by_agent_id"] == "a2"]
    assert len(held) == 2 and all(i["state"] == "leased" for i in held)
    assert len(console.dispatched.available) == dispatched + 1  # one announcement, 2 ids
    events = [e["event"] for e in console.jsonl("ops", "tail", "-n", "50")]
    assert events.count("lease_released") == 2


def test_reclaim_requeues_with_backoff_or_fails_when_spent(
    console_for: Callable[..., Console],
) -> None:
    console = console_for(retry_backoff_seconds=0, retry_jitter_seconds=0)
    wm = console.wm
    order_id = wm.propose("test.simple", {})
    lease = wm.agent.checkout("a1")
    assert lease is not None
    report = console.json("leases", "reclaim", "--order", str(order_id))
    assert report["counts"] == {"requeued": 1}
    assert report["leases"][0]["available_at"] is not None  # backoff, as the sweep does
    order = console.json("orders", "show", str(order_id))
    # reclaim is an expiry brought forward: it changes the item, not the order (SPEC §3.1)
    assert order["state"] == "in_progress" and order["items"][0]["attempts"] == 1
    # spend the attempts: the last reclaim fails the item and the order
    for _ in range(2):
        assert wm.agent.checkout("a1") is not None
        report = console.json("leases", "reclaim", "--type", "test.simple")
    assert report["counts"] == {"failed": 1}
    assert console.json("orders", "show", str(order_id))["state"] == "failed"


def test_extend_moves_expiry_by_seconds(console: Console) -> None:
    _hold(console, count=1)
    before = {i["item_id"]: i["lease_expires_at"] for i in console.json("leases", "list")}
    report = console.json("leases", "extend", "--agent", "a2", "--seconds", "3600")
    assert report["counts"] == {"extended": 1}
    change = report["leases"][0]
    old, new = parse_iso(before[change["item_id"]]), parse_iso(change["new_lease_expires_at"])
    assert new - old == timedelta(seconds=3600)  # from the expiry the operator was shown
    # the lock (memory store) now ends then, within the call's own time, as reads show it
    listed = {i["item_id"]: i for i in console.json("leases", "list")}
    shown = parse_iso(listed[change["item_id"]]["lease_expires_at"])
    assert timedelta(0) <= shown - new < timedelta(milliseconds=250)
    assert _item_expiry(console, change["item_id"]) == listed[change["item_id"]]["lease_expires_at"]
    assert console("leases", "extend", "--all", "--seconds", "0", code=2)


@pytest.mark.parametrize("backend", ["database", "memory"])
def test_an_extend_past_the_last_date_skips_that_lease(
    console_for: Callable[..., Console], backend: str
) -> None:
    """Found by a pass over time inputs: each extend is at most ten years, but they add
    up; a lease pushed near the year 9999 made ``leases extend`` (and its dry run) a
    traceback, the console's extend a 500, and no other selected lease was extended."""
    from sqlalchemy import update

    from workmanager.db.models import Item

    console = console_for(backend=backend)
    _hold(console, count=1)
    far = {i["item_id"] for i in console.json("leases", "list", "--agent", "a1")}
    (far_id,) = far
    late = datetime(9995, 1, 1, tzinfo=UTC)
    with console.wm.ctx.db.transaction() as s:
        s.execute(update(Item).where(Item.id == uuid.UUID(far_id)).values(lease_expires_at=late))
    lock = console.wm.ctx.leases.lock
    if lock is not None:  # the lock's end is the lease's: push it out as far
        row = console.json("leases", "list", "--agent", "a1")[0]
        holder = Holder("a1", int(row["lease_token"]), _secret_hash(console, far_id))
        ttl_ms = int((late - datetime.now(UTC)).total_seconds() * 1000)
        lock.extend_lock(uuid.UUID(far_id), holder, ttl_ms, row["order_type"])
    ten_years = str(3650 * 86400)
    for dry in ([], ["--dry-run"]):
        report = console.json("leases", "extend", "--all", "--seconds", ten_years, *dry)
        outcomes = {c["item_id"]: c for c in report["leases"]}
        assert outcomes[far_id]["outcome"] == "skipped"
        assert "after the year 9999" in outcomes[far_id]["reason"]
        assert {c["outcome"] for i, c in outcomes.items() if i != far_id} == {"extended"}


def _secret_hash(console: Console, item_id: str) -> str:
    from workmanager.db.models import Item

    with console.wm.ctx.db.transaction() as s:
        item = s.get(Item, uuid.UUID(item_id))
        assert item is not None and item.lease_secret_hash is not None
        return item.lease_secret_hash


def test_list_shows_the_lock_expiry_after_a_lock_only_heartbeat(console: Console) -> None:
    """A heartbeat that touched only the lock store left the row's expiry behind: ``leases
    list`` shows the lease's expiry as every other read does (the lock's), not the row's."""
    wm = console.wm
    wm.propose("test.multi", {"count": 1})
    lease = wm.agent.checkout("a1")
    assert lease is not None
    lease = wm.agent.heartbeat(lease)  # the first beat moves the item in_progress (the row)
    listed_before = console.json("leases", "list")[0]["lease_expires_at"]
    time.sleep(0.02)
    wm.agent.heartbeat(lease)  # lock only: the row keeps its expiry
    listed = console.json("leases", "list")[0]["lease_expires_at"]
    assert listed != listed_before
    assert listed == _item_expiry(console, str(lease.item_id))


def _item_expiry(console: Console, item_id: str) -> str:
    """The item's lease expiry as ``items list`` shows it."""
    rows = console.json("items", "list", "--limit", "1000")
    return next(r["lease_expires_at"] for r in rows if r["id"] == item_id)


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_older_than_selects_by_grant_time(console: Console) -> None:
    _hold(console, count=1)
    assert console.json("leases", "reclaim", "--older-than", "1h", "--dry-run")["leases"] == []
    console.wm.ctx.clock = lambda: utcnow() + timedelta(hours=2)
    report = console.json("leases", "reclaim", "--older-than", "1h", "--agent", "a1")
    assert report["counts"] == {"requeued": 1}
    result = console("leases", "reclaim", "--older-than", "soon", code=2)
    assert "not a duration" in result.output


def test_table_output_and_nothing_matched(console: Console) -> None:
    _hold(console, count=1)
    out = console("leases", "release", "--agent", "a1", "--dry-run").stdout
    assert "released" in out and "dry run" in out and "would be" in out
    assert "no lease matched" in console("leases", "release", "--agent", "nobody").stdout


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90d", 90 * 86400), ("12h", 43200), ("30m", 1800), ("45s", 45), ("3650d", 3650 * 86400)],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "text",
    ["", "5", "0d", "-3h", "3 days", "h", "3651d", "200000w", "99999999999w", "9" * 400 + "s"],
)
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValidationFailed):
        parse_duration(text)


def test_every_lease_backend(console_for: Callable[..., Console], backend: tuple[str, str]) -> None:
    """Extend, release and reclaim keep the backend's hold in step with the rows: the holder
    can heartbeat an extended lease; a released or reclaimed item is leased again at once."""
    db, lease_backend = backend
    console = console_for(
        db=db, backend=lease_backend, retry_backoff_seconds=0, retry_jitter_seconds=0
    )
    wm = console.wm
    wm.propose("test.multi", {"count": 2})
    first, second = wm.agent.checkout("a1"), wm.agent.checkout("a2")
    assert first is not None and second is not None
    assert console.json("leases", "extend", "--agent", "a1", "--seconds", "60")["counts"] == {
        "extended": 1
    }
    wm.agent.heartbeat(first)
    assert console.json("leases", "release", "--agent", "a1")["counts"] == {"released": 1}
    assert console.json("leases", "reclaim", "--agent", "a2")["counts"] == {"requeued": 1}
    again = [wm.agent.checkout("b1"), wm.agent.checkout("b2")]
    assert {lease.item_id for lease in again if lease} == {first.item_id, second.item_id}


def test_reclaim_expired_asks_the_backend(console: Console) -> None:
    """A row past its recorded expiry whose lease the store still holds (a Redis heartbeat
    that touched only Redis) is alive: the no-selector reclaim leaves it, as the sweep does."""
    from sqlalchemy import update

    from workmanager.db.models import Item

    _hold(console, count=1)
    with console.wm.ctx.db.transaction() as s:
        s.execute(update(Item).values(lease_expires_at=utcnow() - timedelta(seconds=5)))
    assert console.json("leases", "reclaim")["leases"] == []
    assert len(console.json("leases", "list")) == 2


def test_a_long_table_prints_its_first_rows_and_counts_the_rest(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scale pass: ``leases list`` of 50,000 held leases took 25 s, rich laying out
    every row of a table no one reads. A table prints its first rows and says how many
    more there are; ``--json`` has them all."""
    from workmanager.cli import render

    monkeypatch.setattr(render, "MAX_TABLE_ROWS", 3)
    _hold(console, count=2)  # 4 leases
    shown = console("leases", "list").stdout
    assert "held leases (4)" in shown
    assert "… and 1 more not shown: --json prints them all" in shown
    assert len(console.json("leases", "list")) == 4
