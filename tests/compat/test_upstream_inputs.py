"""What upstream clients send that the routes read as upstream's did (session 27's parity
pass): ``null`` in a ``nullable`` field with a default, empty query values, the bare
``?state=`` beside ``filter[state]``, the ``*Exists`` includes, one idempotency key for
every part of an item, list evidence, and ``order_state`` in a submit's answer."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.conftest import PREFIX, idem

pytestmark = pytest.mark.postgres


def client(upstream: Any, name: str) -> httpx.Client:
    made: httpx.Client = upstream.client("agent-a", name)
    return made


def test_null_is_the_default_and_an_empty_query_value_is_no_value(upstream: Any) -> None:
    a = client(upstream, "inputs-a-1")
    body = {"type": "test.parts", "payload": {}, "priority": None}
    r = a.post(f"{PREFIX}/propose", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["order"]["priority"] == 0
    order_id = r.json()["order"]["id"]
    # ``?min_priority=`` and ``?tenant_id=`` (Laravel reads an empty value as null): any
    r = a.post(f"{PREFIX}/checkout", params={"min_priority": "", "tenant_id": "", "type": ""})
    assert r.status_code == 200, r.text
    item_id = r.json()["item"]["id"]
    assert r.json()["item"]["order_id"] == order_id
    items = f"{PREFIX}/items/{item_id}"
    for key, payload in (("a", {"v": 1}), ("b", {"x": 1})):
        r = a.post(f"{items}/parts", json={"part_key": key, "payload": payload}, headers=idem())
        assert r.status_code == 202, r.text
    r = a.post(f"{items}/finalize", json={"mode": None}, headers=idem())
    assert r.status_code == 202, r.text
    assert r.json()["item"]["state"] == "submitted"
    admin = upstream.client("admin")
    reject = {"errors": [{"code": "redo", "message": "again"}], "allow_rework": None}
    r = admin.post(f"{PREFIX}/orders/{order_id}/reject", json=reject, headers=idem())
    assert r.status_code == 200, r.text
    assert r.json()["order"]["state"] == "rejected"  # allow_rework: null is false


def test_a_required_field_sent_null_is_still_refused(upstream: Any) -> None:
    a = client(upstream, "inputs-a-2")
    r = a.post(f"{PREFIX}/propose", json={"type": "test.simple", "payload": None})
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_failed"


def test_filter_state_wins_over_the_bare_state_and_exists_includes(upstream: Any) -> None:
    admin = upstream.client("admin")
    a = client(upstream, "inputs-a-3")
    r = a.post(f"{PREFIX}/propose", json={"type": "test.simple", "payload": {"n": 1}})
    queued = r.json()["order"]["id"]
    params = {"state": "in_progress", "filter[state]": "queued", "filter[id]": queued}
    r = admin.get(f"{PREFIX}/orders", params=params)
    assert r.status_code == 200, r.text
    assert [o["id"] for o in r.json()["data"]] == [queued]
    params = {"filter[id]": queued, "include": "itemsExists,eventsExists"}
    (row,) = admin.get(f"{PREFIX}/orders", params=params).json()["data"]
    assert row["items_exists"] is True and row["events_exists"] is True


def test_one_key_serves_every_part_and_list_evidence_is_kept(upstream: Any) -> None:
    """Upstream scopes a part's key by its part key and seq: an agent sending each part of
    an item under one key has each stored, and a retry of one replays that one."""
    a = client(upstream, "inputs-a-4")
    r = a.post(f"{PREFIX}/propose", json={"type": "test.parts", "payload": {}})
    order_id = r.json()["order"]["id"]
    item_id = a.post(f"{PREFIX}/orders/{order_id}/checkout").json()["item"]["id"]
    items = f"{PREFIX}/items/{item_id}"
    key = idem()
    first = {"part_key": "a", "payload": {"v": 1}, "evidence": ["https://example.org/a"]}
    r = a.post(f"{items}/parts", json=first, headers=key)
    assert r.status_code == 202, r.text
    r = a.post(f"{items}/parts", json={"part_key": "b", "payload": {"x": 1}}, headers=key)
    assert r.status_code == 202, r.text
    assert r.json()["item_parts_state"]["b"]["status"] == "validated"
    again = a.post(f"{items}/parts", json=first, headers=key)
    assert again.status_code == 202 and again.headers.get("Idempotent-Replayed") == "true"
    parts = a.get(f"{items}/parts", params={"part_key": "a"}).json()["parts"]
    assert [p["evidence"] for p in parts] == [["https://example.org/a"]]
    r = a.post(f"{items}/finalize", json={}, headers=idem())
    assert r.status_code == 202, r.text
    assert r.json()["order_state"] == "submitted"


def test_a_submit_answers_its_orders_state(upstream: Any) -> None:
    a = client(upstream, "inputs-a-5")
    r = a.post(f"{PREFIX}/propose", json={"type": "test.simple", "payload": {"n": 1}})
    order_id = r.json()["order"]["id"]
    item_id = a.post(f"{PREFIX}/orders/{order_id}/checkout").json()["item"]["id"]
    body = {"result": {"answer": 42}}
    r = a.post(f"{PREFIX}/items/{item_id}/submit", json=body, headers=idem())
    assert r.status_code == 202, r.text
    answer = r.json()
    assert answer["state"] == "submitted" and answer["order_state"] == "submitted"


def test_an_unknown_parameter_sent_empty_is_still_refused(upstream: Any) -> None:
    admin = upstream.client("admin")
    for params in ({"bogus": ""}, {"filter[bogus]": ""}, {"filter[state]": "", "sortt": ""}):
        r = admin.get(f"{PREFIX}/orders", params=params)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_query", params
    a = client(upstream, "inputs-a-6")
    r = a.post(f"{PREFIX}/checkout", params={"typ": ""})
    assert r.status_code == 400 and r.json()["error"]["details"]["parameter"] == "typ"
    r = admin.get(f"{PREFIX}/orders", params={"filter[state]": "", "sort": "", "page[size]": ""})
    assert r.status_code == 200 and r.json()["meta"]["per_page"] == 50
