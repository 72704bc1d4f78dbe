"""The right to be forgotten (issue 17), end to end on SQLite and PostgreSQL: an agent and a
user leave traces everywhere (library calls, HTTP with their tokens, the console); after
``provenance forget`` their ids are in no column of any table, everyone else's rows are as
they were, one audit event per erasure says what happened but not whose; a dry run
changes nothing and reports counts; live leases refuse."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.support.types import Parts, Simple
from tests.ui.test_console import sign_in
from workmanager import AgentInfo, Registry, WorkManager
from workmanager.api import create_app
from workmanager.cli.app import Env, cli
from workmanager.db.models import ApiToken, Base, Event, Provenance
from workmanager.errors import LeaseConflict
from workmanager.ratelimit.rate import Rate
from workmanager.services import forget as forget_module
from workmanager.services.forget import Forget, Subject
from workmanager.services.tokens import TokenService
from workmanager.types import Actor

X = "agent-xq7zk-forgetme"
U = "ulla-reviewer-forgetme"
AGENT_X = AgentInfo(
    id=X,
    name="Xavier's bot",
    version="1.0.0",
    model_name="m-1",
    runtime="py",
    request_id="req-x-1",
    ip_address="10.1.2.3",
    user_agent="x-agent/1.0",
    extra={"team": "x-team"},
)
AGENT_Y = AgentInfo(id="agent-y", name="Yolanda", ip_address="10.9.9.9", request_id="req-y")


def dump(wm: WorkManager) -> dict[str, list[str]]:
    """Every row of every table, as text (sorted per table); a token's ``last_used_at``
    aside (the admin's changes as it calls the route)."""
    out: dict[str, list[str]] = {}
    with wm.db.transaction() as s:
        for table in Base.metadata.sorted_tables:
            rows = s.execute(select(table)).mappings()
            out[table.name] = sorted(
                json.dumps(
                    {k: v for k, v in r.items() if k != "last_used_at"},
                    default=str,
                    ensure_ascii=False,
                    sort_keys=True,
                )
                for r in rows
            )
    return out


def mentioning(rows: dict[str, list[str]], needle: str) -> dict[str, list[str]]:
    return {
        t: [r for r in rs if needle in r] for t, rs in rows.items() if any(needle in r for r in rs)
    }


def activity(wm: WorkManager) -> dict[str, str]:
    """X and Y work (library and HTTP), U reviews over HTTP and signs in to the console."""
    tokens = TokenService(wm.ctx)
    x_token, _ = tokens.create("x-token", "propose,view,checkout,submit", agent_id=X)
    u_token, _ = tokens.create(U, "view,approve,reject")
    admin, _ = tokens.create("root", "admin,view")
    http = TestClient(create_app(wm), follow_redirects=False)
    # X proposes and works an order through and through; Y works one beside it
    first = wm.propose("test.simple", {"n": 1}, agent=AGENT_X)
    other = wm.propose("test.simple", {"n": 2}, agent=AGENT_Y)
    lease = wm.agent.checkout(AGENT_X, order_id=first)
    wm.agent.release(lease, agent=AGENT_X)
    lease = wm.agent.checkout(AGENT_X, order_id=first)
    lease = wm.agent.heartbeat(lease, progress=0.5, agent=AGENT_X)
    wm.agent.submit(lease, {"answer": 1}, evidence={"how": "by hand"}, notes="fine", agent=AGENT_X)
    y_lease = wm.agent.checkout(AGENT_Y, order_id=other)
    wm.agent.submit(y_lease, {"answer": 1}, agent=AGENT_Y)
    # parts, over HTTP with X's bound token and an idempotency key
    parted = wm.propose("test.parts", {})
    headers = {"Authorization": f"Bearer {x_token}", "Idempotency-Key": "k-1"}
    answer = http.post(f"/agent/work/orders/{parted}/checkout", headers=headers)
    assert answer.status_code == 200, answer.text
    item, token = answer.json()["item"]["id"], answer.json()["item"]["lease_token"]
    lease_h = {"Authorization": f"Bearer {x_token}", "X-Lease-Token": token}
    for key in ("a", "b"):
        body = {"part_key": key, "payload": {"v": 1}, "evidence": {"p": key}}
        keyed = {**lease_h, "Idempotency-Key": f"k-{key}"}
        answer = http.post(f"/agent/work/items/{item}/parts", json=body, headers=keyed)
        assert answer.status_code == 202, answer.text
    keyed = {**lease_h, "Idempotency-Key": "k-f"}
    answer = http.post(f"/agent/work/items/{item}/finalize", json={}, headers=keyed)
    assert answer.status_code == 202, answer.text
    # U approves one, rejects another for rework, over HTTP; and signs in to the console
    u = {"Authorization": f"Bearer {u_token}"}
    approve = {**u, "Idempotency-Key": "u-1"}
    approved = http.post(f"/agent/work/orders/{first}/approve?wait=0.1", headers=approve)
    assert approved.json()["order"]["events"], approved.text  # kept in the stored answer
    reject = {"errors": [{"code": "no", "message": "redo"}], "allow_rework": True}
    u = {**u, "Idempotency-Key": "u-2"}
    assert (
        http.post(f"/agent/work/orders/{parted}/reject", json=reject, headers=u).status_code == 200
    )
    sign_in(TestClient(create_app(wm), follow_redirects=False), u_token)
    return {"admin": admin, "x": x_token}


@pytest.mark.parametrize("batch", [2, 500])
@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_forgetting_an_agent_and_a_user_leaves_nothing_of_them(
    make_wm: Any, database: str, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``batch``: the rows read and rewritten at a time (an erasure held every row it
    changed in memory, 515 MB for 100,000 provenance rows); 2 crosses many batches."""
    monkeypatch.setattr(forget_module, "BATCH", batch)
    wm = make_wm(
        db=database,
        backend="database",
        registry=Registry([Simple(), Parts()]),
        rate_limit_checkout_per_agent=Rate(1000, 1),  # X's checkouts leave a bucket row
    )
    made = activity(wm)
    before = dump(wm)
    for needle in (X, U):
        assert mentioning(before, needle), needle  # the scenario left traces to erase
    # a live lease of X's refuses the erasure (and changes nothing)
    held = wm.propose("test.simple", {"n": 3})
    lease = wm.agent.checkout(AGENT_X, order_id=held)
    forget = Forget(wm.ctx)
    with pytest.raises(LeaseConflict):
        forget.forget(Subject("agent", X), Actor("user", "cli"))
    wm.agent.release(lease, agent=AGENT_X)
    before = dump(wm)

    # a dry run: counts, nothing changed
    cli_run = CliRunner().invoke(
        cli, ["provenance", "forget", "--agent", X, "--dry-run", "--json"], obj=Env(wm)
    )
    assert cli_run.exit_code == 0, cli_run.output
    dry = json.loads(cli_run.stdout)
    assert dry["dry_run"] is True and X not in cli_run.stdout
    assert dry["counts"]["provenance"] >= 8 and dry["counts"]["events"] >= 8
    assert dry["counts"]["tokens_revoked"] == 1 and dry["counts"]["idempotency_keys"] >= 1
    assert dry["counts"]["rate_buckets"] == 1
    assert dump(wm) == before

    # the agent through the CLI, the user through the HTTP route (admin scope)
    done = CliRunner().invoke(cli, ["provenance", "forget", "--agent", X, "--json"], obj=Env(wm))
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["counts"] == dry["counts"]
    http = TestClient(create_app(wm))
    auth = {"Authorization": f"Bearer {made['admin']}"}
    answer = http.post("/agent/work/provenance/forget", json={"user_id": U}, headers=auth)
    assert answer.status_code == 200, answer.text
    assert answer.json()["subject"] == "user" and answer.json()["counts"]["ui_sessions"] == 1

    after = dump(wm)
    for needle in (X, U):
        assert not mentioning(after, needle), mentioning(after, needle)
    # others' rows: every row that named neither is still there, unchanged
    untouched = {t: [r for r in rs if X not in r and U not in r] for t, rs in before.items()}
    for table, rows in untouched.items():
        assert set(rows) <= set(after[table]), table
    # what was the subject's keeps its shape: as many provenance rows and events as before
    assert len(after["work_provenance"]) == len(before["work_provenance"])
    with wm.db.transaction() as s:
        audits = list(s.scalars(select(Event).where(Event.event == "provenance_forgotten")))
        assert sorted(e.payload["subject"] for e in audits) == ["agent", "user"]
        assert len(after["work_events"]) == len(before["work_events"]) + 2
    # the pseudonym is the same wherever X stood, and X's token no longer works
    actors = {r for r in after["work_events"] if '"actor_type": "agent"' in r}
    assert any("forgotten-" in r for r in actors)
    revoked = http.post("/agent/work/checkout", headers={"Authorization": f"Bearer {made['x']}"})
    assert revoked.status_code == 401, revoked.text  # revoked, not only renamed
    with wm.db.transaction() as s:
        tokens = list(s.scalars(select(ApiToken).where(ApiToken.name.like("forgotten-%"))))
        assert tokens and all(t.revoked_at is not None for t in tokens)
        # X's provenance rows keep their shape, the request's traces cleared (a mutation
        # pass: its IP address was left and no test noticed)
        rows = list(s.scalars(select(Provenance).where(Provenance.agent_id.like("forgotten-%"))))
        assert rows
        for row in rows:
            traces = (row.ip_address, row.user_agent, row.request_id, row.agent_name)
            assert traces == (None, None, None, None) and not row.extra, row.__dict__


def test_forget_route_needs_admin_and_exactly_one_subject(make_wm: Any) -> None:
    wm = make_wm(db="sqlite", backend="database", registry=Registry([Simple()]))
    viewer, _ = TokenService(wm.ctx).create("viewer", "view")
    admin, _ = TokenService(wm.ctx).create("root", "admin")
    http = TestClient(create_app(wm))
    answer = http.post(
        "/agent/work/provenance/forget",
        json={"agent_id": "a"},
        headers={"Authorization": f"Bearer {viewer}"},
    )
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "forbidden"
    for body in ({}, {"agent_id": "a", "user_id": "b"}):
        answer = http.post(
            "/agent/work/provenance/forget", json=body, headers={"Authorization": f"Bearer {admin}"}
        )
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["code"] == "validation_failed"
    usage = CliRunner().invoke(cli, ["provenance", "forget"], obj=Env(wm))
    assert usage.exit_code == 2
    both = ["provenance", "forget", "--agent", "a", "--user", "b"]
    assert CliRunner().invoke(cli, both, obj=Env(wm)).exit_code == 2
    # --user, as a table: a dry run counts the viewer's token, and changes nothing
    dry = CliRunner().invoke(
        cli, ["provenance", "forget", "--user", "viewer", "--dry-run"], obj=Env(wm)
    )
    assert dry.exit_code == 0, dry.output
    assert "dry run: nothing changed" in dry.output and "tokens_revoked" in dry.output
    assert TokenService(wm.ctx).authenticate(viewer).name == "viewer"


def test_a_tenant_bound_token_may_not_forget(make_wm: Any) -> None:
    """An agent's or a user's records span tenants: a tenant-bound admin token is refused
    (403, before any count), and nothing changes."""
    wm = make_wm(db="sqlite", backend="database", registry=Registry([Simple()]))
    wm.propose("test.simple", {"n": 1}, agent=AGENT_Y, tenant_id="globex")
    scoped, _ = TokenService(wm.ctx).create("acme-root", "admin", tenant_id="acme")
    before = dump(wm)
    http = TestClient(create_app(wm))
    for body in ({"agent_id": AGENT_Y.id}, {"agent_id": AGENT_Y.id, "dry_run": True}):
        answer = http.post(
            "/agent/work/provenance/forget",
            json=body,
            headers={"Authorization": f"Bearer {scoped}"},
        )
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"]["code"] == "forbidden"
    assert dump(wm) == before


def test_the_id_is_replaced_only_where_it_stands_whole() -> None:
    from workmanager.services.forget import scrub

    value = {"bob": ["bob", "bobcat", "bob-2", "by bob.", "x:bob"], "n": 1}
    assert scrub(value, "bob", "P") == {"P": ["P", "bobcat", "bob-2", "by bob.", "x:P"], "n": 1}


def test_the_work_is_left_alone_and_others_retries_still_replay(make_wm: Any) -> None:
    """Found by an adversarial pass: forgetting ``eve`` rewrote her evidence (a URL, a
    quote) and notes inside the ``submitted`` event; and forgetting an id that stood in
    other callers' stored answers (``dc74`` inside an order's UUID matched as a substring,
    on SQLite in any case) deleted their idempotency keys, so their retries ran again."""
    from workmanager.services.forget import scrub

    value = {"agent_id": "eve", "evidence": {"src": "https://x/eve"}, "notes": "eve checked"}
    assert scrub(value, "eve", "P") == {**value, "agent_id": "P"}
    # a reviewer's words in a rejection are no work of the agent's: scrubbed
    rejection = {"code": "rejected", "errors": [{"message": "eve made this up"}]}
    assert scrub(rejection, "eve", "P")["errors"] == [{"message": "P made this up"}]
    # an event inside a stored answer (approve?wait's order carries them): its payload is a
    # record, scrubbed as the event row's is; the order's payload beside it is the work
    event = {"event": "submitted", "actor_type": "agent", "actor_id": "eve", "payload": value}
    answer = {"order": {"payload": {"by": "eve"}, "events": [event]}}
    scrubbed = scrub(answer, "eve", "P")["order"]
    assert scrubbed["payload"] == {"by": "eve"}
    assert scrubbed["events"] == [{**event, "actor_id": "P", "payload": {**value, "agent_id": "P"}}]

    wm = make_wm(db="sqlite", backend="database", registry=Registry([Simple()]))
    tokens = TokenService(wm.ctx)
    admin, _ = tokens.create("root", "admin,view,propose")
    http = TestClient(create_app(wm))
    keyed = {"Authorization": f"Bearer {admin}", "Idempotency-Key": "victim-1"}
    body = {"type": "test.simple", "payload": {"n": 1}}
    first = http.post("/agent/work/propose", json=body, headers=keyed)
    assert first.status_code == 201, first.text
    order_id = first.json()["order"]["id"]
    fragment = order_id[:4].upper()  # inside the UUID; SQLite's LIKE ignores case
    answer = Forget(wm.ctx).forget(Subject("agent", fragment), Actor("user", "cli"))
    assert answer["counts"]["idempotency_keys"] == 0
    again = http.post("/agent/work/propose", json=body, headers=keyed)
    assert again.json()["order"]["id"] == order_id  # replayed, not a second order


def test_a_lease_granted_while_the_erasure_runs_refuses_it_whole(
    make_wm: Any, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL the live-lease count read no lock: a checkout committing just after it
    had its row renamed with the agent's others, the agent then refused on its own item
    ("leased by another agent") until the lease expired, and the erasure said it left
    nothing. The items are read locked; one held is refused, nothing erased. Played here
    by a count that says 0 while the agent holds a lease."""
    from workmanager.services import forget

    wm = make_wm(db=database, registry=Registry([Simple()]))
    order_id = wm.propose("test.simple", {})
    lease = wm.agent.checkout("agent-9", order_id=order_id)
    assert lease is not None
    monkeypatch.setattr(forget, "count_rows", lambda *_: 0)  # counted before the grant
    with pytest.raises(LeaseConflict) as refused:
        Forget(wm.ctx).forget(Subject("agent", "agent-9"), Actor.system())
    assert refused.value.details == {"live_leases": 1}
    wm.agent.heartbeat(lease)  # still the agent's own lease
    wm.agent.submit(lease, {"answer": 1})


@pytest.mark.postgres
def test_a_lease_granted_after_the_look_keeps_its_holder(
    make_wm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second window of the same race (an audit pass): a checkout committing after the
    items' locked look but before their rename was renamed too, READ COMMITTED letting
    the rename's read see it: the live lease named the pseudonym and its holder was
    refused on its own item. Played by the agent's checkout on another connection inside
    that window; the rename now takes only items not held, each read locked."""
    import threading

    from workmanager.services.forget import _Eraser

    wm = make_wm(db="postgres", registry=Registry([Simple()]))
    live_order = wm.propose("test.simple", {})
    granted: list[Any] = []
    look = _Eraser.items

    def items_then_a_grant(self: _Eraser) -> int:
        real_rewrite = self.rewrite

        def rewrite(model: Any, *args: Any, **kwargs: Any) -> int:
            grant = threading.Thread(
                target=lambda: granted.append(wm.agent.checkout("agent-7", order_id=live_order))
            )
            grant.start()
            grant.join(timeout=30)
            return real_rewrite(model, *args, **kwargs)

        self.rewrite = rewrite  # type: ignore[method-assign]
        return look(self)

    monkeypatch.setattr(_Eraser, "items", items_then_a_grant)
    answer = Forget(wm.ctx).forget(Subject("agent", "agent-7"), Actor.system())
    assert granted and granted[0] is not None  # granted in the window
    assert answer["counts"]["items"] == 0  # an ended lease names no holder
    (live,) = wm.queries.order(live_order)["items"]
    assert live["leased_by_agent_id"] == "agent-7"
    wm.agent.heartbeat(granted[0])  # the holder keeps its own lease
    wm.agent.submit(granted[0], {"answer": 2})


def test_an_items_error_is_the_work_wherever_it_is_copied(make_wm: Any, database: str) -> None:
    """An audit pass: the agent's own error ("erin could not reach the site") stayed in
    the item but was rewritten in the ``agent_failed`` event's copy (and the failed
    order's ``last_error``), where the docs promise item errors untouched everywhere."""
    wm = make_wm(db=database, registry=Registry([Simple()]))
    order_id = wm.propose("test.simple", {})
    lease = wm.agent.checkout("erin", order_id=order_id)
    assert lease is not None
    # the code a reviewer's rejection has: the agent's error is still the work (a review)
    error = {"code": "rejected", "message": "erin could not reach the site"}
    wm.agent.fail(lease, error, retryable=False)
    Forget(wm.ctx).forget(Subject("agent", "erin"), Actor.system())
    order = wm.queries.order(order_id)
    assert order["items"][0]["error"] == error
    assert order["last_error"]["message"] == error["message"]
    copies = [e["payload"]["error"] for e in order["events"] if e["event"] == "agent_failed"]
    assert copies and all(copy["message"] == error["message"] for copy in copies)
    actors = {e["actor_id"] for e in order["events"] if e["event"] == "agent_failed"}
    assert len(actors) == 1 and actors.pop().startswith("forgotten-")  # who did it: erased
