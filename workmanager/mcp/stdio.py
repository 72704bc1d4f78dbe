"""The stdio transport with an answer for every line (SPEC §6.1, §7).

The MCP library's stdio reader hands a line it cannot parse (JSON nested past its
parser's limit, a lone surrogate, an integer of thousands of digits) to the session as an
exception, which drops it: the client then waits forever for its reply. Here every line
is checked first, in one pass and without recursion, and a line that is too deep or does
not parse is answered at once with a JSON-RPC parse error (``-32700``) whose ``data``
carries the project's envelope (``malformed_json``), under the request's id when one can
be read off the line. Everything else goes to the library's transport unchanged.
"""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator
from io import TextIOWrapper
from typing import Any

import anyio
import mcp_types as types
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage

from ..errors import MalformedJSON
from ..jsonvalues import raw_depth, too_deep

#: The request's id as it appears at the top of a JSON-RPC line (best effort: the line
#: did not parse, so it is read off the text; ``null`` when there is none).
_ID = re.compile(r'"id"\s*:\s*(-?\d{1,18}|"(?:[^"\\]|\\.){0,200}")')


def request_id(line: str) -> int | str | None:
    match = _ID.search(line)
    if match is None:
        return None
    raw = match.group(1)
    if raw.startswith('"'):
        try:
            return str(raw[1:-1].encode().decode("unicode_escape"))
        except UnicodeDecodeError:
            return None
    return int(raw)


#: Lines nesting deeper than this are answered here: below the depth at which the
#: library's parser gives up (about 200), far above any value a tool accepts (at most
#: ``MAX_JSON_DEPTH_CEILING`` plus the JSON-RPC envelope's few levels).
LINE_DEPTH_LIMIT = 192


def refusal(line: str, max_depth: int) -> MalformedJSON | None:
    """Why ``line`` cannot go to the session, or ``None`` when it can. Arguments a little
    past ``max_depth`` still reach the tool, which answers them as a §7 result; only a
    line deeper than any allowed value could make (or one the parser refuses) stops here,
    before the library's parser recurses into it."""
    if raw_depth(line) > LINE_DEPTH_LIMIT:
        return too_deep(max_depth, "the message")
    try:
        types.jsonrpc_message_adapter.validate_json(line, by_name=False)
    except Exception as exc:  # the library's own parser: whatever it refuses
        return MalformedJSON(f"the message is not valid JSON-RPC: {str(exc).splitlines()[0]}")
    return None


def parse_error(line: str, error: MalformedJSON) -> SessionMessage:
    data: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.details is not None:
        data["details"] = error.details
    return SessionMessage(
        types.JSONRPCError(
            jsonrpc="2.0",
            id=request_id(line),
            error=types.ErrorData(code=types.PARSE_ERROR, message=error.message, data=data),
        )
    )


class CheckedLines:
    """stdin's lines, the unparseable ones answered on ``replies`` instead of passed on."""

    def __init__(self, source: Any, max_depth: int) -> None:
        self.source = source
        self.max_depth = max_depth
        self.replies: Any = None  # the transport's write stream, set once it is open

    async def __aiter__(self) -> AsyncIterator[str]:
        async for line in self.source:
            if not line.strip():
                continue
            error = refusal(line, self.max_depth)
            if error is None:
                yield line
            elif self.replies is not None:
                await self.replies.send(parse_error(line, error))


async def serve(server: Any, max_depth: int) -> None:
    """Run ``server`` (an ``MCPServer``) over stdin/stdout with checked lines."""
    text = TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="surrogateescape")
    lines = CheckedLines(anyio.wrap_file(text), max_depth)
    async with stdio_server(stdin=lines) as (read_stream, write_stream):  # type: ignore[arg-type]
        lines.replies = write_stream
        low = server._lowlevel_server
        await low.run(read_stream, write_stream, low.create_initialization_options())
