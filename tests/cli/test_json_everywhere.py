"""One CLI style (issue 14): every command takes ``--json``; with it, output and errors are
JSON on stdout; people get rich tables (``tokens list`` included)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from workmanager.cli import cli

EXE = Path(sys.executable).with_name("workmanager")


def commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))
        else:
            yield (*path, name)


def command_at(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


def test_every_command_takes_json() -> None:
    every = list(commands(cli))
    assert ("orders", "create") in every and ("tokens", "create") in every and ("demo",) in every
    missing = [
        " ".join(path)
        for path in every
        if not any("--json" in getattr(p, "opts", ()) for p in command_at(path).params)
    ]
    assert missing == []


def test_json_outputs_and_errors_parse(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WORK_MANAGER_")},
        "WORK_MANAGER_DATABASE_URL": f"sqlite:///{tmp_path}/wm.db",
        "WORK_MANAGER_METRICS_DRIVER": "null",
    }

    def run(*args: str, code: int = 0) -> str:
        done = subprocess.run(
            [str(EXE), *args], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path
        )
        assert done.returncode == code, (args, done.stdout, done.stderr)
        return done.stdout

    assert json.loads(run("db", "upgrade", "--json"))["revision"]
    made = json.loads(run("tokens", "create", "--name", "ci", "--scopes", "view", "--json"))
    assert made["token"].startswith("wm_") and made["scopes"] == ["view"]
    assert [t["name"] for t in json.loads(run("tokens", "list", "--json"))] == ["ci"]
    people = run("tokens", "list")
    assert "┃ name" in people and "active" in people and "\t" not in people
    assert json.loads(run("tokens", "revoke", "ci", "--json"))["revoked_at"]
    error = json.loads(run("tokens", "revoke", "nobody", "--json", code=1))["error"]
    assert error["code"] == "not_found"
    usage = json.loads(run("tokens", "create", "--json", code=2))["error"]
    assert usage["code"] == "usage_error"
    made = json.loads(run("make", "order-type", "acme.report", "--json"))
    assert "class AcmeReport" in made["source"]
