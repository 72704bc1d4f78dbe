"""Upstream's console-command scenarios replayed as an operator runs them: real
``workmanager ...`` subprocesses against the PostgreSQL database a real ``workmanager
serve`` uses, the state made by agents over HTTP (propose, checkout, heartbeat, submit,
fail; leases left to expire under a 3 s TTL), each command's ``--json`` parsed and the
database checked back through the HTTP API (``GET /orders/{id}``, ``/items/{id}/logs``).

Which upstream scenario (gregpriday/laravel-work-manager, ``tests/``) each test replays:

- ``test_lease_reclaim_takes_only_expired_leases``: Feature/Console/LeaseCommandsTest
  "lease:reclaim can reclaim expired leases" (no selector, as upstream), and
  Console/MaintainCommandTest "maintain command reclaims expired leases" / "runs only
  reclaim-leases when flag specified".
- ``test_maintain_dead_letters_and_reports_stale_orders``: Console/MaintainCommandTest
  "dead letters failed orders after threshold", "dead letters failed items after
  threshold", "uses custom dead letter threshold from config", "reports stale orders",
  "does not flag completed/dead lettered orders as stale", "does not log when alerts
  disabled", "runs only dead-letter/check-stale when flag specified", "runs all tasks when
  no options specified".
- ``test_generate``: Console/GenerateCommandTest "processes AllocatorStrategy
  successfully", "handles strategy with no work discovered", "dry-run shows what would be
  created without creating orders", "continues processing after one strategy fails",
  "stores meta data when provided".
- ``test_orders_requeue``: Feature/Console/OrderCommandsTest "orders:requeue can move
  orders back to queued", "orders:requeue with submitted orders requires flag".
- ``test_items_retry``: Feature/Console/OrderCommandsTest "items:retry resets failed items".
- ``test_ops_prune``: Feature/Console/HygieneCommandsTest "events:prune removes old events
  and provenance".
- ``test_ops_tail``: Feature/Console/InspectionCommandsTest "ops:tail shows events",
  "ops:tail can filter by order", with issue 13's ``--item`` and ``--event``.

Where this project deliberately differs from upstream (docs/migrating.md), the test asserts
this project's documented behaviour and says so.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from tests.api.conftest import (
    BIN,
    PREFIX,
    Server,
    base_env,
    idem,
)
from tests.compat.conftest import start_upstream
from workmanager.db.models import Event, Item, Order, Provenance, utcnow
from workmanager.db.session import Database

pytestmark = pytest.mark.postgres

TTL = 3  # seconds: leases expire for real, with slack for a loaded machine


@pytest.fixture(scope="module")
def ops(api_db_url: str, tokens: dict[str, str]) -> Iterator[Server]:
    """The server upstream agents talk to (as tests/compat/conftest.py's), with short
    leases."""
    srv = start_upstream(
        api_db_url,
        tokens,
        WORK_MANAGER_LEASE_TTL_SECONDS=str(TTL),
        WORK_MANAGER_HEARTBEAT_EVERY_SECONDS="1",
    )
    yield srv
    srv.close()


def run(
    db_url: str, *args: str, code: int = 0, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``workmanager --dispatcher none ARGS`` on the server's database, as an operator."""
    done = subprocess.run(
        [str(BIN / "workmanager"), "--dispatcher", "none", *args],
        env=base_env(
            db_url,
            WORK_MANAGER_ORDER_TYPES="tests.compat.console_allocators",
            WORK_MANAGER_LEASE_TTL_SECONDS=str(TTL),
            WORK_MANAGER_HEARTBEAT_EVERY_SECONDS="1",
            **(env or {}),
        ),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == code, (args, done.returncode, done.stdout, done.stderr)
    return done


def run_json(db_url: str, *args: str, code: int = 0, env: dict[str, str] | None = None) -> Any:
    return json.loads(run(db_url, *args, "--json", code=code, env=env).stdout)


def agent(ops: Server, name: str) -> httpx.Client:
    return ops.client("agent-a", name)


def propose(client: httpx.Client, payload: dict[str, Any] | None = None) -> str:
    r = client.post(f"{PREFIX}/propose", json={"type": "test.simple", "payload": payload or {}})
    assert r.status_code == 201, r.text
    return str(r.json()["order"]["id"])


def checkout(client: httpx.Client, order_id: str) -> dict[str, Any]:
    r = client.post(f"{PREFIX}/orders/{order_id}/checkout")
    assert r.status_code == 200, r.text
    item: dict[str, Any] = r.json()["item"]
    return item


def fail(client: httpx.Client, order_id: str) -> str:
    item_id = str(checkout(client, order_id)["id"])
    error = {"code": "test_error", "message": "Test error"}
    r = client.post(f"{PREFIX}/items/{item_id}/fail", json={"error": error, "retryable": False})
    assert r.status_code == 200 and r.json()["item"]["state"] == "failed", r.text
    return item_id


def show(ops: Server, order_id: str) -> dict[str, Any]:
    r = ops.client().get(f"{PREFIX}/orders/{order_id}")
    assert r.status_code == 200, r.text
    order: dict[str, Any] = r.json()["order"]
    return order


def item_events(ops: Server, item_id: str) -> list[str]:
    r = ops.client().get(f"{PREFIX}/items/{item_id}/logs")
    assert r.status_code == 200, r.text
    return [e["event"] for e in r.json()["events"] if e["item_id"] == item_id]


def wait_expired(item: dict[str, Any]) -> None:
    """Until the lease's own expiry (from checkout) has passed, with half a second of slack."""
    expires = datetime.fromisoformat(item["lease_expires_at"].replace("Z", "+00:00"))
    deadline = time.monotonic() + TTL + 10
    while datetime.now(UTC) < expires + timedelta(seconds=0.5):
        assert time.monotonic() < deadline, "the lease never expired"
        time.sleep(0.1)


def backdate(db_url: str, model: Any, where: Any, **ago: timedelta) -> None:
    """Upstream ages rows by setting their timestamps; so do we, in SQL."""
    db = Database(db_url)
    try:
        with db.transaction() as s:
            now = utcnow()
            s.execute(update(model).where(where).values({k: now - v for k, v in ago.items()}))
    finally:
        db.dispose()


class Heartbeats:
    """Keeps one lease alive over HTTP every 0.3 s while the console runs."""

    def __init__(self, client: httpx.Client, item_id: str) -> None:
        self.stop = threading.Event()
        self.codes: list[int] = []

        def beat() -> None:
            while not self.stop.wait(0.3):
                self.codes.append(
                    client.post(f"{PREFIX}/items/{item_id}/heartbeat", json={}).status_code
                )

        self.thread = threading.Thread(target=beat, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        assert self.codes and set(self.codes) == {200}, self.codes


def test_lease_reclaim_takes_only_expired_leases(ops: Server, api_db_url: str) -> None:
    a, b = agent(ops, "console-expiring"), agent(ops, "console-live")
    expiring_order, live_order = propose(a), propose(b)
    expiring, live = checkout(a, expiring_order), checkout(b, live_order)
    beats = Heartbeats(b, live["id"])
    try:
        wait_expired(expiring)
        preview = run_json(api_db_url, "leases", "reclaim", "--dry-run")
        assert preview["dry_run"] is True and preview["action"] == "reclaim"
        assert [row["item_id"] for row in preview["leases"]] == [expiring["id"]]
        held = show(ops, expiring_order)["items"][0]
        assert held["state"] == "leased" and held["leased_by_agent_id"] == "console-expiring"

        # No selector: the expired leases only, as upstream's lease:reclaim.
        done = run_json(api_db_url, "leases", "reclaim")
        assert done["dry_run"] is False
        assert [row["item_id"] for row in done["leases"]] == [expiring["id"]]
        item = show(ops, expiring_order)["items"][0]
        assert item["state"] == "queued" and item["leased_by_agent_id"] is None
        assert "lease_expired" in item_events(ops, expiring["id"])
        kept = show(ops, live_order)["items"][0]
        assert kept["state"] in ("leased", "in_progress")
        assert kept["leased_by_agent_id"] == "console-live"
        assert "lease_expired" not in item_events(ops, live["id"])

        # maintain --reclaim-leases does the same, and nothing else.
        again = checkout(a, expiring_order)
        wait_expired(again)
        swept = run_json(api_db_url, "maintain", "--reclaim-leases")
        assert swept == {"leases_requeued": 1, "leases_failed": 0}
        assert show(ops, expiring_order)["items"][0]["state"] == "queued"
        assert item_events(ops, expiring["id"]).count("lease_expired") == 2
        assert show(ops, live_order)["items"][0]["leased_by_agent_id"] == "console-live"
    finally:
        beats.close()
        # Leave no lease behind to expire during the next scenario.
        assert b.post(f"{PREFIX}/items/{live['id']}/release").status_code == 200


def test_maintain_dead_letters_and_reports_stale_orders(ops: Server, api_db_url: str) -> None:
    a = agent(ops, "console-maintain")
    old_failed, recent_failed = propose(a, {"n": 1}), propose(a, {"n": 2})
    old_item, recent_item = fail(a, old_failed), fail(a, recent_failed)
    stale, fresh = propose(a, {"n": 3}), propose(a, {"n": 4})
    # As upstream: the old failure changed 50 h ago, the recent one 24 h ago; one order has
    # been queued for 48 h. Thresholds from the environment (upstream: config keys).
    backdate(api_db_url, Order, Order.id == old_failed, last_transitioned_at=timedelta(hours=50))
    backdate(api_db_url, Item, Item.order_id == old_failed, updated_at=timedelta(hours=50))
    backdate(api_db_url, Order, Order.id == recent_failed, last_transitioned_at=timedelta(hours=24))
    backdate(api_db_url, Item, Item.order_id == recent_failed, updated_at=timedelta(hours=24))
    backdate(api_db_url, Order, Order.id == stale, last_transitioned_at=timedelta(hours=48))
    limits = {"WORK_MANAGER_DEAD_LETTER_AFTER_HOURS": "48", "WORK_MANAGER_STALE_ORDER_HOURS": "24"}

    dead = run_json(api_db_url, "maintain", "--dead-letter", env=limits)
    assert (dead["dead_lettered_orders"], dead["dead_lettered_items"]) == (1, 1)
    # only that task: the steps not run report nothing (they printed zeros, as if run)
    assert set(dead) == {"dead_lettered_orders", "dead_lettered_items"}
    old = show(ops, old_failed)
    assert old["state"] == "dead_lettered" and old["items"][0]["state"] == "dead_lettered"
    recent = show(ops, recent_failed)
    assert recent["state"] == "failed" and recent["items"][0]["state"] == "failed"
    assert "dead_lettered" in item_events(ops, old_item)
    assert "dead_lettered" not in item_events(ops, recent_item)

    # Queued for 48 h with a 24 h threshold: stale; the dead-lettered and recent ones are not.
    # Upstream logs a warning when enable_alerts is on; here it is logged too (stderr).
    checked = run(api_db_url, "maintain", "--check-stale", "--json", env=limits)
    report = json.loads(checked.stdout)
    assert report == {"stale_total": 1, "stale_orders": [stale]}  # the count beside the ids
    assert "1 stale order(s)" in checked.stderr and stale in checked.stderr
    assert show(ops, stale)["state"] == "queued" and show(ops, fresh)["state"] == "queued"

    # Upstream's enable_alerts=false only silences the log; here it turns the check off
    # (docs/migrating.md: "false turns the check off").
    quiet_env = {**limits, "WORK_MANAGER_ENABLE_ALERTS": "false"}
    quiet = run(api_db_url, "maintain", "--check-stale", "--json", env=quiet_env)
    assert json.loads(quiet.stdout)["stale_orders"] == [] and "stale" not in quiet.stderr

    # No flag: every task (and, here, purging keys and recovering applies too).
    everything = run_json(api_db_url, "maintain", env=limits)
    assert everything["leases_requeued"] == 0 and everything["stale_orders"] == [stale]
    assert everything["dead_lettered_orders"] == 0 and "purged_keys" in everything
    assert show(ops, recent_failed)["state"] == "failed"


def orders_total(ops: Server) -> int:
    r = ops.client().get(f"{PREFIX}/orders", params={"filter[type]": "test.simple"})
    assert r.status_code == 200, r.text
    return int(r.json()["meta"]["total"])


def test_generate(ops: Server, api_db_url: str) -> None:
    before = orders_total(ops)
    dry = run_json(api_db_url, "generate", "--dry-run")
    assert dry["dry_run"] is True and dry["created"] == 0 and dry["errors"] == []
    assert [d["payload"] for d in dry["discovered"]] == [{"name": "hello"}, {"name": "world"}]
    assert orders_total(ops) == before  # nothing proposed

    # One strategy raises, the next still runs and the idle one adds nothing. Upstream
    # exits 0 here; this project exits 1 when a strategy fails (docs/operations.md) so a
    # scheduler notices.
    done = run_json(api_db_url, "generate", code=1, env={"WM_COMPAT_BROKEN_ALLOCATOR": "1"})
    assert done["created"] == 2 and done["dry_run"] is False
    # The failure is said once, as its error line: not also as a logged warning.
    said = run(
        api_db_url, "generate", "--dry-run", code=1, env={"WM_COMPAT_BROKEN_ALLOCATOR": "1"}
    ).stderr
    assert said.count("strategy failed to discover work") == 1 and "warning" not in said, said
    assert done["errors"] == [
        {
            "strategy": "compat-broken",
            "type": None,
            "dedupe_key": None,
            "code": "allocator_error",
            "message": "RuntimeError: strategy failed to discover work",
        }
    ]
    assert orders_total(ops) == before + 2
    r = ops.client().get(
        f"{PREFIX}/orders", params={"filter[type]": "test.simple", "sort": "-created_at"}
    )
    made = {o["payload"]["name"]: o for o in r.json()["data"][:2]}
    hello, world = made["hello"], made["world"]
    assert hello["priority"] == 5 and world["meta"] == {"source": "compat"}
    assert hello["state"] == "queued"
    # Upstream: requested_by system/scheduler.
    assert hello["requested_by_type"] == "system"


def test_orders_requeue(ops: Server, api_db_url: str) -> None:
    a = agent(ops, "console-requeue")
    working = propose(a, {"n": 5})
    item = checkout(a, working)
    assert show(ops, working)["state"] == "in_progress"
    submitted = propose(a, {"n": 6})
    held = checkout(a, submitted)
    r = a.post(
        f"{PREFIX}/items/{held['id']}/submit", json={"result": {"answer": 1}}, headers=idem()
    )
    assert r.status_code == 202, r.text
    assert show(ops, submitted)["state"] == "submitted"

    preview = run_json(api_db_url, "orders", "requeue", "--order", working, "--dry-run")
    assert preview["dry_run"] is True and preview["counts"] == {"requeued": 1}
    assert show(ops, working)["items"][0]["leased_by_agent_id"] == "console-requeue"

    done = run_json(api_db_url, "orders", "requeue", "--order", working)
    assert done["counts"] == {"requeued": 1}
    order = show(ops, working)
    assert order["state"] == "queued"
    assert (
        order["items"][0]["state"] == "queued" and order["items"][0]["leased_by_agent_id"] is None
    )
    assert a.post(f"{PREFIX}/items/{item['id']}/heartbeat", json={}).status_code == 409

    # A submitted order is skipped without --requeue-submitted, as upstream.
    skipped = run_json(api_db_url, "orders", "requeue", "--order", submitted)
    assert skipped["counts"] == {"skipped": 1}
    assert "requeue-submitted" in skipped["orders"][0]["reason"]
    assert show(ops, submitted)["state"] == "submitted"
    reworked = run_json(
        api_db_url, "orders", "requeue", "--order", submitted, "--requeue-submitted"
    )
    assert reworked["counts"] == {"reworked": 1}  # rejected with rework, then queued
    again = show(ops, submitted)
    assert again["state"] == "queued" and again["items"][0]["state"] == "queued"


def test_items_retry(ops: Server, api_db_url: str) -> None:
    a = agent(ops, "console-retry")
    order_id = propose(a, {"n": 7})
    item_id = fail(a, order_id)
    assert show(ops, order_id)["items"][0]["error"]["code"] == "test_error"

    preview = run_json(api_db_url, "items", "retry", "--order", order_id, "--dry-run")
    assert preview["dry_run"] is True and [i["id"] for i in preview["items"]] == [item_id]
    assert show(ops, order_id)["items"][0]["state"] == "failed"

    done = run_json(api_db_url, "items", "retry", "--order", order_id)
    assert done["counts"] == {"retried": 1}
    order = show(ops, order_id)
    assert order["state"] == "queued"
    assert order["items"][0]["state"] == "queued" and order["items"][0]["error"] is None
    assert checkout(a, order_id)["id"] == item_id  # leasable again
    assert a.post(f"{PREFIX}/items/{item_id}/release").status_code == 200


def test_ops_prune(ops: Server, api_db_url: str) -> None:
    """Upstream's: old events and provenance go, the order stays. Here only of an order
    done for good (completed): one that can still change keeps its history, where a
    reviewer reads its evidence (docs/migrating.md)."""
    a = agent(ops, "console-prune")
    order_id = propose(a, {"n": 8})
    fail(a, order_id)  # then done for good, recently (too recent to be pruned itself)
    backdate(api_db_url, Order, Order.id == order_id, last_transitioned_at=timedelta(0))
    settle = Database(api_db_url)
    try:
        with settle.transaction() as s:
            s.execute(update(Order).where(Order.id == order_id).values(state="completed"))
    finally:
        settle.dispose()
    waiting = propose(a, {"n": 80})
    proposed = next(e for e in show(ops, order_id)["events"] if e["event"] == "proposed")
    waiting_proposed = next(e for e in show(ops, waiting)["events"] if e["event"] == "proposed")
    for event in (proposed, waiting_proposed):
        backdate(api_db_url, Event, Event.id == event["id"], created_at=timedelta(days=120))
    backdate(
        api_db_url, Provenance, Provenance.order_id == order_id, created_at=timedelta(days=120)
    )

    dry = run_json(api_db_url, "ops", "prune", "--older-than", "90d", "--dry-run")
    assert dry["dry_run"] is True and dry["events"] == 1 and dry["provenance"] >= 1
    assert dry["orders"] == 0
    # Upstream asks in production unless --force; here it always asks unless --yes.
    refused = run(api_db_url, "ops", "prune", "--older-than", "90d", code=1, stdin="n\n")
    assert "Delete" in refused.stderr
    assert proposed["id"] in [e["id"] for e in show(ops, order_id)["events"]]

    done = run_json(api_db_url, "ops", "prune", "--older-than", "90d", "--yes")
    assert done["events"] == 1 and done["orders"] == 0 and done["provenance"] == dry["provenance"]
    order = show(ops, order_id)
    assert order["state"] == "completed"  # the order itself stays
    events = [e["id"] for e in order["events"]]
    assert proposed["id"] not in events and events  # "planned" was newer: kept
    assert waiting_proposed["id"] in [e["id"] for e in show(ops, waiting)["events"]]


def test_ops_tail(ops: Server, api_db_url: str) -> None:
    a = agent(ops, "console-tail")
    order_id = propose(a, {"n": 9})
    item_id = checkout(a, order_id)["id"]
    assert a.post(f"{PREFIX}/items/{item_id}/heartbeat", json={}).status_code == 200
    r = a.post(f"{PREFIX}/items/{item_id}/submit", json={"result": {"answer": 2}}, headers=idem())
    assert r.status_code == 202, r.text

    lines = run(api_db_url, "ops", "tail", "--order", order_id, "-n", "100", "--json").stdout
    by_order = [json.loads(line) for line in lines.splitlines()]
    assert {e["order_id"] for e in by_order} == {order_id}
    # newest last; the same rows GET /orders/{id} lists newest first
    assert [e["id"] for e in by_order] == [e["id"] for e in show(ops, order_id)["events"]][::-1]
    assert [e["event"] for e in by_order if e["item_id"] == item_id] == [
        "leased",
        "in_progress",  # the first heartbeat
        "submitted",
    ]

    lines = run(
        api_db_url, "ops", "tail", "--item", item_id, "--event", "submitted", "--json"
    ).stdout
    (only,) = [json.loads(line) for line in lines.splitlines()]
    assert (only["item_id"], only["event"], only["order_id"]) == (item_id, "submitted", order_id)
