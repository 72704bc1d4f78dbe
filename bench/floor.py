"""The floor: what the bare clients do on this machine, measured by the bench itself.

One psycopg connection and one redis-py client, no framework: a plain ``SET NX EX``, the
smallest Lua script for each lease primitive (acquire with a fencing counter, an
owner-checked extend, an owner-checked release), and a ``FOR UPDATE SKIP LOCKED`` checkout
transaction on a scratch table. Each figure of ours is reported as a ratio to the floor
measured in the same run, since absolute times drift from machine to machine. The
composites (:class:`Bare`) use the same clients to give the floor of each agent-API call,
which on the Redis backend is a Lua call plus a transaction.

Everything lives in the bench's own database and under the bench's Redis prefix
(``Config``); the scratch table is dropped and the keys deleted afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import redis

from .common import Config, Figures, measure

#: Take a free lock, or 0 when it is held (the lock stores keep no counter: the fence is
#: the row's, carried in the lock's value). KEYS: lock. ARGV: owner, ttl seconds.
ACQUIRE = """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  return 1
end
return 0"""
#: Push the lock's expiry out when the caller owns it; 0 otherwise.
#: KEYS: lock. ARGV: owner, ttl seconds.
EXTEND = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('expire', KEYS[1], ARGV[2])"""
#: Drop the lock when the caller owns it (compare-and-delete); 0 otherwise.
#: KEYS: lock. ARGV: owner.
RELEASE = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('del', KEYS[1])"""

#: The scratch queue: just the columns a lease touches.
TABLE = """
create table bench_items (id bigserial primary key, state text not null,
  priority int not null default 0, lease_owner text, lease_expires_at timestamptz,
  attempts int not null default 0)"""
#: The parts of the scratch queue's rows.
PARTS_TABLE = """
create table bench_parts (id bigserial primary key, item_id bigint not null, payload jsonb)"""
#: Lease the best queued row in one statement (highest priority, then oldest).
CHECKOUT = """
update bench_items
   set state = 'leased', lease_owner = %s, attempts = attempts + 1,
       lease_expires_at = now() + interval '600 seconds'
 where id = (select id from bench_items where state = 'queued'
              order by priority desc, id limit 1 for update skip locked)
returning id"""
#: The second transaction of a cycle: an owner-checked UPDATE of the leased row.
SUBMIT = """
update bench_items set state = 'submitted', lease_owner = null, lease_expires_at = null
 where id = %s and lease_owner = %s"""
#: A part: the part's row stored and the owner-checked item row touched, one statement.
PART = """
with part as (insert into bench_parts (item_id, payload) values (%(id)s, '{"text": "42"}')
              returning 1)
update bench_items set attempts = attempts
 where id = %(id)s and lease_owner = %(owner)s and (select count(*) from part) = 1"""
#: A fail: the owner-checked row back to the queue.
FAIL = """
update bench_items set state = 'queued', lease_owner = null, lease_expires_at = null
 where id = %s and lease_owner = %s"""
HEARTBEAT = """
update bench_items set lease_expires_at = now() + interval '600 seconds'
 where id = %s and lease_owner = %s"""
OWNER = "agent-1"


def scratch_queue(cfg: Config, rows: int) -> psycopg.Connection:
    """A connection (autocommit off) to the bench database with ``bench_items`` made anew
    and ``rows`` queued rows of random priority."""
    conn = psycopg.connect(cfg.dsn(), autocommit=True)
    conn.execute("drop table if exists bench_items, bench_parts")
    conn.execute(TABLE)
    conn.execute(PARTS_TABLE)
    conn.execute("create index on bench_items (priority desc, id) where state = 'queued'")
    conn.execute(
        "insert into bench_items (state, priority)"
        " select 'queued', (random() * 10)::int from generate_series(1, %s)",
        (rows,),
    )
    conn.execute("analyze bench_items")
    conn.autocommit = False
    return conn


def lua(r: Any, source: str) -> Callable[..., Any]:
    """``source`` loaded once and run by its SHA1 with ``EVALSHA`` straight on the client:
    the cheapest way redis-py makes the call (its ``Script`` object spends ~9 µs a call
    more; the lock stores call ``EVALSHA`` the same way, ``leases/script.py``), so the
    floor is never slower than what a client could do."""
    sha = r.script_load(source)

    def call(keys: list[str], args: list[Any]) -> Any:
        try:
            return r.evalsha(sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:  # the server lost it: load it, once more
            r.script_load(source)
            return r.evalsha(sha, len(keys), *keys, *args)

    return call


def drop_scratch_queue(conn: psycopg.Connection) -> None:
    conn.autocommit = True
    conn.execute("drop table if exists bench_items, bench_parts")
    conn.close()


def redis_floor(cfg: Config, n: int) -> dict[str, Figures]:
    """``n`` calls of each bare Redis primitive: ``SET NX EX``, the acquire, the
    owner-checked extend and release (each on its own keys, deleted afterwards)."""
    r = redis.Redis.from_url(cfg.redis_url)
    base = f"{cfg.redis_prefix}floor:"
    acquire, extend, release = lua(r, ACQUIRE), lua(r, EXTEND), lua(r, RELEASE)
    lock = [f"{base}lock:{i}" for i in range(n)]
    try:
        out = {
            "redis_set_nx_ex": measure(lambda i: r.set(f"{base}set:{i}", OWNER, nx=True, ex=60), n),
            "redis_lua_acquire": measure(lambda i: acquire(keys=[lock[i]], args=[OWNER, 60]), n),
            "redis_lua_extend_owner_checked": measure(
                lambda i: extend(keys=[lock[i]], args=[OWNER, 60]), n
            ),
            "redis_lua_release_owner_checked": measure(
                lambda i: release(keys=[lock[i]], args=[OWNER]), n
            ),
        }
    finally:
        _delete_under(r, base)
        r.close()
    return out


def _delete_under(r: redis.Redis, prefix: str) -> None:
    keys = list(r.scan_iter(match=f"{prefix}*", count=1000))
    for start in range(0, len(keys), 1000):
        r.delete(*keys[start : start + 1000])


def postgres_floor(cfg: Config, n: int) -> dict[str, Figures]:
    """``n`` bare ``SKIP LOCKED`` checkout transactions on a scratch queue of ``n`` rows."""
    conn = scratch_queue(cfg, n)
    try:

        def checkout(_: int) -> None:
            with conn.transaction():
                conn.execute(CHECKOUT, (OWNER,)).fetchone()

        return {"postgres_skip_locked_checkout": measure(checkout, n)}
    finally:
        drop_scratch_queue(conn)


class _Bare:
    """One psycopg connection and one redis-py client over a scratch queue."""

    def __init__(self, cfg: Config, rows: int) -> None:
        self.conn = scratch_queue(cfg, rows)
        self.r = redis.Redis.from_url(cfg.redis_url)
        self.prefix = f"{cfg.redis_prefix}bare:"
        self.acquire = lua(self.r, ACQUIRE)
        self.extend = lua(self.r, EXTEND)
        self.release = lua(self.r, RELEASE)

    def checkout_txn(self) -> int:
        with self.conn.transaction():
            row = self.conn.execute(CHECKOUT, (OWNER,)).fetchone()
        assert row is not None, "the bare queue ran dry"
        return int(row[0])

    def update_txn(self, statement: str, item: int) -> None:
        with self.conn.transaction():
            self.conn.execute(statement, (item, OWNER))

    def part_txn(self, item: int) -> None:
        with self.conn.transaction():
            self.conn.execute(PART, {"id": item, "owner": OWNER})

    def lua_acquire(self, item: int) -> None:
        self.acquire(keys=[f"{self.prefix}{item}"], args=[OWNER, 600])

    def lua_extend(self, item: int) -> None:
        self.extend(keys=[f"{self.prefix}{item}"], args=[OWNER, 600])

    def lua_release(self, item: int) -> None:
        self.release(keys=[f"{self.prefix}{item}"], args=[OWNER])

    def close(self) -> None:
        drop_scratch_queue(self.conn)
        _delete_under(self.r, self.prefix)
        self.r.close()


class Bare(_Bare):
    """The floor of each agent-API call, as a callable to pair with ours (``fn(i)``).

    database: the bare SKIP LOCKED checkout txn; one owner-checked UPDATE txn (heartbeat,
    release, finalize, fail); an INSERT + owner-checked UPDATE txn (a part); checkout and
    UPDATE (the cycle). redis: the same plus one Lua call each (acquire, extend, release
    above; a part checks nothing in Redis here); the cycle is one Lua acquire plus two
    transactions.
    """

    def __init__(self, cfg: Config, rows: int) -> None:
        super().__init__(cfg, rows)
        self.held: dict[str, list[int]] = {"database": [], "redis": []}
        #: rows leased untimed (``hold``) for the part, finalize and fail floors
        self.kept: dict[str, list[int]] = {"database": [], "redis": []}

    def hold(self, backend: str, n: int) -> None:
        """Lease ``n`` rows untimed (and their Lua locks on redis), for the next floors."""
        kept = self.kept[backend]
        kept.clear()
        for _ in range(n):
            item = self.checkout_txn()
            if backend == "redis":
                self.lua_acquire(item)
            kept.append(item)

    def floor(self, backend: str, op: str) -> Callable[[int], None]:
        held = self.held[backend]
        redis_ = backend == "redis"

        def checkout(_: int) -> None:
            item = self.checkout_txn()
            if redis_:
                self.lua_acquire(item)
            held.append(item)

        def release(i: int) -> None:
            self.update_txn(SUBMIT, held[i])
            if redis_:
                self.lua_release(held[i])

        def cycle(_: int) -> None:
            item = self.checkout_txn()
            if redis_:
                self.lua_acquire(item)
            self.update_txn(SUBMIT, item)

        ops = {
            "checkout": checkout,
            **self._beat_floors(backend),
            "release": release,
            "cycle": cycle,
            **self._ending_floors(backend),
        }
        return ops[op]

    def _beat_floors(self, backend: str) -> dict[str, Callable[[int], None]]:
        """The first heartbeat (the row moves to in_progress) and a plain one. On Redis a
        plain beat is the lock's extend alone (issue 18: db/store.py lock_only_beat)."""
        held = self.held[backend]
        redis_ = backend == "redis"

        def first(i: int) -> None:
            if redis_:
                self.lua_extend(held[i])
            self.update_txn(HEARTBEAT, held[i])

        def plain(i: int) -> None:
            if redis_:
                self.lua_extend(held[i])
            else:
                self.update_txn(HEARTBEAT, held[i])

        return {"heartbeat_first": first, "heartbeat": plain}

    def _ending_floors(self, backend: str) -> dict[str, Callable[[int], None]]:
        """The floors of a part, a finalize and a fail, on the rows ``hold`` leased."""
        redis_ = backend == "redis"
        kept = self.kept[backend]

        def part(i: int) -> None:
            self.part_txn(kept[i])

        def finalize(i: int) -> None:
            self.update_txn(SUBMIT, kept[i])
            if redis_:
                self.lua_release(kept[i])

        def fail(i: int) -> None:
            self.update_txn(FAIL, kept[i])
            if redis_:
                self.lua_release(kept[i])

        return {"submit_part": part, "finalize": finalize, "fail": fail}
