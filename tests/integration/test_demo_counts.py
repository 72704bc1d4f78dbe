"""What ``workmanager demo`` reads to say how its orders did (workmanager/demo): how many
exist and how many completed. A demo whose orders were all taken by another consumer of
its broker (another deployment's worker) sat at 0 of 30 and said only "see var/log/",
whose logs showed nothing wrong; with none created it now says where they went."""

from __future__ import annotations

import uuid
from typing import Any

from workmanager import Registry
from workmanager.demo import completed, existing, payload
from workmanager.demo.types import ResearchOrder


def test_the_demo_counts_the_orders_that_exist_and_those_completed(make_wm: Any) -> None:
    wm = make_wm(registry=Registry([ResearchOrder()]))
    missing = [uuid.uuid4() for _ in range(3)]
    assert existing(wm, missing) == 0 and completed(wm, missing) == 0
    made = wm.propose(ResearchOrder.type, payload(0))
    assert existing(wm, [*missing, made]) == 1 and completed(wm, [made]) == 0
