"""The settings every process of a deployment must share (``workmanager/deployment.py``).

Found by an adversarial pass (session 16): processes that disagreed lost or doubled work
without a word. Agents on the Redis lease backend beside a control worker on the database
backend (the variable forgotten on one host): the worker's sweep trusted the row, which a
Redis heartbeat does not renew, and requeued every live lease until the items failed; a
Redis key prefix or a TTL of its own did the same. Each is refused now: at start-up,
naming the variable, and by the sweep before it judges a lease expired."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from tests.support.own_redis import free_port
from tests.support.types import Simple
from workmanager import Registry, WorkManager, deployment
from workmanager.errors import ConfigurationError, ValidationFailed
from workmanager.reads.leases import LeaseSelector
from workmanager.services.lease_admin import LeaseAdmin
from workmanager.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


EXE = Path(sys.executable).with_name("workmanager")


def test_the_first_process_records_the_others_are_compared(
    make_wm: Callable[..., WorkManager], database: str
) -> None:
    first = make_wm(db=database, backend="database", lease_ttl_seconds=30)
    assert deployment.read(first.db) is None
    deployment.check(first.db, first.settings, first=False)  # the sweep: records nothing
    assert deployment.read(first.db) is None
    deployment.check(first.db, first.settings)  # a start-up: the first record
    record = deployment.read(first.db)
    assert record is not None and record.value["lease_backend"] == "database"
    assert record.value["lease_ttl_seconds"] == 30 and "redis_prefix" not in record.value
    deployment.check(first.db, first.settings)  # the same settings pass
    other = Settings(**{**vars(first.settings), "lease_ttl_seconds": 60})
    with pytest.raises(ConfigurationError) as refused:
        deployment.check(first.db, other)
    assert str(refused.value.message).startswith(
        "WORK_MANAGER_LEASE_TTL_SECONDS is 60 here, 30 for this deployment (recorded by "
    )
    assert refused.value.hint is not None and "workmanager db upgrade" in refused.value.hint
    # `db upgrade` records the new value, and says what changed
    [changed] = deployment.record(first.db, other)
    assert (changed.name, changed.here, changed.recorded) == ("lease_ttl_seconds", 60, 30)
    deployment.check(first.db, other)
    with pytest.raises(ConfigurationError, match="LEASE_TTL_SECONDS is 30 here, 60"):
        deployment.check(first.db, first.settings)


def test_the_visibility_timeout_is_shared_where_the_broker_redelivers_by_it(
    make_wm: Callable[..., WorkManager], database: str
) -> None:
    """Found in review: a worker with a shorter broker visibility timeout took back (on
    the embedded broker and Redis) the messages other workers were still running."""
    first = make_wm(db=database, backend="database", broker_url="sqla+sqlite:///b.db")
    deployment.check(first.db, first.settings)
    assert deployment.read(first.db).value["broker_visibility_timeout_seconds"] == 3600  # type: ignore[union-attr]
    shorter = Settings(**{**vars(first.settings), "broker_visibility_timeout_seconds": 60})
    with pytest.raises(ConfigurationError, match="VISIBILITY_TIMEOUT_SECONDS is 60 here, 3600"):
        deployment.check(first.db, shorter)
    on_rabbitmq = {"broker_url": "amqp://guest@mq//", "broker_visibility_timeout_seconds": 60}
    assert "broker_visibility_timeout_seconds" not in deployment.shared(
        Settings(**{**vars(first.settings), **on_rabbitmq})
    )  # RabbitMQ redelivers when a connection drops: the setting is not read there


@pytest.mark.postgres
@pytest.mark.redis
def test_a_sweep_on_another_lease_backend_reclaims_no_live_lease(
    make_wm: Callable[..., WorkManager],
) -> None:
    """The agents' process on Redis, heartbeating past the row's recorded expiry (a Redis
    heartbeat renews the lock only); a worker whose WORK_MANAGER_LEASE_BACKEND was left
    at its default sweeps: refused, and the lease is still held."""
    agents = make_wm(db="postgres", backend="redis", lease_ttl_seconds=2,
                     registry=Registry([Simple()]))  # fmt: skip
    deployment.check(agents.db, agents.settings)  # the agents' process started first
    worker = make_wm(db="postgres", backend="database", lease_ttl_seconds=2,
                     registry=Registry([Simple()]))  # fmt: skip
    order_id = agents.propose("test.simple", {})
    lease = agents.agent.checkout("a", order_id=order_id)
    assert lease is not None
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:  # alive in Redis, past the row's expiry
        lease = agents.agent.heartbeat(lease)
        time.sleep(0.4)
    with pytest.raises(ConfigurationError, match="LEASE_BACKEND is 'database' here, 'redis'"):
        worker.sweeper.sweep()
    admin = LeaseAdmin(worker.ctx)  # an operator's shell, the variable forgotten
    for act in (
        lambda: admin.reclaim(LeaseSelector(expired=True)),
        lambda: admin.extend(LeaseSelector(agent_id="a"), 300),
        lambda: admin.release(LeaseSelector(agent_id="a")),
        lambda: admin.reclaim(LeaseSelector(agent_id="a")),
    ):  # extend and release "succeeded" on the row alone, the Redis lock left as it was
        with pytest.raises(ConfigurationError, match="LEASE_BACKEND is 'database' here"):
            act()
    assert agents.queries.item(lease.item_id)["state"] in ("leased", "in_progress")
    agents.agent.submit(lease, {"answer": 1})  # the work was not lost


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("WORK_MANAGER_")}
    base |= {
        "PYTHONPATH": str(ROOT),
        "WORK_MANAGER_DATABASE_URL": f"sqlite:///{cwd}/wm.db",
        "WORK_MANAGER_BROKER_URL": f"sqla+sqlite:///{cwd}/broker.db",
        "WORK_MANAGER_METRICS_DRIVER": "null",
    }
    return subprocess.run(
        args, env=base | env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-P", "solo"],
        [str(EXE), "serve", "--port", str(free_port())],
    ],
    ids=["celery-worker", "serve"],
)
def test_a_process_configured_otherwise_refuses_to_start_naming_the_variable(
    tmp_path: Path, command: list[str]
) -> None:
    upgraded = run([str(EXE), "db", "upgrade"], tmp_path, WORK_MANAGER_LEASE_TTL_SECONDS="120")
    assert upgraded.returncode == 0, upgraded.stderr
    done = run(command, tmp_path)  # the TTL variable forgotten on this host
    assert done.returncode == 1, done.stdout + done.stderr
    [line] = [x for x in done.stderr.splitlines() if x.startswith("error [")]
    assert line.startswith(
        "error [configuration_error]: WORK_MANAGER_LEASE_TTL_SECONDS is 600 here, 120 for"
        " this deployment (recorded by workmanager db upgrade on "
    ), line
    assert "Traceback" not in done.stderr, done.stderr


def test_db_upgrade_changes_the_record_only_when_asked(tmp_path: Path) -> None:
    """A `db upgrade` from a shell or host missing a variable (every web unit runs one
    before it starts) must not change the deployment: it says the difference and leaves
    the record; `--record-settings` changes it, and says what changed."""
    first = run([str(EXE), "db", "upgrade"], tmp_path)
    assert first.returncode == 0, first.stderr
    # the first record is said (an upgrade from a shell missing a variable shows it)
    assert "recorded the deployment's settings: WORK_MANAGER_LEASE_BACKEND=database" in (
        first.stdout
    )
    upgrade = [str(EXE), "db", "upgrade"]
    other = {"WORK_MANAGER_AGENT_QUEUE_PREFIX": "ag."}
    left = run(upgrade, tmp_path, **other)
    assert left.returncode == 0, left.stderr
    assert left.stderr.startswith(
        "warning: WORK_MANAGER_AGENT_QUEUE_PREFIX is 'ag.' here, 'agents.' for this deployment"
    ), left.stderr
    assert "--record-settings" in left.stderr and "Traceback" not in left.stderr
    recorded = run([*upgrade, "--record-settings"], tmp_path, **other)
    assert recorded.returncode == 0, recorded.stderr
    assert "recorded WORK_MANAGER_AGENT_QUEUE_PREFIX: 'agents.' -> 'ag.'" in recorded.stdout
    assert "(drain the old queue, then restart every process" in recorded.stdout
    assert run(upgrade, tmp_path, **other).stderr == ""  # now the deployment's


def test_a_sweep_task_refused_is_one_line(
    make_wm: Callable[..., WorkManager], caplog: pytest.LogCaptureFixture
) -> None:
    """It was Celery's "Task workmanager.leases.sweep raised unexpected" and a traceback,
    at every beat."""
    import tasks.beat
    from tasks.runtime import set_wm

    wm = make_wm(backend="database", lease_ttl_seconds=30)
    deployment.record(wm.db, Settings(**{**vars(wm.settings), "lease_ttl_seconds": 60}))
    set_wm(wm)
    try:
        assert tasks.beat.sweep.run() == {"skipped": 1}
    finally:
        set_wm(None)
    [line] = [r.getMessage() for r in caplog.records if "sweep refused" in r.getMessage()]
    assert "WORK_MANAGER_LEASE_TTL_SECONDS is 30 here, 60" in line and "hint:" in line


class SelfChecking(Simple):
    """A hook set on the instance, as the test types set ``auto_approve``."""

    type = "test.self-checking"

    def __init__(self) -> None:
        super().__init__()

        def no_secrets(item: object, result: dict[str, object]) -> None:
            if "secret" in result:
                raise ValidationFailed.at("result.secret", "not here", "custom")

        self.validate_submission = no_secrets  # type: ignore[method-assign]


def test_a_validation_hook_set_on_the_instance_runs(
    make_wm: Callable[..., WorkManager],
) -> None:
    """Found reviewing this session: only the class's hooks were seen as the type's own."""
    wm = make_wm(registry=Registry([SelfChecking()]))
    order_id = wm.propose("test.self-checking", {})
    lease = wm.agent.checkout("a", order_id=order_id)
    assert lease is not None
    with pytest.raises(ValidationFailed):
        wm.agent.submit(lease, {"answer": 1, "secret": "x"})


def test_a_process_without_the_order_type_leaves_the_auto_approval_to_one_with_it(
    make_wm: Callable[..., WorkManager], database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A control worker missing WORK_MANAGER_ORDER_TYPES recorded ``auto_approval_refused``
    (unknown order type), after which nothing ever asked again: the order waited for a
    person even once the worker was fixed. It is not the order's refusal."""
    with_type = make_wm(db=database, backend="database", registry=Registry([Simple(auto=True)]))
    without = make_wm(db=database, backend="database", registry=Registry())
    order_id = with_type.propose("test.simple", {})
    lease = with_type.agent.checkout("a", order_id=order_id)
    assert lease is not None
    with_type.agent.submit(lease, {"answer": 1})
    assert without.orders.check_auto_approval(order_id) is False
    events = [e["event"] for e in with_type.queries.events(order_id)]
    assert "auto_approval_refused" not in events
    assert "lacks the module in WORK_MANAGER_ORDER_TYPES" in caplog.text
    assert with_type.orders.check_auto_approval(order_id) is True
    assert with_type.queries.order(order_id)["state"] == "approved"


@pytest.mark.postgres
def test_records_made_at_once_both_succeed(make_wm: Callable[..., WorkManager]) -> None:
    """Two `db upgrade` started together (hosts of one deploy) both found no record and
    both inserted: one failed with a unique violation (seen under load in make test)."""
    import threading

    from sqlalchemy import delete

    from workmanager.db.models import DeploymentRecord

    wm = make_wm(db="postgres", backend="database")
    for _ in range(20):
        with wm.db.transaction() as session:
            session.execute(delete(DeploymentRecord))
        barrier = threading.Barrier(4)
        errors: list[BaseException] = []

        def upgrade(barrier: threading.Barrier, errors: list[BaseException]) -> None:
            barrier.wait()
            try:
                deployment.record(wm.db, wm.settings)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=upgrade, args=(barrier, errors)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert deployment.read(wm.db) is not None


def test_an_agent_in_a_script_grants_nothing_on_other_settings(
    make_wm: Callable[..., WorkManager], database: str
) -> None:
    """Found by a newcomer's pass: a script's ``WorkManager`` on Redis leases beside a
    deployment on the database backend compared nothing; its live lease was swept by the
    deployment's reclaim and its submit refused. Its first checkout compares now (as a
    server or agent started while the database was down does: they compared nothing)."""
    from workmanager.errors import Unavailable

    recorded = make_wm(db=database, backend="database", registry=Registry([Simple()]))
    deployment.check(recorded.db, recorded.settings)
    script = make_wm(db=database, backend="memory", registry=Registry([Simple()]))
    order_id = recorded.propose("test.simple", {})
    with pytest.raises(Unavailable, match="LEASE_BACKEND is 'memory' here, 'database'") as no:
        script.agent.checkout("a", order_id=order_id)
    assert no.value.http_status == 503 and no.value.hint is not None
    assert recorded.queries.order(order_id)["items"][0]["state"] == "queued"  # nothing taken
    assert recorded.agent.checkout("a", order_id=order_id) is not None


@pytest.mark.parametrize("call", ["submit", "submit_part", "finalize", "release", "fail"])
def test_a_process_on_other_settings_ends_no_lease(
    make_wm: Callable[..., WorkManager], database: str, call: str
) -> None:
    """Found by a scale-out pass: a server started while the database was down (so with
    nothing compared) on the database backend beside a Redis deployment refused checkouts
    and heartbeats (503) but took submits, releases and fails: it judged a live Redis lease
    expired by its lagging row (the agent dropped finished work), and left the locks of
    the leases it ended, the agent's lease limit full until their TTL. Every call that
    judges a lease compares first."""
    from workmanager.errors import Unavailable

    recorded = make_wm(db=database, backend="memory", registry=Registry([Simple()]))
    deployment.check(recorded.db, recorded.settings)
    other = make_wm(db=database, backend="database", registry=Registry([Simple()]))
    order_id = recorded.propose("test.simple", {})
    lease = recorded.agent.checkout("a", order_id=order_id)
    assert lease is not None
    act = {
        "submit": lambda: other.agent.submit(lease, {"answer": 1}),
        "submit_part": lambda: other.agent.submit_part(lease, "p", {"x": 1}),
        "finalize": lambda: other.agent.finalize(lease),
        "release": lambda: other.agent.release(lease),
        "fail": lambda: other.agent.fail(lease, {"code": "e", "message": "m"}),
    }[call]
    with pytest.raises(Unavailable, match="LEASE_BACKEND is 'database' here, 'memory'"):
        act()
    assert recorded.queries.order(order_id)["items"][0]["state"] == "leased"  # untouched
    assert recorded.agent.submit(lease, {"answer": 1}).order_submitted


def test_the_demo_on_another_deployments_database_stops_without_changing_it(
    tmp_path: Path,
) -> None:
    """It replaced the record silently (every process of that deployment then refused to
    start); a second demo with another TTL waited out its timeout."""
    assert (
        run([str(EXE), "db", "upgrade"], tmp_path, WORK_MANAGER_LEASE_TTL_SECONDS="120").returncode
        == 0
    )
    done = run([str(EXE), "demo", "--orders", "1", "--timeout", "30"], tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "error [configuration_error]: WORK_MANAGER_LEASE_TTL_SECONDS is 600 here, 120" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr
    record = run([str(EXE), "ops", "check"], tmp_path, WORK_MANAGER_LEASE_TTL_SECONDS="120")
    assert record.returncode == 0, record.stdout + record.stderr  # the record is as it was


@pytest.mark.redis
def test_switching_back_to_redis_leases_forgets_the_locks_of_the_earlier_period(
    make_wm: Callable[..., WorkManager],
) -> None:
    """Found by an adversarial pass: redis → database → redis within a lease TTL left the
    first period's locks in Redis. An item released meanwhile showed ``queued`` but no
    checkout could take it, and a lease granted under the database backend was refused
    ``lease_conflict`` with the sweep reclaiming nothing. ``db upgrade --record-settings``
    to the Redis backend deletes the prefix's locks (and the marker: the first sweep
    checks every held lease)."""
    from click.testing import CliRunner

    from workmanager.cli.app import Env, cli

    on_redis = make_wm(db="postgres", backend="redis", registry=Registry([Simple()]))
    deployment.record(on_redis.db, on_redis.settings)
    on_redis.propose("test.simple", {"n": 1})
    first = on_redis.agent.checkout("agent-a")
    assert first is not None
    on_db = make_wm(db="postgres", backend="database", registry=Registry([Simple()]))
    deployment.record(on_db.db, on_db.settings)  # the switch: every process stopped
    on_db.agent.release(first)  # under the database backend: the Redis lock stays
    done = CliRunner().invoke(cli, ["db", "upgrade", "--record-settings"], obj=Env(on_redis))
    assert done.exit_code == 0, done.output
    assert "lease locks: " in done.output and "deleted" in done.output, done.output
    again = on_redis.agent.checkout("agent-b", item_id=first.item_id)
    assert again is not None and again.fence == first.fence + 1
    unchanged = CliRunner().invoke(cli, ["db", "upgrade", "--record-settings"], obj=Env(on_redis))
    assert "lease locks" not in unchanged.output  # no switch: the locks are live ones
    assert on_redis.agent.heartbeat(again) is not None


@pytest.mark.redis
def test_a_switch_to_redis_leases_carries_the_held_leases_into_redis(
    make_wm: Callable[..., WorkManager],
) -> None:
    """Found by an operator pass: database → Redis with a lease held (its agent alive)
    had the first sweep reclaim it, an attempt spent, and an item on its last attempt
    failed with its order. The switch locks each held lease in Redis under its row's
    fence, holder and secret hash: its holder carries on."""
    from click.testing import CliRunner

    from workmanager.cli.app import Env, cli

    registry = Registry([Simple()])
    on_db = make_wm(db="postgres", backend="database", registry=registry, default_max_attempts=1)
    deployment.record(on_db.db, on_db.settings)
    order_id = on_db.propose("test.simple", {"n": 1})
    lease = on_db.agent.heartbeat(on_db.agent.checkout("agent-a"))
    on_redis = make_wm(db="postgres", backend="redis", registry=registry, default_max_attempts=1)
    done = CliRunner().invoke(cli, ["db", "upgrade", "--record-settings"], obj=Env(on_redis))
    assert done.exit_code == 0, done.output
    assert "leases held: 1 locked in Redis under their rows' fences" in done.output, done.output
    assert on_redis.sweeper.sweep().reclaimed == 0  # the audit finds its lock
    lease = on_redis.agent.heartbeat(lease)  # the lock's alone: the row is in_progress
    on_redis.agent.submit(lease, {"answer": 1})
    assert on_redis.queries.order(order_id)["state"] == "submitted"


@pytest.mark.redis
def test_a_switch_to_database_leases_brings_the_rows_up_to_their_locks(
    make_wm: Callable[..., WorkManager], redis_url: str
) -> None:
    """Found by an operator pass: Redis → database cut every held lease short. A
    heartbeat without progress renews only the Redis lock, so the row's expiry lagged what
    its holder was told, and the database backend's sweep (and checks) went by the row.
    The switch sets each held row's expiry to its lock's end."""
    from click.testing import CliRunner

    from workmanager.cli.app import Env, cli

    registry = Registry([Simple()])
    on_redis = make_wm(db="postgres", backend="redis", registry=registry, lease_ttl_seconds=3)
    deployment.record(on_redis.db, on_redis.settings)
    on_redis.propose("test.simple", {"n": 1})
    lease = on_redis.agent.heartbeat(on_redis.agent.checkout("agent-a"))  # the row's
    time.sleep(1.5)
    lease = on_redis.agent.heartbeat(lease)  # the lock's alone: 1.5 s past the row's
    told = lease.expires_at
    on_db = make_wm(
        db="postgres", backend="database", registry=registry, lease_ttl_seconds=3,
        redis_url=redis_url,  # where the locks are: the switching shell's variable
    )  # fmt: skip
    done = CliRunner().invoke(cli, ["db", "upgrade", "--record-settings"], obj=Env(on_db))
    assert done.exit_code == 0, done.output
    assert "leases held: 1 row expiries brought up" in done.output, done.output
    row = on_db.queries.item(lease.item_id)
    assert abs((datetime.fromisoformat(row["lease_expires_at"]) - told).total_seconds()) < 0.5
    time.sleep(1.7)  # past the row's old expiry, before the one its holder was told
    assert on_db.sweeper.sweep().reclaimed == 0
    assert on_db.agent.heartbeat(lease) is not None


@pytest.mark.redis
def test_a_switch_to_another_redis_prefix_carries_the_held_leases(
    make_wm: Callable[..., WorkManager],
) -> None:
    """A review: a switch to another prefix (or cluster) deleted the new prefix's keys and
    carried nothing, so the first sweep reclaimed every held lease, as a switch between
    backends did. The rows are brought up to the old locks, then locked under the new
    prefix; ``--json`` says so too."""
    import json

    from click.testing import CliRunner

    from workmanager.cli.app import Env, cli

    registry = Registry([Simple()])
    before = make_wm(db="postgres", backend="redis", registry=registry)
    deployment.record(before.db, before.settings)
    order_id = before.propose("test.simple", {"n": 1})
    lease = before.agent.heartbeat(before.agent.checkout("agent-a"))  # the row's
    time.sleep(1.1)
    lease = before.agent.heartbeat(lease)  # the lock's alone: later than the row's
    prefix = before.settings.redis_prefix + "moved:"
    after = make_wm(db="postgres", backend="redis", registry=registry, redis_prefix=prefix)
    args = ["db", "upgrade", "--record-settings", "--json"]
    done = CliRunner().invoke(cli, args, obj=Env(after))
    assert done.exit_code == 0, done.output
    carried = json.loads(done.output)["leases"]
    assert carried == {"forgotten": 0, "rows": 1, "locks": 1, "unread": None}, carried
    assert after.sweeper.sweep().reclaimed == 0
    after.agent.submit(after.agent.heartbeat(lease), {"answer": 1})
    assert after.queries.order(order_id)["state"] == "submitted"


@pytest.mark.redis
def test_a_switch_whose_old_locks_cannot_be_read_says_so(
    make_wm: Callable[..., WorkManager],
) -> None:
    """A switch from Redis whose locks cannot be read (the shell's WORK_MANAGER_REDIS_URL
    names no server): one warning line on stderr, ``unread`` in --json, exit 0 (the
    switch is recorded; the leases end at their rows' expiries, as the warning says)."""
    import json

    from click.testing import CliRunner

    from workmanager.cli.app import Env, cli

    registry = Registry([Simple()])
    on_redis = make_wm(db="postgres", backend="redis", registry=registry)
    deployment.record(on_redis.db, on_redis.settings)
    on_redis.propose("test.simple", {"n": 1})
    assert on_redis.agent.checkout("agent-a") is not None  # a lease held under Redis
    closed = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens: the locks are unread
    on_db = make_wm(db="postgres", backend="database", registry=registry, redis_url=closed)
    args = ["db", "upgrade", "--record-settings", "--json"]
    done = CliRunner().invoke(cli, args, obj=Env(on_db))
    assert done.exit_code == 0, done.output
    [warning] = done.stderr.splitlines()
    assert warning.startswith("warning: leases held: their Redis locks could not be read")
    carried = json.loads(done.stdout)["leases"]
    assert carried["rows"] is None and carried["unread"] and carried["locks"] is None


def test_the_record_is_said_as_its_variables_are_set() -> None:
    """An operator-docs pass: a boolean was said as Python writes it (``=False``)."""
    said = deployment.described(Settings.from_env({"WORK_MANAGER_LEASE_BACKEND": "redis"}))
    assert "WORK_MANAGER_REDIS_CLUSTER=false" in said and "False" not in said
