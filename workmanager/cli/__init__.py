"""The ``workmanager`` command line: an adapter over the same services as HTTP and MCP."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence


def wants_json(args: Sequence[str]) -> bool:
    """Whether the command line asks for JSON (``--json`` before any ``--``)."""
    options = list(args)[: list(args).index("--")] if "--" in args else list(args)
    return "--json" in options


try:  # the command line's modules load for most of a second: Ctrl-C then is one line too
    import click

    from ..errors import Aborted, WorkManagerError
    from ..jsonvalues import readable
    from ..saying import first_line
    from .app import cli
    from .render import CannotWrite, report_error, report_interrupt, usage_error_of
except KeyboardInterrupt:  # said as report_interrupt says it, the envelope under --json
    sys.stderr.write("error [aborted]: interrupted (Ctrl-C)\n")
    if wants_json(sys.argv[1:]):
        sys.stdout.write('{"error": {"code": "aborted", "message": "interrupted (Ctrl-C)"}}\n')
    raise SystemExit(130) from None


class OneLineWarnings(logging.Handler):
    """Python's last resort (what a library logs when nothing configured logging, e.g. a
    dispatcher's "could not send" when the broker is down) as one line a person reads —
    ``warning: message (ExcType: its first line)`` — never a traceback. "warning", as the
    command goes on: its own failure is the ``error [code]`` line of :func:`main`."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            exc = record.exc_info[1] if record.exc_info else None
            if exc is not None:
                text += f" ({type(exc).__name__}: {first_line(exc)})"
            sys.stderr.write(f"warning: {text}\n")  # the command's own outcome comes apart
        except Exception:
            self.handleError(record)


def main(args: Sequence[str] | None = None) -> None:
    """Entry point; the one place the console reports errors. A domain error (the HTTP
    API's codes) exits 1, a command line the parser refused (``usage_error``) exits 2;
    each prints ``error [code]: message``, its details and a hint, never a traceback."""
    args = list(sys.argv[1:] if args is None else args)
    logging.lastResort = OneLineWarnings()  # ``serve`` configures logging of its own
    try:
        args = [_text(n, arg, args[n - 2] if n > 1 else "") for n, arg in enumerate(args, 1)]
        code = cli.main(args=args, prog_name="workmanager", standalone_mode=False)
        if sys.stdout is not None:
            sys.stdout.flush()  # a full disk says so here, not in a traceback at exit
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error
        sys.exit(1)
    except OSError as exc:  # stdout on a full disk or closed; a file a command wrote
        if exc.filename:
            said = WorkManagerError(f"{exc.filename!r}: {exc.strerror or exc}")
            said.code = "os_error"
        else:
            said = CannotWrite(f"cannot write the output: {exc.strerror or exc}")
        report_error(said, wants_json(args))
        sys.exit(1)
    except click.exceptions.Abort as exc:  # "Aborted!" alone, nothing on stdout under --json
        if isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt):
            sys.exit(report_interrupt(wants_json(args)))
        said = Aborted("stopped: the question was not answered yes")
        report_error(said, wants_json(args))
        sys.exit(1)
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()  # a group named alone: its help, as click prints it
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        report_error(usage_error_of(exc), wants_json(args))
        sys.exit(exc.exit_code)
    except WorkManagerError as exc:
        report_error(exc, wants_json(args))
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


#: Options whose value is a path: any bytes the file system takes (Linux names need not
#: be UTF-8), kept as the locale decoded them.
PATH_OPTIONS = frozenset({"-o", "--output", "--tests-dir"})


def _text(n: int, arg: str, before: str) -> str:
    """A command-line argument as text. Bytes the locale could not decode arrive as lone
    surrogates: valid UTF-8 under a C locale (``nö``) is decoded again as UTF-8; anything
    else is a usage error, never a traceback from the first database call given it (a
    path is left as it is)."""
    if arg.isascii() or readable(arg) == arg:
        return arg
    if before in PATH_OPTIONS or arg.split("=", 1)[0] in PATH_OPTIONS:
        return arg
    try:
        return arg.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeError:
        raise click.UsageError(
            f"argument {n} ({ascii(arg)[:80]}) is not UTF-8 text: give it as UTF-8"
        ) from None


__all__ = ["cli", "main"]
