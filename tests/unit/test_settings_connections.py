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
        # session 26's pass: each a traceback, a 500, or a worker that took messages and
        # lost them
        ({P + "DATABASE_URL": "postgresql+psycopg://u:S3cret@h/db?ssl_mode=x"}, "DATABASE"),
        ({P + "DATABASE_URL": "postgresql+psycopg://u@h/db?connect_timeout=abc"}, "DATABASE"),
        ({P + "DATABASE_URL": "postgresql+psycopg://postgres:TOP@S3cret@h/x"}, "DATABASE"),
        ({P + "DATABASE_URL": "postgresql+psycopg://u@[::1/db"}, "DATABASE"),
        ({P + "REDIS_URL": "redis://[::1:6379/0"}, "REDIS_URL"),
        ({P + "BROKER_URL": "redis://:S3cret@127.0.0.1:6379/4?socket_timeout=5"}, "BROKER"),
        ({P + "BROKER_URL": "sqla+postgres://u:S3cret@h/db"}, "BROKER_URL"),
        ({P + "BROKER_URL": "sqla+garbage://x"}, "BROKER_URL"),
        ({P + "BROKER_URL": "sqla+://u:S3cret@h/db"}, "BROKER_URL"),  # no dialect: not parsed
        ({P + "RESULT_BACKEND": "redis://:S3cret@127.0.0.1:6379/abc"}, "RESULT_BACKEND"),
        ({P + "RESULT_BACKEND": "redis://[::1:6379/0"}, "RESULT_BACKEND"),
        ({P + "RESULT_BACKEND": "redis://127.0.0.1:6379/0?socket_timeout=x"}, "RESULT"),
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
        {P + "DATABASE_URL": "postgresql+psycopg://u:p%40ss@h:5432/db?sslmode=require"},
        {P + "DATABASE_URL": "postgresql+psycopg://u@h/db?connect_timeout=10&options=-c%20x=1"},
        {P + "BROKER_URL": "redis://127.0.0.1:6379/4?connect_timeout=5&heartbeat=10"},
        {P + "BROKER_URL": "sqla+postgresql+psycopg://u@h/db"},
        # review of the checks: forms real deployments use
        {P + "DATABASE_URL": "postgresql+psycopg://myadmin@myserver:pw@127.0.0.1/db"},  # Azure
        {P + "DATABASE_URL": "postgresql+psycopg://u@/db?host=/var/run/postgresql"},
        {P + "DATABASE_URL": "postgresql://u@h/db?host=a:5432&host=b:5432"},
        {P + "BROKER_URL": "sqs://"},  # its package (boto3) not installed: said when used
    ],
)
def test_the_forms_the_docs_give_still_pass(env: dict[str, str]) -> None:
    Settings.from_env(env)


def test_the_lease_stores_redis_as_the_broker_leaves_redis_pys_options() -> None:
    """``QUEUE_CONNECTION=redis`` made the broker the Redis URL as written, and kombu
    refuses redis-py's ``socket_timeout`` (the option the Redis URL's hint suggests)."""
    settings = Settings.from_env(
        {
            P + "QUEUE_CONNECTION": "redis",
            P + "REDIS_URL": "rediss://127.0.0.1:6379/3?socket_timeout=5&ssl_cert_reqs=none",
        }
    )
    assert settings.broker_url == "rediss://127.0.0.1:6379/3?ssl_cert_reqs=none"
    # the database and the login given as options are moved where kombu reads them: they
    # were dropped, the queues sent to database 0 of a shared Redis, without the password
    moved = Settings.from_env(
        {
            P + "QUEUE_CONNECTION": "redis",
            P + "REDIS_URL": "redis://127.0.0.1:6379?db=7&username=app&password=pw",
        }
    )
    assert moved.broker_url == "redis://app:pw@127.0.0.1:6379/7"


def test_a_password_given_as_an_option_is_masked_where_the_url_is_shown() -> None:
    from workmanager.db.session import display_url

    shown = display_url("postgresql+psycopg://u:S3cret@h/db?password=S3cret&sslmode=require")
    assert "S3cret" not in shown and "sslmode=require" in shown, shown


def test_kombus_long_name_for_its_sqlalchemy_transport_is_the_short_one() -> None:
    """``sqlalchemy+sqlite://`` was accepted, then kombu's own transport (not the
    project's) handed celeryconfig's transport options to ``create_engine`` on every send,
    and no order was ever announced: it is read as ``sqla+``."""
    env = {P + "BROKER_URL": "sqlalchemy+sqlite:///./var/b.db;SQLAlchemy+sqlite:///./var/c.db"}
    assert (
        Settings.from_env(env).broker_url == "sqla+sqlite:///./var/b.db;sqla+sqlite:///./var/c.db"
    )
