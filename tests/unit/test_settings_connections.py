"""Connection settings checked as their clients read them (a configuration pass): each
value below passed the settings, then raised a driver's traceback from every command and
worker, went silently to another Redis database, or printed a password."""

from __future__ import annotations

import pytest

from workmanager.errors import ConfigurationError
from workmanager.settings import Settings

P = "WORK_MANAGER_"


def refused(env: dict[str, str]) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env(env)
    return raised.value


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({P + "BROKER_URL": "redis://127.0.0.1:99999/4"}, "BROKER_URL"),
        ({P + "BROKER_URL": "amqp://guest:S3cret@127.0.0.1:abc//"}, "BROKER_URL"),
        ({P + "BROKER_URL": "redis://127.0.0.1:6379/abc"}, "BROKER_URL"),
        ({P + "QUEUE_CONNECTION": "redis", P + "REDIS_URL": "unix:///tmp/x.sock"}, "QUEUE"),
        (
            {
                P + "QUEUE_CONNECTION": "redis",
                P + "REDIS_CLUSTER": "true",
                P + "REDIS_URL": "redis://127.0.0.1:6379,127.0.0.1:6380/0",
            },
            "QUEUE",
        ),
        ({P + "REDIS_URL": "redis://:S3cret@127.0.0.1:6379/4?socket_timeout=abc"}, "REDIS_URL"),
        ({P + "REDIS_URL": "redis://127.0.0.1:6379/four"}, "REDIS_URL"),
        (
            {P + "REDIS_CLUSTER": "true", P + "REDIS_URL": "rediss://wm:S3cret@redis:7000/1"},
            "REDIS_URL",
        ),
        ({P + "RESULT_BACKEND": "rediss://:S3cret@127.0.0.1:6379/4"}, "RESULT_BACKEND"),
        ({P + "RESULT_BACKEND": "db+garbage://x"}, "RESULT_BACKEND"),
        ({P + "RATE_LIMIT_CHECKOUT_PER_AGENT": "1" + "0" * 400 + "/s"}, "RATE_LIMIT"),
        ({P + "RATE_LIMIT_CHECKOUT_PER_AGENT": "\u0661\u0660/s"}, "RATE_LIMIT"),  # Arabic 10
    ],
)
def test_a_connection_its_client_cannot_use_is_refused_in_one_line(
    env: dict[str, str], named: str
) -> None:
    error = refused(env)
    assert named in error.message, error.message
    assert "S3cret" not in error.message and "S3cret" not in (error.hint or "")
    assert "\n" not in error.message


@pytest.mark.parametrize(
    "env",
    [
        {P + "BROKER_URL": "redis://127.0.0.1:6379/4"},
        {P + "BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//"},
        {P + "BROKER_URL": "sqla+sqlite:///./var/broker.db"},
        {P + "BROKER_URL": "redis+socket:///run/redis/redis.sock"},
        {P + "BROKER_URL": "redis://127.0.0.1:6379/1;redis://127.0.0.1:6380/1"},
        {P + "QUEUE_CONNECTION": "redis", P + "REDIS_URL": "redis://127.0.0.1:6379/3"},
        {P + "REDIS_URL": "redis://127.0.0.1:6379/4?socket_timeout=5"},
        {P + "RESULT_BACKEND": "rediss://127.0.0.1:6379/4?ssl_cert_reqs=required"},
        {P + "RESULT_BACKEND": "db+sqlite:///results.db"},
        {P + "RATE_LIMIT_CHECKOUT_PER_AGENT": "2147483647/s"},
    ],
)
def test_the_forms_the_docs_give_still_pass(env: dict[str, str]) -> None:
    Settings.from_env(env)
