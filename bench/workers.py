"""Worker memory: our control worker and agent consumer beside a bare Celery worker.

    python -m bench.workers [--rounds 3] [--tasks 30] [--pool threads] [--concurrency 4]
                            [--json var/bench-workers.json]

Each round starts, one after the other, worker processes on the same Redis broker
(``WM_BENCH_REDIS_URL``, db 12, on queues of their own named ``wmbench-workers-…``, whose
keys are deleted at the end) with the same pool and concurrency (``--pool threads -c 4``
by default: the agent's line in the Procfile, and how ``bench.pipeline`` runs both):

- **bare**: ``celery -A bench.bare_worker worker``, a minimal app with one no-op task
  (``bench/bare_worker.py``), sent ``--tasks`` messages;
- **bare + libraries** (for information): the same with SQLAlchemy's ORM, psycopg and an
  engine, each task a ``SELECT 1`` (``bench/bare_sql_worker.py``): the part of the
  distance that is the storage libraries', not our code's;
- **control**: ``celery -A tasks worker`` (the Procfile's worker line) and
- **agent**: ``python -m workers.agent`` (``workmanager agent``), together, with
  ``--tasks`` single-item auto-approved orders (``tests.support.pipeline``'s
  ``e2e.echo``) sent to the control queue, each order three control tasks (create, the
  approval check, apply) and one agent task, on a PostgreSQL database of its own
  (``wm_bench_workers``, migrated, dropped at the end).

Each process's ``VmRSS`` (``/proc/<pid>/status``, with its pool children's for prefork)
is read when it logs ``ready`` and again once its tasks have run; the figure is the
latter, over the bare worker's, the median of the rounds with their spread. ``Pss`` is
kept in the JSON for information (it splits pages a prefork parent shares with its
children). The settings are the defaults the Procfile runs with (metrics driver ``log``,
tracing off). Exits 0 whether or not the target is met.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import redis
from celery import Celery

from .common import REPO_ROOT, Config, create_database, create_schema, drop_database

DB = "wm_bench_workers"
ORDER_TYPE = "e2e.echo"
TARGET = 1.3
Sample = dict[str, float]


def proc_mib(pid: int, field: str) -> float:
    """``field`` (``VmRSS`` from status, ``Pss`` from smaps_rollup) of a process and its
    children, in MiB."""
    source = "status" if field.startswith("Vm") else "smaps_rollup"
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{p}/{source}").read_text().splitlines():
                if line.startswith(f"{field}:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _children(pid: int) -> list[int]:
    try:
        kids = [int(k) for k in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return kids + [g for k in kids for g in _children(k)]


def memory(pid: int) -> Sample:
    return {"rss_mib": proc_mib(pid, "VmRSS"), "pss_mib": proc_mib(pid, "Pss")}


class Run:
    """The worker processes of one side of a round, their logs, and their end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, name: str, command: list[str], env: dict[str, str]) -> None:
        self.procs[name] = subprocess.Popen(
            command,
            env=env,
            cwd=REPO_ROOT,
            stdout=(self.logs / f"{name}.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self, name: str) -> bytes:
        return (self.logs / f"{name}.log").read_bytes()

    def wait(self, what: str, done: Callable[[], bool], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited ({p.returncode}): {self.logs / name}.log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: not within {timeout:.0f} s (logs in {self.logs})")
            time.sleep(0.05)

    def ready(self) -> None:
        self.wait("workers ready", lambda: all(b" ready." in self.log(n) for n in self.procs))

    def memory(self) -> dict[str, Sample]:
        return {name: memory(p.pid) for name, p in self.procs.items()}

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def worker_args(pool: str, concurrency: int, node: str) -> list[str]:
    return [
        "-P",
        pool,
        "-c",
        str(concurrency),
        "-n",
        f"{node}@%h",
        "--without-gossip",
        "--without-mingle",
        "--loglevel",
        "INFO",
    ]


#: The floors: (name, Celery app module, its task). ``bare`` is the target's basis;
#: ``bare_sql`` (the bare worker with SQLAlchemy's ORM, psycopg and an engine) is shown for
#: information: what of the distance is the storage libraries', what is our code's.
FLOORS = (
    ("bare", "bench.bare_worker", "bare.noop"),
    ("bare_sql", "bench.bare_sql_worker", "bare.select"),
)


def bare_round(
    cfg: Config, args: argparse.Namespace, token: str, logs: Path, floor: tuple[str, str, str]
) -> dict[str, Any]:
    """A floor worker: ready, then ``args.tasks`` of its tasks, then its memory."""
    name, module, task = floor
    queue = f"{token}.{name}"
    env = {
        **os.environ,
        "WM_BENCH_BARE_BROKER": cfg.redis_url,
        "WM_BENCH_BARE_DB": cfg.db_url,
        "PYTHONPATH": str(REPO_ROOT),
    }
    run = Run(logs)
    cmd = [sys.executable, "-m", "celery", "-A", module, "worker", "-Q", queue]
    run.spawn(name, cmd + worker_args(args.pool, args.concurrency, f"{name}-{token}"), env)
    try:
        run.ready()
        at_ready = run.memory()[name]
        producer = Celery("producer", broker=cfg.redis_url)
        for n in range(args.tasks):
            producer.send_task(task, args=[n], queue=queue)
        run.wait(f"{name} tasks", lambda: run.log(name).count(b" succeeded in ") >= args.tasks)
        time.sleep(0.5)
        return {"ready": at_ready, "after": run.memory()[name], "tasks": args.tasks}
    finally:
        run.stop()


def ours_round(cfg: Config, args: argparse.Namespace, token: str, logs: Path) -> dict[str, Any]:
    """Our control worker and agent consumer: ready, then ``args.tasks`` orders through
    both to ``completed``, then their memory."""
    control, apply, prefix = f"{token}.control", f"{token}.apply", f"{token}.agents."
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WORK_MANAGER_")},
        "WORK_MANAGER_DATABASE_URL": cfg.db_url,
        "WORK_MANAGER_BROKER_URL": cfg.redis_url,
        "WORK_MANAGER_CONTROL_QUEUE": control,
        "WORK_MANAGER_APPLY_QUEUE": apply,
        "WORK_MANAGER_AGENT_QUEUE_PREFIX": prefix,
        "WORK_MANAGER_ORDER_TYPES": "tests.support.pipeline",
        "PYTHONPATH": str(REPO_ROOT),
    }
    run = Run(logs)
    worker = [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-Q", f"{control},{apply}"]
    run.spawn("control", worker + worker_args(args.pool, args.concurrency, f"ctl-{token}"), env)
    agent = [sys.executable, "-m", "workers.agent", "--type", ORDER_TYPE]
    agent += ["--handler", "tests.support.pipeline:echo_handler", "--agent-id", f"agt-{token}"]
    agent += ["--pool", args.pool, "--concurrency", str(args.concurrency)]
    run.spawn("agent", agent, env)
    try:
        with psycopg.connect(cfg.dsn(), autocommit=True) as conn:
            before = _completed(conn)
            run.ready()
            at_ready = run.memory()
            producer = Celery("producer", broker=cfg.redis_url)
            for n in range(args.tasks):
                kwargs = {"type": ORDER_TYPE, "payload": {"n": n}, "order_id": str(uuid.uuid4())}
                producer.send_task("workmanager.orders.create", kwargs=kwargs, queue=control)
            run.wait("orders completed", lambda: _completed(conn) - before >= args.tasks)
            time.sleep(0.5)
        after = run.memory()
        return {
            name: {"ready": at_ready[name], "after": after[name], "tasks": tasks}
            for name, tasks in (("control", 3 * args.tasks), ("agent", args.tasks))
        }
    finally:
        run.stop()


def _completed(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM work_orders WHERE state = 'completed'").fetchone()
    return int(row[0]) if row else 0


def forget_broker_keys(cfg: Config, token: str) -> None:
    """Delete this run's queues and bindings from the broker's database."""
    client = redis.Redis.from_url(cfg.redis_url)
    try:
        for key in list(client.scan_iter(match=f"*{token}*", count=1000)):
            client.delete(key)
        for key in list(client.scan_iter(match="_kombu.binding*", count=1000)):
            kind = client.type(key)
            if kind == b"set":
                stale = [m for m in client.smembers(key) if token.encode() in m]
                if stale:
                    client.srem(key, *stale)
            elif kind == b"zset":  # _kombu.binding_deadlines: exchange names
                stale = [m for m in client.zrange(key, 0, -1) if token.encode() in m]
                if stale:
                    client.zrem(key, *stale)
    finally:
        client.close()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="rounds (the median is kept)")
    ap.add_argument("--tasks", type=int, default=30, help="bare tasks, and our orders, a round")
    ap.add_argument("--pool", default="threads", choices=["threads", "prefork", "solo"])
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--json", default=str(REPO_ROOT / "var" / "bench-workers.json"))
    args = ap.parse_args(argv)
    cfg = dataclasses.replace(Config(), pg_db=DB)
    token = f"wmbench-workers-{uuid.uuid4().hex[:8]}"
    logs = REPO_ROOT / "var" / "bench-logs" / "workers"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"bench.workers: database {DB}, broker {cfg.redis_url}", file=sys.stderr, flush=True)
    create_database(cfg, DB)
    rounds: dict[str, list[dict[str, Any]]] = {
        "bare": [],
        "bare_sql": [],
        "control": [],
        "agent": [],
    }
    try:
        create_schema(cfg)
        for k in range(args.rounds):
            print(f"bench.workers: round {k + 1}/{args.rounds}", file=sys.stderr, flush=True)
            for floor in FLOORS:
                rounds[floor[0]].append(bare_round(cfg, args, token, logs, floor))
            ours = ours_round(cfg, args, token, logs)
            rounds["control"].append(ours["control"])
            rounds["agent"].append(ours["agent"])
    finally:
        forget_broker_keys(cfg, token)
        drop_database(cfg, DB)
    result = report(args, rounds)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    return result


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def report(args: argparse.Namespace, rounds: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Print each worker's memory after its tasks beside the bare worker's; return it all."""
    after = {name: [r["after"]["rss_mib"] for r in runs] for name, runs in rounds.items()}
    ready = {name: [r["ready"]["rss_mib"] for r in runs] for name, runs in rounds.items()}
    floor = _median(after["bare"])
    libraries = _median(after["bare_sql"])
    print(
        f"worker memory (VmRSS once its tasks ran; pool {args.pool}, concurrency "
        f"{args.concurrency}; median of {args.rounds} rounds)"
    )
    out: dict[str, Any] = {"pool": args.pool, "concurrency": args.concurrency, "workers": {}}
    for name, label in (
        ("bare", "bare Celery worker"),
        ("bare_sql", "  + SQLAlchemy ORM, psycopg (info)"),
        ("control", "control worker (celery -A tasks)"),
        ("agent", "agent worker (workers.agent)"),
    ):
        mib = _median(after[name])
        ratio = mib / floor
        spread = ", ".join(f"{v:.1f}" for v in after[name])
        tasks = rounds[name][0]["tasks"]
        at_ready = _median(ready[name])
        line = f"{label:34s} {mib:6.1f} MiB  ready {at_ready:6.1f} MiB  {tasks:3d} tasks"
        if name == "bare_sql":
            line += f"  {ratio:.2f}x bare"
        elif name != "bare":
            verdict = "met" if ratio <= TARGET else "missed"
            line += f"  {ratio:.2f}x bare (target <= {TARGET}x: {verdict}),"
            line += f" {mib - libraries:+.1f} MiB over bare + libraries"
        print(f"{line}  (rounds: {spread})")
        out["workers"][name] = {
            "rss_mib": mib,
            "ratio_to_bare": ratio,
            "ready_rss_mib": at_ready,
            "pss_mib": _median([r["after"]["pss_mib"] for r in rounds[name]]),
            "tasks": tasks,
            "rounds": rounds[name],
        }
    return out


if __name__ == "__main__":
    main()
