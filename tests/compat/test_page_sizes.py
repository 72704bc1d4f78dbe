"""Upstream's ``query.default_page_size_http`` / ``default_page_size_mcp`` / ``max_page_size``
as ``WORK_MANAGER_DEFAULT_PAGE_SIZE_HTTP`` / ``_MCP`` / ``WORK_MANAGER_MAX_PAGE_SIZE``: the
orders list over HTTP's operation and MCP's ``work.list`` take their default page from
their own setting, and no asked-for page is larger than the max."""

from __future__ import annotations

from typing import Any

from tests.api.test_mcp_idempotency import Call, session
from tests.support.types import Simple
from workmanager import Registry, WorkManager
from workmanager.services.tokens import Principal
from workmanager.settings import Settings
from workmanager.surface.callers import AgentMetadata, build_caller
from workmanager.surface.operations import Operations


def test_the_defaults_are_upstreams() -> None:
    s = Settings()
    assert (s.default_page_size_http, s.default_page_size_mcp, s.max_page_size) == (50, 20, 100)
    s = Settings.from_env(
        {
            "WORK_MANAGER_DEFAULT_PAGE_SIZE_HTTP": "7",
            "WORK_MANAGER_DEFAULT_PAGE_SIZE_MCP": "5",
            "WORK_MANAGER_MAX_PAGE_SIZE": "9",
        }
    )
    assert (s.default_page_size_http, s.default_page_size_mcp, s.max_page_size) == (7, 5, 9)


def test_page_sizes_come_from_the_settings(make_wm: Any) -> None:
    wm: WorkManager = make_wm(
        registry=Registry([Simple()]),
        default_page_size_http=3,
        default_page_size_mcp=2,
        max_page_size=4,
    )
    for n in range(6):
        wm.propose("test.simple", {"n": n})
    caller = build_caller(Principal("t", None, frozenset({"admin"})), AgentMetadata("a-1"))
    ops = Operations(wm)

    def http(*params: tuple[str, str]) -> dict[str, Any]:
        status, body = ops.list_orders(caller, list(params))
        assert status == 200
        return dict(body)

    default = http()
    assert default["meta"]["per_page"] == 3 and len(default["data"]) == 3
    asked = http(("page[size]", "50"))
    assert asked["meta"]["per_page"] == 4 and len(asked["data"]) == 4

    async def script(call: Call) -> list[dict[str, Any]]:
        return [await call("work.list"), await call("work.list", page={"size": 50})]

    mcp_default, mcp_asked = session(wm, script)
    assert mcp_default["meta"]["per_page"] == 2 and mcp_default["count"] == 2
    assert mcp_asked["meta"]["per_page"] == 4 and mcp_asked["count"] == 4
    assert mcp_asked["meta"]["total"] == 6
