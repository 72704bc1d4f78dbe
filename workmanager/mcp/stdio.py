"""The stdio transport with an answer for every line (SPEC §6.1, §7).

The MCP library's stdio reader hands a line it cannot parse (JSON nested past its
parser's limit, a lone surrogate, an integer of thousands of digits) to the session as an
exception, which drops it: the client then waits forever for its reply. Here every line
is checked first, in one pass and without recursion, and a line that is too deep or does
not parse is answered at once with a JSON-RPC parse error (``-32700``; ``-32600`` for JSON
that is no JSON-RPC message, or a request whose id no answer can carry) whose ``data``
carries the project's envelope (``malformed_json``), under the request's id when one can
be read. Everything else goes to the library's transport unchanged.

The library also ends the session the moment stdin closes, cancelling requests still
running: a script piping its calls in (``… | workmanager mcp``) had its last call run
and never answered. Here the end of stdin is passed on only once every request read has
been answered (at most :data:`DRAIN_SECONDS` later).
"""

from __future__ import annotations

import json
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
from ..jsonvalues import raw_depth, readable, too_deep

#: The request's id as it appears at the top of a JSON-RPC line (best effort: the line
#: did not parse, so it is read off the text; ``null`` when there is none).
_ID = re.compile(r'"id"\s*:\s*(-?\d{1,18}|"(?:[^"\\]|\\.){0,200}")')


def request_id(line: str) -> int | str | None:
    """The id to answer ``line`` under: its top-level ``id`` when the line is JSON (an id
    nested in its params is not the request's), else read off the text; ``None`` (null)
    when there is none, or none that an answer can carry (a lone surrogate: writing it
    ended the server)."""
    try:
        doc = json.loads(line)
    except (ValueError, RecursionError):
        doc = _UNREAD
    if doc is _UNREAD:
        match = _ID.search(line)
        if match is None:
            return None
        raw = match.group(1)
        if not raw.startswith('"'):
            return int(raw)
        try:
            found: Any = str(raw[1:-1].encode("utf-8", "surrogatepass").decode("unicode_escape"))
        except UnicodeError:
            return None
    else:
        found = doc.get("id") if isinstance(doc, dict) else None
    return found if answerable(found) else None


_UNREAD = object()


def answerable(ident: Any) -> bool:
    """Whether an answer can carry ``ident``: an integer, or text UTF-8 can write."""
    if isinstance(ident, bool):
        return False
    if isinstance(ident, int):
        return True
    return isinstance(ident, str) and readable(ident) == ident


#: Lines nesting deeper than this are answered here: below the depth at which the
#: library's parser gives up (about 200), far above any value a tool accepts (at most
#: ``MAX_JSON_DEPTH_CEILING`` plus the JSON-RPC envelope's few levels).
LINE_DEPTH_LIMIT = 192


#: How long the end of stdin waits for the answers of requests still running.
DRAIN_SECONDS = 600.0


def parsed(line: str, max_depth: int) -> tuple[Any, MalformedJSON | None]:
    """``(message, None)`` for a line that can go to the session, or ``(None, why not)``.
    Arguments a little past ``max_depth`` still reach the tool, which answers them as a
    §7 result; only a line deeper than any allowed value could make (or one the parser
    refuses) stops here, before the library's parser recurses into it."""
    if raw_depth(line) > LINE_DEPTH_LIMIT:
        return None, too_deep(max_depth, "the message")
    try:
        message = types.jsonrpc_message_adapter.validate_json(line, by_name=False)
    except Exception as exc:  # the library's own parser: whatever it refuses
        why = f"the message is not valid JSON-RPC: {str(exc).splitlines()[0]}"
        return None, MalformedJSON(why)
    ident = getattr(message, "id", None)
    if ident is not None and not answerable(ident):  # its answer could not be written
        return None, MalformedJSON("the request's id is text no answer can carry")
    return message, None


def refusal(line: str, max_depth: int) -> MalformedJSON | None:
    """Why ``line`` cannot go to the session (:func:`parsed`), or ``None`` when it can."""
    return parsed(line, max_depth)[1]


def parse_error(line: str, error: MalformedJSON) -> SessionMessage:
    """The answer to a refused line: a parse error (``-32700``) when it is not JSON or
    nests too deep, an invalid request (``-32600``) when it is JSON but no JSON-RPC
    message (or one whose id no answer can carry)."""
    data: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.details is not None:
        data["details"] = error.details
    code = types.PARSE_ERROR  # not JSON, or nested past what is read
    if raw_depth(line) <= LINE_DEPTH_LIMIT:
        try:
            doc = json.loads(line)
        except (ValueError, RecursionError):
            doc = _UNREAD
        if doc is not _UNREAD and readable(doc) == doc:  # JSON, its text all UTF-8
            code = types.INVALID_REQUEST
    return SessionMessage(
        types.JSONRPCError(
            jsonrpc="2.0",
            id=request_id(line),
            error=types.ErrorData(code=code, message=error.message, data=data),
        )
    )


class CheckedLines:
    """stdin's lines, the unparseable ones answered on ``replies`` instead of passed on."""

    def __init__(self, source: Any, max_depth: int) -> None:
        self.source = source
        self.max_depth = max_depth
        self.replies: Any = None  # the transport's write stream, set once it is open
        #: ids of the requests passed on and not answered yet
        self.pending: set[Any] = set()

    async def __aiter__(self) -> AsyncIterator[str]:
        async for line in self.source:
            if not line.strip():
                continue
            message, error = parsed(line, self.max_depth)
            if error is None:
                if isinstance(message, types.JSONRPCRequest):
                    self.pending.add(message.id)
                elif isinstance(message, types.JSONRPCNotification):
                    self.cancelled(message)
                yield line
            elif self.replies is not None:
                await self.replies.send(parse_error(line, error))
        with anyio.move_on_after(DRAIN_SECONDS):  # stdin ended: let the calls answer first
            while self.pending:
                await anyio.sleep(0.02)

    def cancelled(self, note: Any) -> None:
        """A request the client cancelled gets no answer (MCP): not waited for."""
        if note.method == "notifications/cancelled" and isinstance(note.params, dict):
            self.pending.discard(note.params.get("requestId"))

    def answered(self, message: SessionMessage) -> None:
        """Note an answer written (a response or an error to a request)."""
        if isinstance(message.message, types.JSONRPCResponse | types.JSONRPCError):
            self.pending.discard(message.message.id)


class AnsweringStream:
    """The transport's write stream, telling :class:`CheckedLines` what was answered."""

    def __init__(self, stream: Any, lines: CheckedLines) -> None:
        self.stream, self.lines = stream, lines

    async def send(self, message: SessionMessage) -> None:
        await self.stream.send(message)
        self.lines.answered(message)

    async def __aenter__(self) -> AnsweringStream:
        await self.stream.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        return await self.stream.__aexit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


async def serve(server: Any, max_depth: int) -> None:
    """Run ``server`` (an ``MCPServer``) over stdin/stdout with checked lines."""
    text = TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="surrogateescape")
    lines = CheckedLines(anyio.wrap_file(text), max_depth)
    async with stdio_server(stdin=lines) as (read_stream, write_stream):  # type: ignore[arg-type]
        lines.replies = write_stream
        low = server._lowlevel_server
        answering = AnsweringStream(write_stream, lines)
        await low.run(read_stream, answering, low.create_initialization_options())  # type: ignore[arg-type]
