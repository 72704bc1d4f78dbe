"""After Redis lost its data, a sweep audits every held row; an audit cut short by a database
error is done again by the next sweep (issue 11, item 7): the data-loss marker is set only
once the audit has finished. Real Redis, on SQLite and PostgreSQL; the error is injected at
the audit's first batch."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from tests.support.types import Multi
from workmanager import Registry, WorkManager
from workmanager.errors import Unavailable
from workmanager.services.lease_admin import Sweeper

pytestmark = pytest.mark.redis


class BlipSweeper(Sweeper):
    """A sweeper whose audit meets a database blip once it has read its first page: the
    error the database layer raises for a lost server (``Unavailable``)."""

    blips = 0

    def _reclaim(self, leases: Any, wait: bool) -> Any:
        if self.blips:
            self.blips -= 1
            raise Unavailable("database unavailable: server closed the connection")
        return super()._reclaim(leases, wait)


def test_a_failed_audit_is_done_again_by_the_next_sweep(make_wm: Any, database: str) -> None:
    wm: WorkManager = make_wm(
        db=database, backend="redis", registry=Registry([Multi()]), lease_ttl_seconds=600
    )
    sweeper = BlipSweeper(wm.ctx)
    assert sweeper.sweep().reclaimed == 0  # the first audit (nothing held) sets the marker
    wm.propose("test.multi", {"count": 2})
    leases = [wm.agent.checkout("agent-1"), wm.agent.checkout("agent-1")]
    assert all(leases)

    client = redis.Redis.from_url(wm.settings.redis_url)
    keys = list(client.scan_iter(match=f"{wm.settings.redis_prefix}*"))
    assert keys
    client.delete(*keys)  # Redis lost this test's data (never the shared db)

    sweeper.blips = 1
    with pytest.raises(Unavailable):
        sweeper.sweep()
    for lease in leases:
        assert lease is not None
        assert wm.queries.item(lease.item_id)["state"] == "leased"

    # 600 s from their recorded expiry, only an audit can give these items back.
    again = sweeper.sweep()
    assert again.reclaimed == 2
    assert not wm.ctx.leases.lost_track()
    for lease in leases:
        assert lease is not None
        assert wm.queries.item(lease.item_id)["state"] == "queued"
    assert sweeper.sweep().reclaimed == 0
