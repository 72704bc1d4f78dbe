"""Every error code of SPEC §6.1 from a real server, in the one envelope."""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import time
import uuid

import httpx

from tests.api.conftest import (
    BIN,
    PREFIX,
    Server,
    base_env,
    checkout,
    free_port,
    idem,
    lease_headers,
    propose,
    start_server,
)


def error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert "Traceback" not in r.text
    return body["error"]


def test_400s(server: Server) -> None:
    c = server.client()
    r = c.post(
        f"{PREFIX}/propose",
        content=b'{"type": ',
        headers={"Content-Type": "application/json", **idem()},
    )
    said = error(r, 400, "malformed_json")["message"]  # why, and where (a JSON-values pass)
    assert said == "the request body is not valid JSON: Expecting value (line 1, column 10)"
    huge = b'{"type": "test.simple", "payload": {"n": ' + b"1" * 5000 + b"}}"
    r = c.post(
        f"{PREFIX}/propose", content=huge, headers={"Content-Type": "application/json", **idem()}
    )
    said = error(r, 400, "malformed_json")["message"]  # not Python's advice (sys.set_int_...)
    assert said == "the request body is not valid JSON: an integer of more than 4300 digits"
    r = c.post(
        f"{PREFIX}/propose",
        content=b"\xff\xfe",
        headers={"Content-Type": "application/json", **idem()},
    )
    error(r, 400, "malformed_json")
    r = c.post(f"{PREFIX}/checkout", headers={"X-Agent-ID": "a", "X-Agent-Version": "v1"})
    assert error(r, 400, "invalid_agent_metadata")["details"][0]["field"] == "agent_version"
    # a semantic version longer than provenance stores (was a 422 from the driver)
    long_version = {"X-Agent-ID": "a", "X-Agent-Version": "1.0.0-" + "a" * 60}
    r = c.post(f"{PREFIX}/checkout", headers=long_version)
    assert error(r, 400, "invalid_agent_metadata")["details"][0]["field"] == "agent_version"
    for params in (
        {"filter[nope]": "1"},
        {"sort": "bogus"},
        {"filter[priority]": ">x"},
        {"whatever": "1"},
        {"filter[state]": "nope"},
    ):
        error(c.get(f"{PREFIX}/orders", params=params), 400, "invalid_query")
    error(c.get(f"{PREFIX}/items/{uuid.uuid4()}/logs", params={"limit": 500}), 400, "invalid_query")
    said = error(c.get(f"{PREFIX}/orders", params={"filter[bogus]": "1"}), 400, "invalid_query")
    assert said["message"].startswith("unknown query parameter 'filter[bogus]'; the filters are")
    assert "filter[state]" in said["message"] and "page[size]" in said["message"]
    # which state is unknown and which are known, not a Python list's print
    said = error(
        c.get(f"{PREFIX}/orders", params={"filter[state]": "queued,bogus"}), 400, "invalid_query"
    )
    assert said["message"].startswith("filter[state]: unknown state 'bogus'; one of queued, "), said


def test_a_query_parameter_a_route_does_not_take_is_refused(server: Server) -> None:
    """FastAPI ignored what a route does not declare: ``/checkout?typ=x`` leased an item of
    any type, ``approve?wiat=10`` answered at once. Now 400 invalid_query naming it, as
    ``GET /orders`` says, and nothing is leased; the parameters a route takes still work."""
    c = server.client()
    order_id = propose(c)["id"]
    agent = {"X-Agent-ID": "typo-1"}
    r = c.post(f"{PREFIX}/checkout", params={"typ": "x.none"}, headers={**agent, **idem()})
    said = error(r, 400, "invalid_query")
    assert said["message"].startswith("unknown query parameter 'typ'; this route takes ")
    assert "min_priority" in said["message"] and said["details"] == {"parameter": "typ"}
    assert "order_id" not in said["message"]  # refused by checkout itself: not offered
    items = c.get(f"{PREFIX}/orders/{order_id}").json()["order"]["items"]
    assert [i["state"] for i in items] == ["queued"]
    said = error(c.get(f"{PREFIX}/orders/{order_id}", params={"inclde": "x"}), 400, "invalid_query")
    assert said["message"].endswith("; this route takes no query parameters")
    r = c.post(f"{PREFIX}/orders/{order_id}/approve", params={"wiat": "10"}, headers=idem())
    error(r, 400, "invalid_query")
    # what the routes take, and checkout's own better refusal of order_id
    r = c.post(f"{PREFIX}/checkout", params={"type": "x.none"}, headers={**agent, **idem()})
    assert r.status_code == 409, r.text  # no item of that type
    r = c.post(f"{PREFIX}/checkout", params={"order_id": order_id}, headers={**agent, **idem()})
    assert "not a filter of POST /checkout" in str(error(r, 422, "validation_failed")["details"])
    assert c.get("/healthz", params={"probe": "1"}).status_code == 200  # probes add anything


def test_values_no_database_can_store_are_refused_alike(server: Server) -> None:
    """A NUL in a tenant, a list filter, a part key or a subject to forget is refused with
    its field or parameter named, the same on every database (PostgreSQL's driver said 422
    "a value cannot be stored" while SQLite stored or matched it); nothing is written."""
    c = server.client()
    before = c.get(f"{PREFIX}/orders").json()["meta"]["total"]
    r = c.post(
        f"{PREFIX}/propose",
        json={"type": "test.simple", "payload": {}, "tenant_id": "a\u0000b"},
        headers=idem(),
    )
    assert error(r, 422, "validation_failed")["details"][0]["path"] == "tenant_id"
    assert c.get(f"{PREFIX}/orders").json()["meta"]["total"] == before
    for params in ({"filter[type]": "a\x00b"}, {"filter[agent_id]": "a\x00b"}):
        r = c.get(f"{PREFIX}/orders", params=params)
        assert error(r, 400, "invalid_query")["details"]["parameter"] in params
    item = checkout(c, propose(c)["id"])
    parts = f"{PREFIX}/items/{item['id']}/parts"
    for params in ({"status": "bogus"}, {"part_key": "a\x00"}):
        r = c.get(parts, params=params)
        assert error(r, 400, "invalid_query")["details"]["parameter"] in params
    assert c.get(parts, params={"status": "rejected"}).json()["parts"] == []
    r = c.post(f"{PREFIX}/provenance/forget", json={"agent_id": "a\u0000b"}, headers=idem())
    assert error(r, 422, "validation_failed")["details"][0]["path"] == "agent_id"


def test_401_403(server: Server) -> None:
    order = propose(server.client())
    error(server.client(None).get(f"{PREFIX}/orders"), 401, "unauthenticated")
    error(server.client("not-a-token").get(f"{PREFIX}/orders"), 401, "unauthenticated")
    viewer = server.client("viewer", "v-agent")
    assert viewer.get(f"{PREFIX}/orders").status_code == 200
    err = error(viewer.post(f"{PREFIX}/checkout"), 403, "forbidden")
    assert err["details"]["required_scope"] == "checkout"
    error(viewer.post(f"{PREFIX}/orders/{order['id']}/approve", headers=idem()), 403, "forbidden")
    error(server.client("proposer").get(f"{PREFIX}/orders"), 403, "forbidden")
    # A token bound to an agent acts as that agent; naming another is 403.
    bound = server.client("bound")
    item = checkout(bound, order["id"])
    r = bound.post(
        f"{PREFIX}/items/{item['id']}/heartbeat",
        headers={**lease_headers(item), "X-Agent-ID": "someone-else"},
    )
    error(r, 403, "forbidden")
    r = bound.post(f"{PREFIX}/items/{item['id']}/heartbeat", headers=lease_headers(item))
    assert r.status_code == 200, r.text


def test_agent_a_cannot_touch_agent_b_lease(server: Server) -> None:
    order = propose(server.client())
    a = server.client("agent-a", "agent-a-1")
    b = server.client("agent-b", "agent-b-1")
    item = checkout(a, order["id"])
    base = f"{PREFIX}/items/{item['id']}"
    error(b.post(f"{base}/heartbeat", headers=lease_headers(item)), 403, "forbidden")
    error(
        b.post(f"{base}/submit", json={"result": {"answer": 1}}, headers=lease_headers(item)),
        403,
        "forbidden",
    )
    error(b.post(f"{base}/release", headers=lease_headers(item)), 403, "forbidden")
    error(
        b.post(
            f"{base}/fail",
            json={"error": {"code": "x", "message": "y"}},
            headers=lease_headers(item),
        ),
        403,
        "forbidden",
    )
    assert a.post(f"{base}/heartbeat", headers=lease_headers(item)).status_code == 200


def test_404s(server: Server) -> None:
    c = server.client("admin", "agent-404")
    error(c.get(f"{PREFIX}/orders/not-a-uuid"), 404, "not_found")
    error(c.get(f"{PREFIX}/orders/{uuid.uuid4()}"), 404, "not_found")
    error(c.post(f"{PREFIX}/items/123/heartbeat", headers={"X-Lease-Token": "1"}), 404, "not_found")
    error(
        c.post(
            f"{PREFIX}/items/{uuid.uuid4()}/submit",
            json={"result": {}},
            headers=lease_headers({"lease_token": 1}),
        ),
        404,
        "not_found",
    )
    error(c.post(f"{PREFIX}/orders/{uuid.uuid4()}/checkout"), 404, "not_found")
    error(c.get("/no/such/route"), 404, "not_found")


def test_a_checkout_for_a_type_no_one_registered_says_so(server: Server) -> None:
    """A typo in the type filter polled an empty queue for ever, the answer the same as
    for a real type with nothing queued. Still 409 (a plan may name item types of its
    own), but the details say no order type of that name is registered, and which are."""
    agent = server.client("admin", "agent-typo")
    body = {"type": "test.simpel"}
    said = error(
        agent.post(f"{PREFIX}/checkout", json=body, headers=idem()), 409, "no_items_available"
    )
    assert said["details"]["type"] == "test.simpel"
    assert "test.simple" in said["details"]["known_types"]
    body = {"type": "test.simple", "min_priority": 2**31 - 1}  # registered, none that high
    said = error(
        agent.post(f"{PREFIX}/checkout", json=body, headers=idem()), 409, "no_items_available"
    )
    assert "details" not in said  # a registered type: the plain answer


def test_409s(server: Server) -> None:
    admin = server.client("admin", "agent-409")
    order = propose(admin)
    item = checkout(admin, order["id"])
    base = f"{PREFIX}/items/{item['id']}"
    fence, secret = item["lease_token"].split(".", 1)
    stale = {**item, "lease_token": f"{int(fence) - 1}.{secret}"}
    error(admin.post(f"{base}/heartbeat", headers=lease_headers(stale)), 409, "lease_conflict")
    error(admin.post(f"{base}/heartbeat", headers={"X-Lease-Token": "abc"}), 409, "lease_conflict")
    error(admin.post(f"{PREFIX}/orders/{order['id']}/checkout"), 409, "no_items_available")
    error(
        admin.post(f"{PREFIX}/orders/{order['id']}/approve", headers=idem()),
        409,
        "not_ready_for_approval",
    )
    admin.post(f"{base}/submit", json={"result": {"answer": 1}}, headers=lease_headers(item))
    error(
        admin.post(f"{base}/submit", json={"result": {"answer": 1}}, headers=lease_headers(item)),
        409,
        "illegal_state_transition",
    )
    error(admin.post(f"{PREFIX}/orders/{order['id']}/retry"), 409, "illegal_state_transition")


def test_lease_expired(api_db_url: str, tokens: dict[str, str]) -> None:
    srv = start_server(api_db_url, tokens, "database", None, WORK_MANAGER_LEASE_TTL_SECONDS="1")
    try:
        c = srv.client("admin", "agent-exp")
        order = propose(c)
        item = checkout(c, order["id"])
        time.sleep(1.3)
        r = c.post(f"{PREFIX}/items/{item['id']}/heartbeat", headers=lease_headers(item))
        error(r, 409, "lease_expired")
    finally:
        srv.close()


def test_413_422_428(server: Server) -> None:
    c = server.client("admin", "agent-4xx")
    big = {"type": "test.simple", "payload": {"x": "a" * 70_000}}
    error(c.post(f"{PREFIX}/propose", json=big, headers=idem()), 413, "payload_too_large")

    def chunks():
        yield b'{"type": "test.simple", "payload": {"x": "'
        for _ in range(20):
            yield b"a" * 5000
        yield b'"}}'

    r = c.post(
        f"{PREFIX}/propose",
        content=chunks(),
        headers={"Content-Type": "application/json", **idem()},
    )
    error(r, 413, "payload_too_large")

    for body in (
        {"type": "test.simple", "payload": [1]},  # ([] is PHP's empty object: taken)
        {"type": "test.simple", "payload": {}, "priority": "5"},
        {"type": "test.simple", "payload": {}, "priority": 1.5},
        {"type": 7, "payload": {}},
        {"payload": {}},
        [1, 2],
        "text",
    ):
        err = error(
            c.post(f"{PREFIX}/propose", json=body, headers=idem()), 422, "validation_failed"
        )
        assert err["details"]
    err = error(
        c.post(
            f"{PREFIX}/propose", json={"type": "test.simple", "payload": {"n": -1}}, headers=idem()
        ),
        422,
        "validation_failed",
    )
    assert err["details"][0]["validator"] == "minimum"
    error(
        c.post(f"{PREFIX}/propose", json={"type": "nope", "payload": {}}, headers=idem()),
        422,
        "unknown_order_type",
    )
    # empty: unknown too, naming the known types, as on MCP, the CLI and the Celery task
    # (it was validation_failed "string_too_short" over HTTP alone)
    empty = error(
        c.post(f"{PREFIX}/propose", json={"type": "", "payload": {}}, headers=idem()),
        422,
        "unknown_order_type",
    )
    assert "test.simple" in empty["message"], empty
    long = {"type": "t" * 300, "payload": {}}
    error(c.post(f"{PREFIX}/propose", json=long, headers=idem()), 422, "unknown_order_type")
    order = propose(c)
    item = checkout(c, order["id"])
    base = f"{PREFIX}/items/{item['id']}"
    error(
        c.post(f"{base}/heartbeat", json={"progress": 2}, headers=lease_headers(item)),
        422,
        "validation_failed",
    )
    error(
        c.post(f"{base}/submit", json={"result": {"nope": 1}}, headers=lease_headers(item)),
        422,
        "validation_failed",
    )
    error(
        c.post(f"{base}/submit", json={"result": "x"}, headers=lease_headers(item)),
        422,
        "validation_failed",
    )
    error(
        c.post(f"{base}/submit", json={"result": {"answer": 1}}, headers=idem()),
        422,
        "validation_failed",
    )
    error(
        c.post(f"{base}/fail", json={"error": {"code": ""}}, headers=lease_headers(item)),
        422,
        "validation_failed",
    )
    error(
        c.post(f"{PREFIX}/orders/{order['id']}/reject", json={"errors": []}, headers=idem()),
        422,
        "validation_failed",
    )
    error(
        c.post(f"{base}/finalize", json={"mode": "sloppy"}, headers=lease_headers(item)),
        422,
        "validation_failed",
    )

    err = error(
        c.post(f"{PREFIX}/propose", json={"type": "test.simple", "payload": {}}),
        428,
        "idempotency_key_required",
    )
    assert err["details"] == {"header": "X-Idempotency-Key"}
    error(
        c.post(
            f"{base}/submit",
            json={"result": {"answer": 1}},
            headers={"X-Lease-Token": str(item["lease_token"])},
        ),
        428,
        "idempotency_key_required",
    )


def test_idempotency_replay_reuse_and_fallback_header(server: Server) -> None:
    c = server.client()
    key = {"Idempotency-Key": uuid.uuid4().hex}
    body = {"type": "test.simple", "payload": {"n": 3}}
    first = c.post(f"{PREFIX}/propose", json=body, headers=key)
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    again = c.post(f"{PREFIX}/propose", json=body, headers=key)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    error(
        c.post(f"{PREFIX}/propose", json={**body, "priority": 9}, headers=key),
        422,
        "idempotency_key_reused",
    )
    # Scoped by principal: the same key under another token is another request.
    other = server.client("agent-a").post(f"{PREFIX}/propose", json=body, headers=key)
    assert other.status_code == 201 and other.json()["order"]["id"] != first.json()["order"]["id"]
    # Failures are not stored: the same key may be used again after a 4xx.
    k2 = idem()
    error(
        c.post(f"{PREFIX}/propose", json={"type": "nope", "payload": {}}, headers=k2),
        422,
        "unknown_order_type",
    )
    assert (
        c.post(f"{PREFIX}/propose", json={"type": "nope", "payload": {}}, headers=k2).headers.get(
            "Idempotent-Replayed"
        )
        is None
    )


def test_two_different_keys_in_the_two_headers_are_refused(server: Server) -> None:
    """The configured header's key was used and the other dropped without a word: a
    client retrying under the other one acted twice."""
    c = server.client()
    body = {"type": "test.simple", "payload": {"n": 4}}
    both = {"X-Idempotency-Key": uuid.uuid4().hex, "Idempotency-Key": uuid.uuid4().hex}
    before = c.get(f"{PREFIX}/orders", params={"filter[type]": "test.simple"}).json()
    refused = error(c.post(f"{PREFIX}/propose", json=body, headers=both), 422, "validation_failed")
    assert "send one of them" in refused["details"][0]["message"], refused
    after = c.get(f"{PREFIX}/orders", params={"filter[type]": "test.simple"}).json()
    assert after["meta"]["total"] == before["meta"]["total"]  # nothing was created
    same = uuid.uuid4().hex  # the same key in both is one key
    made = c.post(
        f"{PREFIX}/propose", json=body, headers={"X-Idempotency-Key": same, "Idempotency-Key": same}
    )
    assert made.status_code == 201, made.text


def test_ten_concurrent_duplicates_create_one_order(server: Server) -> None:
    key = idem()
    body = {"type": "test.simple", "payload": {"n": 10}, "meta": {"dup": key["X-Idempotency-Key"]}}
    c = server.client()

    def send(_: int) -> httpx.Response:
        with httpx.Client(base_url=server.url, headers=c.headers, timeout=30) as own:
            return own.post(f"{PREFIX}/propose", json=body, headers=key)

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(send, range(10)))
    created = [
        r for r in answers if r.status_code == 201 and "Idempotent-Replayed" not in r.headers
    ]
    replayed = [r for r in answers if r.headers.get("Idempotent-Replayed") == "true"]
    in_flight = [r for r in answers if r.status_code == 409]
    assert len(created) == 1, [r.text for r in answers]
    assert len(created) + len(replayed) + len(in_flight) == 10
    assert all(r.json()["error"]["code"] == "idempotency_in_flight" for r in in_flight)
    # a replay is the stored answer, never a "recovered" one while the first still runs
    assert all(r.status_code == 201 for r in replayed), [r.text for r in replayed]
    assert {r.json()["order"]["id"] for r in created + replayed} == {
        created[0].json()["order"]["id"]
    }
    listed = c.get(
        f"{PREFIX}/orders", params={"filter[meta]": f"dup:{key['X-Idempotency-Key']}"}
    ).json()
    assert listed["meta"]["total"] == 1


def test_503_when_the_database_is_down(tokens: dict[str, str], api_db_url: str) -> None:
    bad_url = api_db_url.rsplit("@", 1)[0] + "@127.0.0.1:1/nowhere"
    srv2 = None
    try:
        port = free_port()
        proc = subprocess.Popen(
            [
                str(BIN / "workmanager"),
                "serve",
                "--port",
                str(port),
                "--dispatcher",
                "none",
                "--log-level",
                "error",
            ],
            env=base_env(bad_url, WORK_MANAGER_AUTH="none"),
            stderr=subprocess.DEVNULL,
        )
        srv2 = Server(f"http://127.0.0.1:{port}", "database", tokens, proc)
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(srv2.url + "/healthz", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        r = srv2.client(None).get(f"{PREFIX}/orders")
        err = error(r, 503, "unavailable")
        assert r.headers["Retry-After"] and "message" in err
        ready = srv2.client(None).get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith("down")
    finally:
        if srv2:
            srv2.close()


def test_fields_that_would_change_what_a_request_does_are_not_ignored(server: Server) -> None:
    """Unknown fields are ignored, but (found by an adversarial pass) an ``order_id`` in a
    checkout's body leased any item of another order, and a misspelled ``dryRun`` ran an
    erasure that cannot be undone. Both are 422 now, and change nothing."""
    admin = server.client("admin", "agent-scope")
    order = propose(admin)
    said = error(
        admin.post(f"{PREFIX}/checkout", json={"order_id": order["id"]}, headers=idem()),
        422,
        "validation_failed",
    )
    assert "/orders/{id}/checkout" in json.dumps(said)
    # ... nor in the query string, where upstream agents send their filters
    query = f"{PREFIX}/checkout?order_id={order['id']}"
    said = error(admin.post(query, headers=idem()), 422, "validation_failed")
    assert "/orders/{id}/checkout" in json.dumps(said)
    body = {"agent_id": "agent-scope", "dryRun": True}
    error(
        admin.post(f"{PREFIX}/provenance/forget", json=body, headers=idem()),
        422,
        "validation_failed",
    )
    assert checkout(admin, order["id"])["order_id"] == order["id"]  # nothing was leased


def test_a_body_sent_as_a_form_is_told_to_send_json(server: Server) -> None:
    """Found by a walk-through of the docs: ``curl -d '{...}'`` without ``-H
    'Content-Type: application/json'`` sends a form, answered with pydantic's "Input
    should be a valid dictionary or object to extract fields from". Now it says to send
    JSON, naming what was sent; without a Content-Type the body is still read as JSON."""
    c = server.client()
    body = b'{"type": "test.simple", "payload": {}}'
    for kind in ("application/x-www-form-urlencoded", "text/plain; charset=utf-8"):
        r = c.post(f"{PREFIX}/propose", content=body, headers={"Content-Type": kind, **idem()})
        said = error(r, 422, "validation_failed")
        assert said["message"] == f"the request body must be JSON, not {kind.split(';')[0]}"
        assert said["details"][0]["message"].endswith("Content-Type: application/json")
    r = c.post(f"{PREFIX}/propose", content=body, headers=idem())
    assert r.status_code == 201, r.text
