"""Upstream's Feature/Http/AuthorizationTest, PartialSubmissionsAuthorizationTest and
ListPartsFiltersTest replayed against a real server (tests/compat/conftest.py's).

Upstream authorizes with Laravel gate abilities (``work.propose``, ``work.view``, ...);
here they are token scopes of the same names (docs/migrating.md, ``policies.*``). A caller
the policy denies is a token without the scope: 403 ``forbidden``, as upstream. A request
with no credentials at all is 401 ``unauthenticated`` here (SPEC §6.1), where upstream's
guest met the policy and got 403."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.conftest import PREFIX, idem

pytestmark = pytest.mark.postgres


def propose(upstream: Any, type: str = "test.simple") -> str:
    r = upstream.client("agent-a", "agent-1").post(
        f"{PREFIX}/propose", json={"type": type, "payload": {"message": "test"}}
    )
    assert r.status_code == 201, r.text
    return str(r.json()["order"]["id"])


def leased_item(upstream: Any, type: str) -> str:
    """An item leased by ``agent-1`` (upstream: ``leased_by_agent_id => 'agent-1'``)."""
    order_id = propose(upstream, type)
    r = upstream.client("agent-a", "agent-1").post(f"{PREFIX}/orders/{order_id}/checkout")
    assert r.status_code == 200, r.text
    return str(r.json()["item"]["id"])


def forbidden(r: httpx.Response) -> bool:
    return r.status_code == 403 and r.json()["error"]["code"] == "forbidden"


def test_each_route_is_refused_without_its_permission(upstream: Any) -> None:
    """AuthorizationTest: 'blocks propose / approve / reject / checkout / submit / view
    without authorization'."""
    viewer = upstream.client("viewer", "agent-1")  # view only
    proposer = upstream.client("proposer", "agent-1")  # propose only
    agent = upstream.client("agent-a", "agent-1")  # checkout, submit, view, propose
    body = {"type": "test.simple", "payload": {"message": "test"}}
    assert forbidden(viewer.post(f"{PREFIX}/propose", json=body, headers=idem()))
    anonymous = httpx.post(f"{upstream.url}{PREFIX}/propose", json=body, headers=idem())
    assert anonymous.status_code == 401  # here: no credentials at all (see above)
    assert anonymous.json()["error"]["code"] == "unauthenticated"
    order_id = propose(upstream)
    assert forbidden(agent.post(f"{PREFIX}/orders/{order_id}/approve", headers=idem()))
    errors = {"errors": [{"code": "validation_failed", "message": "Invalid data"}]}
    r = agent.post(f"{PREFIX}/orders/{order_id}/reject", json=errors, headers=idem())
    assert forbidden(r)
    assert forbidden(viewer.post(f"{PREFIX}/orders/{order_id}/checkout"))
    assert forbidden(proposer.get(f"{PREFIX}/orders/{order_id}"))
    item_id = leased_item(upstream, "test.simple")
    r = viewer.post(f"{PREFIX}/items/{item_id}/submit", json={"result": {"ok": True}})
    assert forbidden(r)
    # Nothing was done by the refused calls.
    order = upstream.client("admin").get(f"{PREFIX}/orders/{order_id}").json()["order"]
    assert order["state"] == "queued" and order["items"][0]["state"] == "queued"


def test_an_authorized_caller_proposes(upstream: Any) -> None:
    """AuthorizationTest: 'allows authorized actions when user has permission'."""
    r = upstream.client("agent-a", "agent-1").post(
        f"{PREFIX}/propose",
        json={"type": "test.simple", "payload": {"message": "test"}},
        headers={"X-Idempotency-Key": "test-key-authorized"},
    )
    assert r.status_code == 201 and {"id", "type", "state"} <= set(r.json()["order"])


def test_parts_routes_need_their_permission_even_with_a_valid_lease(upstream: Any) -> None:
    """PartialSubmissionsAuthorizationTest: 'blocks submit-part / list-parts / finalize
    without authorization', 'respects authorization on submit-part even with valid lease',
    and 'allows submit-part / list-parts / finalize with proper authorization'."""
    item_id = leased_item(upstream, "test.parts")
    items = f"{PREFIX}/items/{item_id}"
    viewer = upstream.client("viewer", "agent-1")  # the lease holder's id, no submit scope
    part = {"part_key": "b", "payload": {"name": "John Doe"}}
    assert forbidden(viewer.post(f"{items}/parts", json=part, headers=idem()))
    assert forbidden(upstream.client("proposer", "agent-1").get(f"{items}/parts"))
    r = viewer.post(f"{items}/finalize", json={"mode": "strict"}, headers=idem())
    assert forbidden(r)
    listed = viewer.get(f"{items}/parts")
    assert listed.status_code == 200 and listed.json()["parts"] == []  # nothing stored
    agent = upstream.client("agent-a", "agent-1")
    r = agent.post(f"{items}/parts", json=part, headers=idem())
    assert r.status_code == 202 and r.json()["success"] is True, r.text
    assert [p["part_key"] for p in viewer.get(f"{items}/parts").json()["parts"]] == ["b"]
    r = agent.post(f"{items}/finalize", json={"mode": "best_effort"}, headers=idem())
    assert r.status_code == 202 and r.json()["success"] is True, r.text


def test_list_parts_filters(upstream: Any) -> None:
    """ListPartsFiltersTest: 'filters parts by status', 'filters parts by part_key',
    'combines status and part_key filters', 'returns empty array when no parts match
    filter'. The rejected part is stored by a real invalid submission (upstream wrote
    it to the table)."""
    item_id = leased_item(upstream, "test.parts")
    items = f"{PREFIX}/items/{item_id}"
    agent = upstream.client("agent-a", "agent-1")

    def listed(**params: str) -> list[tuple[str, int, str]]:
        """(part_key, seq or -1, status), sorted."""
        r = agent.get(f"{items}/parts", params=params)
        assert r.status_code == 200, r.text
        rows = [(p["part_key"], p["seq"], p["status"]) for p in r.json()["parts"]]
        return sorted((key, -1 if seq is None else seq, status) for key, seq, status in rows)

    assert listed(status="validated") == [] and listed(part_key="nonexistent") == []
    for body in (
        {"part_key": "a", "payload": {"v": 1}},
        {"part_key": "b", "payload": {"email": "john@example.com"}},
        {"part_key": "b", "seq": 2, "payload": {"phone": "555-1234"}},
    ):
        assert agent.post(f"{items}/parts", json=body, headers=idem()).status_code == 202
    bad = {"part_key": "a", "seq": 2, "payload": {"v": "not a number"}}
    assert agent.post(f"{items}/parts", json=bad, headers=idem()).status_code == 422
    assert len(listed()) == 4
    assert (listed(status="validated")) == [
        ("a", -1, "validated"),
        ("b", -1, "validated"),
        ("b", 2, "validated"),
    ]
    assert listed(status="rejected") == [("a", 2, "rejected")]
    assert (listed(part_key="b")) == [("b", -1, "validated"), ("b", 2, "validated")]
    assert listed(part_key="a", status="validated") == [("a", -1, "validated")]
    assert listed(part_key="a", status="rejected") == [("a", 2, "rejected")]
    assert listed(part_key="b", status="rejected") == []
