"""Output for the operator console: rich tables for people, JSON for scripts, progress
bars on stderr (so ``--json`` output on stdout stays parseable), and shared option types."""

from __future__ import annotations

import errno
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ..display import shown
from ..durations import MAX_SECONDS, parse_duration
from ..errors import Aborted, UsageError, WorkManagerError
from ..jsonvalues import loads, raw_depth, too_deep
from ..services.inputs import PRIORITY_RANGE
from ..settings import Settings, auth_none_warning

json_option = click.option("--json", "as_json", is_flag=True, help="JSON for scripts")
#: ``--json`` on a command whose only output is its errors (a server, a process):
#: ``main`` reads it from the command line and reports errors as JSON.
json_errors_option = click.option(
    "--json", is_flag=True, expose_value=False, help="errors as JSON, for scripts"
)


def warn_if_open(settings: Settings, server: str) -> None:
    """Say loudly on stderr that ``server`` will take requests without a token (in red
    unless ``NO_COLOR`` is set or ``TERM=dumb``, as the tables)."""
    if settings.auth == "none":
        plain = bool(os.environ.get("NO_COLOR")) or os.environ.get("TERM") == "dumb"
        said = "WARNING: " + auth_none_warning(server)
        click.secho(said, fg=None if plain else "red", bold=not plain, err=True)


class CannotWrite(WorkManagerError):
    """The command's output could not be written (a full disk, a closed stdout)."""

    code = "output_failed"


def written(stream: Any) -> None:
    """Flush ``stream`` (stdout), so a write that failed raises here, where the command
    can still say so, not at exit; a closed stdout (``>&-``: ``None``) is an error too."""
    if stream is None:
        raise OSError(errno.EBADF, "standard output is closed")
    stream.flush()


def console(stderr: bool = False) -> Console:
    """A console on the current stdout/stderr (wide when not a terminal, so ids fit)."""
    out = Console(stderr=stderr, highlight=False)
    if not out.is_terminal:
        out = Console(stderr=stderr, highlight=False, width=200, soft_wrap=True)
    return out


def emit_json(data: Any) -> None:
    """``data`` as JSON; a number JSON cannot write (NaN, infinity: a discovered payload)
    as its text, so a script's parser never meets ``NaN``."""
    try:
        click.echo(json.dumps(data, indent=2, default=str, allow_nan=False))
    except ValueError:
        click.echo(json.dumps(_finite(data), indent=2, default=str))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(v) for key, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def emit(data: Any, as_json: bool, text: str) -> None:
    """``data`` as JSON for scripts (``--json``), else ``text`` for people."""
    if as_json:
        emit_json(data)
    else:
        click.echo(text)


def json_object(raw: str, max_depth: int, option: str) -> dict[str, Any]:
    """The JSON object given to ``option`` on the command line (a usage error if not)."""
    if raw_depth(raw) > max_depth:  # before json.loads, which recurses
        raise click.BadParameter(too_deep(max_depth).message, param_hint=option)
    try:
        value = loads(raw)
    except ValueError as exc:  # not JSON, NaN, an integer of more than 4,300 digits
        raise click.BadParameter(f"not JSON: {exc}", param_hint=option) from None
    if not isinstance(value, dict):
        raise click.BadParameter("must be a JSON object", param_hint=option)
    return value


#: Columns of ids (UUIDs) a table never cuts.
WHOLE_COLUMNS = frozenset({"id", "order_id", "item_id"})


#: Rows a table prints at most (the rest are counted on a line after it).
MAX_TABLE_ROWS = 1_000


def table(
    rows: Iterable[dict[str, Any]],
    columns: Sequence[str],
    title: str | None = None,
    empty: str = "nothing matched",
) -> None:
    """Print ``rows`` (dicts) as a table of ``columns``; a line saying so when empty. At
    most :data:`MAX_TABLE_ROWS`, then a line saying how many more (``--json`` has them
    all): 50,000 held leases took 25 s to lay out, a table no one reads."""
    rows = list(rows)
    if not rows:
        console().print(empty)
        return
    more = len(rows) - MAX_TABLE_ROWS
    rows = rows[:MAX_TABLE_ROWS]
    grid = Table(title=title, show_lines=False)
    for column in columns:
        # an id is copied into the next command: whole, never cut to "3f29a453-599…" by
        # a narrow terminal (an id column keeps its width; the others give theirs up)
        if column in WHOLE_COLUMNS:
            grid.add_column(column, no_wrap=True, min_width=36)
        else:
            grid.add_column(column)
    for row in rows:
        grid.add_row(*(Text(cell(row.get(c))) for c in columns))  # values, never markup
    console().print(grid)
    if more > 0:
        console().print(
            f"… and {more:,} more not shown: --json prints them all, or narrow the selection"
        )


def cell(value: Any) -> str:
    """A value as a table shows it: text, JSON for objects and lists, ``-`` for none;
    a control or bidi character as its escape (``\x1b``, ``\u202e``): an agent id or a
    message holding ESC moved the cursor, cleared or retitled the operator's terminal
    when a table printed it (:func:`workmanager.display.shown`)."""
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return shown(str(value))


def pairs(data: dict[str, Any], keys: Sequence[str], title: str | None = None) -> None:
    """One record as a two-column table."""
    grid = Table(title=title, show_header=False)
    grid.add_column("field", style="bold")
    grid.add_column("value")
    for key in keys:
        grid.add_row(key, Text(cell(data.get(key))))
    console().print(grid)


#: ``update(done, total=None)``: move a progress bar (and set its total when known).
Update = Callable[..., None]


@contextmanager
def progress_bar(label: str, total: int | None = None) -> Iterator[Update]:
    """A progress bar on stderr when it is a terminal, so ``--json`` on stdout stays
    clean."""
    err = console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        # a bar is for a person watching: redirected, it would only leave a stale line
        # (before the error line, when the work failed)
        disable=not err.is_terminal,
    ) as bar:
        task = bar.add_task(label, total=total)

        def update(done: int, total: int | None = None) -> None:
            bar.update(task, completed=done, total=total)  # None keeps the total

        yield update


class Duration(click.ParamType[timedelta]):
    """``90d``, ``12h``, ``30m``, ``45s``, ``2w`` (``workmanager.durations``)."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        if isinstance(value, timedelta):
            return value
        try:
            return parse_duration(str(value), field=param.name if param and param.name else "")
        except WorkManagerError as exc:
            self.fail(exc.message, param, ctx)


DURATION = Duration()


class Seconds(click.ParamType[float]):
    """A number of seconds: finite, at least ``minimum`` (more than it when ``exclusive``),
    at most ten years (``workmanager.durations``: longer cannot be slept or added to now)."""

    name = "seconds"

    def __init__(self, minimum: float = 0.0, exclusive: bool = False) -> None:
        self.minimum, self.exclusive = minimum, exclusive

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        low = number <= self.minimum if self.exclusive else number < self.minimum
        if not math.isfinite(number) or low or number > MAX_SECONDS:
            bound = "more than" if self.exclusive else "at least"
            self.fail(
                f"{value!r} is not a number of seconds {bound} {self.minimum:g} and at most "
                f"{MAX_SECONDS} (ten years)",
                param,
                ctx,
            )
        return number


#: ``--timeout``: 0 or more seconds; ``--interval``: more than 0.
TIMEOUT = Seconds()
INTERVAL = Seconds(exclusive=True)
#: ``--port``: a TCP port (0 would bind one at random that nothing reports; above 65535
#: the server would bind another port, the number wrapped around).
PORT = click.IntRange(1, 65535)
#: ``--priority``: a 32-bit integer, as the column and the HTTP API have it.
PRIORITY = click.IntRange(PRIORITY_RANGE.start, PRIORITY_RANGE.stop - 1)
#: A count of rows (``--limit``, ``--page``): 1 to the largest a query can take.
COUNT = click.IntRange(1, 2**31 - 1)


# --- errors -----------------------------------------------------------------------------
def usage_error_of(exc: click.ClickException) -> UsageError:
    """A parser refusal as an error like any other, with the command's ``--help`` as hint."""
    ctx = getattr(exc, "ctx", None)
    hint = f"see `{ctx.command_path} --help`" if ctx is not None else None
    return UsageError(exc.format_message(), hint=hint)


def error_body(exc: WorkManagerError) -> dict[str, Any]:
    """``{"error": {code, message, details?, hint?}}``: the HTTP API's envelope, plus the
    hint a person can act on."""
    body = exc.to_dict()
    if exc.hint:
        body["hint"] = exc.hint
    return {"error": body}


def report_error(exc: WorkManagerError, as_json: bool = False) -> None:
    """Print an error as a person reads it: ``error [code]: message`` first on stderr,
    its details under it, then ``hint: …``; with ``as_json`` also the JSON envelope on
    stdout for scripts. Never a traceback."""
    click.echo(cell(exc.text()), err=True)  # a message may quote what a caller sent
    if as_json:
        try:
            emit_json(error_body(exc))
            written(sys.stdout)
        except OSError:  # stdout is what failed (full, closed): stderr has said it
            pass


def reporting_errors(entry: Callable[[], int | None], as_json: bool = False) -> int:
    """Run a process entry point (``python -m workers.agent``): a domain error is reported
    as the console reports it (with ``as_json``, the JSON envelope too) and exits 1, and
    Ctrl-C as every command reports it (exit 130), instead of a traceback."""
    try:
        return entry() or 0
    except WorkManagerError as exc:
        report_error(exc, as_json)
        return 1
    except KeyboardInterrupt:
        return report_interrupt(as_json)


def report_interrupt(as_json: bool = False) -> int:
    """Ctrl-C, as every command and process reports it: ``error [aborted]: interrupted
    (Ctrl-C)``; returns 130, the shell's convention for SIGINT."""
    report_error(Aborted("interrupted (Ctrl-C)", hint=""), as_json)
    return 130
