"""``workmanager maintain`` and ``workmanager generate`` (SPEC §9): the beat's periodic jobs,
run once by hand."""

from __future__ import annotations

import logging
import sys
from dataclasses import asdict
from typing import Any

import click

from ..errors import Unavailable
from .app import Env, cli, pass_env
from .render import cell, emit_json, json_option, pairs, table


@cli.command()
@click.option("--reclaim-leases", is_flag=True, help="reclaim expired leases (the sweep)")
@click.option("--dead-letter", is_flag=True, help="dead-letter old failures")
@click.option("--check-stale", is_flag=True, help="report stale queued/in-progress orders")
@json_option
@pass_env
def maintain(
    env: Env, reclaim_leases: bool, dead_letter: bool, check_stale: bool, as_json: bool
) -> None:
    """Run maintenance now. With no flag, everything the scheduled jobs do: reclaim expired
    leases, dead-letter, check stale orders, purge expired idempotency keys and re-enqueue
    applies left behind by a dead worker."""
    everything = not (reclaim_leases or dead_letter or check_stale)
    wm = env.console
    report: dict[str, Any] = {}
    if everything or reclaim_leases:
        swept = wm.sweeper.sweep()
        report["leases_requeued"] = sum(len(v) for v in swept.requeued.values())
        report["leases_failed"] = sum(swept.failed.values())
    if everything or dead_letter or check_stale:
        steps = {
            "dead_letter": everything or dead_letter,
            "check_stale": everything or check_stale,
            "purge_keys": everything,
            "recover_applies": everything,
        }
        done = wm.maintenance.run(**steps)
        report.update(done.of_steps(*(step for step, run in steps.items() if run)))
    if as_json:
        emit_json(report)
    else:
        pairs(report, list(report), title="maintenance")
    if report.get("not_sent"):
        raise Unavailable(
            f"{len(report['not_sent'])} order(s) to recover could not be sent: the broker did"
            " not take their messages",
            hint="check the broker (`workmanager ops check`); maintenance sends them again after"
            " WORK_MANAGER_APPLY_RECOVERY_SECONDS",
        )


@cli.command()
@click.option("--dry-run", is_flag=True, help="show what the strategies discover; propose nothing")
@json_option
@pass_env
def generate(env: Env, dry_run: bool, as_json: bool) -> None:
    """Ask every registered allocator strategy for work and propose it."""
    for said in ("workmanager.generate", "workmanager.hooks"):  # each is an error line below
        logging.getLogger(said).addHandler(logging.NullHandler())
    if not env.wm.registry.allocators():
        click.echo(
            "warning: no allocator strategy is registered: list the modules that register"
            " them (registry.register_allocator) in WORK_MANAGER_ORDER_TYPES",
            err=True,
        )
    report = env.console.generator.run(dry_run=dry_run)
    if as_json:
        emit_json({**asdict(report), "dry_run": dry_run})
    else:
        rows = [asdict(r) for r in report.discovered]
        table(rows, ("type", "priority", "dedupe_key", "payload"), title="discovered")
        click.echo(
            f"discovered {len(report.discovered)}, created {report.created}, "
            f"existing {report.existing}{' (dry run)' if dry_run else ''}"
        )
        for error in report.errors:
            click.echo(cell(f"error [{error['code']}]: {_failed(error)}"), err=True)
    if report.errors:
        sys.exit(1)


def _failed(error: dict[str, Any]) -> str:
    """Which strategy (and request) failed, then why: one line per failure."""
    where = f"strategy {error['strategy']}"
    if error["type"] is not None:
        where += f", type {error['type']}"
    if error["dedupe_key"] is not None:  # cut: a refused one may be 100,000 characters
        key = str(error["dedupe_key"])
        where += f", dedupe key {key[:200]!r}{'…' if len(key) > 200 else ''}"
    return f"{where}: {error['message']}"
