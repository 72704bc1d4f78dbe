"""Is this process ready to serve? The database (reachable, its schema at the migrations'
head), the broker and (when used) Redis, and its settings the deployment's
(:mod:`workmanager.deployment`).

The reasons a dependency is down (driver messages: host names, ports, user names) are
for operators: :func:`names_only` is what an unidentified caller of ``/readyz`` sees.

Each probe runs in a thread of its own and gets :data:`TIMEOUT_SECONDS`: a server that
is frozen rather than gone (stopped, swapping, a network that drops packets) accepts the
connection and never answers, and ``/readyz`` waited as long as the freeze lasted, then
said "ok". A probe still waiting is left to finish in its thread; while it waits, the
next checks of that component say it is down without starting another."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from . import deployment
from .errors import Unavailable, WorkManagerError
from .services.context import ServiceContext
from .settings import Settings

TIMEOUT_SECONDS = 2.0
#: A Redis Cluster's hash slots, all of which a ready cluster serves.
SLOTS = 16384
#: The probes under way: (context, component) -> when each started.
_WAITING: dict[tuple[int, str], list[float]] = {}
_WAITING_LOCK = threading.Lock()


def _broker(settings: Settings) -> None:
    from kombu import Connection  # type: ignore[attr-defined]

    if settings.broker_url.startswith("sqla+"):
        _database_broker(settings.broker_url)
        return
    connection = Connection(settings.broker_url, connect_timeout=TIMEOUT_SECONDS)  # type: ignore[no-untyped-call]
    with connection as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, timeout=TIMEOUT_SECONDS)
        if settings.broker_url.startswith(("redis://", "rediss://")):
            # a Redis broker out of memory, or a replica, answers a connection and refuses
            # every message sent: said ready while every announcement failed
            conn.default_channel.client.set("workmanager:readyz", "1", px=10_000)


def _database_broker(url: str) -> None:
    """A broker in a database (the embedded default's SQLite file, ``QUEUE_CONNECTION=
    database``): kombu's transport connects lazily, so its connection said "ok" for a
    file that could not be opened (a process started from another directory than ``db
    upgrade`` ran in) while every message sent failed. The database itself is opened."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    from .db.embedded import NO_EMBEDDED_DIRECTORY, missing_embedded_directory

    missing = missing_embedded_directory(url)
    if missing is not None:
        raise Unavailable(missing, hint=NO_EMBEDDED_DIRECTORY)
    engine = create_engine(url.removeprefix("sqla+"), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    finally:
        engine.dispose()


def _redis(settings: Settings) -> None:
    import redis

    from .leases.keys import ClusterKeys, RedisKeys
    from .leases.redis import writable

    if settings.redis_cluster:  # any listed node answering, and every slot served
        from .leases.redis_cluster import connect_cluster

        client = connect_cluster(settings.redis_url, TIMEOUT_SECONDS)
    else:
        client = redis.Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=TIMEOUT_SECONDS,
            socket_timeout=TIMEOUT_SECONDS,
        )
    keys = (
        ClusterKeys(settings.redis_prefix)
        if settings.redis_cluster
        else RedisKeys(settings.redis_prefix)
    )
    try:
        client.ping()
        if settings.redis_cluster:  # a node answering is not enough: every slot served
            info = client.cluster_info()
            state = info.get("cluster_state")
            if state != "ok":
                raise Unavailable(f"the Redis Cluster's state is {state!r}: a master is down")
            # with cluster-require-full-coverage off the state stays ok while slots are not
            served = int(info.get("cluster_slots_ok", SLOTS))
            if served < SLOTS:
                raise Unavailable(
                    f"only {served} of the Redis Cluster's {SLOTS} slots are served:"
                    " a master is down"
                )
        elif client.info("cluster").get("cluster_enabled"):
            raise Unavailable(
                "the server is a Redis Cluster node, spoken to without cluster mode",
                hint="set WORK_MANAGER_REDIS_CLUSTER=true and list its nodes",
            )
        writable(client, keys)  # a replica, a full or snapshot-failing server answer PING
    finally:
        client.close()


def _database(ctx: ServiceContext) -> None:
    from .db.migrate import require_head  # alembic, imported on the first probe

    ctx.db.ping()
    require_head(ctx.db)  # a schema behind the code: not ready, "run `workmanager db upgrade`"


def check(ctx: ServiceContext) -> dict[str, str]:
    """``{component: "ok" | "down: <reason>"}`` for every backing service in use."""
    checks: dict[str, Callable[[], None]] = {
        "database": lambda: _database(ctx),
        "broker": lambda: _broker(ctx.settings),
    }
    if ctx.settings.lease_backend == "redis":
        checks["redis"] = lambda: _redis(ctx.settings)
    results = _bounded(id(ctx), checks)
    if results["database"] == "ok":
        # settings every process shares: a process started while the database was down
        # compares (or records) them on its first probe that reaches it
        try:
            deployment.check(ctx.db, ctx.settings)
            results["deployment"] = "ok"
        except WorkManagerError as exc:
            results["deployment"] = f"differs: {reason(exc)}"[:500]
    return results


def _bounded(owner: int, checks: dict[str, Callable[[], None]]) -> dict[str, str]:
    """Run the probes at once, each in a thread; what each said within the timeout. A
    component with a probe waiting longer than the timeout (a frozen server) is said to
    be down without another; probes of concurrent checks that are not late run side by
    side (two ``/readyz`` at once each probe)."""
    answers: dict[str, str] = {}
    threads: list[tuple[str, threading.Thread]] = []
    now = time.monotonic()
    late = now - TIMEOUT_SECONDS - 0.5
    for name, probe in checks.items():
        key = (owner, name)
        with _WAITING_LOCK:
            started = _WAITING.setdefault(key, [])
            stuck = [t for t in started if t < late]
            if not stuck:
                started.append(now)
        if stuck:
            answers[name] = f"down: no answer for {now - min(stuck):.0f} s (a probe still waits)"
            continue
        thread = threading.Thread(
            target=_probe, args=(key, now, probe, answers), name=f"readyz-{name}", daemon=True
        )
        thread.start()
        threads.append((name, thread))
    deadline = now + TIMEOUT_SECONDS + 0.5  # the probes' own timeouts come first
    for _, thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    for name, _ in threads:
        answers.setdefault(name, f"down: no answer within {TIMEOUT_SECONDS:g} s")
    return {name: answers[name] for name in checks}


def _probe(
    key: tuple[int, str], started: float, probe: Callable[[], None], answers: dict[str, str]
) -> None:
    try:
        probe()
        said = "ok"
    except Exception as exc:  # any failure means "not ready", with its reason
        said = f"down: {reason(exc)}"[:300]
    finally:
        with _WAITING_LOCK:
            waiting = _WAITING.get(key, [])
            if started in waiting:
                waiting.remove(started)
            if not waiting:
                _WAITING.pop(key, None)
    answers.setdefault(key[1], said)


def reason(exc: Exception) -> str:
    """Why a probe failed, for a person: the project's error as its code, message and
    hint; a library's as its exception's name (``ConnectionError: …``), which says more
    than its text alone."""
    if isinstance(exc, WorkManagerError):
        hint = f"; {exc.hint}" if exc.hint else ""
        return f"[{exc.code}] {exc.message}{hint}"
    return f"{type(exc).__name__}: {exc}"


def names_only(checks: dict[str, str]) -> dict[str, str]:
    """``{component: "ok" | "down"}``: which dependency is down, without the reason."""
    return {name: "ok" if result == "ok" else "down" for name, result in checks.items()}
