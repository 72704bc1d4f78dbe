"""Installs with only some extras work: a fresh interpreter with the other extras'
packages blocked from import runs what those installs promise."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from workmanager.db.session import Database

ROOT = Path(__file__).resolve().parents[2]

#: Import names of every package that only an extra installs (pyproject.toml).
OPTIONAL = (
    "redis",
    "hiredis",
    "statsd",
    "prometheus_client",
    "fastapi",
    "starlette",
    "uvicorn",
    "httpx",
    "mcp",
    "flower",
)

BLOCK = """
import importlib.abc, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (an extra, blocked)")
        return None

sys.meta_path.insert(0, Blocked())
"""

CORE = """
from click.testing import CliRunner
from workmanager import Registry, Settings, WorkManager
from workmanager.cli.app import cli
from tests.support.types import Simple

assert CliRunner().invoke(cli, ["--help"]).exit_code == 0
wm = WorkManager(
    Settings(database_url="sqlite:///{db}", lease_backend="database", metrics_driver="null"),
    registry=Registry([Simple()]),
)
wm.db.create_all()
wm.propose("test.simple", {{}})
lease = wm.agent.checkout("core-agent")
assert lease is not None
print(wm.agent.submit(lease, {{"answer": 1}}).order_state)
"""

MCP_HTTP = """
import uvicorn
from click.testing import CliRunner
from workmanager.cli.app import cli

served = []
uvicorn.run = lambda app, **kw: served.append(app)  # build the server, do not serve it
result = CliRunner().invoke(cli, ["mcp", "--transport", "http", "--port", "1"])
assert result.exit_code == 0, (result.output, result.exception)
assert len(served) == 1 and "MCP HTTP transport accepts every request" in result.stderr
print("served")
"""


def run(script: str, blocked: set[str], tmp_path: Path, **env: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(BLOCK.format(blocked=blocked) + script)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_the_core_install_runs_without_any_extra(tmp_path: Path) -> None:
    script = CORE.format(db=tmp_path / "core.db")
    assert run(script, set(OPTIONAL), tmp_path) == "submitted"


def test_the_mcp_extra_serves_http_without_the_api_extra(tmp_path: Path) -> None:
    """``pip install 'workmanager[mcp]'``: the MCP package brings starlette, uvicorn and
    httpx but not FastAPI, which only the HTTP API needs. (The database exists at the
    head: a network transport refuses to start on a missing or older one, as ``serve``.)"""
    url = f"sqlite:///{tmp_path}/mcp.db"
    db = Database(url)
    db.create_all()
    db.dispose()
    env = {"WORK_MANAGER_DATABASE_URL": url, "WORK_MANAGER_AUTH": "none"}
    assert run(MCP_HTTP, {"fastapi"}, tmp_path, **env) == "served"
