"""The MCP tools of SPEC §7 over :class:`~workmanager.surface.operations.Operations`.

Over stdio the server runs as whoever started it (like the CLI: every scope). Over HTTP
every call must carry ``Authorization: Bearer <token>``; the token's principal, scopes
and agent binding apply exactly as on the HTTP API.

Every tool that changes something (heartbeat aside: repeating it is harmless, replaying
it would not extend the lease) takes an optional ``idempotency_key``: a call retried with
the same key and arguments (the lease token among them) runs once and answers the stored
result again, with ``"replayed": true``. A key is scoped by tool, target, principal and
agent id, so MCP keys never meet HTTP ones.

Here: the tools and the server; a call's authentication and key are :mod:`.calls`', the
arguments' names and shapes :mod:`.arguments`'.
"""

from __future__ import annotations

from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.types import CallToolResult, InputRequiredResult
from pydantic import ValidationError

from ..container import WorkManager
from ..errors import ValidationFailed, WorkManagerError
from ..jsonvalues import deeper_than, too_deep
from ..surface.callers import Caller
from ..surface.operations import Answer, CheckoutFilters
from . import results
from .arguments import (
    agent_meta,
    argument_errors,
    counted,
    list_params,
    listed,
    normalise_arguments,
    with_recent_events,
)
from .calls import INSTRUCTIONS, JSONObj, Once, Tools
from .results import Result

#: Each tool and the scope its operation requires (``surface/operations.py`` checks it when
#: the call runs; this table only lets a call whose arguments fail be refused for its
#: credentials first, as the HTTP API refuses; a test holds the two equal).
TOOL_SCOPES = {
    "work.propose": "propose",
    "work.list": "view",
    "work.get": "view",
    "work.checkout": "checkout",
    "work.heartbeat": "checkout",
    "work.submit": "submit",
    "work.submit_part": "submit",
    "work.list_parts": "view",
    "work.finalize": "submit",
    "work.approve": "approve",
    "work.reject": "reject",
    "work.release": "checkout",
    "work.logs": "view",
    "work.fail": "submit",
}
TOOL_NAMES = tuple(TOOL_SCOPES)


class WorkServer(MCPServer[Any]):
    """The MCP server, refusing tool arguments nested deeper than ``max_json_depth``
    (``malformed_json``, as the HTTP API does) before anything validates or stores them."""

    def __init__(self, max_json_depth: int, tools: Tools) -> None:
        super().__init__("workmanager", instructions=INSTRUCTIONS, version=results.version())
        self.max_json_depth = max_json_depth
        self.tools = tools

    async def run_stdio_async(self) -> None:
        """stdio, with every line answered, even one the library cannot parse."""
        from .stdio import serve

        await serve(self, self.max_json_depth)

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        return results.flagged(await self._call_tool(name, arguments, context))

    async def _call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        tool = self._tool_manager.get_tool(name)
        if tool is None:
            return results.unknown_tool(name, [t.name for t in self._tool_manager.list_tools()])
        error: WorkManagerError | None = None
        if deeper_than(arguments, self.max_json_depth):
            error = too_deep(self.max_json_depth, "the tool arguments")
        else:
            try:
                arguments = normalise_arguments(arguments, tool.parameters)
            except ValidationFailed as exc:
                error = exc
        if error is None:
            try:
                return await super().call_tool(name, arguments, context)
            except ToolError as exc:  # arguments of the wrong type: a result, as §7 says
                cause = exc.__cause__
                if isinstance(exc, UnexpectedToolError) or not isinstance(cause, ValidationError):
                    raise
                error = argument_errors(cause)
        # the call's credentials are judged before its arguments, as over HTTP: a caller
        # without the tool's scope is told so, not how its arguments failed
        agent = arguments.get("agent_id")
        refused = await anyio.to_thread.run_sync(
            self.tools.refused,
            context,
            TOOL_SCOPES[name],
            agent if isinstance(agent, str) else None,
        )
        return tool.fn_metadata.convert_result(results.failure(refused or error))


def build_server(wm: WorkManager, *, require_token: bool = False) -> MCPServer[Any]:
    """An MCP server with the ``work.*`` tools; ``require_token`` for the HTTP transport."""
    tools = Tools(wm, require_token)
    server = WorkServer(wm.settings.max_json_depth, tools)
    _order_tools(server, tools)
    _lease_tools(server, tools)
    _result_tools(server, tools)
    return server


def _order_tools(server: MCPServer[Any], t: Tools) -> None:
    ops = t.ops

    @server.tool("work.propose", description="Propose (create and plan) a work order.")
    def propose(
        type: str,
        payload: JSONObj,
        ctx: Context,
        meta: JSONObj | None = None,
        priority: int = 0,
        dedupe_key: str | None = None,
        agent_id: str | None = None,
        model_name: str | None = None,
        idempotency_key: str | None = None,
        tenant_id: str | None = None,
    ) -> Result:
        body = {"type": type, "payload": payload, "meta": meta, "priority": priority}
        body["dedupe_key"] = dedupe_key
        if tenant_id is not None:  # absent: the fingerprint of a key stored before it existed
            body["tenant_id"] = tenant_id
        return t.call(
            ctx,
            agent_meta(agent_id, model_name=model_name),
            lambda c: ops.propose(c, type, payload, meta, priority, dedupe_key, tenant_id),
            Once(idempotency_key, "work.propose", "", body),
        )

    @server.tool(
        "work.list",
        description="List orders: filters, sorts, includes, fields and pages as the HTTP API's "
        "(§6.2), as upstream's arguments or as a raw query object.",
    )
    def list_orders(
        ctx: Context,
        query: dict[str, str] | None = None,
        state: str | None = None,
        type: str | None = None,
        priority: str | None = None,
        filter: dict[str, Any] | None = None,
        sort: str | None = None,
        include: str | None = None,
        fields: dict[str, str] | None = None,
        page: dict[str, int] | None = None,
        tenant_id: str | None = None,
    ) -> Result:
        asked = (query, state, type, priority, filter, sort, include, fields, page, tenant_id)

        def run(c: Caller) -> Answer:  # a value no filter reads: validation_failed
            return listed(ops.list_orders(c, list_params(*asked), t.page_size))

        return t.call(ctx, agent_meta(None), run)

    @server.tool("work.get", description="An order with its items and latest events.")
    def get(order_id: str, ctx: Context) -> Result:
        return t.call(
            ctx, agent_meta(None), lambda c: with_recent_events(ops.get_order(c, order_id))
        )

    @server.tool("work.approve", description="Approve a submitted order; apply runs later.")
    def approve(
        order_id: str, ctx: Context, wait: float | None = None, idempotency_key: str | None = None
    ) -> Result:
        return t.call(
            ctx,
            agent_meta(None),
            lambda c: ops.approve(c, order_id, wait),
            Once(idempotency_key, "work.approve", order_id, ops.approve_request(wait)),
        )

    @server.tool("work.reject", description="Reject a submitted order, optionally for rework.")
    def reject(
        order_id: str,
        errors: list[JSONObj],
        ctx: Context,
        allow_rework: bool = False,
        idempotency_key: str | None = None,
    ) -> Result:
        return t.call(
            ctx,
            agent_meta(None),
            lambda c: ops.reject(c, order_id, errors, allow_rework),
            Once(
                idempotency_key,
                "work.reject",
                order_id,
                {"errors": errors, "allow_rework": allow_rework},
            ),
        )


def _lease_tools(server: MCPServer[Any], t: Tools) -> None:
    ops = t.ops

    @server.tool("work.checkout", description="Lease the next eligible item (or of one order).")
    def checkout(
        ctx: Context,
        agent_id: str | None = None,
        order_id: str | None = None,
        type: str | None = None,
        min_priority: int | None = None,
        tenant_id: str | None = None,
        agent_name: str | None = None,
        agent_version: str | None = None,
        model_name: str | None = None,
        runtime: str | None = None,
        idempotency_key: str | None = None,
    ) -> Result:
        meta = agent_meta(agent_id, agent_name, agent_version, model_name, runtime)
        filters = CheckoutFilters(type, min_priority, tenant_id)
        body = {"type": type, "min_priority": min_priority, "tenant_id": tenant_id}
        return t.call(
            ctx,
            meta,
            lambda c: ops.checkout(c, filters, order_id),
            Once(idempotency_key, "work.checkout", order_id or "", body),
        )

    @server.tool("work.heartbeat", description="Extend a lease; optionally report progress.")
    def heartbeat(
        item_id: str,
        ctx: Context,
        agent_id: str | None = None,
        lease_token: str | None = None,
        progress: float | None = None,
        checkpoint: JSONObj | None = None,
    ) -> Result:
        return t.call(
            ctx,
            agent_meta(agent_id),
            lambda c: ops.heartbeat(c, item_id, lease_token, progress, checkpoint),
            lease=item_id,
        )

    @server.tool("work.release", description="Give a leased item back to the queue.")
    def release(
        item_id: str,
        ctx: Context,
        agent_id: str | None = None,
        lease_token: str | None = None,
        idempotency_key: str | None = None,
    ) -> Result:
        return t.call(
            ctx,
            agent_meta(agent_id),
            lambda c: ops.release(c, item_id, lease_token),
            Once(idempotency_key, "work.release", item_id, {}, lease_token),
            lease=item_id,
        )

    @server.tool("work.fail", description="Report that the work on a leased item failed.")
    def fail(
        item_id: str,
        error: JSONObj,
        ctx: Context,
        agent_id: str | None = None,
        lease_token: str | None = None,
        retryable: bool = True,
        idempotency_key: str | None = None,
    ) -> Result:
        return t.call(
            ctx,
            agent_meta(agent_id),
            lambda c: ops.fail(c, item_id, lease_token, error, retryable),
            Once(
                idempotency_key,
                "work.fail",
                item_id,
                {"error": error, "retryable": retryable},
                lease_token,
            ),
            lease=item_id,
        )

    @server.tool(
        "work.logs",
        description="An item's events and its order's order-level ones, or (order_id alone) "
        "every event of an order; newest first.",
    )
    def logs(
        ctx: Context, item_id: str | None = None, order_id: str | None = None, limit: int = 50
    ) -> Result:
        return t.call(
            ctx,
            agent_meta(None),
            lambda c: counted(ops.logs(c, item_id, limit, order_id), "events"),
        )


def _result_tools(server: MCPServer[Any], t: Tools) -> None:
    ops = t.ops

    @server.tool("work.submit", description="Submit the whole result of a leased item.")
    def submit(
        item_id: str,
        result: JSONObj,
        ctx: Context,
        agent_id: str | None = None,
        lease_token: str | None = None,
        evidence: Any = None,
        notes: str | None = None,
        model_name: str | None = None,
        idempotency_key: str | None = None,
    ) -> Result:
        body = {"result": result, "evidence": evidence, "notes": notes}
        return t.call(
            ctx,
            agent_meta(agent_id, model_name=model_name),
            lambda c: ops.submit(c, item_id, lease_token, result, evidence, notes),
            Once(idempotency_key, "work.submit", item_id, body, lease_token),
            lease=item_id,
        )

    @server.tool("work.submit_part", description="Submit one part of a leased item's result.")
    def submit_part(
        item_id: str,
        part_key: str,
        payload: JSONObj,
        ctx: Context,
        agent_id: str | None = None,
        lease_token: str | None = None,
        seq: int | None = None,
        evidence: Any = None,
        notes: str | None = None,
        idempotency_key: str | None = None,
    ) -> Result:
        body = {"part_key": part_key, "payload": payload, "seq": seq}
        body |= {"evidence": evidence, "notes": notes}
        return t.call(
            ctx,
            agent_meta(agent_id),
            lambda c: ops.submit_part(
                c, item_id, lease_token, part_key, payload, seq, evidence, notes
            ),
            Once(idempotency_key, "work.submit_part", item_id, body, lease_token),
            lease=item_id,
        )

    @server.tool("work.list_parts", description="The parts submitted for an item.")
    def list_parts(
        item_id: str, ctx: Context, part_key: str | None = None, status: str | None = None
    ) -> Result:
        return t.call(
            ctx,
            agent_meta(None),
            lambda c: counted(ops.list_parts(c, item_id, part_key, status), "parts"),
        )

    @server.tool("work.finalize", description="Assemble the parts into the result and submit.")
    def finalize(
        item_id: str,
        ctx: Context,
        agent_id: str | None = None,
        lease_token: str | None = None,
        mode: str = "strict",
        idempotency_key: str | None = None,
    ) -> Result:
        return t.call(
            ctx,
            agent_meta(agent_id),
            lambda c: ops.finalize(c, item_id, lease_token, mode),
            Once(idempotency_key, "work.finalize", item_id, {"mode": mode}, lease_token),
            lease=item_id,
        )
