"""JSON nested too deep (issue 11, item 4): refused as ``400 malformed_json`` naming the limit,
on HTTP and MCP, before anything recursive meets it; never a 500 or a reset connection."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from tests.api.conftest import BIN, PREFIX, Server, base_env, checkout, idem, lease_headers, propose
from tests.api.test_mcp import result
from tests.support.types import Simple
from workmanager import Registry
from workmanager.errors import MalformedJSON
from workmanager.jsonvalues import DEFAULT_MAX_JSON_DEPTH as LIMIT
from workmanager.jsonvalues import deeper_than, raw_depth


def nested(levels: int) -> Any:
    """``levels`` containers, alternately objects and lists, built without recursion."""
    value: Any = {}
    for i in range(levels - 1):
        value = {"k": value} if i % 2 else [value]
    return value


def nested_text(levels: int) -> str:
    """The JSON text of ``levels`` containers (``json.dumps`` itself recurses)."""
    opening = "".join('{"k": ' if i % 2 else "[" for i in range(levels))
    closing = "".join("}" if i % 2 else "]" for i in reversed(range(levels)))
    return opening + "null" + closing


def propose_body(levels: int) -> bytes:
    """A propose body ``levels`` deep in all (the body and its payload are two)."""
    return ('{"type": "test.simple", "payload": {"x": ' + nested_text(levels - 2) + "}}").encode()


def refused(r: Any) -> None:
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "malformed_json", error
    assert str(LIMIT) in error["message"] and error["details"] == {"max_depth": LIMIT}


def post(server: Server, path: str, body: bytes, **headers: str) -> Any:
    return server.client().post(
        f"{PREFIX}{path}",
        content=body,
        headers={"Content-Type": "application/json", **idem(), **headers},
    )


def test_raw_depth_counts_brackets_outside_strings_only() -> None:
    assert raw_depth(b'{"a": [1, {"b": "]]]\\"[[[{{"}]}') == 3
    assert raw_depth('"[[[[') == 0 and raw_depth(b"[[[") == 3 and raw_depth(b"1") == 0
    assert raw_depth(nested_text(5000)) == 5000 and raw_depth(propose_body(70)) == 70
    assert json.loads(nested_text(5)) == [{"k": [{"k": [None]}]}]
    assert deeper_than(nested(5000), LIMIT) and not deeper_than(nested(LIMIT), LIMIT)


def test_http_body_over_the_limit_is_400_naming_it(db_server: Server) -> None:
    # The deepest accepted body, then one level more (also 256 and 10,000 levels, which
    # were a pydantic 500 and a RecursionError with the connection reset).
    ok = post(db_server, "/propose", propose_body(LIMIT))
    assert ok.status_code == 201, ok.text
    for levels in (LIMIT + 1, 256, 10_000):
        refused(post(db_server, "/propose", propose_body(levels)))
    # Unbalanced, or as an array: the parser never sees either.
    refused(post(db_server, "/propose", b"[" * 50_000))
    # Brackets inside strings are not nesting.
    deep_text = json.dumps({"type": "test.simple", "payload": {"name": "[{" * 10_000}})
    assert post(db_server, "/propose", deep_text.encode()).status_code == 201
    # Every route that takes a body: a submit too, and nothing changed.
    order = propose(db_server.client(agent="deep-1"))
    item = checkout(db_server.client(agent="deep-1"), order["id"])
    deep_result = ('{"result": {"answer": ' + nested_text(300) + "}}").encode()
    r = db_server.client(agent="deep-1").post(
        f"{PREFIX}/items/{item['id']}/submit",
        content=deep_result,
        headers={"Content-Type": "application/json", **lease_headers(item)},
    )
    refused(r)
    got = db_server.client().get(f"{PREFIX}/orders/{order['id']}").json()
    assert got["order"]["state"] == "in_progress", got


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16", "utf-32"])
def test_a_body_in_another_encoding_is_refused_not_parsed(db_server: Server, encoding: str) -> None:
    """A data-extremes pass found ``json.loads`` reading UTF-16 and UTF-32 bodies, whose
    brackets the depth count (reading UTF-8) did not see past an escaped quote: a body
    1,000 deep answered a plain-text 500 and reset the connection. Only UTF-8 is read."""
    deep = '{"a": "\\"", "b": ' + nested_text(1_000) + "}"
    client = db_server.client()

    def total() -> int:
        listed = client.get(f"{PREFIX}/orders", params={"page[size]": 1})
        assert listed.status_code == 200, listed.text  # the connection still serves
        return int(listed.json()["meta"]["total"])

    before = total()
    for body in (deep, '{"type": "test.simple", "payload": {}}'):
        r = post(db_server, "/propose", body.encode(encoding))
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "malformed_json", r.text
    assert total() == before
    bom = b"\xef\xbb\xbf" + b'{"type": "test.simple", "payload": {}}'  # UTF-8 with a BOM
    assert post(db_server, "/propose", bom).status_code == 201


def test_python_api_gets_malformed_json_not_recursion_error(make_wm: Any) -> None:
    wm = make_wm(db="postgres", backend="database", registry=Registry([Simple()]))
    with pytest.raises(MalformedJSON, match=str(LIMIT)):
        wm.propose("test.simple", {"x": nested(100_000)})
    with pytest.raises(MalformedJSON):
        wm.propose("test.simple", {"x": nested(LIMIT)})
    order_id = wm.propose("test.simple", {"x": nested(LIMIT - 2)})  # LIMIT with its envelope
    lease = wm.agent.checkout("deep-agent", order_id=order_id)
    assert lease is not None
    with pytest.raises(MalformedJSON, match=str(LIMIT)):
        wm.agent.submit(lease, {"answer": nested(100_000)})
    with pytest.raises(MalformedJSON):
        wm.agent.heartbeat(lease, checkpoint={"x": nested(LIMIT)})


async def _mcp_deep(env: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    params = StdioServerParameters(
        command=str(BIN / "workmanager"),
        args=["--dispatcher", "none", "mcp", "--transport", "stdio"],
        env=env,
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        # The arguments object is the first level, as the HTTP body is.
        deep = await session.call_tool(
            "work.propose", {"type": "test.simple", "payload": {"x": nested(LIMIT + 5)}}
        )
        ok = await session.call_tool(
            "work.propose", {"type": "test.simple", "payload": {"x": nested(LIMIT - 2)}}
        )
        return result(deep), result(ok)


def test_mcp_tool_arguments_over_the_limit(api_db_url: str) -> None:
    deep, ok = anyio.run(_mcp_deep, base_env(api_db_url))
    assert deep["success"] is False and deep["code"] == "malformed_json", deep
    assert str(LIMIT) in deep["error"]
    assert ok["success"] is True, ok


def test_cli_seed_payload_over_the_limit(api_db_url: str) -> None:
    from tests.api.conftest import cli

    payload = '{"x": ' + nested_text(5000) + "}"
    done = cli(base_env(api_db_url), "dev", "seed", "--type", "test.simple", "--payload", payload)
    assert done.returncode == 2 and str(LIMIT) in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
