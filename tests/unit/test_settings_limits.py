"""Values that start fine and crash later are refused at start-up, naming the variable:
absurd durations, ports and counts; Redis and broker URLs no client can use; a config
file that is not UTF-8; an enricher that cannot be built (SPEC §2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from workmanager import Settings
from workmanager.errors import ConfigurationError
from workmanager.importing import import_object
from workmanager.provenance.recorder import build_enricher
from workmanager.settings_parsing import SPECS
from workmanager.settings_values import MAX_COUNT, MAX_DURATION_HOURS, MAX_DURATION_SECONDS

DURATION_FIELDS = [
    spec.field for spec in SPECS if spec.field.endswith(("_seconds", "_hours", "_port"))
]


def refusal(env: dict[str, str]) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env(env)
    return info.value


def test_the_ceiling_fits_what_the_services_compute() -> None:
    """Why ten years: ``now + duration`` never overflows, in seconds or hours."""
    now = datetime.now(UTC)
    assert now + timedelta(seconds=MAX_DURATION_SECONDS) > now
    assert timedelta(hours=MAX_DURATION_HOURS) == timedelta(seconds=MAX_DURATION_SECONDS)
    assert MAX_DURATION_SECONDS * 1000 < 2**63  # Redis PEXPIRE milliseconds


@pytest.mark.parametrize("field", DURATION_FIELDS)
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e300", "99999999999999999999", "-1"])
def test_every_duration_and_port_refuses_absurd_values(field: str, value: str) -> None:
    variable = "WORK_MANAGER_" + field.upper()
    error = refusal({variable: value})
    assert error.message.startswith(f"{variable}: expected "), error.message
    assert error.message.endswith(f"got {value!r}")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WORK_MANAGER_LEASE_TTL_SECONDS", str(MAX_DURATION_SECONDS + 1)),
        ("WORK_MANAGER_LEASE_TTL", "99999999999999999999"),  # the seed's alias
        ("WORK_MANAGER_HEARTBEAT_EVERY_SECONDS", "0"),
        ("WORK_MANAGER_RETRY_JITTER_SECONDS", "Infinity"),
        ("WORK_MANAGER_RETRY_BACKOFF_SECONDS", str(MAX_DURATION_SECONDS + 0.5)),
        ("WORK_MANAGER_SWEEP_INTERVAL_SECONDS", "0"),
        ("WORK_MANAGER_MAINTENANCE_INTERVAL_SECONDS", "0.0"),
        ("WORK_MANAGER_IDEMPOTENCY_TTL_HOURS", str(MAX_DURATION_HOURS + 1)),
        ("WORK_MANAGER_DEAD_LETTER_AFTER_HOURS", "1e10"),
        ("WORK_MANAGER_STATSD_PORT", "0"),
        ("WORK_MANAGER_STATSD_PORT", "65536"),
        ("WORK_MANAGER_DEFAULT_MAX_ATTEMPTS", str(MAX_COUNT + 1)),
        ("WORK_MANAGER_SWEEP_BATCH_SIZE", "99999999999999999999"),
        ("WORK_MANAGER_MAX_LEASES_PER_AGENT", str(MAX_COUNT + 1)),
        ("WORK_MANAGER_IDEMPOTENCY_TTL", str(MAX_DURATION_SECONDS + 1)),  # upstream's
    ],
)
def test_values_past_a_limit_are_refused(variable: str, value: str) -> None:
    message = refusal({variable: value}).message
    assert message.startswith(f"{variable}: expected "), message


def test_the_message_says_the_range() -> None:
    message = refusal({"WORK_MANAGER_LEASE_TTL_SECONDS": "99999999999999999999"}).message
    assert message == (
        "WORK_MANAGER_LEASE_TTL_SECONDS: expected whole seconds from 1 to 315360000 "
        "(ten years), got '99999999999999999999'"
    )
    message = refusal({"WORK_MANAGER_SWEEP_INTERVAL_SECONDS": "0"}).message
    assert "above 0" in message
    assert "from 1 to 65535" in refusal({"WORK_MANAGER_STATSD_PORT": "99999"}).message


def test_the_limits_themselves_are_accepted() -> None:
    s = Settings.from_env(
        {
            "WORK_MANAGER_LEASE_TTL_SECONDS": str(MAX_DURATION_SECONDS),
            "WORK_MANAGER_RETRY_BACKOFF_SECONDS": "0",
            "WORK_MANAGER_RETRY_JITTER_SECONDS": "0.5",
            "WORK_MANAGER_SWEEP_INTERVAL_SECONDS": "0.05",
            "WORK_MANAGER_REANNOUNCE_AFTER_SECONDS": "0",
            "WORK_MANAGER_API_SHUTDOWN_GRACE_SECONDS": "0",
            "WORK_MANAGER_IDEMPOTENCY_TTL_HOURS": str(MAX_DURATION_HOURS),
            "WORK_MANAGER_STATSD_PORT": "65535",
            "WORK_MANAGER_DEFAULT_MAX_ATTEMPTS": str(MAX_COUNT),
        }
    )
    assert s.lease_ttl_seconds == MAX_DURATION_SECONDS
    assert (s.retry_backoff_seconds, s.retry_jitter_seconds) == (0, 0.5)
    assert (s.sweep_interval_seconds, s.reannounce_after_seconds) == (0.05, 0)
    assert (s.idempotency_ttl_hours, s.statsd_port) == (MAX_DURATION_HOURS, 65535)
    assert Settings.from_env({"WORK_MANAGER_IDEMPOTENCY_TTL": "7200"}).idempotency_ttl_hours == 2


@pytest.mark.parametrize(
    ("line", "variable"),
    [
        ("retry_backoff_seconds = inf", "WORK_MANAGER_RETRY_BACKOFF_SECONDS"),
        ("retry_jitter_seconds = nan", "WORK_MANAGER_RETRY_JITTER_SECONDS"),
        ("lease_ttl_seconds = 99999999999999999999", "WORK_MANAGER_LEASE_TTL_SECONDS"),
        ("lease_ttl_seconds = 1e30", "WORK_MANAGER_LEASE_TTL_SECONDS"),
        ("sweep_interval_seconds = 0", "WORK_MANAGER_SWEEP_INTERVAL_SECONDS"),
        ("statsd_port = 99999", "WORK_MANAGER_STATSD_PORT"),
        ("stale_order_hours = 1e300", "WORK_MANAGER_STALE_ORDER_HOURS"),
        ("idempotency_ttl = 99999999999999999999", "WORK_MANAGER_IDEMPOTENCY_TTL"),
    ],
)
def test_the_file_has_the_same_limits(tmp_path: Path, line: str, variable: str) -> None:
    path = tmp_path / "wm.toml"
    path.write_text(line + "\n")
    message = refusal({"WORK_MANAGER_CONFIG": str(path)}).message
    assert message.startswith(f"{variable}: expected "), message


def test_a_config_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes("lease_ttl_seconds = 5\n# caf\u00e9\n".encode("latin-1"))
    error = refusal({"WORK_MANAGER_CONFIG": str(path)})
    assert error.message.startswith(f"WORK_MANAGER_CONFIG: cannot read {str(path)!r}: not UTF-8")
    assert error.hint and "UTF-8" in error.hint


@pytest.mark.parametrize("url", ["http://x", "https://h:6379/0", "sqla+sqlite:///r.db", "tcp://h"])
def test_a_redis_url_of_another_scheme_is_refused(url: str) -> None:
    message = refusal({"WORK_MANAGER_REDIS_URL": url}).message
    assert message.startswith("WORK_MANAGER_REDIS_URL: expected a redis://, rediss:// or unix://")
    alias = refusal({"WORK_MANAGER_REDIS_CONNECTION": url}).message
    assert alias.startswith("WORK_MANAGER_REDIS_CONNECTION: expected")


def test_a_refused_redis_url_does_not_repeat_its_password() -> None:
    message = refusal({"WORK_MANAGER_REDIS_URL": "http://user:hunter2@x:6379/0"}).message
    assert "hunter2" not in message and "'http'" in message


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "rediss://h:6380/1", "unix:///run/redis.sock", "REDIS://h"]
)
def test_redis_urls_of_the_three_schemes_are_accepted(url: str) -> None:
    assert Settings.from_env({"WORK_MANAGER_REDIS_URL": url}).redis_url == url


@pytest.mark.parametrize(
    "url",
    [
        "sqla+sqlite:///./var/broker.db",
        "sqla+postgresql+psycopg://wm@db/wm",
        "redis://h:6379/1",
        "rediss://h:6380/1",
        "amqp://guest@h//",
        "pyamqp://h",
        "memory://",
        "sentinel://h:26379;sentinel://h2:26379",
        "amqp://a//;amqp://b//",
    ],
)
def test_broker_urls_of_kombus_transports_are_accepted(url: str) -> None:
    assert Settings.from_env({"WORK_MANAGER_BROKER_URL": url}).broker_url == url


@pytest.mark.parametrize(
    ("url", "transport"),
    [
        ("bogus://", "bogus"),
        ("http://h", "http"),
        ("postgresql://wm@db/wm", "postgresql"),  # a database URL without sqla+
        ("nope+sqlite:///b.db", "nope"),
        ("amqp://a//;bogus://b", "bogus"),
        ("SQLA+sqlite:///b.db", "SQLA"),  # kombu takes the part before + as written
    ],
)
def test_a_broker_url_naming_no_kombu_transport_is_refused(url: str, transport: str) -> None:
    for variable in ("WORK_MANAGER_BROKER_URL", "WORK_MANAGER_QUEUE_CONNECTION"):
        message = refusal({variable: url}).message
        assert message.startswith(f"{variable}: unknown broker transport {transport!r}"), message


def test_a_mistyped_broker_transport_gets_a_suggestion() -> None:
    error = refusal({"WORK_MANAGER_BROKER_URL": "reddis://h:6379/1"})
    assert error.hint and error.hint.startswith("did you mean redis://?")


def test_connection_names_still_resolve() -> None:
    s = Settings.from_env(
        {"WORK_MANAGER_QUEUE_CONNECTION": "redis", "WORK_MANAGER_REDIS_CONNECTION": "default"}
    )
    assert s.broker_url == s.redis_url == Settings.redis_url
    database = Settings.from_env({"WORK_MANAGER_QUEUE_CONNECTION": "database"})
    assert database.broker_url == "sqla+" + Settings.database_url


@pytest.mark.parametrize(
    ("reference", "said"),
    [
        ("os:path", "'os:path' is a module, not a function or class"),
        ("os:sep", "'os:sep' is a str, not a function or class"),
        ("builtins:len", "cannot build 'builtins:len'"),
        ("builtins:dict", "built a dict, which has no enrich(action, agent) method"),
    ],
)
def test_an_enricher_that_cannot_be_built_is_a_configuration_error(
    reference: str, said: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        build_enricher(Settings(provenance_enricher=reference))
    assert info.value.message.startswith("WORK_MANAGER_PROVENANCE_ENRICHER: ")
    assert said in info.value.message
    assert info.value.hint


def test_a_default_enricher_subclass_is_built() -> None:
    settings = Settings(
        provenance_enricher="workmanager.provenance:DefaultEnricher",
        provenance_anonymize_ip=True,
    )
    assert build_enricher(settings).anonymize is True  # type: ignore[attr-defined]


def test_import_object_refuses_what_cannot_be_called() -> None:
    with pytest.raises(ConfigurationError) as info:
        import_object("os:path", "WORK_MANAGER_METRICS_DRIVER")
    assert info.value.message.startswith("WORK_MANAGER_METRICS_DRIVER: 'os:path' is a module")
    assert import_object("os.path:join", "X") is __import__("os").path.join


@pytest.mark.parametrize(
    ("variable", "url", "host"),
    [
        ("WORK_MANAGER_REDIS_URL", "redis://127.0.0.1:18211;127.0.0.1:18212/0",
         "127.0.0.1:18211;127.0.0.1:18212"),
        ("WORK_MANAGER_REDIS_URL", "redis://127.0.0.1:1821a/0", "127.0.0.1:1821a"),
        ("WORK_MANAGER_REDIS_URL", "redis://:hunter2@127.0.0.1:99999/0", "127.0.0.1:99999"),
        ("WORK_MANAGER_DATABASE_URL", "postgresql+psycopg://u:hunter2@127.0.0.1:54x2/wm",
         "127.0.0.1:54x2"),
    ],
)  # fmt: skip
def test_a_port_that_is_not_one_is_refused_naming_the_variable(
    variable: str, url: str, host: str
) -> None:
    """A typo in a port raised ValueError from the driver on first use: a traceback from
    every command. Refused with the settings, the host part shown, never the password."""
    error = refusal({variable: url})
    assert error.message == f"{variable}: the port in {host!r} is not a number from 1 to 65535"
    assert "hunter2" not in error.message and error.hint
