"""Credentials are checked before anything about the request is answered (issue 18).

A route's credentials are checked in the route's own worker thread (``deps.Auth``), after
FastAPI has validated the body and the query; a request refused by that validation never
reaches the route, so the validation handler checks the credentials first. A request with
a bad token, or one lacking the scope, or naming another token's agent, is told that and
not how its body or query failed; a good one gets the 422 / 400.
"""

from __future__ import annotations

import uuid

import httpx

from tests.api.conftest import PREFIX, Server, idem

SUBMIT = f"{PREFIX}/items/{uuid.uuid4()}/submit"
BAD_BODY = {"result": "not an object"}


def _post(server: Server, path: str, headers: dict[str, str], **kwargs: object) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        return c.post(path, headers={**headers, **idem()}, **kwargs)  # type: ignore[arg-type]


def _bearer(server: Server, name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.tokens[name]}"}


def test_a_bad_body_is_refused_after_the_credentials(db_server: Server) -> None:
    cases = [
        ({}, 401, "unauthenticated"),
        ({"Authorization": "Bearer wm_not-a-token"}, 401, "unauthenticated"),
        (_bearer(db_server, "viewer"), 403, "forbidden"),  # lacks the submit scope
        # an unbound token naming the agent another token is bound to
        ({**_bearer(db_server, "agent-b"), "X-Agent-ID": "bound-agent-1"}, 403, "forbidden"),
        ({**_bearer(db_server, "agent-b"), "X-Agent-Version": "not-semver"}, 400, None),
        (_bearer(db_server, "agent-b"), 422, "validation_failed"),  # good credentials
    ]
    for headers, status, code in cases:
        r = _post(db_server, SUBMIT, {**headers, "X-Lease-Token": "1.x"}, json=BAD_BODY)
        assert r.status_code == status, (headers, r.text)
        if code is not None:
            assert r.json()["error"]["code"] == code, r.text


def test_a_bad_query_is_refused_after_the_credentials(db_server: Server) -> None:
    path = f"{PREFIX}/checkout?min_priority=high"
    r = _post(db_server, path, {"Authorization": "Bearer wm_not-a-token"})
    assert r.status_code == 401, r.text
    r = _post(db_server, path, _bearer(db_server, "proposer"))  # lacks checkout
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", r.text
    r = _post(db_server, path, _bearer(db_server, "agent-b"))
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_query", r.text
