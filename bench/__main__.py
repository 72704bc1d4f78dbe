"""``python -m bench`` (``make bench``): every figure, beside its floor, in one run.

    python -m bench [--quick] [--json var/bench.json]

Creates its own PostgreSQL databases (``wm_bench``, ``wm_bench_procrastinate``) and uses
Redis db 12 under the ``wmbench:`` prefix; drops and deletes them at the end. Exits 0
whether or not targets are met: a benchmark measures, it does not assert.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import cycle, floor, leases, peer_procrastinate, queue_size, report
from .common import (
    REPO_ROOT,
    Config,
    clear_redis,
    create_database,
    create_schema,
    drop_database,
    median_of,
)

BACKENDS = ("database", "redis")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (200k queue, fewer ops)")
    ap.add_argument("--n-floor", type=int, help="floor and Redis store ops (default 20000)")
    ap.add_argument("--n-agent", type=int, help="agent-API ops per figure (default 2000)")
    ap.add_argument("--n-queue", type=int, help="checkouts timed per queue size (default 500)")
    ap.add_argument("--big-queue", type=int, help="the large queue size (default 1000000)")
    ap.add_argument("--n-peer", type=int, help="procrastinate jobs, all rounds (default 3330)")
    ap.add_argument("--peer-rounds", type=int, default=5, help="rounds of the peer comparison")
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of alternating runs of the Redis floor and store",
    )
    ap.add_argument("--json", default=str(REPO_ROOT / "var" / "bench.json"), help="output file")
    ap.add_argument("--keep", action="store_true", help="keep the bench databases afterwards")
    args = ap.parse_args(argv)
    quick = args.quick
    defaults = {
        "n_floor": 5000 if quick else 20000,
        "n_agent": 500 if quick else 2000,
        "n_queue": 200 if quick else 500,
        "big_queue": 200_000 if quick else 1_000_000,
        "n_peer": 1000 if quick else 3330,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def _meta(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, {platform.system()}",
        "python": platform.python_version(),
        "args": {k: v for k, v in vars(args).items() if k != "json"},
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
    }


def _step(message: str) -> float:
    print(f"bench: {message}…", file=sys.stderr, flush=True)
    return time.perf_counter()


def run(cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    r: dict[str, Any] = {"meta": _meta(args), "agent": {}, "paired_floor": {}}
    _step(f"creating database {cfg.pg_db}")
    create_database(cfg, cfg.pg_db)
    create_schema(cfg)
    bare: list[dict[str, Any]] = []
    ours: list[dict[str, Any]] = []
    for k in range(args.rounds):
        _step(f"round {k + 1}/{args.rounds}: bare Redis floor (n={args.n_floor})")
        bare.append(floor.redis_floor(cfg, args.n_floor))
        _step(f"round {k + 1}/{args.rounds}: RedisLeaseStore primitives (n={args.n_floor})")
        ours.append(leases.store_figures(cfg, args.n_floor))
    r["floor"], r["store"] = median_of(bare), median_of(ours)
    _step(f"floor: bare PostgreSQL checkout (n={args.n_floor // 2})")
    r["floor"].update(floor.postgres_floor(cfg, args.n_floor // 2))
    bare = floor.Bare(cfg, 8 * args.n_agent + 100)
    try:
        for backend in BACKENDS:
            agent_phase(cfg, args, r, backend, bare)
    finally:
        bare.close()
    small, large = 10_000, args.big_queue
    _step(f"checkout latency at {small:,} and {large:,} queued items")
    r["queue"] = queue_size.queue_figures(cfg, small, large, args.n_queue, BACKENDS)
    peer_phase(cfg, args, r)
    return r


def agent_phase(
    cfg: Config, args: argparse.Namespace, r: dict[str, Any], backend: str, bare: floor.Bare
) -> None:
    """The agent API on one backend, each call paired with its bare floor."""
    n = args.n_agent
    _step(
        f"agent API on {backend}: checkout, heartbeat, release, part, finalize, fail,"
        f" paired with floors (n={n})"
    )
    ours, floors = leases.agent_figures(cfg, backend, n, bare)
    _step(f"agent API on {backend}: checkout → submit, paired with its floor (n={n})")
    cycles, cycle_floor = cycle.cycle_figures(cfg, backend, n, bare)
    r["agent"][backend] = {**ours, **cycles}
    r["paired_floor"][backend] = {**floors, **cycle_floor}


def peer_phase(cfg: Config, args: argparse.Namespace, r: dict[str, Any]) -> None:
    """procrastinate and our two cycles in alternating rounds, each round's ratio taken
    within the round (the machine's speed drifts between rounds; within one, both sides
    see the same); per backend, the round with the median ratio is reported."""
    m = max(args.n_peer // args.peer_rounds, 1)
    rounds: list[dict[str, Any]] = []
    for k in range(args.peer_rounds):
        _step(f"round {k + 1}/{args.peer_rounds}: procrastinate, {m} jobs, one worker")
        one: dict[str, Any] = {"peer": peer_procrastinate.peer_figures(cfg, m, first=k == 0)}
        for backend in BACKENDS:
            _step(f"round {k + 1}/{args.peer_rounds}: {backend} checkout → submit (n={m})")
            one[backend] = cycle.cycle_figures(cfg, backend, m)[0]
        rounds.append(one)
    r["peer_rounds"] = [
        {
            "worker_jobs_per_s": one["peer"]["worker_jobs_per_s"],
            **{b: one[b]["cycle"]["ops_per_s"] for b in BACKENDS},
        }
        for one in rounds
    ]
    r["peer"], r["peer_cycle"] = {}, {}
    for backend in BACKENDS:
        ranked = sorted(
            rounds,
            key=lambda one, b=backend: (
                one[b]["cycle"]["ops_per_s"] / one["peer"]["worker_jobs_per_s"]
            ),
        )
        median = ranked[len(ranked) // 2]
        r["peer"][backend] = {**median["peer"], "rounds": len(rounds)}
        r["peer_cycle"][backend] = median[backend]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = Config()
    start = time.perf_counter()
    try:
        r = run(cfg, args)
    finally:
        if not args.keep:
            drop_database(cfg, cfg.peer_db)
            drop_database(cfg, queue_size.small_config(cfg).pg_db)
            drop_database(cfg, cfg.pg_db)
        clear_redis(cfg)
    r["meta"]["seconds"] = round(time.perf_counter() - start, 1)
    r["meta"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    table = report.rows(r)
    print(report.render(r, table))
    path = os.path.abspath(args.json)
    report.write_json(Path(path), r, table)
    print(f"\nfigures written to {path} ({r['meta']['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
