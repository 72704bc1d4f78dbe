"""Values no JSON column can store are refused at the edge, and nothing breaks after:
NaN/Infinity (400 malformed_json), NUL characters (422), out-of-range filter dates (400)."""

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


def test_out_of_range_filter_dates_are_invalid_queries(server: Server) -> None:
    c = server.client()
    propose(c)
    for value in ("9999-12-31T23:59:59-01:00", ">0001-01-01T00:00:00+01:00"):
        r = c.get(f"{PREFIX}/orders", params={"filter[created_at]": value})
        error(r, 400, "invalid_query")
