"""HTTP figures: checkout, heartbeat and submit through a real ``workmanager serve``,
beside /healthz.

    python -m bench.http [--clients 16] [--items 3200] [--backend database|redis] [--rounds 3]

Starts the API server (uvicorn, one process) on its own PostgreSQL database
(``wm_bench_http``), seeds queued items, then drives it with 16 concurrent keep-alive
clients: first ``GET /healthz`` (the trivial endpoint: the floor of this server, this
client and this machine), then ``POST /checkout`` until the items run out, then
``POST /items/{id}/heartbeat`` once per lease (no key, no progress: what an agent sends
most), then ``POST /items/{id}/submit`` (with an idempotency key) for every lease.
Prints requests/s and p50/p99 of each, the ratio to /healthz and the server process's
CPU time per request (a figure that other load on the machine moves less than the
rates), for each round (a fresh database and server), then the spread of the ratios over
the rounds. A benchmark: it measures, it does not assert.
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


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``; else None)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_phase(
    base: str, token: str, clients: int, per_client: int, call: Call, pid: int | None = None
) -> dict[str, Any]:
    """``clients`` threads, each ``per_client`` calls on its own keep-alive connection;
    with the server's ``pid``, also the server's CPU time per request."""
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
    cpu_before = cpu_seconds(pid) if pid else None
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    cpu_after = cpu_seconds(pid) if pid else None
    latencies.sort()
    n = len(latencies)
    cpu = None
    if cpu_before is not None and cpu_after is not None:
        cpu = (cpu_after - cpu_before) / n * 1e3
    return {
        "req_per_s": n / wall,
        "p50_ms": latencies[n // 2] * 1e3,
        "p99_ms": latencies[min(int(n * 0.99), n - 1)] * 1e3,
        "server_cpu_ms": cpu,
        "n": n,
        "errors": errors[0],
    }


def measure(
    base: str, token: str, clients: int, items: int, pid: int | None = None
) -> dict[str, dict[str, Any]]:
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

    def heartbeat(c: httpx.Client, i: int) -> bool:
        if i not in leases:
            return False
        item_id, lease_token = leases[i]
        headers = {"X-Lease-Token": lease_token}
        r = c.post(f"{PREFIX}/items/{item_id}/heartbeat", json={}, headers=headers)
        return r.status_code == 200

    def submit(c: httpx.Client, i: int) -> bool:
        if i not in leases:
            return False
        item_id, lease_token = leases[i]
        headers = {"X-Lease-Token": lease_token, "X-Idempotency-Key": uuid.uuid4().hex}
        body = {"result": {"answer": "42"}}
        r = c.post(f"{PREFIX}/items/{item_id}/submit", json=body, headers=headers)
        return r.status_code == 202

    out = {"healthz": run_phase(base, token, clients, per_client, healthz, pid)}
    out["checkout"] = run_phase(base, token, clients, per_client, checkout, pid)
    out["heartbeat"] = run_phase(base, token, clients, per_client, heartbeat, pid)
    out["submit"] = run_phase(base, token, clients, per_client, submit, pid)
    return out


def report(figures: dict[str, dict[str, Any]], clients: int, backend: str) -> None:
    floor = figures["healthz"]["req_per_s"]
    print(f"HTTP API, {clients} concurrent clients, lease backend {backend}, one uvicorn process")
    print(
        f"{'endpoint':<12}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'vs /healthz':>13}"
        f"{'srv cpu ms':>12}{'errors':>8}"
    )
    for name, f in figures.items():
        ratio = f["req_per_s"] / floor
        cpu = f.get("server_cpu_ms")
        cpu_text = f"{cpu:>12.2f}" if cpu is not None else f"{'-':>12}"
        print(
            f"{name:<12}{f['req_per_s']:>10.0f}{f['p50_ms']:>10.2f}{f['p99_ms']:>10.2f}"
            f"{ratio:>12.1%}{cpu_text}{f['errors']:>8}"
        )


def spread(rounds: list[dict[str, dict[str, Any]]]) -> None:
    """Each endpoint's ratio to /healthz (and server CPU per request) over the rounds."""
    print(f"over {len(rounds)} rounds (min / median / max):")
    for name in ("checkout", "heartbeat", "submit"):
        ratios = sorted(r[name]["req_per_s"] / r["healthz"]["req_per_s"] for r in rounds)
        cpus = sorted(r[name]["server_cpu_ms"] or 0.0 for r in rounds)
        mid = len(rounds) // 2
        print(
            f"  {name:<10} vs /healthz {ratios[0]:.1%} / {ratios[mid]:.1%} / {ratios[-1]:.1%}"
            f"   server CPU {cpus[0]:.2f} / {cpus[mid]:.2f} / {cpus[-1]:.2f} ms/request"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--items", type=int, default=3200)
    parser.add_argument("--backend", choices=["database", "redis"], default="database")
    parser.add_argument("--rounds", type=int, default=3, help="fresh database and server each")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    rounds = []
    for _ in range(max(1, args.rounds)):
        url, token = prepare(args.items)
        proc, base = start_server(url, args.backend)
        try:
            figures = measure(base, token, args.clients, args.items, proc.pid)
        finally:
            proc.terminate()
            proc.wait(10)
            _admin("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        report(figures, args.clients, args.backend)
        rounds.append(figures)
    if len(rounds) > 1:
        spread(rounds)
    if args.json:
        Path(args.json).write_text(json.dumps(rounds if len(rounds) > 1 else rounds[0], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
