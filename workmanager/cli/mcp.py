"""``workmanager mcp --transport stdio|http|sse`` (SPEC §7)."""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

import click

from .. import tracing
from ..importing import import_extra
from .app import Env, cli, pass_env
from .render import PORT, json_errors_option, report_interrupt, warn_if_open


@cli.command("mcp")
@click.option("--transport", type=click.Choice(["stdio", "http", "sse"]), default="stdio")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8001, show_default=True, type=PORT)
@json_errors_option
@pass_env
def mcp_command(env: Env, transport: str, host: str, port: int) -> None:
    """Serve the work.* tools over MCP: stdio, streamable HTTP at /mcp, or SSE at /sse
    (both with bearer auth; CORS from WORK_MANAGER_MCP_CORS_ORIGINS)."""
    import_extra("mcp", "workmanager mcp needs the MCP SDK", "mcp")
    if transport != "stdio":
        import_extra("uvicorn", f"workmanager mcp --transport {transport} needs uvicorn", "api")
    from ..db import migrate  # noqa: F401  (alembic logs its plugins at INFO on import: before logging is set up)
    from ..mcp import build_server
    from .serve import LOG_FORMAT, schema_at_head

    # before the SDK's (a rich handler, its lines wrapped at 80 columns, no logger name)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    tracing.configure(env.settings, "workmanager-mcp")  # before the engine is built
    wm = env.console  # announces work to the workers, as `serve` does (root --dispatcher)
    # every transport leases: an older schema, or settings other than the deployment's
    # (another lease backend, prefix, TTL), refused before the first call, as by `serve`
    schema_at_head(wm)
    if transport == "stdio":
        signal.signal(signal.SIGINT, _interrupted)
        build_server(wm).run("stdio")
        return
    import uvicorn

    from ..mcp.http import http_app
    from .serve import check_bindable

    check_bindable(host, port)  # a port taken: one error line as `serve` says it, not exit 3
    warn_if_open(wm.settings, f"the MCP {transport.upper()} transport")
    server = build_server(wm, require_token=True)
    uvicorn.run(http_app(wm, server, transport), host=host, port=port, log_level="warning")


def _interrupted(_signum: int, _frame: Any) -> None:
    """Ctrl-C ends the stdio server at once, as it ends any command: the MCP SDK reads
    stdin from a thread, and the process waited for it until stdin closed (in a terminal
    it froze until Ctrl-D). A call under way is cut off."""
    os._exit(report_interrupt())  # the reader thread holds the interpreter's exit: not waited for
