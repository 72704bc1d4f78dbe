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


@pytest.mark.parametrize("given", ["0", "-2", "two"])
def test_the_agent_refuses_a_concurrency_below_one(
    capsys: pytest.CaptureFixture[str], given: str
) -> None:
    """docs/agents.md: ``--concurrency`` must be at least 1 (Celery reads 0 as "one per
    CPU"); a mutation pass found the check unguarded."""
    with pytest.raises(SystemExit) as ended:
        agent.main(["--type", "t", "--handler", "m:f", "--concurrency", given])
    assert ended.value.code == 2
    assert f"{given!r} is not a whole number of 1 or more" in capsys.readouterr().err
