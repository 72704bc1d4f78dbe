"""A host whose clock is not the database server's (``deployment.check_clock``).

Found by an adversarial pass (session 20): every time rule of the database lease backend
— a lease's expiry at grant and heartbeat, the sweep, the lease limits, apply claims,
idempotency locks — is written with one process's clock and judged with another's. An
API server two minutes behind the control worker had its agents' live leases swept
between two heartbeats; one ahead granted past ``MAX_LEASES_PER_AGENT``; two apply
workers minutes apart ran one order's apply body at once. Such a process is refused now:
at start-up, in ``/readyz``, by the sweep and before an agent's first lease."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.own_redis import free_port
from tests.support.types import Simple
from workmanager import Registry, WorkManager, deployment, readiness
from workmanager.errors import ConfigurationError, Unavailable

pytestmark = pytest.mark.postgres

EXE = Path(sys.executable).with_name("workmanager")
ROOT = Path(__file__).resolve().parents[2]


def behind(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    real = time.time
    monkeypatch.setattr(deployment, "wall", lambda: real() - seconds)


def test_a_process_whose_clock_is_off_judges_no_lease(
    make_wm: Callable[..., WorkManager], monkeypatch: pytest.MonkeyPatch
) -> None:
    wm = make_wm(db="postgres", backend="database", registry=Registry([Simple()]))
    deployment.check(wm.db, wm.settings)  # in step: passes (and records)
    skew, margin = deployment.clock_skew(wm.db) or (None, None)
    assert skew is not None and margin is not None and abs(skew) < 1
    order_id = wm.propose("test.simple", {"n": 1})
    other = wm.propose("test.simple", {"n": 2})
    held = wm.agent.checkout("agent-1", order_id=other)  # compared: in step
    assert held is not None
    wm.agent.submit(held, {"answer": 1})
    wm.approve(other)
    beating = wm.agent.checkout("agent-2", order_id=wm.propose("test.simple", {"n": 3}))
    assert beating is not None
    behind(monkeypatch, 120)
    with pytest.raises(ConfigurationError) as refused:
        deployment.check(wm.db, wm.settings)
    said = refused.value.message
    assert said.startswith("this host's clock is 120.") and "s behind the database" in said
    assert "MAX_CLOCK_SKEW_SECONDS is 5" in said and "NTP" in (refused.value.hint or "")
    with pytest.raises(ConfigurationError, match="clock is 120"):
        wm.sweeper.sweep()  # judges nothing
    probe = readiness.check(wm.ctx)
    assert probe["deployment"].startswith("differs: [configuration_error] this host's clock"), probe
    # the clock drifted after the process's first lease: its next comparison refuses
    # checkouts, heartbeats, applies and maintenance alike
    monkeypatch.setattr(deployment, "RECHECK_SECONDS", 0.0)
    with pytest.raises(Unavailable, match="clock is 120"):
        wm.agent.checkout("agent-1", order_id=order_id)
    with pytest.raises(Unavailable, match="clock is 120"):
        wm.agent.heartbeat(beating)
    with pytest.raises(Unavailable, match="clock is 120"):
        wm.executor.apply(other)
    assert wm.queries.order(other)["state"] == "approved"  # nothing run
    with pytest.raises(ConfigurationError, match="clock is 120"):
        wm.maintenance.run()
    behind(monkeypatch, -120)
    with pytest.raises(ConfigurationError, match=r"clock is 120\.\d s ahead of the database"):
        deployment.check(wm.db, wm.settings)
    unchecked = wm.settings.replace(max_clock_skew_seconds=0)
    deployment.check(wm.db, unchecked)  # 0: not compared


def test_a_server_whose_clock_is_off_refuses_to_start(fresh_pg: str, tmp_path: Path) -> None:
    """The real process: ``workmanager serve`` on a host two minutes behind (its
    ``time.time`` shifted by a ``sitecustomize`` of the test's)."""
    (tmp_path / "sitecustomize.py").write_text(
        "import time\n_real = time.time\ntime.time = lambda: _real() - 120\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORK_MANAGER_")}
    env |= {"WORK_MANAGER_DATABASE_URL": fresh_pg, "WORK_MANAGER_METRICS_DRIVER": "null"}
    upgraded = subprocess.run(
        [str(EXE), "db", "upgrade"], env=env, capture_output=True, text=True, timeout=120
    )
    assert upgraded.returncode == 0, upgraded.stderr
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT)])
    done = subprocess.run(
        [str(EXE), "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    [line] = [x for x in done.stderr.splitlines() if x.startswith("error [")]
    assert line.startswith("error [configuration_error]: this host's clock is 1"), line
    assert "Traceback" not in done.stderr, done.stderr


def test_the_limit_is_the_setting_not_a_wider_one(
    make_wm: Callable[..., WorkManager], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mutation pass: the check passed a skew ten times the limit unnoticed (the tests
    knew only 120 s against 5). Within the limit and its margin it passes; past it, not."""
    wm = make_wm(db="postgres", backend="database", registry=Registry([Simple()]))
    behind(monkeypatch, 3)
    deployment.check_clock(wm.db, wm.settings)  # 3 s behind, the limit 5: in step
    behind(monkeypatch, 9)
    with pytest.raises(ConfigurationError, match="clock is 9"):
        deployment.check_clock(wm.db, wm.settings)
