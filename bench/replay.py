"""Where a database cycle's time goes: its SQL alone vs the whole agent API call.

    python -m bench.replay [--n 3000]

One real ``checkout → submit`` cycle is run with psycopg's ``Cursor.execute`` watched, and
its two statements (the grant, the guarded submit) and their parameters are kept. They
are then replayed from a bare psycopg connection — each grant leases the next item, its
submit is given that item's id, token and view — with no workmanager code around them,
beside the bench's floor for a database cycle (``floor.Bare``, alternating chunks). The
agent API's own cycle is measured beside the same floor after it. The gap between the
two ratios is the client side of the API (validation, provenance, rows to views, pool);
the gap between the replay and 1.0 is what the statements do beyond two bare single-row
transactions (audit rows, the order's step, the full row returned).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from . import floor
from .common import (
    AGENT,
    RESULT,
    Config,
    clear_redis,
    create_database,
    create_schema,
    drop_database,
    make_wm,
    measure_pair,
    seed,
)


@contextmanager
def captured() -> Iterator[list[tuple[str, Any]]]:
    """Every hot-path statement (``str`` SQL) executed in the block, with its params."""
    seen: list[tuple[str, Any]] = []
    original = psycopg.Cursor.execute

    def watch(self: Any, query: Any, params: Any = None, **kw: Any) -> Any:
        if isinstance(query, str) and query.lstrip().startswith("WITH"):
            seen.append((query, params))
        return original(self, query, params, **kw)

    psycopg.Cursor.execute = watch  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        psycopg.Cursor.execute = original  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=3000, help="cycles per figure")
    n = ap.parse_args(argv).n
    cfg = Config()
    create_database(cfg, cfg.pg_db)
    create_schema(cfg)
    wm = make_wm(cfg, "database")
    bare = floor.Bare(cfg, 4 * n + 100)
    conn = psycopg.connect(cfg.dsn(), autocommit=True)
    try:
        seed(cfg, 2 * n + 100)
        with captured() as seen:
            wm.agent.submit(wm.agent.checkout(AGENT), RESULT)
        (grant, grant_params), (submit, submit_params) = seen[0], seen[-1]
        cur = conn.cursor(row_factory=dict_row)

        def replay(_: int) -> None:
            row = cur.execute(grant, grant_params, prepare=True).fetchone()
            assert row is not None, "the queue ran dry"
            params = {
                **submit_params,
                "item": row["id"],
                "order": row["order_id"],
                "token": row["lease_token"],
                "v_attempts": row["attempts"],
                "v_input": Jsonb(row["input"]),
            }
            assert cur.execute(submit, params, prepare=True).fetchone() is not None

        def api(_: int) -> None:
            wm.agent.submit(wm.agent.checkout(AGENT), RESULT)

        out = []
        for name, fn in (("statements replayed bare", replay), ("agent API cycle", api)):
            seed(cfg, n + 100)
            start = time.process_time()
            ours, fl = measure_pair(fn, bare.floor("database", "cycle"), n)
            cpu = (time.process_time() - start) / (2 * n) * 1e6  # both sides ran n
            out.append(
                f"{name:26s} {ours['ops_per_s']:7.0f}/s  floor {fl['ops_per_s']:7.0f}/s"
                f"  ratio {ours['ops_per_s'] / fl['ops_per_s']:.2f}x"
                f"  (client CPU ~{cpu:.0f} µs a cycle, floor's included)"
            )
        print("database cycle beside its floor (bare SKIP LOCKED txn + bare UPDATE txn):")
        print("\n".join(out))
    finally:
        conn.close()
        bare.close()
        wm.close()
        drop_database(cfg, cfg.pg_db)
        clear_redis(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
