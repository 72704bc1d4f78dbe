"""Upstream's HTTP feature tests (GlobalCheckoutTest, PartialSubmissions*, OrdersIndex*,
IdempotencyEnforcementTest, LeaseConflictTest, FinalizeIdempotencyCachingTest,
SubmitPartValidationErrorsTest, LogsEndpointTest) as an upstream agent sends them: no
``X-Lease-Token``, filters in the query string, ``v``-prefixed versions."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.api.conftest import PREFIX, idem, start_server

pytestmark = pytest.mark.postgres


def agent(upstream: Any, name: str) -> httpx.Client:
    client: httpx.Client = upstream.client("agent-a", name)
    return client


def propose(client: httpx.Client, type: str, payload: dict[str, Any], **body: Any) -> str:
    r = client.post(f"{PREFIX}/propose", json={"type": type, "payload": payload, **body})
    assert r.status_code == 201, r.text
    return str(r.json()["order"]["id"])


def test_an_upstream_agent_works_without_lease_tokens(upstream: Any) -> None:
    a, b = agent(upstream, "compat-a-1"), agent(upstream, "compat-b-1")
    order_id = propose(a, "test.parts", {}, priority=90)
    r = a.post(f"{PREFIX}/orders/{order_id}/checkout")
    assert r.status_code == 200, r.text
    item_id = r.json()["item"]["id"]
    items = f"{PREFIX}/items/{item_id}"
    assert a.post(f"{items}/heartbeat", json={}).status_code == 200
    # Another agent, without a token, is not the holder: 409, as upstream.
    r = b.post(f"{items}/heartbeat", json={})
    assert r.status_code == 409 and r.json()["error"]["code"] == "lease_conflict"
    # ... saying so: it sent no token (was "the lease token is not the item's current lease")
    assert r.json()["error"]["message"].startswith("no lease token was sent"), r.text
    # A token, when sent, is still checked.
    r = a.post(f"{items}/heartbeat", json={}, headers={"X-Lease-Token": "1.forged"})
    assert r.status_code == 409
    r = a.post(f"{items}/parts", json={"part_key": "a", "seq": 1, "payload": {"v": 1}})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["success"] is True and body["part"]["status"] == "validated"
    state = body["item_parts_state"]
    assert set(state) == {"a"} and state["a"]["status"] == "validated" and state["a"]["seq"] == 1
    assert set(state["a"]) == {"status", "seq", "checksum", "submitted_at"}
    assert body["missing_parts"] == ["b"]
    # An invalid part: 422, stored rejected with its errors, listed by status=rejected.
    r = a.post(f"{items}/parts", json={"part_key": "b", "payload": {"x": 1}, "seq": 0})
    assert r.status_code == 202
    r = a.post(f"{items}/parts", json={"part_key": "a", "seq": 2, "payload": {"v": "no"}})
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_failed"
    listed = a.get(f"{items}/parts", params={"status": "rejected"}).json()
    (rejected,) = listed["parts"]
    assert rejected["seq"] == 2 and rejected["errors"]["validation"]
    assert listed["parts_state"]["a"]["status"] == "rejected"
    r = a.post(f"{items}/finalize", json={"mode": "strict"}, headers=idem())
    assert r.status_code == 202, r.text
    done = r.json()
    assert done["success"] is True and done["item"]["state"] == "submitted"
    assert done["item"]["assembled_result"] == {"a": {"v": 1}, "b": {"x": 1}}
    events = [e["event"] for e in a.get(f"{items}/logs").json()["events"]]
    assert "part_rejected" in events


def test_release_and_fail_without_tokens(upstream: Any) -> None:
    a = agent(upstream, "compat-a-2")
    order_id = propose(a, "test.simple", {})
    item_id = a.post(f"{PREFIX}/orders/{order_id}/checkout").json()["item"]["id"]
    r = a.post(f"{PREFIX}/items/{item_id}/release")
    assert r.status_code == 200 and r.json()["item"]["state"] == "queued"
    # Released: no lease is held by anyone, so acting on it is a conflict.
    assert a.post(f"{PREFIX}/items/{item_id}/heartbeat", json={}).status_code == 409
    item_id = a.post(f"{PREFIX}/orders/{order_id}/checkout").json()["item"]["id"]
    error = {"code": "boom", "message": "it broke"}
    r = a.post(f"{PREFIX}/items/{item_id}/fail", json={"error": error, "retryable": False})
    assert r.status_code == 200 and r.json()["item"]["state"] == "failed"


def test_best_effort_finalize_with_no_parts(upstream: Any) -> None:
    a = agent(upstream, "compat-a-3")
    order_id = propose(a, "test.parts", {})
    item_id = a.post(f"{PREFIX}/orders/{order_id}/checkout").json()["item"]["id"]
    r = a.post(f"{PREFIX}/items/{item_id}/finalize", json={"mode": "best_effort"}, headers=idem())
    assert r.status_code == 202 and r.json()["item"]["assembled_result"] == {}


def test_global_checkout_filters_from_the_query_string(upstream: Any) -> None:
    a = agent(upstream, "compat-a-4")
    simple = propose(a, "test.simple", {}, priority=1000)  # first by priority, wrong type
    parts = propose(a, "test.parts", {}, priority=1)
    r = a.post(f"{PREFIX}/checkout?type=test.parts")
    assert r.status_code == 200 and r.json()["item"]["order_id"] == parts, r.text
    r = a.post(f"{PREFIX}/checkout?min_priority=999")
    assert r.status_code == 200 and r.json()["item"]["order_id"] == simple
    r = a.post(f"{PREFIX}/checkout?type=nonexistent.type")
    assert r.status_code == 409 and r.json()["error"]["code"] == "no_items_available"
    r = a.post(f"{PREFIX}/checkout?type=test.parts", json={"type": "test.simple"})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["path"] == "type"


def test_an_empty_php_array_is_an_empty_body(upstream: Any) -> None:
    """Laravel's ``Http::post($url)`` (and ``postJson($url, [])``) sends ``[]``: checkout
    and heartbeat answered 422 "Input should be a valid dictionary"."""
    a = agent(upstream, "compat-a-9")
    propose(a, "test.simple", {}, priority=2000)
    r = a.post(f"{PREFIX}/checkout?type=test.simple", json=[])
    assert r.status_code == 200, r.text
    items = f"{PREFIX}/items/{r.json()['item']['id']}"
    assert a.post(f"{items}/heartbeat", json=[]).status_code == 200
    r = a.post(f"{PREFIX}/checkout", json=[1])  # a list with something in it is still wrong
    assert r.status_code == 422, r.text
    # an empty field of an object type, as PHP writes it ('meta' => 'nullable|array')
    r = a.post(f"{PREFIX}/propose", json={"type": "test.simple", "payload": {}, "meta": []})
    assert r.status_code == 201 and r.json()["order"]["meta"] == {}, r.text
    r = a.post(f"{PREFIX}/propose", json={"type": "test.simple", "payload": {}, "meta": [1]})
    assert r.status_code == 422, r.text


def test_agent_version_with_a_leading_v(upstream: Any) -> None:
    a = agent(upstream, "compat-a-5")
    r = a.post(
        f"{PREFIX}/propose",
        json={"type": "test.simple", "payload": {}},
        headers={"X-Agent-Version": "v2.1.0"},
    )
    assert r.status_code == 201, r.text
    r = a.post(
        f"{PREFIX}/propose",
        json={"type": "test.simple", "payload": {}},
        headers={"X-Agent-Version": "version two"},
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_agent_metadata"


def test_orders_index_include_fields_and_filters(upstream: Any) -> None:
    admin = upstream.client("admin")
    a = agent(upstream, "compat-a-6")
    order_id = propose(a, "test.multi", {"n": 2})
    r = admin.get(f"{PREFIX}/orders", params={"filter[id]": order_id, "include": "items,events"})
    assert r.status_code == 200, r.text
    (row,) = r.json()["data"]
    assert len(row["items"]) == row["items_count"] and row["items"][0]["state"] == "queued"
    assert [e["event"] for e in row["events"]][:2] == ["proposed", "planned"]
    r = admin.get(
        f"{PREFIX}/orders",
        params={
            "filter[id]": order_id,
            "fields[work_orders]": "id,type,state,priority",
            "include": "items",
            "fields[items]": "id,state",
        },
    )
    (row,) = r.json()["data"]
    assert set(row) == {"id", "type", "state", "priority", "items"}
    assert all(set(i) == {"id", "state"} for i in row["items"])
    assert admin.get(f"{PREFIX}/orders", params={"include": "invalid_relation"}).status_code == 400
    for name, value, hit in [
        ("requested_by_type", "agent", True),
        ("requested_by_type", "user", False),
        ("last_transitioned_at", ">=2000-01-01T00:00:00Z", True),
        ("applied_at", ">=2000-01-01T00:00:00Z", False),
        ("completed_at", "<2000-01-01T00:00:00Z", False),
    ]:
        params = {"filter[id]": order_id, f"filter[{name}]": value}
        r = admin.get(f"{PREFIX}/orders", params=params)
        assert r.status_code == 200, (name, r.text)
        assert (len(r.json()["data"]) == 1) is hit, (name, value)


def test_a_key_outside_enforce_on_is_still_honoured(upstream: Any) -> None:
    a = agent(upstream, "compat-a-7")
    key = {"X-Idempotency-Key": uuid.uuid4().hex}
    body = {"type": "test.simple", "payload": {"n": 1}}
    first = a.post(f"{PREFIX}/propose", json=body, headers=key)
    second = a.post(f"{PREFIX}/propose", json=body, headers=key)
    assert first.status_code == second.status_code == 201
    assert first.json()["order"]["id"] == second.json()["order"]["id"]
    assert second.headers.get("Idempotent-Replayed") == "true"
    # Without a key it is not required here.
    assert a.post(f"{PREFIX}/propose", json=body).status_code == 201


def test_by_default_the_lease_token_is_still_required(
    api_db_url: str, tokens: dict[str, str]
) -> None:
    """Fencing stays the default: on a server started without ``WORK_MANAGER_LEASE_TOKEN_
    REQUIRED`` the holder itself is refused without ``X-Lease-Token`` (422 naming
    ``lease_token``), and served with it."""
    srv = start_server(api_db_url, tokens, "database", None)
    try:
        a = srv.client("agent-a", "compat-default-1")
        body = {"type": "test.simple", "payload": {}}
        order_id = a.post(f"{PREFIX}/propose", json=body, headers=idem()).json()["order"]["id"]
        item = a.post(f"{PREFIX}/orders/{order_id}/checkout").json()["item"]
        items = f"{PREFIX}/items/{item['id']}"
        sent: list[tuple[str, dict[str, Any]]] = [
            ("heartbeat", {}),
            ("submit", {"result": {"answer": 1}}),
            ("release", {}),
        ]
        for action, json in sent:
            r = a.post(f"{items}/{action}", json=json, headers=idem())
            assert r.status_code == 422, (action, r.text)
            error = r.json()["error"]
            assert error["code"] == "validation_failed", (action, error)
            assert [d["path"] for d in error["details"]] == ["lease_token"], (action, error)
        headers = {"X-Lease-Token": item["lease_token"]}
        r = a.post(f"{items}/heartbeat", json={}, headers=headers)
        assert r.status_code == 200, r.text
    finally:
        srv.close()


def test_lease_conflicts_and_replays_of_parts_and_finalize(upstream: Any) -> None:
    """LeaseConflictTest (another agent's release, submit, part: 409), FinalizeIdempotency
    CachingTest (the same key replays submit-part and finalize), PartialSubmissionsFinalize
    ValidationTest (strict by default; a bad mode is 422)."""
    a, b = agent(upstream, "compat-a-8"), agent(upstream, "compat-b-8")
    propose(a, "test.parts", {}, priority=500)
    item = a.post(f"{PREFIX}/checkout", params={"type": "test.parts"}).json()["item"]
    items = f"{PREFIX}/items/{item['id']}"
    for action, body in [
        ("release", {}),
        ("submit", {"result": {}}),
        ("parts", {"part_key": "a", "payload": {"v": 1}}),
    ]:
        r = b.post(f"{items}/{action}", json=body, headers=idem())
        assert r.status_code == 409, (action, r.text)
        assert r.json()["error"]["code"] == "lease_conflict", action
    key = idem()
    part = {"part_key": "a", "payload": {"v": 1}}
    first = a.post(f"{items}/parts", json=part, headers=key)
    again = a.post(f"{items}/parts", json=part, headers=key)
    assert first.status_code == again.status_code == 202 and first.json() == again.json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    for mode in ("bogus", 5):
        r = a.post(f"{items}/finalize", json={"mode": mode}, headers=idem())
        assert r.status_code == 422 and r.json()["error"]["details"][0]["path"] == "mode"
    r = a.post(f"{items}/finalize", json={}, headers=idem())  # strict when omitted
    assert r.status_code == 422 and r.json()["error"]["code"] == "missing_parts", r.text
    a.post(f"{items}/parts", json={"part_key": "b", "payload": {"x": 1}}, headers=idem())
    key = idem()
    first = a.post(f"{items}/finalize", json={"mode": "strict"}, headers=key)
    again = a.post(f"{items}/finalize", json={"mode": "strict"}, headers=key)
    assert first.status_code == again.status_code == 202 and first.json() == again.json()
    assert first.json()["item"]["state"] == "submitted"


def test_submit_part_validation_errors(upstream: Any) -> None:
    """SubmitPartValidationErrorsTest: each malformed field is 422 naming it (``evidence``
    here may be any JSON value: docs/migrating.md)."""
    a = agent(upstream, "compat-a-9")
    order_id = propose(a, "test.parts", {})
    item = a.post(f"{PREFIX}/orders/{order_id}/checkout").json()["item"]
    parts = f"{PREFIX}/items/{item['id']}/parts"
    for body, field in [
        ({"payload": {"v": 1}}, "part_key"),
        ({"part_key": "a"}, "payload"),
        ({"part_key": 5, "payload": {"v": 1}}, "part_key"),
        ({"part_key": "a", "payload": "text"}, "payload"),
        ({"part_key": "a", "payload": {"v": 1}, "seq": "x"}, "seq"),
        ({"part_key": "a", "payload": {"v": 1}, "notes": 5}, "notes"),
    ]:
        r = a.post(parts, json=body, headers=idem())
        assert r.status_code == 422, (body, r.text)
        error = r.json()["error"]
        assert error["code"] == "validation_failed"
        assert field in [d["path"] for d in error["details"]], (body, error)
    r = a.post(parts, json={"part_key": "a", "payload": {"v": 1}}, headers=idem())
    assert r.status_code == 202, r.text  # optional fields omitted


def test_logs_newest_first_with_the_orders_events(upstream: Any) -> None:
    """LogsEndpointTest: the item's events and its order's (``item_id`` null), newest
    first, each with its full structure."""
    a = agent(upstream, "compat-a-10")
    order_id = propose(a, "test.simple", {})
    item = a.post(f"{PREFIX}/orders/{order_id}/checkout").json()["item"]
    items = f"{PREFIX}/items/{item['id']}"
    assert a.post(f"{items}/heartbeat", json={}).status_code == 200
    r = a.post(f"{items}/submit", json={"result": {"answer": 1}}, headers=idem())
    assert r.status_code == 202, r.text
    events = a.get(f"{items}/logs").json()["events"]
    stamps = [e["created_at"] for e in events]
    assert stamps == sorted(stamps, reverse=True)
    assert events[0]["event"] == "submitted"
    assert {e["item_id"] for e in events} == {item["id"], None}
    assert {"proposed", "leased", "submitted"} <= {e["event"] for e in events}
    assert {"id", "event", "order_id", "item_id", "actor_type", "payload", "created_at"} <= set(
        events[0]
    )
