"""``workmanager.client`` when a call fails: the lease block, bodies that are not JSON, a
server out of reach, answers that are not JSON.

A submit or finalize that raises does not end the lease: leaving the ``with lease:`` block
reports ``fail`` (``agent_exception``) and the heartbeats resume meanwhile. Every failure
is an :class:`ApiError`.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.api.conftest import Server, free_port
from tests.support.waiting import wait_for
from workmanager.client import ApiError, LeaseHandle, WorkClient


def leased(wc: WorkClient, type: str = "test.simple") -> tuple[str, LeaseHandle]:
    order = wc.propose(type, {})
    lease = wc.checkout(order["id"], heartbeat_every=0.1)
    assert lease is not None
    return order["id"], lease


def item_of(wc: WorkClient, order_id: str) -> dict[str, Any]:
    item: dict[str, Any] = wc.order(order_id)["items"][0]
    return item


# --- a failing submit or finalize leaves the lease to the block ---------------------------
def test_refused_submit_is_reported_as_fail_when_the_block_ends(db_server: Server) -> None:
    with WorkClient(db_server.url, db_server.tokens["agent-a"], "mistakes-1") as wc:
        order_id, lease = leased(wc)
        with pytest.raises(ApiError) as info, lease:
            lease.submit({"no_answer": True})  # the result schema requires "answer"
        assert info.value.code == "validation_failed" and info.value.http_status == 422
        item = item_of(wc, order_id)
        assert item["state"] not in ("leased", "in_progress")
        assert item["error"]["code"] == "agent_exception"
        assert item["error"]["message"].startswith("ApiError: ")
        assert lease.ended == "failed" and lease.exit_error is None


@pytest.mark.parametrize(
    "said",
    [
        "bad byte " + b"\xff".decode("utf-8", "surrogateescape"),  # a subprocess's output
        "NUL \x00 in the message",
        "a whole response body " + "x" * 5_000_000,
    ],
    ids=["surrogate", "nul", "5mb"],
)
def test_what_any_exception_says_is_reported_as_fail(db_server: Server, said: str) -> None:
    """A data-extremes pass found the block's ``fail`` refused (422 for a lone surrogate or
    NUL, 413 for a message of megabytes) and the item left leased until its TTL, the
    error never recorded. The message is stored as near as can be (failure_text)."""
    with WorkClient(db_server.url, db_server.tokens["agent-a"], "mistakes-said") as wc:
        order_id, lease = leased(wc)
        with pytest.raises(ValueError), lease:
            raise ValueError(said)
        assert lease.ended == "failed" and lease.exit_error is None
        item = item_of(wc, order_id)
        assert item["state"] not in ("leased", "in_progress")
        message = item["error"]["message"]
        assert message.startswith("ValueError: ") and len(message) <= 1000
        assert said[:20].replace("\x00", "\ufffd").replace("\udcff", "\ufffd") in message


class _BadStr(Exception):
    def __str__(self) -> str:
        return self.never_set  # type: ignore[attr-defined,no-any-return]


def test_an_exception_whose_message_cannot_be_read_is_reported_and_raised(
    db_server: Server,
) -> None:
    """Formatting the block's exception raised in ``__exit__``: the caller got an
    AttributeError instead of its own exception, no ``fail`` was sent, and the item
    stayed leased until its TTL."""
    with WorkClient(db_server.url, db_server.tokens["agent-a"], "mistakes-badstr") as wc:
        order_id, lease = leased(wc)
        with pytest.raises(_BadStr), lease:
            raise _BadStr()
        assert lease.ended == "failed" and lease.exit_error is None
        message = item_of(wc, order_id)["error"]["message"]
        assert message == "_BadStr: _BadStr (its message could not be read)"


def test_heartbeats_resume_after_a_refused_submit(db_server: Server) -> None:
    with WorkClient(db_server.url, db_server.tokens["agent-a"], "mistakes-2") as wc:
        order_id, lease = leased(wc)
        with lease:
            wait_for(lambda: lease.heartbeats >= 1, what="a first heartbeat")
            with pytest.raises(ApiError):
                lease.submit({"no_answer": True})
            beats = lease.heartbeats
            wait_for(lambda: lease.heartbeats >= beats + 2, what="heartbeats after the refusal")
            assert lease.ended == ""
            assert not lease.heartbeat_errors
            lease.submit({"answer": 1})
        assert lease.ended == "submitted"
        assert wc.order(order_id)["state"] == "submitted"


def test_refused_finalize_is_reported_as_fail_when_the_block_ends(db_server: Server) -> None:
    with WorkClient(db_server.url, db_server.tokens["agent-a"], "mistakes-3") as wc:
        order_id, lease = leased(wc, "test.parts")
        with pytest.raises(ApiError) as info, lease:
            lease.submit_part("a", {"v": 1})
            lease.finalize()  # part "b" is missing
        assert info.value.http_status == 422
        item = item_of(wc, order_id)
        assert item["state"] not in ("leased", "in_progress")
        assert item["error"]["code"] == "agent_exception"
        assert lease.ended == "failed"


def test_a_result_that_is_not_json_is_refused_before_sending(db_server: Server) -> None:
    with WorkClient(db_server.url, db_server.tokens["agent-a"], "mistakes-4") as wc:
        order_id, lease = leased(wc)
        with pytest.raises(ApiError) as info, lease:
            lease.submit({"answer": 1, "when": datetime.datetime(2024, 1, 2)})
        error = info.value
        assert error.code == "validation_failed" and error.http_status == 422
        assert error.details == [
            {
                "path": "result.when",
                "message": "a value of type datetime is not JSON serializable",
                "validator": "json",
            }
        ]
        assert "result.when" in error.message
        assert isinstance(error.__cause__, TypeError)
        item = item_of(wc, order_id)
        assert item["state"] not in ("leased", "in_progress", "submitted")
        assert item["error"]["code"] == "agent_exception"
        assert lease.ended == "failed"


# --- without a server: what is sent and what is answered --------------------------------
class Fake:
    """A transport answering every request with ``answer(request)``; records requests."""

    def __init__(self, answer: Callable[[httpx.Request], httpx.Response]) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path.endswith("/checkout"):
            item = {"id": "i-1", "lease_token": "1.x", "heartbeat_every_seconds": 60}
            return httpx.Response(200, json={"item": item})
        return self.answer(request)

    def client(self) -> WorkClient:
        return WorkClient("http://wm.test", "t", "a", transport=httpx.MockTransport(self))


def never(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"nothing should be sent: {request.url}")


@pytest.mark.parametrize(
    ("value", "path", "why"),
    [
        ({"s": {1, 2}}, "payload.s", "a value of type set is not JSON serializable"),
        ({"xs": [1, float("nan")]}, "payload.xs[1]", "nan is not valid JSON"),
        ({"d": {(1, 2): 3}}, "payload.d", "key (1, 2) of type tuple is not a string"),
        ({"s": "\udc80"}, "payload.s", "the string is not valid UTF-8 (surrogates not allowed)"),
        # json.dumps wrote these: a key 1 as "1", and the server refuses both
        ({1: 2}, "payload", "key 1 of type int is not a string"),
        ({"n": 10**5000}, "payload.n", "an integer of more than 4300 digits"),
    ],
)
def test_a_body_that_is_not_json_names_where(value: Any, path: str, why: str) -> None:
    fake = Fake(never)
    with fake.client() as wc, pytest.raises(ApiError) as info:
        wc.propose("test.simple", value)
    assert info.value.code == "validation_failed" and info.value.http_status == 422
    assert info.value.details == [{"path": path, "message": why, "validator": "json"}]
    assert fake.requests == []


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"base_url": "127.0.0.1:8000"}, "base_url must be an http\\(s\\) URL"),
        ({"base_url": ""}, "base_url must be an http\\(s\\) URL"),
        ({"base_url": "http://[::1"}, "base_url must be an http\\(s\\) URL"),
        ({"base_url": "http://127.0.0.1:99999"}, "base_url must be an http\\(s\\) URL"),
        ({"agent_id": "агент\tx"}, "agent_id must be printable text"),
        ({"agent_version": "1.0.0\n"}, "agent_version must be printable text"),
        ({"token": "wm_токен"}, "token must be printable ASCII"),
    ],
)
def test_a_client_that_cannot_send_is_refused_when_made(kwargs: dict[str, Any], says: str) -> None:
    """A URL without its scheme or a header with a line break were three retried tries and
    then "unavailable" (as if the server were down); a non-ASCII token raised
    UnicodeEncodeError from inside httpx. Refused when the client is made, naming it."""
    from workmanager.errors import ConfigurationError

    made = {"base_url": "http://wm.test", "token": "t", **kwargs}
    with pytest.raises(ConfigurationError, match=says) as info:
        WorkClient(**made)
    assert info.value.code == "configuration_error" and info.value.hint


def test_a_token_read_with_its_newline_is_sent_without_it() -> None:
    fake = Fake(lambda r: httpx.Response(200, json={"order": {"id": "x"}}))
    with WorkClient("http://wm.test", "wm_abc\n", transport=httpx.MockTransport(fake)) as wc:
        wc.order("x")
    assert fake.requests[0].headers["Authorization"] == "Bearer wm_abc"


def test_a_misspelled_keyword_is_refused_not_ignored_by_the_server() -> None:
    """``checkout(typ=...)`` was sent, ignored by the server, and leased any type."""
    from workmanager.errors import UsageError

    with Fake(never).client() as wc:
        with pytest.raises(UsageError, match="unknown keyword 'typ'") as info:
            wc.checkout(typ="t.x")
        assert info.value.hint == "checkout() takes min_priority, tenant_id, type"
        with pytest.raises(UsageError, match="unknown keyword 'prio'"):
            wc.propose("t.x", {}, prio=3)


@pytest.mark.parametrize("every", [float("nan"), 1e308, "30", True, 0, -1, float("inf")])
def test_a_heartbeat_interval_that_is_no_interval_is_refused_before_the_checkout(
    every: Any,
) -> None:
    """Found by a pass over time inputs: NaN beat without pause (332 beats in 2 s), 1e308
    ended the heartbeat thread (the lease then expired unnoticed), and ``"30"`` raised
    after the checkout had leased the item, with no handle to release it."""
    with Fake(never).client() as wc, pytest.raises(ApiError) as info:
        wc.checkout(heartbeat_every=every)
    assert info.value.code == "validation_failed" and info.value.http_status == 422
    assert info.value.details[0]["path"] == "heartbeat_every"


@pytest.mark.parametrize("wait", [float("nan"), 1e308, "5", -1, 61])
def test_an_approve_wait_out_of_the_servers_bounds_is_refused_before_sending(wait: Any) -> None:
    with Fake(never).client() as wc, pytest.raises(ApiError) as info:
        wc.approve("00000000-0000-0000-0000-000000000000", wait=wait)
    assert info.value.code == "validation_failed"
    assert "wait must be a number of seconds from 0 to 60" in info.value.message


def test_a_cycle_is_refused() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with Fake(never).client() as wc, pytest.raises(ApiError) as info:
        wc.propose("test.simple", loop)
    assert info.value.details[0]["path"] == "payload.self"
    assert info.value.details[0]["message"] == "circular reference"


def test_a_json_body_is_sent_as_before() -> None:
    fake = Fake(lambda r: httpx.Response(201, json={"order": json.loads(r.content)}))
    with fake.client() as wc:
        order = wc.propose("test.simple", {"name": "é", "n": [1, 2.5, None, True]})
    assert order == {"type": "test.simple", "payload": {"name": "é", "n": [1, 2.5, None, True]}}
    sent = fake.requests[0]
    assert sent.headers["Content-Type"] == "application/json"
    expected = '{"type":"test.simple","payload":{"name":"é","n":[1,2.5,null,true]}}'
    assert sent.content == expected.encode()


def test_a_server_out_of_reach_is_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with WorkClient(url, "t", "a") as wc, pytest.raises(ApiError) as info:
        wc.order("00000000-0000-0000-0000-000000000000")
    assert info.value.code == "unavailable" and info.value.http_status == 503
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert info.value.details == {"exception": "ConnectError", "attempts": 3}


def test_a_timeout_is_retried_with_the_same_key_then_unavailable() -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("too slow", request=request)

    fake = Fake(timeout)
    with fake.client() as wc, pytest.raises(ApiError) as info:
        wc.propose("test.simple", {})
    assert info.value.code == "unavailable"
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    assert len({r.headers["Idempotency-Key"] for r in fake.requests}) == 1
    assert len(fake.requests) == 3


def test_an_error_page_that_is_not_json_keeps_its_status() -> None:
    page = "<html><body><h1>502 Bad Gateway</h1></body></html>"
    fake = Fake(lambda r: httpx.Response(502, text=page, headers={"Content-Type": "text/html"}))
    with fake.client() as wc, pytest.raises(ApiError) as info:
        wc.order("o-1")
    assert info.value.code == "http_error" and info.value.http_status == 502
    assert info.value.details == {"content_type": "text/html", "body": page}
    assert isinstance(info.value.__cause__, json.JSONDecodeError)


def test_a_503_page_after_the_retries_and_a_bad_retry_after() -> None:
    headers = {"Content-Type": "text/plain", "Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}
    fake = Fake(lambda r: httpx.Response(503, text="busy", headers=headers))
    with fake.client() as wc, pytest.raises(ApiError) as info:
        wc.order("o-1")
    assert info.value.code == "http_error" and info.value.http_status == 503
    assert len(fake.requests) == 3


def test_a_success_that_is_not_a_json_object_is_an_invalid_response() -> None:
    fake = Fake(lambda r: httpx.Response(200, text="<html>login</html>"))
    with fake.client() as wc, pytest.raises(ApiError) as info:
        wc.order("o-1")
    assert info.value.code == "invalid_response" and info.value.http_status == 502


@pytest.mark.parametrize("body", [["not", "an", "envelope"], {"detail": "Not Found"}])
def test_an_error_answer_without_the_envelope_quotes_it(body: Any) -> None:
    fake = Fake(lambda r: httpx.Response(404, json=body))
    with fake.client() as wc, pytest.raises(ApiError) as info:
        wc.order("o-1")
    assert info.value.code == "http_error" and info.value.http_status == 404
    assert info.value.message == "HTTP 404 Not Found: the answer is not an error envelope"
    assert info.value.details == {
        "content_type": "application/json",
        "body": json.dumps(body, separators=(",", ":")),
    }


def test_a_failing_fail_on_exit_does_not_hide_the_blocks_exception() -> None:
    gone = {"error": {"code": "lease_expired", "message": "the lease expired"}}
    fake = Fake(lambda r: httpx.Response(409, json=gone))
    with fake.client() as wc:
        lease = wc.checkout(heartbeat=False)
        assert lease is not None
        with pytest.raises(RuntimeError, match="handler broke") as info, lease:
            raise RuntimeError("handler broke")
    assert isinstance(lease.exit_error, ApiError) and lease.exit_error.code == "lease_expired"
    assert any("reporting fail for item i-1 failed" in n for n in info.value.__notes__)
    assert fake.requests[-1].url.path.endswith("/items/i-1/fail")
    assert lease.ended == ""


def test_a_submit_that_cannot_reach_the_server_is_reported_on_exit() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    fake = Fake(down)
    with fake.client() as wc:
        lease = wc.checkout(heartbeat=False)
        assert lease is not None
        with pytest.raises(ApiError) as info, lease:
            lease.submit({"answer": 1})
    assert info.value.code == "unavailable"
    paths = [r.url.path.rsplit("/", 1)[-1] for r in fake.requests]
    assert paths == ["checkout", "submit", "submit", "submit", "fail", "fail", "fail"]
    assert isinstance(lease.exit_error, ApiError) and lease.exit_error.code == "unavailable"


def test_an_answer_httpx_cannot_decode_is_an_invalid_response() -> None:
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    fake = Fake(lambda r: httpx.Response(200, content=b"not gzip", headers=headers))
    with fake.client() as wc, pytest.raises(ApiError) as info:
        wc.order("o-1")
    assert info.value.code == "invalid_response" and info.value.http_status == 502
    assert isinstance(info.value.__cause__, httpx.DecodingError)
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    ("header", "wait"),
    [("2", 2.0), ("-5", 0.0), ("nan", 1.0), ("inf", 1.0), ("1e9", 60.0), ("Wed, 21 Oct 2026", 1.0)],
)
def test_retry_after_is_a_finite_bounded_wait(header: str, wait: float) -> None:
    """``Retry-After: nan`` was time.sleep(nan), a ValueError; ``1e9`` slept for decades."""
    from workmanager.client_wire import retry_after

    response = httpx.Response(503, headers={"Retry-After": header})
    assert retry_after(response) == wait


# --- answers that are not the API's, and the client's own retries (a faults pass) --------
@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200),
        httpx.Response(204),
        httpx.Response(308, headers={"Location": "https://wm.test/agent/work/items/i-1/submit"}),
        httpx.Response(200, json={"ok": True}),  # a JSON object, not the submit's answer
    ],
    ids=["empty-200", "empty-204", "redirect-308", "wrong-shape"],
)
def test_a_submit_answered_by_something_else_does_not_end_the_lease(
    answer: httpx.Response,
) -> None:
    """An empty 2xx or a redirect (an http→https move) counted as success: the lease was
    ended client-side, its heartbeats stopped, and the result never reached the server."""
    fake = Fake(lambda r: answer)
    with fake.client() as wc:
        lease = wc.checkout(heartbeat=False)
        assert lease is not None
        with pytest.raises(ApiError) as info:
            lease.submit({"answer": 1})
    assert info.value.code == "invalid_response" and info.value.http_status == 502
    assert lease.ended == ""


def test_a_checkout_or_an_order_of_the_wrong_shape_is_an_api_error() -> None:
    """They were ``KeyError: 'item'`` and ``KeyError: 'order'`` tracebacks."""
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json={"ok": True}))
    with WorkClient("http://wm.test", "t", "a", transport=transport) as wc:
        for call in (lambda: wc.checkout(), lambda: wc.order("o-1"), lambda: wc.propose("t", {})):
            with pytest.raises(ApiError) as info:
                call()
            assert info.value.code == "invalid_response"


def test_a_recovered_checkout_says_its_lease_cannot_be_used() -> None:
    """The replay of a checkout that committed but lost its answer has no lease token: it
    was ``KeyError: 'lease_token'``."""
    recovered = {"replayed": True, "outcome": "committed", "item_id": "i-9", "item": {"id": "i-9"}}
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json=recovered))
    with (
        WorkClient("http://wm.test", "t", "a", transport=transport) as wc,
        pytest.raises(ApiError) as info,
    ):
        wc.checkout()
    assert info.value.code == "invalid_response" and "item i-9" in info.value.message


def test_a_retry_that_finds_its_first_try_running_waits_for_its_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client's own retry of a read timeout met the first try still running: it
    raised 409 ``idempotency_in_flight`` (and stopped the heartbeats as if the lease were
    gone) although the submit was applied. It waits for the first try's answer."""
    monkeypatch.setattr("workmanager.client.time.sleep", lambda s: None)
    busy = {"error": {"code": "idempotency_in_flight", "message": "still running"}}
    answers: list[Any] = [
        httpx.ReadTimeout("slow"),
        httpx.Response(409, json=busy),
        httpx.Response(409, json=busy),
        httpx.Response(504, text="<html>Gateway Timeout</html>"),
        httpx.Response(200, json={"item": {"id": "i-1", "state": "submitted"}}),
    ]

    def answer(request: httpx.Request) -> httpx.Response:
        step = answers.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    fake = Fake(answer)
    with fake.client() as wc:
        lease = wc.checkout(heartbeat=False)
        assert lease is not None
        assert lease.submit({"answer": 1})["item"]["state"] == "submitted"
    assert lease.ended == "submitted" and answers == []
    keys = {r.headers["Idempotency-Key"] for r in fake.requests[1:]}
    assert len(keys) == 1  # every try of the submit under one key


def test_a_lease_of_a_closed_client_says_so() -> None:
    """The heartbeat thread died with "Exception in thread" and submit raised a raw
    RuntimeError."""
    from workmanager.errors import UsageError

    fake = Fake(lambda r: httpx.Response(200, json={"lease_expires_at": "x"}))
    wc = fake.client()
    lease = wc.checkout(heartbeat_every=0.05)
    assert lease is not None
    wc.close()
    wait_for(lambda: bool(lease.heartbeat_errors), what="the heartbeat to meet the closed client")
    assert isinstance(lease.heartbeat_errors[0], UsageError)
    with pytest.raises(UsageError, match="this WorkClient is closed"):
        lease.submit({"answer": 1})
