"""The MCP server (SPEC §7): the agent operations as MCP tools. Needs the ``mcp`` extra."""

from .server import TOOL_NAMES, build_server

__all__ = ["TOOL_NAMES", "build_server"]
