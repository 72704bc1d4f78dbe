"""HTTP figures: checkout and submit through a real ``workmanager serve``, beside /healthz.

    python -m bench.http [--clients 16] [--items 3000] [--backend database|redis]

Starts the API server (uvicorn, one process) on its own PostgreSQL database
(``wm_bench_http``), seeds queued items, then drives it with 16 concurrent keep-alive
clients: first ``GET /healthz`` (the trivial endpoint: the floor of this server, this
client and this machine), then ``POST /checkout`` until the items run out, then
``POST /items/{id}/submit`` for every lease. Prints requests/s and p50/p99 of each, and
the ratio to /healthz. A benchmark: it measures, it does not assert.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql

from workmanager import ApplyContext, Diff, OrderType, OrderView, Registry, Settings, WorkManager
from workmanager.db.models import Base
from workmanager.services.tokens import TokenService

ROOT = Path(__file__).resolve().parent.parent
ORDER_TYPE = "bench.http"
DB_NAME = os.environ.get("WM_BENCH_HTTP_DB", "wm_bench_http")
PG_HOST_URL = os.environ.get("WM_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")
PG_ADMIN = os.environ.get(
    "WM_BENCH_PG_ADMIN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
)
REDIS_URL = os.environ.get("WM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
PREFIX = "/agent/work"


class HttpBenchOrder(OrderType):
    """One item per order; any object is a valid result; apply does nothing."""

    type = ORDER_TYPE

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        return Diff.empty()


def register(registry: Registry) -> None:
    """Loaded by the server through WORK_MANAGER_ORDER_TYPES=bench.http."""
    registry.register(HttpBenchOrder())


# --- setup ------------------------------------------------------------------------------
def _admin(statement: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(sql.SQL(statement).format(sql.Identifier(DB_NAME)))


def prepare(items: int) -> tuple[str, str]:
    """A fresh database with ``items`` queued items and a token; returns (url, token)."""
    _admin("DROP DATABASE IF EXISTS {} WITH (FORCE)")
    _admin("CREATE DATABASE {}")
    url = f"{PG_HOST_URL}/{DB_NAME}"
    wm = WorkManager(
        Settings(database_url=url, metrics_driver="null"), registry=Registry([HttpBenchOrder()])
    )
    Base.metadata.create_all(wm.db.engine)
    token = TokenService(wm.ctx).create("bench", "admin")[0]
    for n in range(items):
        wm.propose(ORDER_TYPE, {"n": n})
    wm.close()
    return url, token


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(url: str, backend: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORK_MANAGER_")}
    env.update(
        PYTHONPATH=str(ROOT),
        WORK_MANAGER_DATABASE_URL=url,
        WORK_MANAGER_ORDER_TYPES="bench.http",
        WORK_MANAGER_METRICS_DRIVER="null",
        WORK_MANAGER_LEASE_BACKEND=backend,
        WORK_MANAGER_REDIS_URL=REDIS_URL,
        WORK_MANAGER_REDIS_PREFIX=f"wmbenchhttp:{uuid.uuid4().hex[:6]}:",
    )
    cmd = [sys.executable, "-c", "from workmanager.cli import main; main()", "serve"]
    cmd += ["--port", str(port), "--dispatcher", "none", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the API server did not start")


# --- load -------------------------------------------------------------------------------
Call = Callable[[httpx.Client, int], bool]


def run_phase(base: str, token: str, clients: int, per_client: int, call: Call) -> dict[str, Any]:
    """``clients`` threads, each ``per_client`` calls on its own keep-alive connection."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def worker(w: int) -> None:
        headers = {"Authorization": f"Bearer {token}", "X-Agent-ID": f"bench-agent-{w}"}
        mine: list[float] = []
        with httpx.Client(base_url=base, headers=headers, timeout=60) as c:
            c.get("/healthz")  # open the connection before the clock starts
            barrier.wait()
            for i in range(per_client):
                t = time.perf_counter()
                ok = call(c, w * per_client + i)
                mine.append(time.perf_counter() - t)
                if not ok:
                    errors[0] += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    latencies.sort()
    n = len(latencies)
    return {
        "req_per_s": n / wall,
        "p50_ms": latencies[n // 2] * 1e3,
        "p99_ms": latencies[min(int(n * 0.99), n - 1)] * 1e3,
        "n": n,
        "errors": errors[0],
    }


def measure(base: str, token: str, clients: int, items: int) -> dict[str, dict[str, Any]]:
    per_client = items // clients
    leases: dict[int, tuple[str, str]] = {}

    def healthz(c: httpx.Client, i: int) -> bool:
        return c.get("/healthz").status_code == 200

    def checkout(c: httpx.Client, i: int) -> bool:
        r = c.post(f"{PREFIX}/checkout", json={})
        if r.status_code != 200:
            return False
        item = r.json()["item"]
        leases[i] = (item["id"], str(item["lease_token"]))
        return True

    def submit(c: httpx.Client, i: int) -> bool:
        if i not in leases:
            return False
        item_id, lease_token = leases[i]
        headers = {"X-Lease-Token": lease_token, "X-Idempotency-Key": uuid.uuid4().hex}
        body = {"result": {"answer": "42"}}
        r = c.post(f"{PREFIX}/items/{item_id}/submit", json=body, headers=headers)
        return r.status_code == 202

    out = {"healthz": run_phase(base, token, clients, per_client, healthz)}
    out["checkout"] = run_phase(base, token, clients, per_client, checkout)
    out["submit"] = run_phase(base, token, clients, per_client, submit)
    return out


def report(figures: dict[str, dict[str, Any]], clients: int, backend: str) -> None:
    floor = figures["healthz"]["req_per_s"]
    print(f"HTTP API, {clients} concurrent clients, lease backend {backend}, one uvicorn process")
    print(
        f"{'endpoint':<12}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'vs /healthz':>13}{'errors':>8}"
    )
    for name, f in figures.items():
        ratio = f["req_per_s"] / floor
        print(
            f"{name:<12}{f['req_per_s']:>10.0f}{f['p50_ms']:>10.2f}{f['p99_ms']:>10.2f}"
            f"{ratio:>12.1%}{f['errors']:>8}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--items", type=int, default=3200)
    parser.add_argument("--backend", choices=["database", "redis"], default="database")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    url, token = prepare(args.items)
    proc, base = start_server(url, args.backend)
    try:
        figures = measure(base, token, args.clients, args.items)
    finally:
        proc.terminate()
        proc.wait(10)
        _admin("DROP DATABASE IF EXISTS {} WITH (FORCE)")
    report(figures, args.clients, args.backend)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
