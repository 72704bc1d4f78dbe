"""Settings (SPEC §2): defaults, seed-name aliases, the TOML file, and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from workmanager import Settings
from workmanager.errors import ConfigurationError
from workmanager.settings import DEFAULT_ENFORCE_ON, EMBEDDED_BROKER


def test_defaults_match_the_spec() -> None:
    s = Settings.from_env({})
    assert s.database_url == "sqlite:///./var/workmanager.db"
    assert s.broker_url == EMBEDDED_BROKER and s.uses_embedded_broker
    assert s.result_backend is None
    assert s.lease_backend == "database"
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.redis_prefix == "work:lease:"
    assert (s.lease_ttl_seconds, s.heartbeat_every_seconds) == (600, 120)
    assert s.max_leases_per_agent is None and s.max_leases_per_type is None
    assert s.default_max_attempts == 3
    assert (s.retry_backoff_seconds, s.retry_jitter_seconds) == (60, 20)
    assert s.sweep_interval_seconds == 15
    assert (s.apply_max_retries, s.apply_retry_backoff_seconds) == (3, 10)
    assert s.apply_recovery_seconds == 300
    assert (s.metrics_enabled, s.metrics_driver, s.metrics_namespace) == (
        True,
        "log",
        "work_manager",
    )
    assert (s.statsd_host, s.statsd_port, s.statsd_tag_style) == ("127.0.0.1", 8125, "influxdb")
    assert s.order_types == ()
    assert s.idempotency_header == "X-Idempotency-Key"
    assert s.idempotency_enforce_on == DEFAULT_ENFORCE_ON
    assert set(DEFAULT_ENFORCE_ON) == {
        "propose",
        "submit",
        "submit-part",
        "finalize",
        "approve",
        "reject",
    }
    assert s.idempotency_ttl_hours == 24
    assert (s.max_parts_per_item, s.max_part_payload_bytes, s.max_body_bytes) == (
        100,
        1_048_576,
        4_194_304,
    )
    assert s.api_prefix == "/agent/work"
    assert s.auth == "tokens"
    assert (s.dead_letter_after_hours, s.stale_order_hours) == (48, 24)


def test_from_env_ignores_unrelated_variables() -> None:
    s = Settings.from_env({"PATH": "/bin", "LEASE_BACKEND": "redis", "WORK_MANAGER_NOPE": "x"})
    assert s == Settings.from_env({})


def test_settings_are_frozen() -> None:
    s = Settings.from_env({})
    with pytest.raises(AttributeError):
        s.lease_backend = "redis"  # type: ignore[misc]
    assert s.replace(lease_backend="redis").lease_backend == "redis"
    assert s.lease_backend == "database"


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("WORK_MANAGER_LEASE_BACKEND", "redis", "lease_backend", "redis"),
        ("WORK_MANAGER_LEASE_BACKEND", "Memory", "lease_backend", "memory"),
        ("WORK_MANAGER_REDIS_CONNECTION", "redis://r:6380/2", "redis_url", "redis://r:6380/2"),
        ("WORK_MANAGER_REDIS_URL", "redis://r:6380/3", "redis_url", "redis://r:6380/3"),
        ("WORK_MANAGER_MAX_LEASES_PER_AGENT", "5", "max_leases_per_agent", 5),
        ("WORK_MANAGER_MAX_LEASES_PER_AGENT", "", "max_leases_per_agent", None),
        ("WORK_MANAGER_MAX_LEASES_PER_TYPE", "7", "max_leases_per_type", 7),
        ("WORK_MANAGER_MAX_LEASES_PER_TYPE", "unlimited", "max_leases_per_type", None),
        ("WORK_MANAGER_METRICS_DRIVER", "statsd", "metrics_driver", "statsd"),
        ("WORK_MANAGER_METRICS_DRIVER", "NULL", "metrics_driver", "null"),
        ("WORK_MANAGER_METRICS_DRIVER", "pkg.mod:Driver", "metrics_driver", "pkg.mod:Driver"),
        ("WORK_MANAGER_QUEUE_CONNECTION", "redis://q:6379/1", "broker_url", "redis://q:6379/1"),
        # SPEC §2 names it "RETRY_BACKOFF_SECONDS / …_JITTER_SECONDS": either reading works
        ("WORK_MANAGER_RETRY_BACKOFF_JITTER_SECONDS", "5", "retry_jitter_seconds", 5.0),
        ("WORK_MANAGER_RETRY_JITTER_SECONDS", "6", "retry_jitter_seconds", 6.0),
        ("WORK_MANAGER_BROKER_URL", "amqp://guest@mq//", "broker_url", "amqp://guest@mq//"),
        ("WORK_MANAGER_METRICS_ENABLED", "false", "metrics_enabled", False),
        ("WORK_MANAGER_LEASE_TTL_SECONDS", "30", "lease_ttl_seconds", 30),
        ("WORK_MANAGER_ORDER_TYPES", "a.b, c.d,", "order_types", ("a.b", "c.d")),
        ("WORK_MANAGER_IDEMPOTENCY_TTL_HOURS", "0.5", "idempotency_ttl_hours", 0.5),
        ("WORK_MANAGER_API_PREFIX", "/api/work/", "api_prefix", "/api/work"),
        ("WORK_MANAGER_API_PREFIX", "/", "api_prefix", ""),  # at the root
        ("WORK_MANAGER_AUTH", "none", "auth", "none"),
    ],
)
def test_variables_and_seed_aliases(
    variable: str, value: str, field: str, expected: object
) -> None:
    s = Settings.from_env({variable: value})
    assert getattr(s, field) == expected


def test_canonical_name_wins_over_alias() -> None:
    s = Settings.from_env(
        {
            "WORK_MANAGER_BROKER_URL": "redis://canonical",
            "WORK_MANAGER_QUEUE_CONNECTION": "redis://alias",
            "WORK_MANAGER_REDIS_URL": "redis://canonical-r",
            "WORK_MANAGER_REDIS_CONNECTION": "redis://alias-r",
        }
    )
    assert s.broker_url == "redis://canonical"
    assert s.redis_url == "redis://canonical-r"
    assert not s.uses_embedded_broker


def test_toml_file_with_env_winning(tmp_path: Path) -> None:
    config = tmp_path / "wm.toml"
    config.write_text(
        "\n".join(
            [
                'lease_backend = "redis"',
                "lease_ttl_seconds = 42",
                'WORK_MANAGER_METRICS_DRIVER = "null"',
                "max_leases_per_agent = 3",
                'order_types = ["x.types", "y.types"]',
                "metrics_enabled = false",
                'queue_connection = "redis://from-toml/1"',
            ]
        )
    )
    env = {"WORK_MANAGER_CONFIG": str(config), "WORK_MANAGER_LEASE_TTL_SECONDS": "99"}
    s = Settings.from_env(env)
    assert s.lease_backend == "redis"  # from the file
    assert s.lease_ttl_seconds == 99  # the environment wins
    assert s.metrics_driver == "null"
    assert s.max_leases_per_agent == 3
    assert s.order_types == ("x.types", "y.types")
    assert s.metrics_enabled is False
    assert s.broker_url == "redis://from-toml/1"


def test_env_alias_beats_toml_canonical_name(tmp_path: Path) -> None:
    config = tmp_path / "wm.toml"
    config.write_text('broker_url = "redis://from-toml"\n')
    env = {
        "WORK_MANAGER_CONFIG": str(config),
        "WORK_MANAGER_QUEUE_CONNECTION": "redis://from-env",
    }
    assert Settings.from_env(env).broker_url == "redis://from-env"


def test_missing_or_broken_toml_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="WORK_MANAGER_CONFIG"):
        Settings.from_env({"WORK_MANAGER_CONFIG": str(tmp_path / "absent.toml")})
    broken = tmp_path / "broken.toml"
    broken.write_text("this is = = not toml")
    with pytest.raises(ConfigurationError, match="WORK_MANAGER_CONFIG"):
        Settings.from_env({"WORK_MANAGER_CONFIG": str(broken)})


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WORK_MANAGER_LEASE_BACKEND", "etcd"),
        ("WORK_MANAGER_LEASE_TTL_SECONDS", "ten"),
        ("WORK_MANAGER_LEASE_TTL_SECONDS", "0"),
        ("WORK_MANAGER_HEARTBEAT_EVERY_SECONDS", "-1"),
        ("WORK_MANAGER_MAX_LEASES_PER_AGENT", "0"),
        ("WORK_MANAGER_MAX_LEASES_PER_AGENT", "many"),
        ("WORK_MANAGER_MAX_LEASES_PER_TYPE", "-3"),
        ("WORK_MANAGER_DEFAULT_MAX_ATTEMPTS", "0"),
        ("WORK_MANAGER_RETRY_BACKOFF_SECONDS", "-1"),
        ("WORK_MANAGER_RETRY_JITTER_SECONDS", "nan"),
        ("WORK_MANAGER_APPLY_MAX_RETRIES", "-1"),
        ("WORK_MANAGER_METRICS_ENABLED", "maybe"),
        ("WORK_MANAGER_METRICS_DRIVER", "graphite"),
        ("WORK_MANAGER_STATSD_PORT", "http"),
        ("WORK_MANAGER_STATSD_TAG_STYLE", "json"),
        ("WORK_MANAGER_IDEMPOTENCY_TTL_HOURS", "soon"),
        ("WORK_MANAGER_MAX_PARTS_PER_ITEM", "0"),
        ("WORK_MANAGER_MAX_PART_PAYLOAD_BYTES", "1MB"),
        ("WORK_MANAGER_API_PREFIX", "agent/work"),
        ("WORK_MANAGER_AUTH", "basic"),
        ("WORK_MANAGER_DATABASE_URL", "   "),
        ("WORK_MANAGER_REDIS_CONNECTION", ""),
        ("WORK_MANAGER_QUEUE_CONNECTION", " "),
    ],
)
def test_bad_values_raise_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({variable: value})
    assert variable in str(info.value)
    assert info.value.code == "configuration_error"


def test_bad_value_in_toml_names_the_variable(tmp_path: Path) -> None:
    config = tmp_path / "wm.toml"
    config.write_text("lease_ttl_seconds = -5\n")
    with pytest.raises(ConfigurationError, match="WORK_MANAGER_LEASE_TTL_SECONDS"):
        Settings.from_env({"WORK_MANAGER_CONFIG": str(config)})


def test_idempotency_enforce_on_is_checked() -> None:
    s = Settings.from_env({"WORK_MANAGER_IDEMPOTENCY_ENFORCE_ON": "propose, checkout,fail"})
    assert s.idempotency_enforce_on == ("propose", "checkout", "fail")
    assert (
        Settings.from_env({"WORK_MANAGER_IDEMPOTENCY_ENFORCE_ON": ""}).idempotency_enforce_on == ()
    )
    with pytest.raises(ConfigurationError, match="WORK_MANAGER_IDEMPOTENCY_ENFORCE_ON"):
        Settings.from_env({"WORK_MANAGER_IDEMPOTENCY_ENFORCE_ON": "propose,submit_part"})


def test_unknown_key_in_toml_is_refused_with_a_hint(tmp_path: Path) -> None:
    config = tmp_path / "wm.toml"
    config.write_text('lease_backnd = "redis"\n')
    with pytest.raises(ConfigurationError, match="WORK_MANAGER_CONFIG") as info:
        Settings.from_env({"WORK_MANAGER_CONFIG": str(config)})
    assert "lease_backnd" in str(info.value) and "'lease_backend'" in str(info.value)


def test_unknown_environment_variables_are_left_alone() -> None:
    # Other tools (and agent processes) share the prefix; only the file is ours alone.
    s = Settings.from_env({"WORK_MANAGER_SOMETHING_ELSE": "x", "WORK_MANAGER_LEASE_BACKNED": "y"})
    assert s == Settings.from_env({})


def test_the_removed_pg_fast_path_is_named_as_removed(tmp_path: Path) -> None:
    """``pg_fast_path`` is gone (issue 12: one path per database). In the file it is
    refused with one line saying so; in the environment it is ignored like any variable
    naming no setting, so a deployment that still sets it starts, on the SQL path."""
    for key in ("pg_fast_path", "WORK_MANAGER_PG_FAST_PATH"):
        config = tmp_path / "wm.toml"
        config.write_text(f"{key} = false\n")
        with pytest.raises(ConfigurationError) as info:
            Settings.from_env({"WORK_MANAGER_CONFIG": str(config)})
        message = str(info.value)
        assert message.startswith("WORK_MANAGER_CONFIG: setting 'pg_fast_path' removed:"), message
        assert "raw-SQL path" in message and "\n" not in message
    assert not hasattr(Settings(), "pg_fast_path")
    assert Settings.from_env({"WORK_MANAGER_PG_FAST_PATH": "false"}) == Settings.from_env({})


def test_from_env_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORK_MANAGER_LEASE_BACKEND", "redis")
    monkeypatch.setenv("WORK_MANAGER_MAX_LEASES_PER_TYPE", "4")
    s = Settings.from_env()
    assert (s.lease_backend, s.max_leases_per_type) == ("redis", 4)


def test_consumer_agent_metadata_settings() -> None:
    s = Settings.from_env(
        {
            "WORK_MANAGER_AGENT_NAME": "researcher",
            "WORK_MANAGER_AGENT_VERSION": "1.4.0-rc.1",
            "WORK_MANAGER_AGENT_MODEL": "gpt-x",
        }
    )
    assert (s.agent_name, s.agent_version, s.agent_model) == ("researcher", "1.4.0-rc.1", "gpt-x")
    with pytest.raises(ConfigurationError, match="WORK_MANAGER_AGENT_VERSION"):
        Settings.from_env({"WORK_MANAGER_AGENT_VERSION": "v1"})


def test_max_json_depth_is_bounded_by_its_ceiling() -> None:
    assert Settings.from_env({}).max_json_depth == 64
    assert Settings.from_env({"WORK_MANAGER_MAX_JSON_DEPTH": "128"}).max_json_depth == 128
    for bad in ("0", "129", "deep"):
        with pytest.raises(ConfigurationError, match="WORK_MANAGER_MAX_JSON_DEPTH"):
            Settings.from_env({"WORK_MANAGER_MAX_JSON_DEPTH": bad})


def test_approve_wait_max_waiters() -> None:
    assert Settings.from_env({}).approve_wait_max_waiters == 8
    env = {"WORK_MANAGER_APPROVE_WAIT_MAX_WAITERS": "2"}
    assert Settings.from_env(env).approve_wait_max_waiters == 2
    with pytest.raises(ConfigurationError, match="WORK_MANAGER_APPROVE_WAIT_MAX_WAITERS"):
        Settings.from_env({"WORK_MANAGER_APPROVE_WAIT_MAX_WAITERS": "0"})


def test_metrics_agent_label() -> None:
    assert Settings.from_env({}).metrics_agent_label == "bound"
    env = {"WORK_MANAGER_METRICS_AGENT_LABEL": "None"}
    assert Settings.from_env(env).metrics_agent_label == "none"
    with pytest.raises(ConfigurationError, match="WORK_MANAGER_METRICS_AGENT_LABEL"):
        Settings.from_env({"WORK_MANAGER_METRICS_AGENT_LABEL": "some"})


def test_redis_cluster_setting_and_what_it_refuses() -> None:
    env = {"WORK_MANAGER_REDIS_CLUSTER": "true", "WORK_MANAGER_REDIS_URL": "redis://h:7000"}
    assert Settings.from_env(env).redis_cluster is True
    assert Settings.from_env({}).redis_cluster is False
    refused = {
        "WORK_MANAGER_REDIS_URL": "redis://h:7000/3",  # a cluster has database 0 only
        "WORK_MANAGER_REDIS_PREFIX": "{wm}:lease:",  # the keys carry their own hash tags
    }
    for variable, value in refused.items():
        with pytest.raises(ConfigurationError, match=variable):
            Settings.from_env({**env, variable: value})
    with pytest.raises(ConfigurationError, match="WORK_MANAGER_REDIS_CLUSTER"):
        Settings.from_env({"WORK_MANAGER_REDIS_CLUSTER": "maybe"})
    # the refusal shows the part to drop (it showed 'redis://h:7000', hiding the /3)
    for url, shown in (
        ("redis://:pw@h:7000/3", "'redis://h:7000/3'"),
        ("redis://h:7000?db=2", "'redis://h:7000?db=2'"),
    ):
        with pytest.raises(ConfigurationError) as said:
            Settings.from_env({**env, "WORK_MANAGER_REDIS_URL": url})
        assert shown in said.value.message and "pw" not in said.value.message
    # Without cluster mode the same values stay valid, as before.
    assert Settings.from_env(refused).redis_prefix == "{wm}:lease:"


def test_a_variable_one_typo_from_a_setting_is_ignored_with_a_warning(caplog) -> None:
    """``WORK_MANAGER_LEASE_TTL_SECS=5`` was ignored without a word; it still is not
    refused (other tools share the prefix), but the process says which setting was meant,
    once. A variable nothing resembles is still left alone."""
    import logging

    from workmanager import settings_parsing

    settings_parsing._warn_once.cache_clear()
    caplog.set_level(logging.WARNING, "workmanager.settings")
    env = {"WORK_MANAGER_LEASE_TTL_SECS": "5", "WORK_MANAGER_SOMETHING_ELSE": "x"}
    env |= {"WORK_MANAGER_CONIFG": "wm.toml"}  # two letters swapped: under the ratio's cutoff
    # Names near one only through the shared prefix are not taken for typos.
    env |= {"WORK_MANAGER_DB_URL": "x", "WORK_MANAGER_VERSION": "1", "WORK_MANAGER_REDIS_HOST": "h"}
    assert Settings.from_env(env) == Settings.from_env({})
    Settings.from_env(env)
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "WORK_MANAGER_LEASE_TTL_SECS is not a setting and is ignored:"
        " did you mean WORK_MANAGER_LEASE_TTL_SECONDS?",
        "WORK_MANAGER_CONIFG is not a setting and is ignored: did you mean WORK_MANAGER_CONFIG?",
    ]


@pytest.mark.parametrize(
    ("lines", "named"),
    [
        ("lease_ttl_seconds = 300\nWORK_MANAGER_LEASE_TTL_SECONDS = 400\n", "same setting"),
        ('broker_url = "redis://a"\nqueue_connection = "redis://b"\n', "same setting"),
    ],
)
def test_one_setting_twice_in_the_file_is_refused(tmp_path: Path, lines: str, named: str) -> None:
    """Was: one of the two silently won."""
    config = tmp_path / "wm.toml"
    config.write_text(lines)
    with pytest.raises(ConfigurationError, match=named):
        Settings.from_env({"WORK_MANAGER_CONFIG": str(config)})


def test_a_list_of_redis_nodes_without_cluster_mode_is_refused() -> None:
    """``redis://h1:7000,h2:7001/0`` is a Redis Cluster's startup nodes; without
    ``WORK_MANAGER_REDIS_CLUSTER=true`` it passed, then redis-py's ValueError traceback
    came when the lease backend was built."""
    env = {"WORK_MANAGER_REDIS_URL": "redis://h1:7000,h2:7001/0"}
    with pytest.raises(ConfigurationError, match="several nodes") as raised:
        Settings.from_env(env)
    assert raised.value.hint is not None and "REDIS_CLUSTER=true" in raised.value.hint
    on = Settings.from_env({**env, "WORK_MANAGER_REDIS_CLUSTER": "true"})
    assert on.redis_url == "redis://h1:7000,h2:7001/0"


def test_an_alias_beside_its_setting_is_still_checked() -> None:
    """Found by a migration pass: WORK_MANAGER_QUEUE_CONNECTION=sqs beside
    WORK_MANAGER_BROKER_URL was ignored (the canonical name won unread), though sqs is
    refused alone. The canonical name still wins; a bad alias is refused."""
    broker = {"WORK_MANAGER_BROKER_URL": "redis://127.0.0.1:6379/5"}
    with pytest.raises(ConfigurationError, match="WORK_MANAGER_QUEUE_CONNECTION"):
        Settings.from_env({**broker, "WORK_MANAGER_QUEUE_CONNECTION": "sqs"})
    with pytest.raises(ConfigurationError, match="WORK_MANAGER_LEASE_TTL:"):
        Settings.from_env({"WORK_MANAGER_LEASE_TTL_SECONDS": "60", "WORK_MANAGER_LEASE_TTL": "x"})
    both = {"WORK_MANAGER_LEASE_TTL_SECONDS": "60", "WORK_MANAGER_LEASE_TTL": "90"}
    assert Settings.from_env(both).lease_ttl_seconds == 60  # the canonical name wins


def test_a_comma_in_a_redis_password_is_no_list_of_nodes() -> None:
    """The reviewer's find: the several-nodes check looked at the user:password part."""
    url = "redis://:pa,ss@redis:6379/0"
    assert Settings.from_env({"WORK_MANAGER_REDIS_URL": url}).redis_url == url


@pytest.mark.parametrize(
    ("line", "named"),
    [
        ("metrics_namespace = 5", "WORK_MANAGER_METRICS_NAMESPACE: expected text, got int 5"),
        ("agent_name = true", "WORK_MANAGER_AGENT_NAME: expected text, got bool True"),
        ("statsd_host = 1.5", "WORK_MANAGER_STATSD_HOST: expected text, got float 1.5"),
        ("metrics_driver = {a = 1}", "WORK_MANAGER_METRICS_DRIVER: expected text, got dict"),
        ("provenance_enricher = false", "WORK_MANAGER_PROVENANCE_ENRICHER: expected text"),
        ("order_types = [1, 2]", "WORK_MANAGER_ORDER_TYPES: expected text, got int 1"),
        ("order_types = 5", "WORK_MANAGER_ORDER_TYPES: expected text, got int 5"),
    ],
)
def test_a_toml_value_that_is_not_text_where_text_is_meant_is_refused(
    tmp_path: Path, line: str, named: str
) -> None:
    """Not turned into its Python spelling (``True``, ``{'a': 1}``) and used as a name."""
    config = tmp_path / "wm.toml"
    config.write_text(line + "\n")
    with pytest.raises(ConfigurationError, match=named) as caught:
        Settings.from_env({"WORK_MANAGER_CONFIG": str(config)})
    assert "quote it" in (caught.value.hint or "")


def test_toml_arrays_of_strings_and_quoted_numbers_are_read(tmp_path: Path) -> None:
    config = tmp_path / "wm.toml"
    config.write_text('order_types = ["a", " b "]\nlease_ttl_seconds = "600"\n')
    s = Settings.from_env({"WORK_MANAGER_CONFIG": str(config)})
    assert s.order_types == ("a", "b") and s.lease_ttl_seconds == 600


@pytest.mark.parametrize(
    ("variable", "value", "odd"),
    [
        ("WORK_MANAGER_API_PREFIX", "/api/ v1", "' '"),
        ("WORK_MANAGER_API_PREFIX", "/api/wörk", "'ö'"),
        ("WORK_MANAGER_API_PREFIX", "/api?x", "'?'"),
        ("WORK_MANAGER_API_PREFIX", "/api#x", "'#'"),
        ("WORK_MANAGER_IDEMPOTENCY_HEADER", "X Idem", "' '"),
        ("WORK_MANAGER_IDEMPOTENCY_HEADER", "X-Idém", "'é'"),
        ("WORK_MANAGER_IDEMPOTENCY_HEADER", "X-Idem:", "':'"),
    ],
)
def test_a_prefix_or_header_name_no_client_could_send_is_refused(
    variable: str, value: str, odd: str
) -> None:
    """A route under ``/api/ v1`` or a key in an ``X Idem`` header could never be reached
    or sent: refused at start-up, naming the characters."""
    with pytest.raises(ConfigurationError, match=variable) as caught:
        Settings.from_env({variable: value})
    assert odd in str(caught.value)


def test_usual_prefixes_and_header_names_are_taken() -> None:
    s = Settings.from_env(
        {"WORK_MANAGER_API_PREFIX": "/api/work-v1/", "WORK_MANAGER_IDEMPOTENCY_HEADER": "X-Idem"}
    )
    assert (s.api_prefix, s.idempotency_header) == ("/api/work-v1", "X-Idem")


def test_settings_built_in_python_are_read_by_the_variables_rules() -> None:
    """A library pass: ``Settings(...)`` and ``replace()`` took anything: a misspelled
    backend ran on another one, a negative TTL granted leases already expired, text for
    a number failed deep inside. Numbers from Python may be any size of 0 or more (a
    test's 0.3 s heartbeat)."""
    assert Settings(lease_backend="Memory").lease_backend == "memory"
    assert Settings(lease_ttl_seconds="600").lease_ttl_seconds == 600  # type: ignore[arg-type]
    assert Settings(heartbeat_every_seconds=0.3).heartbeat_every_seconds == 0.3  # type: ignore[arg-type]
    for bad, variable in (
        ({"lease_backend": "Memroy"}, "WORK_MANAGER_LEASE_BACKEND"),
        ({"lease_ttl_seconds": -5}, "WORK_MANAGER_LEASE_TTL_SECONDS"),
        ({"auth": "token"}, "WORK_MANAGER_AUTH"),
        ({"max_json_depth": "deep"}, "WORK_MANAGER_MAX_JSON_DEPTH"),
    ):
        with pytest.raises(ConfigurationError, match=variable):
            Settings(**bad)
        with pytest.raises(ConfigurationError, match=variable):
            Settings().replace(**bad)


def test_the_client_without_httpx_names_its_extra() -> None:
    import subprocess
    import sys

    code = "import sys; sys.modules['httpx'] = None; import workmanager.client"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "pip install 'workmanager[client]'" in done.stderr, done.stderr[-500:]
    import workmanager.client

    assert "ApiError" in workmanager.client.__all__  # as the docs import it
