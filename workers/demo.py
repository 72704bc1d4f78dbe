"""``workmanager demo``: the real pipeline on the configured stack (SPEC §10).

Starts a control-plane Celery worker and an agent consumer as real subprocesses, enqueues
orders through the producer API, and follows them to ``completed`` with a progress bar,
then prints a summary read from the database and from the workers' metric log lines.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import select

from workmanager import Settings, WorkManager, deployment
from workmanager.cli.render import reporting_errors
from workmanager.db.migrate import upgrade
from workmanager.db.models import Event, Item
from workmanager.db.session import display_url
from workmanager.demo import completed, existing, payload
from workmanager.demo.types import ResearchOrder

METRIC = re.compile(r"\[Metric\] (\w+) (\S+) = ([\d.e+-]+)")
DEMO_TYPES = "workmanager.demo.types"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * q), len(ordered) - 1)] if ordered else 0.0


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    types = [t for t in env.get("WORK_MANAGER_ORDER_TYPES", "").split(",") if t]
    env["WORK_MANAGER_ORDER_TYPES"] = ",".join(
        [*types, DEMO_TYPES] if DEMO_TYPES not in types else types
    )
    env.setdefault("WORK_MANAGER_AGENT_MODEL", "demo-model")
    env.setdefault("WORK_MANAGER_AGENT_VERSION", "1.0.0")
    return env


def start_workers(
    logs: Path, agents: int, procs: list[subprocess.Popen[bytes]] | None = None
) -> list[subprocess.Popen[bytes]]:
    """Start the control worker and the agent, each added to ``procs`` as it starts (so
    a caller stopping them knows every one started)."""
    logs.mkdir(parents=True, exist_ok=True)
    env = child_env()
    commands = {
        "control": [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tasks",
            "worker",
            "-Q",
            "workmanager,workmanager.apply",
            "-c",
            "2",
            "-P",
            "threads",
            "-n",
            "control@%h",
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "INFO",
        ],
        "agent": [
            sys.executable,
            "-m",
            "workers.agent",
            "--type",
            ResearchOrder.type,
            "--handler",
            "workers.examples:research",
            "--concurrency",
            str(agents),
            "--agent-id",
            "demo-agent-1",
        ],
    }
    procs = [] if procs is None else procs
    for name, command in commands.items():
        with open(logs / f"demo-{name}.log", "wb") as out:
            procs.append(subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT))
    return procs


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:  # its warm shutdown outlasted the bound
            proc.kill()
            proc.wait()  # reaped: gone when the demo exits, not still running orphaned


def metrics_seen(logs: Path) -> Counter[str]:
    seen: Counter[str] = Counter()
    for path in logs.glob("demo-*.log"):
        for match in METRIC.finditer(path.read_text(errors="replace")):
            # counters add their value; gauges and histograms count observations
            seen[match.group(2)] += float(match.group(3)) if match.group(1) == "COUNTER" else 1
    return seen


def lease_waits(wm: WorkManager, order_ids: list[uuid.UUID]) -> list[float]:
    """Seconds from an item's creation to its first lease."""
    with wm.db.transaction() as s:
        rows = s.execute(
            select(Item.created_at, Event.created_at)
            .join(Event, Event.item_id == Item.id)
            .where(Item.order_id.in_(order_ids), Event.event == "leased")
        ).all()
    return [(leased - created).total_seconds() for created, leased in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="workmanager demo")
    parser.add_argument("--orders", type=int, default=30)
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=240)
    parser.add_argument("--json", action="store_true", help="the summary as JSON on stdout")
    args = parser.parse_args(argv)
    os.environ.update(child_env())
    console = Console(stderr=args.json)  # with --json, stdout is the summary alone
    settings = Settings.from_env()
    wm = WorkManager(settings)
    upgrade(wm.db)
    # the demo starts every process itself with these settings: on a database whose
    # deployment has others, it says so and stops (its workers would refuse to start),
    # rather than change a real deployment's record
    deployment.check(wm.db, settings)
    logs = Path("var/log")
    for old in logs.glob("demo-*.log"):
        old.unlink()
    console.print(
        f"[bold]workmanager demo[/]: database {display_url(settings.database_url)}, broker "
        f"{display_url(settings.broker_url)}, leases {settings.lease_backend}, metrics "
        f"{settings.metrics_driver}"
    )
    from tasks.producer import enqueue_order, producer_registry

    # the producer's order types loaded first: a SIGTERM arriving while a module's
    # register() ran was taken for that hook's failure, and the demo ran on regardless
    producer_registry()
    # stopped by a signal (SIGTERM from a supervisor, SIGHUP from a closed terminal), the
    # demo stops its workers first: they were left running, orphaned, busy for good
    for stop in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, _stopped)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with _signals_held():  # a stop while a worker starts: it is stopped with the rest
            start_workers(logs, args.agents, procs)
        started = time.perf_counter()
        ids = [enqueue_order(ResearchOrder.type, payload(n)) for n in range(args.orders)]
        done = _follow(console, wm, ids, args.timeout)
    finally:
        for stop in (signal.SIGTERM, signal.SIGHUP):  # the workers' stop is bounded (15 s)
            signal.signal(stop, signal.SIG_IGN)
        stop_workers(procs)
    elapsed = time.perf_counter() - started
    summary = _summary(wm, ids, done, elapsed, logs)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_summary(console, summary)
    if done < len(ids):
        console.print(f"[red]only {done} of {len(ids)} orders completed; see {logs}/[/]")
        if not existing(wm, ids):
            console.print(
                "[red]none of the orders reached this database: their messages were taken"
                " by another consumer of the broker (another deployment's worker on"
                f" {display_url(wm.settings.broker_url)}?), or never delivered[/]"
            )
        return 1
    return 0


def _stopped(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # through main's ``finally``: the workers are stopped


@contextmanager
def _signals_held() -> Iterator[None]:
    """The signals that stop the demo, held while its workers start, then acted on: one
    that came while a worker's ``Popen`` ran (its process forked, its object not yet
    returned) left that worker running, orphaned (a loaded machine's test run)."""
    caught: list[int] = []
    stops = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
    kept = {s: signal.signal(s, lambda signum, _frame: caught.append(signum)) for s in stops}
    try:
        yield
    finally:
        for stop, handler in kept.items():
            signal.signal(stop, handler)
    if caught and caught[0] == signal.SIGINT:
        raise KeyboardInterrupt
    if caught:
        raise SystemExit(128 + caught[0])


def _follow(console: Console, wm: WorkManager, ids: list[uuid.UUID], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    with Progress(
        TextColumn("orders completed"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("orders", total=len(ids))
        done = 0
        while done < len(ids) and time.monotonic() < deadline:
            time.sleep(0.25)
            done = completed(wm, ids)
            progress.update(task, completed=done)
    return done


#: What to try after the demo, printed under its summary.
NEXT_STEPS = (
    "look at an order: workmanager orders list, then workmanager orders show <id>",
    "keep the pipeline running (honcho start -p 8000 with the repository's Procfile, or its"
    " processes by hand: docs/operations.md), then enqueue your own:"
    " WORK_MANAGER_ORDER_TYPES=workmanager.demo.types workmanager orders create"
    """ --type demo.research --payload '{"company": "Acme"}' --wait""",
    "write your own order type: workmanager make order-type my.type -o my_type.py"
    " (README, the tour)",
)


def _summary(
    wm: WorkManager, ids: list[uuid.UUID], done: int, elapsed: float, logs: Path
) -> dict[str, Any]:
    waits = lease_waits(wm, ids)
    return {
        "orders_enqueued": len(ids),
        "orders_completed": done,
        "leases_granted": len(waits),
        "lease_latency_p50_ms": round(percentile(waits, 0.5) * 1e3),
        "lease_latency_p99_ms": round(percentile(waits, 0.99) * 1e3),
        "wall_seconds": round(elapsed, 1),
        "metrics": dict(sorted(metrics_seen(logs).items())),
        "logs": sorted(str(p) for p in logs.glob("demo-*.log")),
        "next_steps": list(NEXT_STEPS),
    }


def _print_summary(console: Console, summary: dict[str, Any]) -> None:
    table = Table(title="demo summary")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("orders enqueued", str(summary["orders_enqueued"]))
    table.add_row("orders completed", str(summary["orders_completed"]))
    table.add_row("leases granted", str(summary["leases_granted"]))
    table.add_row("lease latency p50 (enqueue → lease)", f"{summary['lease_latency_p50_ms']} ms")
    table.add_row("lease latency p99 (enqueue → lease)", f"{summary['lease_latency_p99_ms']} ms")
    table.add_row("wall time", f"{summary['wall_seconds']:.1f} s")
    for name, total in summary["metrics"].items():
        table.add_row(f"metric {name}", f"{total:g}")
    console.print(table)
    console.print("logs: " + ", ".join(summary["logs"]))
    console.print("next steps:")
    for n, step in enumerate(summary["next_steps"], 1):
        console.print(f"  {n}. {step}", soft_wrap=True)


if __name__ == "__main__":
    sys.exit(reporting_errors(main, as_json="--json" in sys.argv[1:]))
