"""Values no JSON column can store are refused at the edge, and nothing breaks after:
NaN/Infinity (400 malformed_json), NUL characters and lone surrogates (422), out-of-range
filter dates (400)."""

from __future__ import annotations

from tests.api.conftest import PREFIX, Server, idem, propose
from tests.api.test_errors import error


def test_nan_and_infinity_are_malformed_json(server: Server) -> None:
    c = server.client()
    for literal in (b"NaN", b"Infinity", b"-Infinity"):
        body = b'{"type": "test.simple", "payload": {"z": ' + literal + b"}}"
        r = c.post(
            f"{PREFIX}/propose",
            content=body,
            headers={"Content-Type": "application/json", **idem()},
        )
        error(r, 400, "malformed_json")
    assert c.get(f"{PREFIX}/orders").status_code == 200


def test_nul_characters_are_a_validation_error(server: Server) -> None:
    c = server.client()
    r = c.post(
        f"{PREFIX}/propose",
        json={"type": "test.simple", "payload": {"name": "a\x00b"}},
        headers=idem(),
    )
    error(r, 422, "validation_failed")
    listed = c.get(f"{PREFIX}/orders", params={"filter[type]": "a\x00b"})
    assert listed.status_code in (400, 422), listed.text
    assert c.get(f"{PREFIX}/orders").status_code == 200


def test_lone_surrogates_are_a_validation_error_even_with_an_idempotency_key(
    server: Server,
) -> None:
    """``"\\ud800"`` parses to a string no UTF-8 encoder takes: it was a 500 from the key's
    fingerprint (before the operation ran), and from the database or checksums after."""
    c = server.client()
    body = b'{"type": "test.simple", "payload": {"name": "a\\ud800b"}}'
    headers = {"Content-Type": "application/json", **idem()}
    r = c.post(f"{PREFIX}/propose", content=body, headers=headers)
    error(r, 422, "validation_failed")
    assert "surrogate" in r.json()["error"]["details"][0]["message"]
    again = c.post(f"{PREFIX}/propose", content=body, headers=headers)  # failures not stored
    error(again, 422, "validation_failed")
    agent = server.client("agent-a", "agent-surrogate")
    order = propose(c)
    leased = agent.post(f"{PREFIX}/orders/{order['id']}/checkout").json()["item"]
    result = b'{"result": {"answer": 1, "note": "\\udfff"}}'
    r = agent.post(
        f"{PREFIX}/items/{leased['id']}/submit",
        content=result,
        headers={
            "Content-Type": "application/json",
            "X-Lease-Token": str(leased["lease_token"]),
            **idem(),
        },
    )
    error(r, 422, "validation_failed")


def test_out_of_range_filter_dates_are_invalid_queries(server: Server) -> None:
    c = server.client()
    propose(c)
    for value in ("9999-12-31T23:59:59-01:00", ">0001-01-01T00:00:00+01:00"):
        r = c.get(f"{PREFIX}/orders", params={"filter[created_at]": value})
        error(r, 400, "invalid_query")


def test_lone_surrogates_in_keys_are_a_validation_error(server: Server) -> None:
    """A lone surrogate as a key (of ``evidence``, of a part's payload) was a 500: pydantic's
    JSON dump of the body, the part's size check and the 422's own rendering (its path names
    the key) each tried to encode it."""
    agent = server.client("agent-a", "agent-surrogate-key")
    parts = propose(server.client(), "test.parts")
    leased = agent.post(f"{PREFIX}/orders/{parts['id']}/checkout").json()["item"]
    lease = {"Content-Type": "application/json", "X-Lease-Token": str(leased["lease_token"])}
    bodies = {
        "parts": b'{"part_key": "a", "payload": {"v": 1, "\\ud800": "\\ud800"}}',
        "submit": b'{"result": {"answer": 1}, "evidence": {"\\udfff": "\\udfff"}}',
    }
    for route, body in bodies.items():
        url = f"{PREFIX}/items/{leased['id']}/{route}"
        r = agent.post(url, content=body, headers={**lease, **idem()})
        error(r, 422, "validation_failed")
        assert "surrogate" in r.text, r.text
    assert agent.get(f"{PREFIX}/items/{leased['id']}/parts").json()["parts"] == []
