"""Every ``workmanager …`` command line the README and the docs show in a code block is one
the command line accepts: the command exists, its options are known and the required ones
are there (a tour step said ``tokens create reviewer`` where the command takes ``--name``,
and a newcomer got a usage error). Parsed with click, nothing run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from workmanager.cli import cli

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```")
#: the languages of the blocks that hold commands to type (others show output or code)
_SHELL = ("```sh", "```bash", "```shell", "```console")
#: where a shell line hands over to another command
_SEPARATORS = re.compile(r"\$\(|&&|\|\||[;|`]")
#: a command shown with a placeholder or a choice, not a line to run
_PLACEHOLDER = re.compile(r"…|\.\.\.|<[A-Za-z_ -]+>|\[--|\|")
_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")


def shell_lines(text: str) -> list[tuple[int, str]]:
    """The lines of the fenced shell blocks (of others, the lines typed after ``$ ``),
    continuations joined, with their line numbers."""
    lines: list[tuple[int, str]] = []
    inside, shell, pending, start = False, False, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line.strip()):
            inside, shell, pending = not inside, line.strip() in _SHELL, ""
            continue
        if not inside or not (shell or line.startswith("$ ")):
            continue  # another block shows output or code, and its commands after "$ "
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        lines.append((start, pending + line))
        pending = ""
    return lines


def commands(path: Path) -> list[tuple[str, list[str]]]:
    """``(where, argv)`` of each ``workmanager`` command in ``path``'s code blocks."""
    found = []
    for number, line in shell_lines(path.read_text()):
        code = line.split(" #", 1)[0].strip().removeprefix("$ ")
        for segment in _SEPARATORS.split(code):
            if "workmanager " not in segment or _PLACEHOLDER.search(segment):
                continue
            words = segment.strip().rstrip(")").split(">", 1)[0]
            try:
                argv = shlex.split(words)
            except ValueError:
                continue  # a quote opened in another segment
            while argv and _ASSIGNMENT.match(argv[0]):
                argv.pop(0)  # VAR=value before the command
            if argv[:1] == ["workmanager"] and "--help" not in argv:
                found.append((f"{path.relative_to(ROOT)}:{number}", argv[1:]))
    return found


def parse(argv: list[str]) -> None:
    """Parse ``argv`` as the command line would, down to its command; raises click's
    ``UsageError`` for an unknown command or option, or a required one missing."""
    ctx = cli.make_context("workmanager", list(argv))
    command: click.Command = cli
    while isinstance(command, click.Group):
        rest = [*ctx._protected_args, *ctx.args]
        name, sub, rest = command.resolve_command(ctx, rest)
        assert name is not None and sub is not None
        ctx = sub.make_context(name, rest, parent=ctx)
        command = sub


ALL = [case for path in DOCS for case in commands(path)]


def test_the_docs_show_commands() -> None:
    """The extraction finds the commands the docs are made of (a broken pattern would
    make the test below check nothing)."""
    shown = {" ".join(argv[:2]) for _, argv in ALL}
    assert {"db upgrade", "tokens create", "orders create", "dev seed"} <= shown, sorted(shown)
    assert len(ALL) >= 20


@pytest.mark.parametrize(("where", "argv"), ALL, ids=[w for w, _ in ALL])
def test_a_command_the_docs_show_is_accepted(where: str, argv: list[str]) -> None:
    try:
        parse(argv)
    except click.UsageError as exc:
        pytest.fail(f"{where}: `workmanager {shlex.join(argv)}`: {exc.format_message()}")
