"""The MCP server through a real MCP client session over stdio (SPEC §7)."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import anyio
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from tests.api.conftest import BIN, base_env, truncate_work_tables
from workmanager.mcp import TOOL_NAMES


def result(answer: Any) -> dict[str, Any]:
    if answer.structured_content is not None:
        data = answer.structured_content
        return dict(data.get("result", data))
    return dict(json.loads(answer.content[0].text))


async def session_run(env: dict[str, str]) -> dict[str, Any]:
    params = StdioServerParameters(
        command=str(BIN / "workmanager"),
        args=["--dispatcher", "none", "mcp", "--transport", "stdio"],
        env=env,
    )
    seen: dict[str, Any] = {}
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        hello = await session.initialize()
        seen["instructions"] = hello.instructions or ""
        seen["tools"] = {t.name for t in (await session.list_tools()).tools}

        async def call(name: str, **args: Any) -> dict[str, Any]:
            return result(await session.call_tool(name, args))

        proposed = await call(
            "work.propose", type="test.simple", payload={"n": 1}, agent_id="mcp-agent-1"
        )
        seen["propose"] = proposed
        order_id = proposed["order"]["id"]
        leased = await call("work.checkout", agent_id="mcp-agent-1", model_name="claude-mcp")
        seen["checkout"] = leased
        item = leased["item"]
        token = item["lease_token"]  # used exactly as checkout returned it
        assert isinstance(token, str) and token.split(".", 1)[0].isdigit()
        seen["heartbeat"] = await call(
            "work.heartbeat",
            item_id=item["id"],
            lease_token=token,
            agent_id="mcp-agent-1",
            progress=0.5,
        )
        seen["other_agent"] = await call(
            "work.submit",
            item_id=item["id"],
            lease_token=token,
            agent_id="intruder",
            result={"answer": 1},
        )
        seen["bad_result"] = await call(
            "work.submit", item_id=item["id"], lease_token=token, agent_id="mcp-agent-1", result={}
        )
        seen["submit"] = await call(
            "work.submit",
            item_id=item["id"],
            lease_token=token,
            agent_id="mcp-agent-1",
            result={"answer": 7},
        )
        seen["get"] = await call("work.get", order_id=order_id)
        seen["list"] = await call("work.list", query={"filter[agent_id]": "mcp-agent-1"})
        seen["logs"] = await call("work.logs", item_id=item["id"], limit=3)
        seen["missing"] = await call("work.get", order_id="nope")
        seen["approve"] = await call("work.approve", order_id=order_id)
    return seen


def test_mcp_stdio_session(api_db_url: str) -> None:
    truncate_work_tables(api_db_url)
    env = base_env(api_db_url)
    seen = anyio.run(session_run, env)
    assert seen["tools"] >= set(TOOL_NAMES)
    # the client is told the work loop in the tools' own names, never the unshipped SPEC
    assert "work.checkout" in seen["instructions"] and "work.heartbeat" in seen["instructions"]
    assert "SPEC" not in seen["instructions"] and "§" not in seen["instructions"]
    assert seen["propose"]["success"] is True and seen["propose"]["order"]["state"] == "queued"
    assert seen["checkout"]["success"] is True and seen["checkout"]["item"]["lease_token"]
    assert seen["heartbeat"]["success"] is True and "lease_expires_at" in seen["heartbeat"]
    assert seen["other_agent"] == {
        "success": False,
        "code": "forbidden",
        "error": "this item is leased by another agent",
        "details": seen["other_agent"]["details"],
    }
    assert (
        seen["bad_result"]["success"] is False and seen["bad_result"]["code"] == "validation_failed"
    )
    assert seen["submit"]["success"] is True and seen["submit"]["state"] == "submitted"
    assert seen["get"]["order"]["state"] == "submitted"
    assert [o["id"] for o in seen["list"]["data"]] == [seen["get"]["order"]["id"]]
    assert 1 <= len(seen["logs"]["events"]) <= 3
    assert seen["missing"]["success"] is False and seen["missing"]["code"] == "not_found"
    assert seen["approve"]["success"] is True and seen["approve"]["order"]["state"] == "approved"


def test_a_call_piped_in_before_stdin_closes_is_answered(api_db_url: str) -> None:
    """``… | workmanager mcp``: the library ended the session at the end of stdin and
    cancelled the call still running, which had already proposed its order: it ran and
    was never answered, exit 0. The end of stdin now waits for the answers."""
    truncate_work_tables(api_db_url)
    hello = {"protocolVersion": "2025-06-18", "capabilities": {},
             "clientInfo": {"name": "pipe", "version": "1"}}  # fmt: skip
    call = {"name": "work.propose", "arguments": {"type": "test.simple", "payload": {"n": 1}}}
    lines = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": hello},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": call},
    ]
    done = subprocess.run(
        [str(BIN / "workmanager"), "--dispatcher", "none", "mcp", "--transport", "stdio"],
        input="".join(json.dumps(line) + "\n" for line in lines),
        env=base_env(api_db_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    answers = {a["id"]: a for a in map(json.loads, done.stdout.splitlines())}
    assert set(answers) == {1, 7}, done.stdout
    assert answer_of(answers[7])["success"] is True
    # a call the client cancelled gets no answer (MCP): the end of stdin does not wait
    cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 8}}
    listing = {"name": "work.list", "arguments": {}}
    lines[2] = {"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": listing}
    started = time.monotonic()
    done = subprocess.run(
        [str(BIN / "workmanager"), "--dispatcher", "none", "mcp", "--transport", "stdio"],
        input="".join(json.dumps(line) + "\n" for line in [*lines, cancel]),
        env=base_env(api_db_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and time.monotonic() - started < 30, done.stderr[-2000:]


def answer_of(reply: dict[str, Any]) -> dict[str, Any]:
    """A ``tools/call`` reply's answer (structured, else the text content's JSON)."""
    found = reply["result"].get("structuredContent")
    if found is not None:
        return dict(found.get("result", found))
    return dict(json.loads(reply["result"]["content"][0]["text"]))


def test_ctrl_c_ends_the_stdio_server_while_stdin_is_open(api_db_url: str) -> None:
    """After SIGINT it stopped answering but ran on until stdin closed (a signals pass)."""
    import signal

    proc = subprocess.Popen(
        [str(BIN / "workmanager"), "--dispatcher", "none", "mcp", "--transport", "stdio"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=base_env(api_db_url),
        text=True,
    )
    try:
        hello = {"protocolVersion": "2025-06-18", "capabilities": {},
                 "clientInfo": {"name": "pipe", "version": "1"}}  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                     "params": hello}) + "\n")  # fmt: skip
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline())["id"] == 1  # serving, stdin still open
        proc.send_signal(signal.SIGINT)
        # the bug ran on until stdin closed (for ever here): 30 s only bounds a loaded
        # machine's start of the handler (10 s was once too short under the full suite)
        assert proc.wait(timeout=30) == 130
        assert proc.stderr is not None
        assert "error [aborted]: interrupted (Ctrl-C)" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
