"""``--help`` is for people who have only the installed package: it never cites the
product contract's sections (the SPEC is not shipped)."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from workers import agent
from workmanager.cli.app import cli


def commands(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from commands(sub, (*path, name))


def test_no_help_cites_the_spec() -> None:
    paths = list(commands(cli))
    assert ("orders", "list") in paths and ("agent",) in paths and len(paths) > 30
    for path in paths:
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "SPEC" not in result.output and "§" not in result.output, (path, result.output)


def test_the_agent_entry_point_help_does_not_cite_the_spec(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        agent.main(["--help"])
    shown = capsys.readouterr().out
    assert "--handler" in shown and "SPEC" not in shown and "§" not in shown
