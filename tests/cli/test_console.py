"""The rest of the operator console in-process: orders, items, ops, maintain, generate,
dev and make. Each command's happy path, ``--json`` parses, refusals exit non-zero."""

from __future__ import annotations

import importlib.util
import io
import json
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from tests.cli.conftest import Console
from workmanager import Registry
from workmanager.allocators import AllocatorStrategy, OrderRequest
from workmanager.db.models import Event, IdempotencyKey, Item, Order, Provenance, utcnow
from workmanager.errors import IllegalStateTransition, NotFound, ValidationFailed
from workmanager.services.housekeeping import Housekeeping


def _submitted(console: Console) -> uuid.UUID:
    wm = console.wm
    order_id = wm.propose("test.simple", {"n": 1})
    lease = wm.agent.checkout("a1")
    assert lease is not None
    wm.agent.submit(lease, {"answer": 42})
    return order_id


def _set(console: Console, order_id: uuid.UUID, **values: object) -> None:
    with console.wm.db.transaction() as s:
        s.execute(update(Order).where(Order.id == order_id).values(**values))


def test_orders_list_filters_and_table(console: Console) -> None:
    wm = console.wm
    ids = [wm.propose("test.simple", {"n": n}, priority=n) for n in range(3)]
    wm.propose("test.multi", {"count": 2})
    listed = console.json("orders", "list", "--type", "test.simple")
    assert [o["id"] for o in listed["data"]] == [str(i) for i in reversed(ids)]
    assert listed["meta"]["total"] == 3
    high = console.json("orders", "list", "--filter", "priority=>=1", "--sort", "priority")
    assert [o["priority"] for o in high["data"]] == [1, 2]
    assert console.json("orders", "list", "--limit", "1", "--page", "2")["data"][0]["priority"] == 1
    out = console("orders", "list").stdout
    assert "test.multi" in out and "4 total" in out
    bad = console("orders", "list", "--filter", "colour=red", code=1)
    assert bad.exception is not None and "colour" in str(bad.exception)
    assert console("orders", "list", "--filter", "nonsense", code=2)


def test_orders_list_pages_by_the_settings_as_get_orders_does(console_for: Any) -> None:
    """The CLI sent page[size]=50 whatever WORK_MANAGER_DEFAULT_PAGE_SIZE_HTTP said, and
    its help said 1..100 whatever the max; the console's items list used the constants."""
    from workmanager.reads.item_listing import ItemListing

    console = console_for(default_page_size_http=2, max_page_size=3)
    for n in range(4):
        console.wm.propose("test.simple", {"n": n})
    assert console.json("orders", "list")["meta"]["per_page"] == 2
    assert console.json("orders", "list", "--limit", "50")["meta"]["per_page"] == 3
    items = ItemListing(console.wm.ctx)
    assert items.list([])["meta"]["per_page"] == 2
    assert items.list([("page[size]", "50")])["meta"]["per_page"] == 3


def test_orders_show(console: Console) -> None:
    order_id = _submitted(console)
    shown = console.json("orders", "show", str(order_id))
    assert shown["state"] == "submitted" and len(shown["items"]) == 1
    assert shown["events"][0]["event"] == "submitted"
    out = console("orders", "show", str(order_id)).stdout
    assert str(order_id) in out and "items" in out and "events" in out
    missing = console("orders", "show", str(uuid.uuid4()), code=1)
    assert isinstance(missing.exception, NotFound)
    assert console("orders", "show", "not-a-uuid", code=2)


def test_review_approve_dispatches_the_apply(console: Console) -> None:
    order_id = _submitted(console)
    assert console("orders", "review", str(order_id), code=2)  # no decision
    approved = console.json("orders", "review", str(order_id), "--approve")
    assert approved["state"] == "approved"
    assert console.dispatched.approved == [order_id]
    events = console.wm.queries.events(order_id)
    assert events[-1]["event"] == "approved" and events[-1]["actor_id"] == "cli"
    again = console("orders", "review", str(order_id), "--approve", code=1)
    assert isinstance(again.exception, IllegalStateTransition)


def test_review_reject_needs_a_reason_and_can_rework(console: Console) -> None:
    order_id = _submitted(console)
    assert "--reason" in console("orders", "review", str(order_id), "--reject", code=2).output
    out = console("orders", "review", str(order_id), "--reject", "--reason", "wrong", "--rework")
    assert out.stdout.strip() == f"{order_id} queued"
    order = console.json("orders", "show", str(order_id))
    assert order["last_error"]["errors"][0] == {"code": "rejected_by_reviewer", "message": "wrong"}
    assert order["items"][0]["state"] == "queued" and order["items"][0]["result"] is None


def test_requeue_reworks_a_rejected_order(console: Console) -> None:
    order_id = _submitted(console)
    console("orders", "review", str(order_id), "--reject", "--reason", "no")
    assert console.json("orders", "show", str(order_id))["state"] == "rejected"
    requeued = console.json("orders", "requeue", str(order_id))
    assert requeued["state"] == "queued"
    items = console.json("items", "list", "--order", str(order_id))
    assert [i["state"] for i in items] == ["queued"]
    assert console.dispatched.available[-1] == ("test.simple", [uuid.UUID(items[0]["id"])])


def test_requeue_releases_held_leases_of_an_in_progress_order(console: Console) -> None:
    wm = console.wm
    order_id = wm.propose("test.multi", {"count": 2})
    assert wm.agent.checkout("a1") is not None
    assert console.json("orders", "show", str(order_id))["state"] == "in_progress"
    assert console.json("orders", "requeue", str(order_id))["state"] == "queued"
    items = console.json("items", "list", "--order", str(order_id))
    assert {i["state"] for i in items} == {"queued"} and {i["attempts"] for i in items} == {0}
    _set(console, order_id, state="completed")
    refused = console("orders", "requeue", str(order_id), code=1)
    assert isinstance(refused.exception, IllegalStateTransition)
    assert "retry" in str(refused.exception)


def test_batch_requeue_by_selector_with_dry_run(console: Console) -> None:
    """As upstream's orders:requeue: selectors pick orders, --dry-run changes nothing,
    submitted orders only with --requeue-submitted, other states skipped; no selector is
    refused."""
    wm = console.wm
    busy = wm.propose("test.multi", {"count": 2})
    assert wm.agent.checkout("a1") is not None
    submitted = _submitted(console)
    done = _submitted(console)
    _set(console, done, state="completed")
    before = console.json("items", "list", "--limit", "100")
    preview = console.json("orders", "requeue", "--type", "test.multi", "--dry-run")
    assert preview["dry_run"] is True and preview["counts"] == {"requeued": 1}
    assert preview["orders"][0]["id"] == str(busy)
    assert console.json("items", "list", "--limit", "100") == before
    assert console.json("orders", "requeue", "--all")["counts"] == {"requeued": 1}
    assert console.json("orders", "show", str(busy))["state"] == "queued"
    skipped = console.json("orders", "requeue", "--order", str(submitted))
    assert (
        skipped["counts"] == {"skipped": 1}
        and "requeue-submitted" in (skipped["orders"][0]["reason"])
    )
    assert console.json("orders", "show", str(submitted))["state"] == "submitted"
    reworked = console.json("orders", "requeue", "--order", str(submitted), "--requeue-submitted")
    assert reworked["counts"] == {"reworked": 1}
    assert console.json("orders", "show", str(submitted))["state"] == "queued"
    by_state = console.json("orders", "requeue", "--state", "completed")
    assert by_state["counts"] == {"skipped": 1}
    assert console.json("orders", "show", str(done))["state"] == "completed"
    assert "no order selector" in console("orders", "requeue", code=2).output
    assert console("orders", "requeue", "--state", "bogus", code=2)
    out = console("orders", "requeue", "--all", "--dry-run").stdout
    assert "dry run" in out and "would be" in out


def test_batch_items_retry_by_selector_with_dry_run(console_for: object) -> None:
    """As upstream's items:retry: failed items chosen by order or type; an order with
    several failed items is retried whole."""
    console = console_for(default_max_attempts=1)  # type: ignore[operator]
    wm = console.wm
    order_id = wm.propose("test.multi", {"count": 2})
    leases = [wm.agent.checkout("a1"), wm.agent.checkout("a2")]  # both held, then failed
    for held in leases:
        assert held is not None
        wm.agent.fail(held, {"code": "boom", "message": "x"}, retryable=False)
    other = wm.propose("test.simple", {"n": 1})
    lease = wm.agent.checkout("a1")
    assert lease is not None and lease.order_id == other
    wm.agent.fail(lease, {"code": "bad", "message": "y"}, retryable=False)
    preview = console.json("items", "retry", "--order", str(order_id), "--dry-run")
    assert preview["counts"] == {"retried": 2} and {i["error"] for i in preview["items"]} == {
        "boom"
    }
    assert len(console.json("items", "list", "--state", "failed")) == 3
    done = console.json("items", "retry", "--order", str(order_id))
    assert done["counts"] == {"retried": 2} and done["dry_run"] is False
    assert console.json("orders", "show", str(order_id))["state"] == "queued"
    items = console.json("items", "list", "--order", str(order_id))
    assert {i["state"] for i in items} == {"queued"} and {i["error"] is None for i in items} == {
        True
    }
    assert console.json("items", "retry", "--type", "test.simple")["counts"] == {"retried": 1}
    assert console.json("orders", "show", str(other))["state"] == "queued"
    assert console.json("items", "retry", "--all")["items"] == []
    assert "--order" in console("items", "retry", code=2).output
    assert console("items", "retry", str(lease.item_id), "--all", code=2)


def test_retry_and_items_retry(console_for: object) -> None:
    console = console_for(default_max_attempts=1)  # type: ignore[operator]
    wm = console.wm
    order_id = wm.propose("test.multi", {"count": 2})
    lease = wm.agent.checkout("a1")
    assert lease is not None
    wm.agent.fail(lease, {"code": "boom", "message": "x"}, retryable=False)
    failed = console.json("items", "list", "--state", "failed")
    assert [i["id"] for i in failed] == [str(lease.item_id)]
    assert console.json("orders", "show", str(order_id))["state"] == "failed"
    item = console.json("items", "retry", str(lease.item_id))
    assert item["state"] == "queued" and item["error"] is None and item["attempts"] == 0
    assert console.json("orders", "show", str(order_id))["state"] == "queued"
    refused = console("items", "retry", str(lease.item_id), code=1)
    assert isinstance(refused.exception, IllegalStateTransition)
    # the order-level retry
    lease = wm.agent.checkout("a1")
    assert lease is not None
    wm.agent.fail(lease, {"code": "boom", "message": "x"}, retryable=False)
    assert console("orders", "retry", str(order_id)).stdout.strip() == f"{order_id} queued"
    assert console("items", "list", "--state", "bogus", code=1)


def test_clone(console: Console) -> None:
    order_id = console.wm.propose("test.simple", {"n": 7}, priority=3, meta={"k": "v"})
    clone = console.json("orders", "clone", str(order_id))
    assert clone["id"] != str(order_id) and clone["payload"] == {"n": 7}
    assert clone["priority"] == 3 and clone["meta"] == {"k": "v", "cloned_from": str(order_id)}
    assert clone["requested_by_id"] == "cli"


def test_ops_check(console: Console) -> None:
    _submitted(console)
    report = console.json("ops", "check")
    assert report["ok"] is True
    assert report["components"]["database"] == "ok" and report["components"]["broker"] == "ok"
    assert report["components"]["redis"].startswith("not used")
    assert report["orders"] == {"submitted": 1} and report["items"] == {"submitted": 1}
    assert report["leases"] == {"held": 0, "expired": 0}
    assert "ok" in console("ops", "check").stdout


def test_ops_check_fails_when_the_broker_is_down(console_for: object, tmp_path: Path) -> None:
    console = console_for(broker_url="redis://127.0.0.1:1/0")  # type: ignore[operator]
    result = console("ops", "check", "--json", code=1)
    assert result.stdout and '"ok": false' in result.stdout


def test_ops_tail_newest_last_and_follow(console: Console, monkeypatch: pytest.MonkeyPatch) -> None:
    order_id = _submitted(console)
    events = console.jsonl("ops", "tail", "-n", "3")
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    assert events[-1]["event"] == "submitted"
    assert "submitted" in console("ops", "tail", "--order", str(order_id)).stdout

    first_read = threading.Event()
    read = Housekeeping.tail

    def tail(self: Housekeeping, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        try:
            return read(self, *args, **kwargs)
        finally:
            first_read.set()

    monkeypatch.setattr(Housekeeping, "tail", tail)

    def later() -> None:  # proposes once the follow has printed its first page
        assert first_read.wait(30)
        console.wm.propose("test.simple", {"n": 2})

    thread = threading.Thread(target=later)
    thread.start()
    followed = console.jsonl("ops", "tail", "-n", "1", "-f", "--interval", "0.1", "--timeout", "3")
    thread.join()
    assert followed[0]["event"] == "submitted"
    assert [e["event"] for e in followed[1:]] == ["proposed", "planned"]
    # -n 0 (the help's "x>=0", the tail -n 0 -f idiom): nothing old, refused before
    assert console.jsonl("ops", "tail", "-n", "0") == []
    # the deadline holds whatever the interval (--interval 30 --timeout 1 ran 31 s)
    started = time.monotonic()
    assert (
        console.jsonl("ops", "tail", "-n", "0", "-f", "--interval", "30", "--timeout", "0.3") == []
    )
    assert time.monotonic() - started < 10


def test_ops_prune_cascades(console: Console) -> None:
    wm = console.wm
    old_done, old_dead, recent = (_submitted(console) for _ in range(3))
    long_ago = utcnow() - timedelta(days=100)
    _set(console, old_done, state="completed", last_transitioned_at=long_ago)
    _set(console, old_dead, state="dead_lettered", last_transitioned_at=long_ago)
    _set(console, recent, state="completed")
    dry = console.json("ops", "prune", "--older-than", "90d", "--dry-run")
    assert dry["orders"] == 2 and dry["items"] == 2 and dry["dry_run"] is True
    assert console.json("ops", "check")["orders"] == {"completed": 2, "dead_lettered": 1}
    refused = console("ops", "prune", "--older-than", "90d", code=1)  # asks; no answer
    assert "Delete 2 order(s)" in refused.output
    assert console.json("ops", "check")["orders"] == {"completed": 2, "dead_lettered": 1}
    done = console.json("ops", "prune", "--older-than", "90d", "--yes")
    assert done["orders"] == 2
    with wm.db.transaction() as s:
        assert set(s.scalars(select(Order.id))) == {recent}
        assert set(s.scalars(select(Item.order_id))) == {recent}
        assert set(s.scalars(select(Event.order_id))) == {recent}
        # audit rows carry no foreign keys (migration 0003): prune deletes them itself
        assert set(s.scalars(select(Provenance.order_id))) == {recent}
    assert "deleted 0 order(s)" in console("ops", "prune", "--older-than", "90d").stdout
    assert console("ops", "prune", "--dry-run").exit_code == 0  # 90 days, as upstream
    assert console.json("ops", "prune", "--dry-run", "--json")["cutoff"].endswith("Z")
    assert console("ops", "prune", "--older-than", "ninety", code=2)


def test_ops_prune_old_audit_rows_of_kept_orders(console: Console) -> None:
    """As upstream's ops:prune: events and provenance written before the cutoff go, also
    of orders that stay (here a recent completed one); newer ones and the orders stay.
    Not those of an order still under way: a submitted order's evidence is in its
    ``submitted`` event, and a reviewer still needs it (an adversarial pass found prune
    wiping it). A person is asked first and answering yes deletes."""
    from click.testing import CliRunner

    from workmanager.cli.app import Env, cli

    settled, waiting = _submitted(console), _submitted(console)
    _set(console, settled, state="completed")  # done for good, too recent to be pruned
    long_ago = utcnow() - timedelta(days=120)
    with console.wm.db.transaction() as s:
        s.execute(update(Event).values(created_at=long_ago))
        s.execute(update(Provenance).values(created_at=long_ago))
        settled_rows = (
            s.scalar(select(func.count(Event.id)).where(Event.order_id == settled)),
            s.scalar(select(func.count(Provenance.id)).where(Provenance.order_id == settled)),
        )
        waiting_events = set(s.scalars(select(Event.id).where(Event.order_id == waiting)))
    assert all(settled_rows) and waiting_events
    dry = console.json("ops", "prune", "--older-than", "90d", "--dry-run")
    assert (dry["orders"], dry["events"], dry["provenance"]) == (0, *settled_rows)
    answered = CliRunner().invoke(
        cli, ["ops", "prune", "--older-than", "90d"], obj=Env(console.wm), input="y\n"
    )
    assert answered.exit_code == 0, answered.output
    assert "deleted 0 order(s) and 0 item(s)" in answered.output
    with console.wm.db.transaction() as s:
        assert set(s.scalars(select(Event.id))) == waiting_events  # the waiting order's stay
        assert set(s.scalars(select(Provenance.order_id))) == {waiting}
        assert set(s.scalars(select(Order.id))) == {settled, waiting}


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_ops_prune_walks_each_audit_row_once(
    console_for: Any, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a volume pass: each batch of the audit prune walked again past every old
    row the batches before had kept (an open order's), so a prune of 2M rows took
    minutes, slower with each batch. Batches go on from the last id deleted; with
    batches of two over interleaved orders, every old row of a settled order goes and
    every row of a waiting one stays."""
    from workmanager.services import housekeeping

    monkeypatch.setattr(housekeeping, "PRUNE_BATCH", 2)
    console = console_for(db=db)
    settled, waiting = [], []
    for _ in range(3):
        settled.append(_submitted(console))
        waiting.append(_submitted(console))
    for order_id in settled:
        _set(console, order_id, state="completed")
    with console.wm.db.transaction() as s:
        s.execute(update(Event).values(created_at=utcnow() - timedelta(days=120)))
        kept = set(s.scalars(select(Event.id).where(Event.order_id.in_(waiting))))
    done = console.json("ops", "prune", "--older-than", "90d", "--yes")
    assert done["events"] > 2 * 2  # more batches than one
    with console.wm.db.transaction() as s:
        assert set(s.scalars(select(Event.id))) == kept


def test_ops_tail_by_item_and_event(console: Console) -> None:
    wm = console.wm
    first = _submitted(console)
    _submitted(console)
    item = console.json("orders", "show", str(first))["items"][0]["id"]
    by_item = console.jsonl("ops", "tail", "--item", item, "-n", "100")
    assert by_item and {e["item_id"] for e in by_item} == {item}
    assert [e["event"] for e in by_item] == ["leased", "submitted"]
    leased = console.jsonl("ops", "tail", "--event", "leased", "-n", "100")
    assert len(leased) == 2 and {e["event"] for e in leased} == {"leased"}
    both = console.jsonl("ops", "tail", "--item", item, "--event", "submitted")
    assert [(e["item_id"], e["event"]) for e in both] == [(item, "submitted")]
    assert "item=" in console("ops", "tail", "--event", "leased").stdout
    assert console("ops", "tail", "--item", "nope", code=2)
    wm.propose("test.simple", {"n": 3})
    assert console.jsonl("ops", "tail", "--event", "no_such_event") == []


def test_ops_purge_keys(console: Console) -> None:
    """Old keys go; a key still in flight never does (its answer is not stored: the retry
    it guards would run again), and nor does a key younger than the TTL unless --force
    (found by an adversarial pass: a purge with any cutoff let retries make duplicates).
    As upstream: --older-than defaults to 30 days, and --dry-run counts."""
    from workmanager.db.claims import DONE

    wm = console.wm
    for n in range(4):
        wm.idempotency.begin("propose", "-", "p", f"key-{n}", {"n": n})
    with wm.db.transaction() as s:
        s.execute(update(IdempotencyKey).where(IdempotencyKey.id <= 3).values(
            created_at=utcnow() - timedelta(days=31), expires_at=utcnow() - timedelta(days=30)
        ))  # fmt: skip
        s.execute(update(IdempotencyKey).where(IdempotencyKey.id <= 2).values(status=DONE))
    assert console.json("ops", "purge-keys", "--dry-run") == {"purged": 2, "dry_run": True}
    refused = console("ops", "purge-keys", "--older-than", "1h", code=2)
    assert "--force" in refused.output
    assert console.json("ops", "purge-keys") == {"purged": 2, "dry_run": False}
    with wm.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(IdempotencyKey)) == 2
    assert console.json("ops", "purge-keys", "--older-than", "1s", "--force")["purged"] == 0


def test_maintain(console_for: object) -> None:
    console = console_for(backend="database")  # type: ignore[operator]
    wm = console.wm
    order_id = wm.propose("test.simple", {})
    assert wm.agent.checkout("a1") is not None
    everything = console.json("maintain")
    assert everything["leases_requeued"] == 0 and "dead_lettered_orders" in everything
    wm.ctx.clock = lambda: utcnow() + timedelta(hours=1)  # the lease has expired
    swept = console.json("maintain", "--reclaim-leases")
    assert swept == {"leases_requeued": 1, "leases_failed": 0}
    stale = console.json("maintain", "--check-stale")
    assert stale["stale_orders"] == [] and "leases_requeued" not in stale
    assert console.json("orders", "show", str(order_id))["items"][0]["state"] == "queued"
    assert "maintenance" in console("maintain", "--dead-letter").stdout


class Discover(AllocatorStrategy):
    name = "discover"

    def discover(self) -> list[OrderRequest]:
        return [OrderRequest("test.simple", {"n": 1}, dedupe_key="gen-1")]


class Broken(AllocatorStrategy):
    name = "broken"

    def discover(self) -> list[OrderRequest]:
        raise RuntimeError("upstream down")


def test_generate(console_for: object) -> None:
    from tests.support.types import Simple

    registry = Registry([Simple()])
    registry.register_allocator(Discover())
    console = console_for(registry=registry)  # type: ignore[operator]
    dry = console.json("generate", "--dry-run")
    assert dry["dry_run"] and len(dry["discovered"]) == 1 and dry["created"] == 0
    assert console.json("orders", "list")["meta"]["total"] == 0
    assert console.json("generate")["created"] == 1
    assert console.json("generate")["existing"] == 1
    assert "discovered 1" in console("generate", "--dry-run").stdout
    registry.register_allocator(Broken())
    failed = console("generate", "--dry-run", code=1)
    said = "error [allocator_error]: strategy broken: RuntimeError: upstream down"
    assert said in failed.output


class Shapeless(AllocatorStrategy):
    name = "shapeless"

    def __init__(self, returns: object) -> None:
        self.returns = returns

    def discover(self) -> list[OrderRequest]:
        return self.returns  # type: ignore[return-value]


class Refusable(AllocatorStrategy):
    name = "refusable"

    def discover(self) -> list[OrderRequest]:
        return [OrderRequest("test.nope", {}), OrderRequest("test.simple", {"n": -1})]


def test_generate_reports_strategies_that_return_the_wrong_shape_and_dry_runs_foresee(
    console_for: object,
) -> None:
    """Found by an adversarial pass: a strategy returning None or dicts was a traceback
    (and stopped the strategies after it), and a dry run said nothing of proposals the
    real run then refused. Each is now a line of the report, with its code."""
    from tests.support.types import Simple

    for returns in (None, [{"type": "test.simple", "payload": {}}]):
        registry = Registry([Simple()])
        registry.register_allocator(Shapeless(returns))
        registry.register_allocator(Discover())  # after the broken one: still run
        console = console_for(registry=registry)  # type: ignore[operator]
        done = console("generate", code=1)
        assert (
            "strategy shapeless: TypeError: discover() must return a list of OrderRequest"
            in done.output
            and "Traceback" not in done.output
        )
        assert "created 1" in done.output or "existing 1" in done.output  # Discover ran
    registry = Registry([Simple()])
    registry.register_allocator(Refusable())
    console = console_for(registry=registry)  # type: ignore[operator]
    before = console.json("orders", "list")["meta"]["total"]
    dry = console("generate", "--dry-run", code=1)
    assert "error [unknown_order_type]: strategy refusable, type test.nope: " in dry.output
    said = "error [validation_failed]: strategy refusable, type test.simple: "
    assert said in dry.output and "payload.n" in dry.output
    assert console.json("orders", "list")["meta"]["total"] == before


class Rehearsed(AllocatorStrategy):
    """What only a real run met before: a plan() that raises, one dedupe key given two
    proposals, and a payload whose NaN no JSON parser reads."""

    name = "rehearsed"

    def discover(self) -> list[OrderRequest]:
        return [
            OrderRequest("test.simple", {"n": 1}, dedupe_key="twice"),
            OrderRequest("test.simple", {"n": 2}, dedupe_key="twice"),
            OrderRequest("test.plan_raises", {}),
            OrderRequest("test.simple", {"n": float("nan")}),
            OrderRequest("test.simple", {"n": 3}, dedupe_key="k" * 200),  # too long a key
        ]


def test_generate_dry_run_meets_what_the_real_run_refuses(console_for: object) -> None:
    """Found by an adversarial pass: --dry-run checked schemas only, so it said nothing of
    a plan() that raised or of a dedupe key reused, which the real run then refused; its
    --json printed a discovered NaN as ``NaN``, which no JSON parser reads; and a
    validation error's one line said where twice."""
    from tests.support.types import Simple

    class PlanRaises(Simple):
        type = "test.plan_raises"

        def plan(self, order: Any) -> list[Any]:
            raise ValueError("plan boom")

    registry = Registry([Simple(), PlanRaises()])
    registry.register_allocator(Rehearsed())
    console = console_for(registry=registry)  # type: ignore[operator]
    dry = json.loads(console("generate", "--dry-run", "--json", code=1).stdout)
    codes = [(e["code"], e["type"]) for e in dry["errors"]]
    real = json.loads(console("generate", "--json", code=1).stdout)
    assert (
        codes
        == [(e["code"], e["type"]) for e in real["errors"]]
        == [
            ("dedupe_key_reused", "test.simple"),
            ("validation_failed", "test.plan_raises"),
            ("validation_failed", "test.simple"),
            ("validation_failed", "test.simple"),
        ]
    )
    assert set(dry) == {"discovered", "created", "existing", "errors", "dry_run"}
    assert dry["created"] == 0 and real["created"] == 1
    assert dry["discovered"][3]["payload"] == {"n": "nan"}
    said = dry["errors"][2]["message"]
    assert said.count("must be a finite number") == 1, said
    again = json.loads(console("generate", "--dry-run", "--json", code=1).stdout)
    assert [e["code"] for e in again["errors"]] == [e["code"] for e in dry["errors"]]


def test_dev_seed_and_reset(console: Console) -> None:
    seeded = console.json(
        "dev", "seed", "--type", "test.multi", "--count", "3", "--payload", '{"count": 2}'
    )
    assert len(seeded["created"]) == 3
    check = console.json("ops", "check")
    assert check["orders"] == {"queued": 3} and check["items"] == {"queued": 6}
    assert "seeded 2" in console("dev", "seed", "--type", "test.simple", "--count", "2").stdout
    bad = console("dev", "seed", "--type", "test.simple", "--payload", '{"n": -1}', code=1)
    assert isinstance(bad.exception, ValidationFailed)
    assert console("dev", "seed", "--type", "test.simple", "--payload", "[1]", code=2)
    refused = console("dev", "reset", code=2)
    assert "--force" in refused.output
    assert console.json("orders", "list")["meta"]["total"] == 5
    deleted = console.json("dev", "reset", "--force")["deleted"]
    assert deleted["work_orders"] == 5 and deleted["work_items"] == 8
    assert console.json("orders", "list")["meta"]["total"] == 0


def test_make_order_type(console: Console, tmp_path: Path) -> None:
    source = console("make", "order-type", "billing.invoice_check").stdout
    assert "class BillingInvoiceCheckOrder(OrderType)" in source
    target = tmp_path / "invoice_check.py"
    console("make", "order-type", "billing.invoice_check", "--output", str(target))
    assert target.read_text() == source
    assert "exists" in console("make", "order-type", "x.y", "-o", str(target), code=2).output
    console("make", "order-type", "x.y", "-o", str(target), "--force")
    spec = importlib.util.spec_from_file_location("generated_type", target)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    registry = Registry()
    module.register(registry)
    assert registry.get("x.y").type == "x.y"
    bad = console("make", "order-type", "Not A Name", code=1)
    assert isinstance(bad.exception, ValidationFailed)


@pytest.mark.parametrize("parts", [False, True])
def test_make_order_type_with_tests_runs_its_tests(
    console: Console, tmp_path: Path, parts: bool
) -> None:
    """--parts scaffolds the partial-submission hooks; --with-tests writes a pytest file
    that runs one order through the scaffolded type: the generated tests pass as written."""
    import os
    import subprocess
    import sys

    target = tmp_path / "pkg" / "shop_restock.py"
    target.parent.mkdir()
    flags = ["--parts"] if parts else []
    args = ["make", "order-type", "shop.restock", "-o", str(target), "--with-tests", *flags]
    made = console.json(*args, "--tests-dir", str(tmp_path / "tests"))
    assert made["parts"] is parts and made["tests"] == str(
        tmp_path / "tests" / "test_shop_restock.py"
    )
    source = target.read_text()
    hooks = ("part_schema", "validate_part", "required_parts", "assemble", "validate_assembled")
    assert all((f"def {hook}(" in source) is parts for hook in hooks)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", made["tests"]],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        # plain pytest: the generated tests need no plugin, and loading this venv's
        # (schemathesis, hypothesis, celery's...) took seconds of each run
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 passed" in run.stdout
    assert "needs --output" in console("make", "order-type", "a.b", "--with-tests", code=2).output


def test_make_allocator(console: Console, tmp_path: Path) -> None:
    """make allocator: a strategy module whose register() adds it; generate asks it."""
    source = console("make", "allocator", "inbox", "--type", "test.simple").stdout
    assert "class InboxAllocator(AllocatorStrategy)" in source
    target = tmp_path / "inbox.py"
    made = console.json("make", "allocator", "Inbox", "--type", "test.simple", "-o", str(target))
    assert made["class"] == "InboxAllocator" and target.read_text() == made["source"]
    assert "exists" in console("make", "allocator", "x", "-o", str(target), code=2).output
    # the TODO filled in: one subject found
    target.write_text(made["source"].replace("subjects: list[str] = []", 'subjects = ["a"]'))
    spec = importlib.util.spec_from_file_location("generated_allocator", target)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    registry = Registry()
    module.register(registry)
    [strategy] = registry.allocators()
    assert strategy.name == "inbox"
    expected = OrderRequest("test.simple", {"subject": "a"}, dedupe_key="test.simple:a")
    assert strategy.discover() == [expected]
    assert console("make", "allocator", "x", "--type", "Not A Type", code=1)


@pytest.mark.postgres
def test_console_over_postgres(console_for: object) -> None:
    console = console_for(db="postgres", backend="database")  # type: ignore[operator]
    order_id = _submitted(console)
    assert console.json("orders", "list")["data"][0]["id"] == str(order_id)
    console.wm.propose("test.multi", {"count": 2})
    assert console.wm.agent.checkout("a9") is not None
    report = console.json("leases", "release", "--agent", "a9")
    assert report["counts"] == {"released": 1}
    assert console.json("ops", "check")["leases"]["held"] == 0


def test_an_empty_or_padded_tenant_or_agent_makes_no_token(console: Console) -> None:
    """``tokens create --tenant "$TENANT"`` with the variable unset made an unbound token,
    one that sees every tenant (found by an adversarial pass); `` acme `` another tenant
    than ``acme``. Both are refused, and so is an empty ``--agent``."""
    from workmanager.errors import ValidationFailed

    for flags in (("--tenant", ""), ("--tenant", " acme "), ("--agent", ""), ("--agent", " ")):
        done = console("tokens", "create", "--name", "t1", "--scopes", "view", *flags, code=1)
        assert isinstance(done.exception, ValidationFailed), (flags, done.output)
    assert console.json("tokens", "list") == []
    made = console.json("tokens", "create", "--name", "t2", "--scopes", "view", "--tenant", "acme")
    assert made["tenant_id"] == "acme"


def test_a_question_not_answered_is_one_error_line(
    console: Console, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ops prune`` asks first; with no terminal to answer on it printed only "Aborted!"
    (and nothing at all on stdout under --json). Now the console's error line, or its
    JSON envelope, and exit 1; nothing deleted."""
    from workmanager.cli import main

    done = _submitted(console)
    _set(console, done, state="completed", last_transitioned_at=utcnow() - timedelta(days=100))
    monkeypatch.setenv("WORK_MANAGER_DATABASE_URL", console.wm.settings.database_url)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    for extra in ((), ("--json",)):
        with pytest.raises(SystemExit) as exited:
            main(["ops", "prune", *extra])
        assert exited.value.code == 1
        out, err = capsys.readouterr()
        if extra:
            assert json.loads(out)["error"]["code"] == "aborted"
        else:
            assert "error [aborted]: stopped" in err and "hint: answer y" in err
    assert console.json("ops", "check")["orders"] == {"completed": 1}


def test_ctrl_c_is_an_interruption_without_the_question_hint(
    console: Console, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C printed "the question was not answered yes, or it was interrupted" and the
    hint "answer y, or pass --yes": now "interrupted", no hint, exit 130 as shells use."""
    from workmanager.cli import main

    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setenv("WORK_MANAGER_DATABASE_URL", console.wm.settings.database_url)
    monkeypatch.setattr("workmanager.services.housekeeping.Housekeeping.check", interrupted)
    with pytest.raises(SystemExit) as exited:
        main(["ops", "check"])
    assert exited.value.code == 130
    err = capsys.readouterr().err
    assert "error [aborted]: interrupted (Ctrl-C)" in err and "hint:" not in err


def test_create_wait_refuses_to_follow_another_proposals_order(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two ``orders create --dedupe-key K --wait`` at once both passed the check before
    sending; the loser's proposal was refused by the worker and it followed the winner's
    order as its own (exit 0 once completed). It now checks the order it follows."""
    from workmanager.cli import orders as orders_cli
    from workmanager.errors import DedupeKeyReused

    wm = console.wm
    winner = wm.propose("test.simple", {"n": 1}, dedupe_key="raced")
    checks: list[int] = []
    real = orders_cli._repeated

    def racing(*args: Any) -> Any:  # the check before sending saw no order yet
        checks.append(1)
        return None if len(checks) == 1 else real(*args)

    monkeypatch.setattr(orders_cli, "_repeated", racing)
    monkeypatch.setattr(orders_cli, "_send", lambda *a, **k: winner)  # the worker's id
    args = ("orders", "create", "--type", "test.simple", "--payload", '{"n": 2}')
    done = console(*args, "--dedupe-key", "raced", "--wait", "--timeout", "5", code=1)
    assert isinstance(done.exception, DedupeKeyReused) and len(checks) == 2


def test_upstreams_list_and_clone_options(console: Console) -> None:
    """Options upstream's commands have that a migration pass found missing:
    ``orders list --has-available-items``, ``items list --leased``, ``orders clone
    --priority`` and ``--dry-run`` (which checks the proposal and creates nothing)."""
    wm = console.wm
    held = _submitted(console)  # submitted: nothing to lease
    waiting = wm.propose("test.multi", {"count": 2})
    lease = wm.agent.checkout("a1", order_id=waiting)
    assert lease is not None
    listed = console.json("orders", "list", "--has-available-items")["data"]
    assert [o["id"] for o in listed] == [str(waiting)]
    leased = console.json("items", "list", "--leased")
    assert [i["id"] for i in leased] == [str(lease.item_id)]
    total = console.json("orders", "list")["meta"]["total"]
    dry = console.json("orders", "clone", str(held), "--priority", "7", "--dry-run")
    assert dry["dry_run"] is True and console.json("orders", "list")["meta"]["total"] == total
    made = console.json("orders", "clone", str(held), "--priority", "7")
    assert made["priority"] == 7 and made["meta"]["cloned_from"] == str(held)
    tenanted = wm.propose("test.simple", {"n": 5}, tenant_id="acme")
    assert console.json("orders", "clone", str(tenanted))["tenant_id"] == "acme"  # was None


def test_ctrl_c_while_waiting_says_which_order_carries_on(
    console: Console, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by a newcomer's pass: ``orders create --wait`` interrupted printed only
    "interrupted", and the order it had sent (which carries on) had no id anywhere."""
    from workmanager.cli import main

    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setenv("WORK_MANAGER_DATABASE_URL", console.wm.settings.database_url)
    monkeypatch.setenv("WORK_MANAGER_ORDER_TYPES", "workmanager.demo.types")
    monkeypatch.setenv("WORK_MANAGER_BROKER_URL", console.wm.settings.broker_url)
    monkeypatch.setattr("workmanager.cli.orders.follow", interrupted)
    payload = '{"company": "Acme", "questions": ["q"]}'
    with pytest.raises(SystemExit) as exited:
        main(["orders", "create", "--type", "demo.research", "--payload", payload, "--wait"])
    assert exited.value.code == 130
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("error [aborted]: interrupted (Ctrl-C); order ")
    assert "was enqueued and carries on" in lines[0]
    assert lines[-1].startswith("hint: follow it with `workmanager orders show ")


def test_an_agents_failure_text_reaches_the_operator_escaped(
    console: Console, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``orders create --wait`` printed the failed order's ``last_error`` (an agent's own
    words) as it came: an OSC sequence retitled the operator's terminal. Escaped now, as
    the tables escape it, and so are error lines quoting what a caller sent."""
    from workmanager.cli import orders as orders_cli

    failed = {
        "id": "o-1",
        "state": "failed",
        "last_error": {"code": "x\x1b[2J", "message": "\x1b]0;PWNED\x07all good"},
    }
    monkeypatch.setattr(orders_cli, "_send", lambda *a, **k: "o-1")  # no broker here
    monkeypatch.setattr(orders_cli, "follow", lambda *a, **k: failed)
    args = ("orders", "create", "--type", "test.simple", "--payload", '{"n": 2}', "--wait")
    done = console(*args, code=1)
    assert "\x1b" not in done.output and "\x07" not in done.output
    assert "o-1 failed: [x\\x1b[2J] \\x1b]0;PWNED\\x07all good" in done.output
    # a rejection's reasons are the reviewer's list: said, not a bare "-" (a newcomer walk)
    errors = [{"code": "rejected", "message": "no"}, {"code": "x", "message": "cite it"}]
    failed.update(state="rejected", last_error={"code": "rejected", "errors": errors})
    done = console(*args, code=1)
    assert "o-1 rejected: [rejected] no; cite it" in done.output
    from workmanager.cli.render import report_error
    from workmanager.errors import UnknownOrderType

    report_error(UnknownOrderType("unknown order type 'nope\x1b]0;T\x07'"))
    said = capsys.readouterr().err
    assert "\x1b" not in said and "'nope\\x1b]0;T\\x07'" in said


def test_dev_reset_names_the_database_without_its_password(console: Console) -> None:
    console.wm.settings = console.wm.settings.replace(
        database_url="postgresql+psycopg://wm:s3cret@db.internal/work"
    )
    refused = console("dev", "reset", code=2)
    assert "s3cret" not in refused.output and "wm:***@db.internal" in refused.output


class Feed(AllocatorStrategy):
    """What a JSON feed gives: a broken emoji escape (a lone surrogate), a huge key, and
    a key the database holds for another proposal before the same proposal again."""

    name = "feed"

    def discover(self) -> list[OrderRequest]:
        return [
            OrderRequest("test.simple", {"n": 1}, dedupe_key="a\ud83db"),
            OrderRequest("test.simple", {"n": 1}, dedupe_key="x" * 100_000),
            OrderRequest("test.simple", {"n": 2}, dedupe_key="held"),
            OrderRequest("test.simple", {"n": 1}, dedupe_key="held"),
        ]


def test_generate_prints_what_a_feed_sends_and_dry_runs_refuse_what_real_runs_do(
    console_for: object,
) -> None:
    """An allocator pass: a lone surrogate in a discovered key was a traceback where the
    table was (the refusal never printed); a 100,000-character key made a line of that
    length; a dry run kept a refused request as the key's, then refused the next one of
    the key too, which the real run accepts."""
    from tests.support.types import Simple

    registry = Registry([Simple()])
    registry.register_allocator(Feed())
    console = console_for(registry=registry)  # type: ignore[operator]
    console.wm.propose("test.simple", {"n": 1}, dedupe_key="held")
    dry = console("generate", "--dry-run", code=1)
    assert "Traceback" not in dry.output and "a\\ud83db" in dry.stdout
    lines = dry.stderr.splitlines()
    assert lines and max(len(line) for line in lines) < 2_000, max(map(len, lines))
    real = console("generate", code=1)
    assert [line.split(":")[0] for line in lines] == [
        line.split(":")[0] for line in real.stderr.splitlines()
    ]
    assert "existing 1" in real.stdout  # the same proposal under "held" found its order


def test_an_allocator_class_or_async_discover_is_refused_at_registration() -> None:
    """An allocator pass: the class itself, or an ``async def discover``, was accepted
    and failed every generate run (a TypeError; a coroutine never awaited)."""
    from workmanager.errors import ConfigurationError

    class Later(AllocatorStrategy):
        name = "later"

        async def discover(self) -> list[OrderRequest]:  # type: ignore[override]
            return []

    registry = Registry()
    with pytest.raises(ConfigurationError, match="is an allocator class"):
        registry.register_allocator(Discover)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="discover is async def"):
        registry.register_allocator(Later())
    assert registry.allocators() == []
