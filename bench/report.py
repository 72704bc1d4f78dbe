"""Ratios to the floor, targets, the printed table and ``var/bench.json``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: The seed's published figures (issue 3): per core, with its p50.
SEED_REDIS_LEASES_PER_S = 200.0
SEED_DATABASE_LEASES_PER_S = 20.0
#: "Should not grow with the queue": the large queue's p50 at most this times the small's.
FLAT_QUEUE_P50_RATIO = 1.5


@dataclass
class Row:
    """One figure of ours beside its floor (or peer), and its target when it has one."""

    area: str
    figure: str
    ops_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    floor: str
    floor_ops_per_s: float
    floor_p50_ms: float | None
    ratio: float
    target: float | None = None
    target_text: str = ""
    #: True for latency ratios (the queue rows), where the ratio must stay under the target.
    lower_is_better: bool = False

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        met = self.ratio <= self.target if self.lower_is_better else self.ratio >= self.target
        return "target met" if met else "target missed"


def _row(
    area: str,
    figure: str,
    ours: dict[str, float],
    floor_name: str,
    floor: dict[str, float],
    target: float | None = None,
    target_text: str = "",
) -> Row:
    return Row(
        area,
        figure,
        ours["ops_per_s"],
        ours.get("p50_ms"),
        ours.get("p99_ms"),
        floor_name,
        floor["ops_per_s"],
        floor.get("p50_ms"),
        ours["ops_per_s"] / floor["ops_per_s"],
        target,
        target_text or (f">= {target:g}x floor" if target is not None else ""),
    )


#: What each agent-API call's paired floor is, per backend (see ``floor.Bare``).
FLOOR_LABELS = {
    "database": {
        "checkout": "bare SKIP LOCKED txn",
        "heartbeat_first": "bare UPDATE txn",
        "heartbeat": "bare UPDATE txn",
        "release": "bare UPDATE txn",
        "submit_part": "bare INSERT + UPDATE txn",
        "finalize": "bare UPDATE txn",
        "fail": "bare UPDATE txn",
        "cycle": "bare SKIP LOCKED + UPDATE txns",
    },
    "redis": {
        "checkout": "Lua acquire + SKIP LOCKED txn",
        "heartbeat_first": "Lua extend + UPDATE txn",
        "heartbeat": "bare Lua extend",
        "release": "UPDATE txn + Lua release",
        "submit_part": "bare INSERT + UPDATE txn",
        "finalize": "UPDATE txn + Lua release",
        "fail": "UPDATE txn + Lua release",
        "cycle": "Lua acquire + 2 txns",
    },
}
AGENT_TARGETS = {
    ("database", "checkout"): (0.5, ">= 0.5x bare SKIP LOCKED txn"),
    ("redis", "cycle"): (0.5, "within 2x the time of its bare parts"),
    ("redis", "heartbeat"): (0.8, ">= 0.8x the bare Lua extend"),
}
STORE_FLOORS = (
    ("RedisLeaseStore.acquire", "store_acquire", "redis_lua_acquire"),
    ("RedisLeaseStore.extend", "store_extend", "redis_lua_extend_owner_checked"),
    ("RedisLeaseStore.release", "store_release", "redis_lua_release_owner_checked"),
)


def _agent_rows(r: dict[str, Any]) -> list[Row]:
    rows = []
    for backend, labels in FLOOR_LABELS.items():
        ours, floors = r["agent"].get(backend), r["paired_floor"].get(backend)
        if not ours or not floors:
            continue
        for op, label in labels.items():
            target, text = AGENT_TARGETS.get((backend, op), (None, ""))
            rows.append(_row(backend, op, ours[op], label, floors[op], target, text))
    return rows


PEER_BACKENDS = ("database", "redis")


def _peer_rows(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for backend, target in (("database", 2.0), ("redis", 4.0)):
        peer = r.get("peer", {}).get(backend)
        ours = r.get("peer_cycle", {}).get(backend, {}).get("cycle")
        if not (peer and ours):
            continue
        for name, key in (
            ("procrastinate worker", "worker"),
            ("procrastinate defer+worker", "full"),
        ):
            theirs = {"ops_per_s": peer[f"{key}_jobs_per_s"]}
            main = key == "worker"
            rows.append(
                _row(
                    "peer",
                    f"{backend} cycle",
                    ours,
                    name,
                    theirs,
                    target if main else None,
                    f">= {target:g}x procrastinate" if main else "(info)",
                )
            )
    return rows


def _seed_rows(r: dict[str, Any]) -> list[Row]:
    rows = []
    for backend, seed, times in (
        ("redis", SEED_REDIS_LEASES_PER_S, 10.0),
        ("database", SEED_DATABASE_LEASES_PER_S, 50.0),
    ):
        ours = r["agent"].get(backend, {}).get("checkout")
        if ours:
            name = f"seed {seed:g} leases/s/core"
            rows.append(
                _row(
                    "seed",
                    f"{backend} checkout",
                    ours,
                    name,
                    {"ops_per_s": seed},
                    times,
                    f">= {times:g}x the seed (derived)",
                )
            )
    return rows


def _queue_rows(r: dict[str, Any]) -> list[Row]:
    rows = []
    for backend, by_size in r.get("queue", {}).items():
        sizes = sorted(by_size, key=int)
        if len(sizes) < 2:
            continue
        small, large = by_size[sizes[0]], by_size[sizes[-1]]
        row = _row(
            "queue",
            f"{backend} checkout @{int(sizes[-1]):,}",
            large,
            f"same @{int(sizes[0]):,}",
            small,
        )
        # Here the ratio is of latencies: large p50 / small p50, and lower is better.
        row.ratio = large["p50_ms"] / small["p50_ms"]
        row.target_text = f"p50 ratio <= {FLAT_QUEUE_P50_RATIO:g} (flat)"
        row.target = FLAT_QUEUE_P50_RATIO
        row.lower_is_better = True
        rows.append(row)
    return rows


def rows(r: dict[str, Any]) -> list[Row]:
    store = [
        _row(
            "store", label, r["store"][key], floor, r["floor"][floor], 0.8, ">= 0.8x bare Lua call"
        )
        for label, key, floor in STORE_FLOORS
        if key in r.get("store", {})
    ]
    return store + _agent_rows(r) + _queue_rows(r) + _peer_rows(r) + _seed_rows(r)


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def render(r: dict[str, Any], table: list[Row]) -> str:
    meta = r["meta"]
    lines = [
        f"workmanager bench — {meta['date']} — {meta['machine']} — load avg (1/5/15 min)"
        f" {meta['load_avg_start']} at start, {meta.get('load_avg_end')} at end",
        "",
    ]
    lines.append("Floor (bare clients, this run):")
    for name, f in r["floor"].items():
        lines.append(
            f"  {name:34s} {f['ops_per_s']:9.0f} ops/s  p50 {f['p50_ms']:.3f} ms"
            f"  p99 {f['p99_ms']:.3f} ms"
        )
    head = (
        f"{'area':8s} {'figure':26s} {'ops/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s}  "
        f"{'floor / peer':32s} {'ops/s':>8s} {'p50 ms':>8s} {'ratio':>7s}  target"
    )
    lines += ["", head, "-" * len(head)]
    for row in table:
        status = row.verdict
        lines.append(
            f"{row.area:8s} {row.figure:26s} {row.ops_per_s:8.0f} {_ms(row.p50_ms):>8s} "
            f"{_ms(row.p99_ms):>8s}  {row.floor:32s} {row.floor_ops_per_s:8.0f} "
            f"{_ms(row.floor_p50_ms):>8s} {row.ratio:6.2f}x  "
            + (f"{row.target_text}: {status}" if status else row.target_text)
        )
    lines.append("")
    lines.append(
        "ratio = our ops/s / floor ops/s; store rows: median of alternating rounds; backend rows:"
        " ours and the floor in alternating chunks; queue rows: p50 large / p50 small"
    )
    for backend, peer in r.get("peer", {}).items():
        lines.append(
            f"procrastinate beside our {backend} cycle (its median round of"
            f" {peer['rounds']}, {peer['n']} jobs each): defer {peer['defer_jobs_per_s']:.0f}"
            f" jobs/s, worker {peer['worker_jobs_per_s']:.0f} jobs/s, defer+worker"
            f" {peer['full_jobs_per_s']:.0f} jobs/s"
        )
    if r.get("peer_rounds"):
        per_round = "; ".join(
            f"{one['worker_jobs_per_s']:.0f} jobs/s: "
            + ", ".join(f"{b} {one[b] / one['worker_jobs_per_s']:.2f}x" for b in PEER_BACKENDS)
            for one in r["peer_rounds"]
        )
        lines.append(f"peer rounds (procrastinate worker; our cycle ÷ it): {per_round}")
    for backend, figures in r["agent"].items():
        f = figures["submit"]
        lines.append(
            f"{backend} submit alone (timed inside the cycle): p50 {f['p50_ms']:.3f} ms"
            f"  p99 {f['p99_ms']:.3f} ms"
        )
    for backend, by_size in r.get("queue", {}).items():
        for size, f in sorted(by_size.items(), key=lambda kv: int(kv[0])):
            lines.append(
                f"queue {backend:8s} {int(size):>9,} queued: checkout p50 {f['p50_ms']:.3f} ms"
                f"  p99 {f['p99_ms']:.3f} ms  {f['ops_per_s']:.0f}/s"
                f" (seeded in {f['seed_s']:.1f} s)"
            )
    return "\n".join(lines)


def write_json(path: Path, r: dict[str, Any], table: list[Row]) -> None:
    out = dict(r)
    out["comparisons"] = [{**asdict(row), "verdict": row.verdict} for row in table]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str) + "\n")
