"""One agent process of the lease stress tests (``tests/integration/test_lease_stress.py``).

Run as ``python -m tests.support.lease_worker '<json config>'``. It builds its own
WorkManager from Settings, then checks out, sometimes heartbeats, sometimes releases,
submits, and sweeps while it waits, until no item is left to submit. Every step is one
JSON line in its log (line-buffered, so a SIGKILL loses nothing already written):

    grant   item, token, t (wall time after the checkout returned)
    submit  item, token, t0 (wall time before the call)
    release item, token, t0
    lost    item, token, error (the lease ended under it: expired, reclaimed, flushed)
    stale   item, token, error (a stale token presented on purpose; error "" = accepted)
    holding count (``hold`` mode: it now holds that many leases and stops)

Config keys: database_url, backend, redis_url, redis_prefix, ttl, agent, log, seed,
hold (0 = normal), deadline (seconds), gate (optional: a file path; each item's work waits
until that file exists, so the test decides when a held lease is submitted), redis_cluster
(optional: the lease store is a Redis Cluster).

A call answered ``Unavailable`` (the lease store is failing over) changed nothing: it is
made again after a pause, and counted in the log as ``unavailable``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO, TypeVar

from sqlalchemy import func, select

from tests.support.types import Multi
from workmanager import Registry, Settings, WorkManager
from workmanager.db.models import Item
from workmanager.errors import LeaseConflict, LeaseExpired, Unavailable
from workmanager.types import Lease

REFUSALS = (LeaseConflict, LeaseExpired)
T = TypeVar("T")


class Worker:
    def __init__(self, config: dict[str, Any], log: TextIO) -> None:
        self.config = config
        self.agent = str(config["agent"])
        self.rng = random.Random(config["seed"])
        self.released: list[Lease] = []
        self.out = log
        settings = Settings(
            database_url=config["database_url"],
            lease_backend=config["backend"],
            **({"redis_url": config["redis_url"]} if config["redis_url"] else {}),
            redis_prefix=config["redis_prefix"],
            redis_cluster=bool(config.get("redis_cluster")),
            lease_ttl_seconds=config["ttl"],
            retry_backoff_seconds=0,
            retry_jitter_seconds=0,
            metrics_driver="null",
        )
        self.wm = WorkManager(settings, registry=Registry([Multi()]))

    def log(self, event: str, lease: Lease | None = None, **fields: Any) -> None:
        if lease is not None:
            fields |= {"item": str(lease.item_id), "token": lease.fence}
        self.out.write(json.dumps({"ev": event, "agent": self.agent, **fields}) + "\n")

    def retry(self, call: Callable[[], T]) -> T:
        """``call()``, made again while the lease store answers Unavailable."""
        while True:
            try:
                return call()
            except Unavailable as exc:
                self.log("unavailable", error=exc.message[:200])
                time.sleep(0.2)

    def run(self) -> None:
        deadline = time.monotonic() + float(self.config["deadline"])
        held: list[Lease] = []
        while time.monotonic() < deadline:
            lease = self.retry(lambda: self.wm.agent.checkout(self.agent))
            if lease is None:
                if self._remaining() == 0:
                    return
                self.retry(self.wm.sweeper.sweep)  # many sweepers at once, as with several beats
                time.sleep(0.1)
                continue
            self.log("grant", lease, t=time.time())
            if self.config["hold"]:
                held.append(lease)
                if len(held) == self.config["hold"]:
                    self.log("holding", count=len(held))
                    time.sleep(3600)  # until SIGKILL
                continue
            try:
                self._work(lease)
            except REFUSALS as exc:
                self.log("lost", lease, error=type(exc).__name__)
            self._probe_released()
        raise SystemExit(f"{self.agent}: deadline passed with items left")

    def _work(self, lease: Lease) -> None:
        roll = self.rng.random()
        if roll < 0.25:  # a fence one below the current one is never the current lease
            secret = lease.token.split(".", 1)[1]
            stale = f"{lease.fence - 1}.{secret}"
            self._stale(dataclasses.replace(lease, token=stale), "heartbeat")
        elif roll < 0.3:  # nor is the current fence with a guessed secret
            guessed = f"{lease.fence}.{'A' * 32}"
            self._stale(dataclasses.replace(lease, token=guessed), "heartbeat")
        if roll < 0.4:
            current = lease
            lease = self.retry(lambda: self.wm.agent.heartbeat(current, progress=roll))
        gate = self.config.get("gate")
        if gate:
            while not os.path.exists(gate):
                time.sleep(0.02)
        else:
            time.sleep(self.rng.uniform(0, 0.004))  # "work"
        if roll > 0.9:
            t0 = time.time()
            self.retry(lambda: self.wm.agent.release(lease))
            self.log("release", lease, t0=t0)
            self.released.append(lease)
            return
        t0 = time.time()
        self.retry(lambda: self.wm.agent.submit(lease, {"agent": self.agent, "token": lease.fence}))
        self.log("submit", lease, t0=t0)

    def _probe_released(self) -> None:
        """Present a lease this process released earlier: refused, whoever holds it now."""
        if self.released and self.rng.random() < 0.5:
            lease = self.released.pop(0)
            self._stale(lease, self.rng.choice(["heartbeat", "submit", "release", "fail"]))

    def _stale(self, lease: Lease, op: str) -> None:
        agent = self.wm.agent
        calls = {
            "heartbeat": lambda: agent.heartbeat(lease),
            "submit": lambda: agent.submit(lease, {"agent": self.agent, "stale": True}),
            "release": lambda: agent.release(lease),
            "fail": lambda: agent.fail(lease, {"code": "stale", "message": "probe"}),
        }
        try:
            self.retry(calls[op])
        except REFUSALS as exc:
            self.log("stale", lease, op=op, error=type(exc).__name__)
        else:
            self.log("stale", lease, op=op, error="")

    def _remaining(self) -> int:
        with self.wm.db.transaction() as s:
            return int(s.scalar(select(func.count()).where(Item.state != "submitted")) or 0)


def main(argv: list[str]) -> None:
    config = json.loads(argv[0])
    with open(config["log"], "a", buffering=1) as log:
        worker = Worker(config, log)
        try:
            worker.run()
        finally:
            worker.wm.close()


if __name__ == "__main__":
    main(sys.argv[1:])
