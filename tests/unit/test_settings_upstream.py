"""laravel-work-manager's variables with no setting of their own name here (its
``config/work-manager.php`` env() calls and its documented ``.env`` lines): each is
honoured through its counterpart or refused at load with one line naming it and what to
use instead, in the environment and in the ``WORK_MANAGER_CONFIG`` file alike."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from workmanager import Settings
from workmanager.errors import ConfigurationError

BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"


def refusal(env: dict[str, str]) -> str:
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env(env)
    return str(info.value)


@pytest.mark.parametrize(
    ("variable", "value", "instead"),
    [
        ("WORK_MANAGER_MCP_STATIC_TOKENS", "tok-1,tok-2", "workmanager tokens create"),
        ("WORK_MANAGER_MCP_AUTH_GUARD", "sanctum", "workmanager tokens create"),
        ("WORK_MANAGER_GUARD", "sanctum", "no Laravel auth guards"),
        ("WORK_MANAGER_DEBUG", "true", "no debug switch"),
    ],
)
def test_variables_without_a_counterpart_are_refused_naming_them(
    variable: str, value: str, instead: str
) -> None:
    message = refusal({variable: value})
    assert message.startswith(f"{variable} is laravel-work-manager's and is not read here; ")
    assert instead in message
    assert value not in message  # static tokens are secrets: never echoed


def test_mcp_http_auth_true_is_what_tokens_auth_does_and_false_is_refused() -> None:
    assert Settings.from_env({"WORK_MANAGER_MCP_HTTP_AUTH": "true"}).auth == "tokens"
    message = refusal({"WORK_MANAGER_MCP_HTTP_AUTH": "false"})
    assert message.startswith("WORK_MANAGER_MCP_HTTP_AUTH=false: ")
    assert "WORK_MANAGER_AUTH=none" in message
    both = {"WORK_MANAGER_MCP_HTTP_AUTH": "false", "WORK_MANAGER_AUTH": "none"}
    assert Settings.from_env(both).auth == "none"  # the same thing said twice
    message = refusal({"WORK_MANAGER_MCP_HTTP_AUTH": "true", "WORK_MANAGER_AUTH": "none"})
    assert "contradicts WORK_MANAGER_AUTH=none" in message
    assert "expected a boolean" in refusal({"WORK_MANAGER_MCP_HTTP_AUTH": "sometimes"})


def test_mcp_cors_switches_the_mcp_cors_origins() -> None:
    origins = {"WORK_MANAGER_MCP_CORS_ORIGINS": "https://a.example,https://b.example"}
    on = Settings.from_env({**origins, "WORK_MANAGER_MCP_CORS": "true"})
    assert on.mcp_cors_origins == ("https://a.example", "https://b.example")
    off = Settings.from_env({**origins, "WORK_MANAGER_MCP_CORS": "false"})
    assert off.mcp_cors_origins == ()
    assert Settings.from_env({"WORK_MANAGER_MCP_CORS": "false"}).mcp_cors_origins == ()
    # Upstream defaulted the origins to '*'; here they must be named.
    message = refusal({"WORK_MANAGER_MCP_CORS": "true"})
    assert message.startswith("WORK_MANAGER_MCP_CORS=true needs WORK_MANAGER_MCP_CORS_ORIGINS")
    assert "expected a boolean" in refusal({"WORK_MANAGER_MCP_CORS": "enabled"})


def test_idempotency_ttl_in_seconds_becomes_hours() -> None:
    assert Settings.from_env({"WORK_MANAGER_IDEMPOTENCY_TTL": "7200"}).idempotency_ttl_hours == 2
    both = {"WORK_MANAGER_IDEMPOTENCY_TTL": "7200", "WORK_MANAGER_IDEMPOTENCY_TTL_HOURS": "5"}
    assert Settings.from_env(both).idempotency_ttl_hours == 5
    message = refusal({"WORK_MANAGER_IDEMPOTENCY_TTL": "1h"})
    assert message.startswith("WORK_MANAGER_IDEMPOTENCY_TTL: expected whole seconds from 1 to")
    # the same ceiling as every duration (settings_values.MAX_DURATION_SECONDS)
    assert "expected whole seconds" in refusal({"WORK_MANAGER_IDEMPOTENCY_TTL": "10" + "0" * 20})


def test_the_same_in_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "wm.toml"
    path.write_text('mcp_cors = false\nmcp_cors_origins = "*"\n')
    assert Settings.from_env({"WORK_MANAGER_CONFIG": str(path)}).mcp_cors_origins == ()
    path.write_text('mcp_static_tokens = "tok-1"\n')
    message = refusal({"WORK_MANAGER_CONFIG": str(path)})
    assert message.startswith("WORK_MANAGER_MCP_STATIC_TOKENS is laravel-work-manager's")


def test_the_environment_wins_over_the_file_between_a_variable_and_its_counterpart(
    tmp_path: Path,
) -> None:
    """As for every setting: upstream's seconds in the environment beat the hours in the
    file (and the hours in the environment beat the seconds in the file); origins named in
    the environment are not cleared by the file's mcp_cors = false."""
    path = tmp_path / "wm.toml"
    config = {"WORK_MANAGER_CONFIG": str(path)}
    path.write_text("idempotency_ttl_hours = 5\n")
    env = {**config, "WORK_MANAGER_IDEMPOTENCY_TTL": "7200"}
    assert Settings.from_env(env).idempotency_ttl_hours == 2
    path.write_text("idempotency_ttl = 7200\n")
    env = {**config, "WORK_MANAGER_IDEMPOTENCY_TTL_HOURS": "5"}
    assert Settings.from_env(env).idempotency_ttl_hours == 5
    path.write_text("mcp_cors = false\n")
    env = {**config, "WORK_MANAGER_MCP_CORS_ORIGINS": "https://a.example"}
    assert Settings.from_env(env).mcp_cors_origins == ("https://a.example",)
    path.write_text('mcp_cors_origins = "https://a.example"\n')
    env = {**config, "WORK_MANAGER_MCP_CORS": "false"}
    assert Settings.from_env(env).mcp_cors_origins == ()


def test_a_server_refuses_to_start_with_one_line(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "WORK_MANAGER_MCP_STATIC_TOKENS": "tok-1"}
    done = subprocess.run(
        [str(BIN / "workmanager"), "mcp", "--transport", "http"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error [configuration_error]: WORK_MANAGER_MCP_STATIC_TOKENS ")
    assert "tok-1" not in done.stderr
