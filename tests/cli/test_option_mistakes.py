"""Option values a user gets wrong, run as the user runs them (the real ``workmanager``
executable, as in ``test_mistakes``): out of range, not finite, contradictory, naming
something that is not what the option needs. Each is one ``error [code]:`` line (a
parser refusal exits 2, a domain error 1), never a traceback, and never a request that
seems to go through and is then lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.cli.test_mistakes import UNKNOWN, Mistake, check, run
from workers.handlers import load_handler
from workmanager import Registry, Settings, WorkManager
from workmanager.db.migrate import upgrade
from workmanager.db.models import Item
from workmanager.db.session import Database
from workmanager.demo.types import register
from workmanager.errors import ConfigurationError
from workmanager.services.housekeeping import Housekeeping

EXE = Path(sys.executable).with_name("workmanager")
PAYLOAD = {"company": "Acme", "questions": ["q"]}
COMPANY = json.dumps(PAYLOAD)
CREATE = ("orders", "create", "--type", "demo.research", "--payload", COMPANY)
AGENT = ("agent", "--type", "demo.research")


def usage(*args: str, shows: str) -> Mistake:
    """A command line the parser refuses: exit 2, the option named."""
    return Mistake(args, "usage_error", "--help", exit_code=2, shows=shows)


def configuration(*args: str, shows: str) -> Mistake:
    return Mistake(args, "configuration_error", shows=shows)


def option_mistakes() -> list[Mistake]:
    huge = "99999999999w"
    return [
        # durations past any date (OverflowError): ten years at most
        usage("leases", "list", "--older-than", huge, shows="--older-than"),
        usage("leases", "list", "--older-than", "200000w", shows="--older-than"),
        usage("ops", "purge-keys", "--older-than", "99999999999d", shows="--older-than"),
        usage("ops", "purge-keys", "--older-than", "200000w", shows="--older-than"),
        usage("ops", "prune", "--older-than", "200000w", "--dry-run", shows="--older-than"),
        usage("leases", "extend", "--all", "--seconds", "999999999999", shows="--seconds"),
        # servers
        usage("serve", "--log-level", "bogus", shows="--log-level"),
        usage("serve", "--port", "99999", shows="--port"),
        usage("serve", "--port", "0", shows="--port"),
        usage("mcp", "--transport", "http", "--port", "99999", shows="--port"),
        configuration("serve", "--dispatcher", "os:sep", shows="--dispatcher"),
        configuration("serve", "--dispatcher", "json:dumps", shows="--dispatcher"),
        configuration("serve", "--dispatcher", "builtins:str", shows="not a dispatcher"),
        # seconds: finite, not negative
        usage("ops", "tail", "--follow", "--interval", "-1", shows="--interval"),
        usage("ops", "tail", "--follow", "--timeout", "nan", shows="--timeout"),
        usage("ops", "tail", "--follow", "--timeout", "-1", shows="--timeout"),
        usage(*CREATE, "--wait", "--timeout", "nan", shows="--timeout"),
        usage(*CREATE, "--wait", "--timeout", "-1", shows="--timeout"),
        usage(*CREATE, "--wait", "--timeout", "inf", shows="--timeout"),
        # counts
        usage(*AGENT, "--handler", "x:y", "--concurrency", "-3", shows="--concurrency"),
        usage(*AGENT, "--handler", "x:y", "--concurrency", "0", shows="--concurrency"),
        usage("demo", "--orders", "-1", shows="--orders"),
        usage("demo", "--orders", "0", shows="--orders"),
        usage("demo", "--agents", "0", shows="--agents"),
        usage("orders", "show", UNKNOWN, "--events", "-1", shows="--events"),
        # counts past what a query takes (was "a value cannot be stored: bigint out of
        # range"), and limits of 0: one answer, usage_error, on every command
        usage("orders", "show", UNKNOWN, "--events", "99999999999999999999", shows="--events"),
        usage("orders", "requeue", "--all", "--limit", "99999999999999999999", shows="--limit"),
        usage("orders", "requeue", "--all", "--limit", "0", shows="--limit"),
        usage("orders", "list", "--limit", "0", shows="--limit"),
        usage("orders", "list", "--page", "0", shows="--page"),
        usage("items", "list", "--limit", "0", shows="--limit"),
        usage("items", "retry", "--all", "--limit", "0", shows="--limit"),
        usage("ops", "tail", "-n", "-1", shows="--limit"),
        # an option that only works with another, given alone (it was ignored)
        usage(*CREATE, "--timeout", "5", shows="--timeout is for --wait"),
        usage("ops", "tail", "--timeout", "5", shows="--timeout is for --follow"),
        # priorities are 32-bit, as in the HTTP API
        usage(*CREATE, "--priority", "99999999999999999999", shows="--priority"),
        usage(*CREATE, "--priority", str(2**31), shows="--priority"),
        usage("dev", "seed", "--type", "demo.research", "--priority", str(-(2**31) - 1),
              shows="--priority"),
        # a file that cannot be written
        usage("make", "order-type", "x.y", "-o", "/missing/dir/f.py", shows="--output"),
        # contradictory flags: neither wins
        usage("orders", "review", UNKNOWN, "--approve", "--reject", "--reason", "x",
              shows="exclude each other"),
        usage("orders", "review", UNKNOWN, "--reject", "--reason", "x", "--approve",
              shows="exclude each other"),
        # handlers that could not handle an item: refused at start-up, not on every item
        configuration(*AGENT, "--handler", "os:sep", shows="--handler"),
        configuration(*AGENT, "--handler", "workmanager.dispatch:NullDispatcher",
                      shows="--handler"),
        configuration(*AGENT, "--handler", "uuid:UUID", shows="--handler"),
    ]  # fmt: skip


@pytest.fixture
def dirs(tmp_path: Path) -> Iterator[dict[str, Path]]:
    ready = tmp_path / "ready"
    ready.mkdir()
    db = Database(f"sqlite:///{ready}/wm.db")
    upgrade(db)
    db.dispose()
    yield {"ready": ready}


def workmanager(dirs: dict[str, Path]) -> WorkManager:
    ready = dirs["ready"]
    registry = Registry()
    register(registry)
    settings = Settings(
        database_url=f"sqlite:///{ready}/wm.db", lease_backend="database", metrics_driver="null"
    )
    return WorkManager(settings, registry=registry)


def test_every_option_mistake_is_one_error_line(dirs: dict[str, Path]) -> None:
    cases = option_mistakes()
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda m: run(m, dirs), cases))
    for mistake, done in zip(cases, results, strict=True):
        check(mistake, done)


def test_a_reused_dedupe_key_is_refused_before_anything_is_sent(dirs: dict[str, Path]) -> None:
    """The worker would drop a proposal whose dedupe key names another order (of another
    payload, type or tenant): ``orders create`` answers ``dedupe_key_reused`` instead of
    "enqueued"; the same proposal again sends nothing and names the order it has."""
    wm = workmanager(dirs)
    try:
        order_id = str(wm.propose("demo.research", PAYLOAD, dedupe_key="k1"))
    finally:
        wm.close()
    other = json.dumps({**PAYLOAD, "company": "Other"})
    keyed = ("--dedupe-key", "k1")
    broker = {"WORK_MANAGER_BROKER_URL": f"sqla+sqlite:///{dirs['ready']}/broker.db"}
    for args in (
        ("orders", "create", "--type", "demo.research", "--payload", other, *keyed),
        (*CREATE, *keyed, "--tenant", "t1"),
    ):
        mistake = Mistake(args, "dedupe_key_reused", "--dedupe-key", env=broker, shows="'k1'")
        check(mistake, run(mistake, dirs))
    same = run(Mistake((*CREATE, *keyed, "--json"), "-", env=broker), dirs)
    assert same.returncode == 0, same.stderr
    assert json.loads(same.stdout) == {"id": order_id, "state": "queued", "existing": True}
    said = run(Mistake((*CREATE, *keyed), "-", env=broker), dirs)
    assert said.returncode == 0 and said.stdout.startswith(f"{order_id} already exists"), said
    new = run(Mistake((*CREATE, "--dedupe-key", "k2"), "-", env=broker), dirs)
    assert new.returncode == 0 and new.stdout.endswith(" enqueued\n"), new  # a new key is sent


def test_a_dispatcher_that_is_not_one_refuses_the_command_before_it_changes_anything(
    dirs: dict[str, Path],
) -> None:
    """The operator's ``--dispatcher`` factory was called at the first announcement, after
    the change was saved: ``dev seed --count 2`` created one order, then said
    ``configuration_error``; MCP's ``work.propose`` answered a failure for an order it had
    made, which a retry made twice."""
    seed = ("--dispatcher", "builtins:str", "dev", "seed", "--type", "demo.research")
    mistake = configuration(*seed, "--payload", COMPANY, "--count", "2", shows="not a dispatcher")
    check(mistake, run(mistake, dirs))
    wm = workmanager(dirs)
    try:
        assert Housekeeping(wm.ctx).counts()["orders"] == {}
    finally:
        wm.close()


def _hold_leases(dirs: dict[str, Path], count: int) -> None:
    wm = workmanager(dirs)
    try:
        for n in range(count):
            wm.propose("demo.research", {**PAYLOAD, "company": f"C{n}"})
            assert wm.agent.checkout("a1") is not None
    finally:
        wm.close()


def _leases(dirs: dict[str, Path], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORK_MANAGER_")}
    env.update(
        WORK_MANAGER_DATABASE_URL=f"sqlite:///{dirs['ready']}/wm.db",
        WORK_MANAGER_ORDER_TYPES="workmanager.demo.types",
        WORK_MANAGER_METRICS_DRIVER="null",
        WORK_MANAGER_LEASE_BACKEND="redis",
        WORK_MANAGER_REDIS_URL="redis://127.0.0.1:1/0",  # nothing listens there
    )
    return subprocess.run(
        [str(EXE), "--dispatcher", "none", "leases", *args],
        env=env,
        cwd=dirs["ready"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_leases_left_undone_by_an_unavailable_backend_exit_1(dirs: dict[str, Path]) -> None:
    """``leases extend`` with the lease backend down: every lease is skipped, the report
    says so, and the exit status is 1 with an ``error [unavailable]`` line (was 0)."""
    _hold_leases(dirs, 2)
    done = _leases(dirs, "extend", "--all")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "2 lease(s) were touched: 2 skipped" in done.stdout, done.stdout
    assert done.stderr.startswith("error [unavailable]: 2 lease(s) were not extended"), done
    assert "hint: " in done.stderr and "Traceback" not in done.stderr
    as_json = _leases(dirs, "extend", "--all", "--json")
    assert as_json.returncode == 1
    report: dict[str, Any] = json.loads(as_json.stdout)  # the report alone on stdout
    assert report["counts"] == {"skipped": 2}


@pytest.mark.parametrize("action", ["release", "reclaim"])
def test_leases_ended_while_the_backend_is_down_are_left_as_they_are(
    dirs: dict[str, Path], action: str
) -> None:
    """Found by an adversarial pass: ``leases release`` with Redis not answering said
    "2 released" and exited 0, with a warning that the locks were kept: the items showed
    ``queued`` and no agent could take them until the locks' TTL. Nothing is changed
    now, and the command says why, exit 1."""
    _hold_leases(dirs, 2)
    done = _leases(dirs, action, "--all")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr.startswith("error [unavailable]: redis unavailable"), done.stderr
    assert "nothing was changed" in done.stderr and "hint: " in done.stderr
    assert "Traceback" not in done.stderr
    wm = workmanager(dirs)
    try:
        with wm.db.transaction() as s:
            states = sorted(s.scalars(select(Item.state)))
    finally:
        wm.close()
    assert states == ["leased", "leased"]


def test_handlers_of_every_documented_form_load() -> None:
    """What docs/agents.md allows: a function, a class with ``handle`` or with ``parts``;
    what could not handle an item is refused at start-up, naming --handler."""
    assert callable(load_handler("tests.cli.test_option_mistakes:a_handler"))
    assert hasattr(load_handler("tests.cli.test_option_mistakes:Handles"), "handle")
    assert hasattr(load_handler("tests.cli.test_option_mistakes:Parts"), "parts")
    for bad in ("NoHook", "NotAMethod", "NeedsArguments"):
        with pytest.raises(ConfigurationError, match="--handler"):
            load_handler(f"tests.cli.test_option_mistakes:{bad}")


def a_handler(item: Any, lease: Any) -> dict[str, Any]:
    return {}


class Handles:
    def handle(self, item: Any, lease: Any) -> dict[str, Any]:
        return {}


class Parts:
    def parts(self, item: Any, lease: Any) -> Iterator[tuple[str, dict[str, Any]]]:
        yield "a", {}


class NoHook:
    pass


class NotAMethod:
    handle = "not a method"


class NeedsArguments:
    def __init__(self, config: str) -> None:
        self.config = config

    def handle(self, item: Any, lease: Any) -> dict[str, Any]:
        return {}


def test_a_mistyped_root_dispatcher_is_refused_before_anything_is_done(
    dirs: dict[str, Path],
) -> None:
    """``workmanager --dispatcher celry dev seed …`` created its orders, then failed on
    announcing them (an operator retrying made duplicates); ``… orders list`` ran as if
    nothing were wrong. Now the value is checked first; ``None`` is ``none``."""
    from click.testing import CliRunner
    from sqlalchemy import func, select

    from workmanager.cli.app import cli
    from workmanager.db.models import Order
    from workmanager.errors import ConfigurationError

    env = {
        "WORK_MANAGER_DATABASE_URL": f"sqlite:///{dirs['ready']}/wm.db",
        "WORK_MANAGER_ORDER_TYPES": "workmanager.demo.types",
    }
    seed = [
        "dev",
        "seed",
        "--type",
        "demo.research",
        "--count",
        "1",
        "--payload",
        '{"company": "c"}',
    ]
    for root in (["--dispatcher", "celry"], ["--dispatcher", "no.such.module:make"]):
        done = CliRunner().invoke(cli, [*root, *seed], env=env)
        assert isinstance(done.exception, ConfigurationError), done.output
        assert "--dispatcher" in done.exception.message
    wm = workmanager(dirs)
    try:
        with wm.db.transaction() as s:
            assert s.scalar(select(func.count()).select_from(Order)) == 0  # nothing created
    finally:
        wm.close()
    done = CliRunner().invoke(cli, ["--dispatcher", "None", *seed], env=env)
    assert done.exit_code == 0, (done.output, done.exception)
