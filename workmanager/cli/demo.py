"""``workmanager demo``: the main job on the embedded default (SPEC §10)."""

from __future__ import annotations

import time

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..db.migrate import upgrade
from ..demo import inprocess
from ..demo.types import ResearchOrder
from ..metrics.base import Metrics
from ..metrics.simple import MemoryDriver
from .app import Env, cli, pass_env

COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Wonka"]


def _payload(n: int) -> dict[str, object]:
    return {
        "company": f"{COMPANIES[n % len(COMPANIES)]} #{n}",
        "questions": ["overview", "funding"][: 1 + n % 2],
    }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * q), len(ordered) - 1)] if ordered else 0.0


@cli.command()
@click.option("--orders", default=40, show_default=True, help="orders to enqueue")
@click.option("--agents", default=4, show_default=True, help="agent workers")
@pass_env
def demo(env: Env, orders: int, agents: int) -> None:
    """Run the pipeline end to end: propose, lease, submit, auto-approve, apply."""
    console = Console()
    wm = env.wm
    upgrade(wm.db)
    wm.registry.register(ResearchOrder())
    memory = MemoryDriver()
    wm.ctx.metrics = Metrics(memory, wm.settings.metrics_namespace)
    console.print(
        f"[bold]workmanager demo[/] database={wm.settings.database_url} "
        f"leases={wm.settings.lease_backend}"
    )
    started = time.perf_counter()
    with Progress(
        TextColumn("orders completed"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("orders", total=orders)
        stats = inprocess.run(
            wm,
            orders,
            agents,
            ResearchOrder.type,
            _payload,
            on_progress=lambda n: progress.update(task, completed=n),
        )
    elapsed = time.perf_counter() - started
    _summary(console, inprocess.completed(wm, stats.order_ids), memory, stats, orders, elapsed)


def _summary(
    console: Console,
    completed: int,
    memory: MemoryDriver,
    stats: inprocess.RunStats,
    orders: int,
    elapsed: float,
) -> None:
    table = Table(title="demo summary")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("orders enqueued", str(orders))
    table.add_row("orders completed", str(completed))
    table.add_row("leases granted", str(stats.leases))
    table.add_row("lease latency p50", f"{_percentile(stats.lease_latencies, 0.5) * 1e3:.2f} ms")
    table.add_row("lease latency p99", f"{_percentile(stats.lease_latencies, 0.99) * 1e3:.2f} ms")
    table.add_row("wall time", f"{elapsed:.1f} s")
    for name in sorted({key[0] for key in memory.counters}):
        table.add_row(f"metric {name}", f"{memory.total(name):g}")
    console.print(table)
    if completed < orders:
        raise click.ClickException(f"only {completed} of {orders} orders completed")
