"""``workmanager.client``: checkout with background heartbeats, parts, finalize, errors."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.api.conftest import PREFIX, Server, start_server
from tests.support.waiting import wait_for
from workmanager.client import ApiError, WorkClient


def test_client_cycle(db_server: Server) -> None:
    token = db_server.tokens["agent-a"]
    with WorkClient(db_server.url, token, "client-agent-7", agent_version="0.1.0") as wc:
        order = wc.propose("test.parts", {})
        lease = wc.checkout(order["id"], heartbeat_every=0.1)
        assert lease is not None
        assert wc.checkout(order["id"]) is None  # its only item is leased
        wait_for(lambda: lease.heartbeats >= 2, what="two background heartbeats")
        assert not lease.heartbeat_errors
        lease.submit_part("a", {"v": 1}, evidence={"url": "u"}, notes="first")
        [part] = wc.request("GET", f"/items/{lease.id}/parts")["parts"]
        assert part["evidence"] == {"url": "u"} and part["notes"] == "first", part
        with pytest.raises(TypeError):  # it took **extra and sent evidnce= to be ignored
            lease.submit_part("b", {"w": 2}, evidnce={"url": "u"})  # type: ignore[call-arg]
        lease.submit_part("b", {"w": 2})
        done = lease.finalize()
        assert done["item"]["state"] == "submitted" and done["order_state"] == "submitted"
        assert wc.order(order["id"])["state"] == "submitted"
        with pytest.raises(ApiError) as info:
            lease.heartbeat()
        assert info.value.code == "illegal_state_transition" and info.value.http_status == 409


def test_client_releases_and_fails(db_server: Server) -> None:
    with WorkClient(db_server.url, db_server.tokens["agent-a"], "client-agent-8") as wc:
        order = wc.propose("test.simple", {})
        with wc.checkout(order["id"]) as lease:
            assert lease is not None
        assert wc.order(order["id"])["items"][0]["state"] == "queued"
        with pytest.raises(RuntimeError), wc.checkout(order["id"]):
            raise RuntimeError("handler broke")
        item = wc.order(order["id"])["items"][0]
        assert item["error"]["code"] == "agent_exception"
        with wc.checkout(order["id"]) as lease:
            assert lease is not None
            lease.submit({"answer": 1})
        assert wc.order(order["id"])["state"] == "submitted"


def test_the_client_follows_the_advice_of_each_heartbeat(db_server: Server) -> None:
    """Found by an adversarial pass: the interval was read from the checkout only, so a
    client kept beating at an interval the server no longer advised (a server restarted
    with a shorter TTL) and lost its lease. An interval the caller fixed stays fixed."""
    with WorkClient(db_server.url, db_server.tokens["agent-a"], "client-agent-9") as wc:
        order = wc.propose("test.simple", {})
        lease = wc.checkout(order["id"], heartbeat=False)
        assert lease is not None
        advised = lease.every
        lease.every = 999.0  # as if the checkout had advised another interval
        answer = lease.heartbeat()
        assert lease.every == answer["heartbeat_every_seconds"] == advised
        lease.release()
        fixed = wc.checkout(order["id"], heartbeat=False, heartbeat_every=7)
        assert fixed is not None
        fixed.heartbeat()
        assert fixed.every == 7
        fixed.release()


def test_an_agent_named_in_any_script_is_recorded_as_named(db_server: Server) -> None:
    """Starlette reads headers as Latin-1: ``X-Agent-ID: агент`` sent by curl (UTF-8) was
    recorded as mojibake, a name no MCP or Python caller could match, and the client
    refused non-ASCII names. Names travel as UTF-8 both ways; bytes that are not UTF-8
    are refused naming the header's field, and nothing is leased."""
    token = db_server.tokens["agent-a"]
    with WorkClient(db_server.url, token, "агент-7", model_name="модель ü") as wc:
        order = wc.propose("test.simple", {})
        lease = wc.checkout(order["id"], heartbeat=False)
        assert lease is not None
        item = wc.order(order["id"])["items"][0]
        assert item["leased_by_agent_id"] == "агент-7", item
        lease.release()
    raw = {"Authorization": f"Bearer {token}", "X-Idempotency-Key": "k-raw-latin1"}
    for header in (b"X-Agent-ID", b"X-Model-Name"):
        with httpx.Client(base_url=db_server.url) as c:
            r = c.post(
                f"{PREFIX}/orders/{order['id']}/checkout",
                headers=[*raw.items(), (header, b"ag\xe9nt")],
            )
        assert r.status_code == 400, r.text
        said = r.json()["error"]
        assert said["code"] == "invalid_agent_metadata"
        field = "agent_id" if header == b"X-Agent-ID" else "model_name"
        assert said["details"] == [{"field": field, "message": "must be UTF-8 text"}]
    with WorkClient(db_server.url, token, "агент-7") as wc:
        assert wc.order(order["id"])["items"][0]["state"] == "queued"


def _beat_rows(db_url: str, item_id: str) -> tuple[int, int]:
    """(heartbeat provenance rows of the item, heartbeat idempotency rows) in the database."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            provenance = conn.execute(
                text(
                    "SELECT count(*) FROM work_provenance"
                    " WHERE item_id = :i AND action = 'heartbeat'"
                ),
                {"i": uuid.UUID(item_id)},
            ).scalar_one()
            keys = conn.execute(
                text("SELECT count(*) FROM work_idempotency_keys WHERE endpoint = 'heartbeat'")
            ).scalar_one()
    finally:
        engine.dispose()
    return provenance, keys


def test_bare_heartbeats_carry_no_key(server: Server, api_db_url: str) -> None:
    """Found by an observability pass: every ``WorkClient`` heartbeat carried an idempotency
    key, so the server stored each one (a row kept a day) and, on the Redis backend, wrote
    the database on every beat the lock-only beat spares. A bare beat carries none; one
    with progress keeps its key."""
    with WorkClient(server.url, server.tokens["agent-a"], "client-agent-10") as wc:
        order = wc.propose("test.simple", {})
        lease = wc.checkout(order["id"], heartbeat=False)
        assert lease is not None
        lease.heartbeat()  # leased → in_progress: recorded on the row, whatever the backend
        before = _beat_rows(api_db_url, lease.id)
        for _ in range(3):
            lease.heartbeat()
        provenance, keys = _beat_rows(api_db_url, lease.id)
        assert keys == before[1]  # no key sent, none stored
        if server.backend == "redis":  # only the lock is extended
            assert provenance == before[0]
        lease.heartbeat(progress=0.5)
        assert _beat_rows(api_db_url, lease.id)[1] == keys + 1
        lease.release()


class _LoseFirstCheckoutAnswer(httpx.HTTPTransport):
    """Sends every request; the first checkout's answer is lost after the server acted."""

    lost = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = super().handle_request(request)
        if request.url.path.endswith("/checkout") and not self.lost:
            answer.read()
            self.lost = True
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return answer


def test_the_client_keys_reach_a_server_with_its_own_header(
    api_db_url: str, tokens: dict[str, str]
) -> None:
    """The client sent ``X-Idempotency-Key`` whatever the server read: with
    ``WORK_MANAGER_IDEMPOTENCY_HEADER`` set to another name every propose was 428, and a
    checkout retried after a lost answer leased a second item (the key ignored). It sends
    ``Idempotency-Key``, which every server reads beside its own header."""
    server = start_server(
        api_db_url, tokens, "database", None, WORK_MANAGER_IDEMPOTENCY_HEADER="X-Req-Key"
    )
    try:
        with WorkClient(server.url, tokens["agent-a"], "client-agent-h") as wc:
            order = wc.propose("test.multi", {"count": 3})
        lossy = _LoseFirstCheckoutAnswer()
        with WorkClient(server.url, tokens["agent-a"], "client-agent-h", transport=lossy) as wc:
            lease = wc.checkout(order["id"], heartbeat=False)
            assert lease is not None and lossy.lost
            items = wc.order(order["id"])["items"]
        assert sorted(i["state"] for i in items) == ["leased", "queued", "queued"], items
    finally:
        server.close()


def test_a_checkout_by_a_type_the_server_has_not_is_warned_about_once(
    db_server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """``checkout(type="test.simpel")`` returned ``None`` for ever: a polling agent idled
    without a word, though the server named its known types in the 409's details."""
    import logging

    caplog.set_level(logging.WARNING, "workmanager.client")
    with WorkClient(db_server.url, db_server.tokens["agent-a"], "typo-agent") as wc:
        for _ in range(3):
            assert wc.checkout(type="test.simpel") is None
        assert wc.checkout(type="test.simple") is None  # a known type, nothing queued: quiet
    said = [r.getMessage() for r in caplog.records if r.name == "workmanager.client"]
    assert len(said) == 1, said
    assert "no order type 'test.simpel'" in said[0] and "test.simple" in said[0]
