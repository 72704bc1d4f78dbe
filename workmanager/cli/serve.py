"""``workmanager serve``: the HTTP API under uvicorn (SPEC §1, §6)."""

from __future__ import annotations

import logging
from typing import Any, cast

import click

from .. import tracing
from ..container import WorkManager
from ..dispatch import Dispatcher, Forgiving, NullDispatcher
from ..errors import ConfigurationError, DatabaseMissing, Unavailable, WorkManagerError
from ..importing import import_extra, import_object
from ..saying import first_line
from .app import Env, cli, pass_env
from .render import PORT, json_errors_option, warn_if_open

log = logging.getLogger("workmanager.serve")
#: What a dispatcher must have (workmanager.dispatch.Dispatcher), checked at start-up.
HOOKS = ("order_submitted", "order_approved", "items_available")
DISPATCHER_HINT = (
    "expected celery, none, or pkg.mod:factory, a callable that takes the WorkManager and "
    "returns an object with " + ", ".join(HOOKS)
)
#: What ``--log-level`` takes: the logging levels uvicorn knows too.
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def celery_dispatcher(wm: WorkManager) -> Dispatcher:
    """Announce work through the Celery app in ``tasks`` (imported only here)."""
    from tasks.app import app
    from tasks.dispatcher import CeleryDispatcher
    from tasks.tracing import install

    install(wm.settings, "workmanager-api")  # messages carry the request's trace
    return CeleryDispatcher(app, wm.settings)


def checked_dispatcher(reference: str) -> str:
    """A ``--dispatcher`` value, checked before a command does anything (it is used only
    when the command first announces work, after it has changed something): ``celery``
    or ``none`` (any case), or a ``pkg.mod:factory`` that imports and can be called."""
    word = reference.strip().lower()
    if word in ("celery", "none"):
        return word
    if ":" not in reference:
        raise ConfigurationError(
            f"--dispatcher: expected celery, none or pkg.mod:factory, got {reference!r}",
            hint=DISPATCHER_HINT,
        )
    import_object(reference, "--dispatcher")
    return reference


def build_dispatcher(reference: str, wm: WorkManager) -> Dispatcher:
    """``celery`` (default), ``none``, or ``pkg.mod:factory`` called with the WorkManager."""
    reference = checked_dispatcher(reference)
    if reference == "celery":
        return celery_dispatcher(wm)
    if reference == "none":
        return NullDispatcher()
    return custom_dispatcher(reference, wm)


def custom_dispatcher(reference: str, wm: WorkManager) -> Dispatcher:
    """``pkg.mod:factory(wm)``, checked: a factory that raises, or returns something
    without the :class:`Dispatcher` hooks, is a ConfigurationError naming
    ``--dispatcher`` (at start-up, not at the first announcement)."""
    factory = import_object(reference, "--dispatcher")  # callable, or refused
    try:
        dispatcher = factory(wm)
    except WorkManagerError:
        raise
    except Exception as exc:  # e.g. json:dumps, callable but no dispatcher factory
        raise ConfigurationError(
            f"--dispatcher: {reference}(wm) raised {type(exc).__name__}: {first_line(exc)}",
            hint=DISPATCHER_HINT,
        ) from exc
    missing = [hook for hook in HOOKS if not callable(getattr(dispatcher, hook, None))]
    if missing:
        raise ConfigurationError(
            f"--dispatcher: {reference}(wm) returned a {type(dispatcher).__name__}, not a "
            f"dispatcher (no {', '.join(missing)})",
            hint=DISPATCHER_HINT,
        )
    return Forgiving(cast(Dispatcher, dispatcher))


def schema_at_head(wm: WorkManager) -> None:
    """Refuse to start on a schema behind the migrations (:class:`SchemaBehind`: ``error
    [schema_outdated]: … run `workmanager db upgrade```, exit 1), or a database that does
    not exist (:class:`DatabaseMissing`: no SQLite file, no PostgreSQL database; its hint
    says how to create it). A database that does not answer yet is not refused here: the
    server starts and ``/readyz`` says 503 until it does, as when it goes away later."""
    from .. import deployment
    from ..db.migrate import require_head

    deployment.one_process_only(wm.settings)
    try:
        require_head(wm.db)
        deployment.check(wm.db, wm.settings)  # settings every process must share
    except DatabaseMissing:
        raise
    except Unavailable as exc:
        log.warning("database not ready at start-up: %s", exc)


def check_bindable(host: str, port: int) -> None:
    """Bind ``host:port`` as uvicorn will (asyncio's ``create_server``: every address the
    host resolves to, ``SO_REUSEADDR``, IPv6 sockets IPv6-only), then let it go: an address
    in use (or not this machine's, or a port this user may not bind) is a
    :class:`ConfigurationError` naming it, not uvicorn's ``ERROR: [Errno 98] …`` and exit 3.
    One bind per address, before the server starts; a race with another process binding it
    in between is left to uvicorn."""
    import errno
    import socket

    shown = f"[{host}]:{port}" if ":" in host else f"{host or '*'}:{port}"
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (OSError, UnicodeError) as exc:
        raise ConfigurationError(
            f"--host: cannot resolve {host!r}: {first_line(exc)}",
            hint="give an address of this machine, e.g. 127.0.0.1 or 0.0.0.0",
        ) from exc
    bound: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            bound.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError as exc:
        hints = {
            errno.EADDRINUSE: "another process listens there: stop it, or choose another --port",
            errno.EACCES: "this user may not bind that port (below 1024 needs privileges): "
            "choose another --port",
            errno.EADDRNOTAVAIL: "--host is not an address of this machine: give one that "
            "is, e.g. 127.0.0.1 or 0.0.0.0",
        }
        reason = exc.strerror.lower() if exc.strerror else first_line(exc)
        raise ConfigurationError(
            f"cannot listen on {shown}: {reason}",
            details={"address": shown},
            hint=hints.get(exc.errno or 0, "choose another --host or --port"),
        ) from exc
    finally:
        for sock in bound:
            sock.close()


#: The server's log lines: timestamped (to line them up with the workers' logs).
LOG_FORMAT = "[%(asctime)s: %(levelname)s] %(name)s: %(message)s"


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=PORT)
@click.option(
    "--dispatcher",
    "dispatcher_ref",
    default="celery",
    show_default=True,
    help="how the API announces work: celery, none, or pkg.mod:factory(wm)",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
)
@json_errors_option
@pass_env
def serve(env: Env, host: str, port: int, dispatcher_ref: str, log_level: str) -> None:
    """Serve the HTTP API (and /openapi.json, /healthz, /readyz)."""
    for module in ("uvicorn", "fastapi", "jinja2"):  # a plain install has none of them
        import_extra(module, "workmanager serve needs the HTTP server", "api")
    import uvicorn

    from ..api import create_app
    from ..db import migrate  # noqa: F401  (alembic logs its plugins at INFO on import: before logging is set up)

    logging.basicConfig(level=log_level.upper(), format=LOG_FORMAT)
    tracing.configure(env.settings, "workmanager-api")  # before the engine is built
    wm = env.wm
    schema_at_head(wm)
    wm.dispatcher = build_dispatcher(dispatcher_ref, wm)
    warn_if_open(wm.settings, "the HTTP API")
    check_bindable(host, port)
    # SIGTERM: stop accepting, let in-flight requests finish for the grace period (then
    # they are cancelled, and answered 503: surface/middleware.CUT_OFF), then exit.
    # Approvals waiting for their apply answer at once (middleware.STOPPING), as when
    # their wait runs out.
    from ..surface import middleware

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            middleware.STOPPING.set()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        create_app(wm),
        host=host,
        port=port,
        log_level=log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=wm.settings.api_shutdown_grace_seconds,
    )
    Server(config).run()
