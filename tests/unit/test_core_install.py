"""A plain ``pip install workmanager`` (no extras) imports, starts its CLI and runs an
order on SQLite: the optional packages are blocked from import in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

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

SCRIPT = """
import importlib.abc, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {optional!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (an extra, blocked)")
        return None

sys.meta_path.insert(0, Blocked())

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


def test_the_core_install_runs_without_any_extra(tmp_path: Path) -> None:
    script = SCRIPT.format(optional=set(OPTIONAL), db=tmp_path / "core.db")
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "submitted"
