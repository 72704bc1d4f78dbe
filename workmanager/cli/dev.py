"""``workmanager dev seed|reset`` and ``workmanager make order-type|allocator`` (SPEC §9)."""

from __future__ import annotations

import os

import click

from ..db.session import display_url
from ..scaffold import (
    allocator_class_name,
    allocator_module,
    class_name,
    order_type_source,
    order_type_test,
)
from ..services.admin import DevTools
from .app import Env, cli, pass_env
from .render import PRIORITY, emit, emit_json, json_object, json_option, progress_bar, table


@cli.group()
def dev() -> None:
    """Development helpers: seed orders, wipe the database."""


@dev.command("seed")
@click.option("--type", "order_type", required=True, help="a registered order type")
@click.option("--count", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--payload", default="{}", show_default=True, help="JSON object for every order")
@click.option("--priority", type=PRIORITY, default=0, show_default=True)
@json_option
@pass_env
def seed(env: Env, order_type: str, count: int, payload: str, priority: int, as_json: bool) -> None:
    """Propose COUNT orders of a type (validated and planned like any other)."""
    tools = DevTools(env.console.ctx, env.console.orders)
    body = json_object(payload, env.settings.max_json_depth, "--payload")
    with progress_bar(f"seeding {order_type}", total=count) as update:
        ids = tools.seed(order_type, count, body, priority=priority, progress=update)
    created = {"type": order_type, "created": [str(i) for i in ids]}
    emit(created, as_json, f"seeded {len(ids)} {order_type} order(s)")


@dev.command("reset")
@click.option("--force", is_flag=True, help="yes, delete every row")
@json_option
@pass_env
def reset(env: Env, force: bool, as_json: bool) -> None:
    """Delete every order, item, event, token and key (the schema stays). Needs --force."""
    if not force:
        raise click.UsageError(
            f"dev reset deletes every row in {display_url(env.settings.database_url)}; "
            "run it again with --force to do that"
        )
    deleted = DevTools(env.wm.ctx, env.wm.orders).reset()
    if as_json:
        emit_json({"deleted": deleted})
    else:
        rows = [{"table": t, "rows deleted": n} for t, n in deleted.items()]
        table(rows, ("table", "rows deleted"), title="reset")


@cli.group()
def make() -> None:
    """Generate skeleton code."""


def _write(path: str, source: str, force: bool, option: str = "--output") -> None:
    """Write ``source`` to ``path``; one that exists (without ``force``) or cannot be
    written (no such directory, no permission) is a usage error naming ``option``."""
    if os.path.exists(path) and not force:
        raise click.UsageError(f"{path} exists; pass --force to overwrite it")
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(source)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise click.BadParameter(f"cannot write {path}: {reason}", param_hint=option) from None


def _make_dirs(folder: str) -> None:
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise click.BadParameter(
            f"cannot create {folder}: {reason}", param_hint="--tests-dir"
        ) from None


@make.command("order-type")
@click.argument("name")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None, help="file")
@click.option("--parts", is_flag=True, help="items built from parts: the partial-submission hooks")
@click.option("--with-tests", is_flag=True, help="also write a pytest file (needs --output)")
@click.option(
    "--tests-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="where --with-tests writes test_<module>.py (default: beside --output)",
)
@click.option("--force", is_flag=True, help="overwrite an existing file")
@json_option
def make_order_type(
    name: str,
    output: str | None,
    parts: bool,
    with_tests: bool,
    tests_dir: str | None,
    force: bool,
    as_json: bool,
) -> None:
    """A module with an OrderType subclass for NAME (schema, plan, result_schema, apply and
    register; with --parts the part hooks), printed or written to --output; --with-tests
    writes a pytest file that runs one order through it."""
    source = order_type_source(name, parts=parts)
    test_path = None
    if with_tests and output is None:
        raise click.UsageError("--with-tests needs --output (the tests import that file)")
    if output is not None:
        if with_tests:
            folder = tests_dir or os.path.dirname(output) or "."
            test_path = os.path.join(
                folder, f"test_{os.path.splitext(os.path.basename(output))[0]}.py"
            )
            if os.path.exists(test_path) and not force:
                raise click.UsageError(f"{test_path} exists; pass --force to overwrite it")
        _write(output, source, force)
        if test_path is not None:
            _make_dirs(os.path.dirname(test_path) or ".")
            module_path = os.path.relpath(output, os.path.dirname(test_path) or ".")
            tests = order_type_test(name, module_path, parts=parts)
            _write(test_path, tests, True, "--tests-dir")
    if as_json:
        emit_json(
            {
                "type": name,
                "class": class_name(name),
                "parts": parts,
                "output": output,
                "tests": test_path,
                "source": source,
            }
        )
    elif output is None:
        click.echo(source, nl=False)
    else:
        click.echo(f"wrote {class_name(name)} ({name}) to {output}", err=True)
        if test_path is not None:
            click.echo(f"wrote its tests to {test_path}", err=True)


@make.command("allocator")
@click.argument("name")
@click.option("--type", "order_type", default=None, help="the order type it proposes")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None, help="file")
@click.option("--force", is_flag=True, help="overwrite an existing file")
@json_option
def make_allocator(
    name: str, order_type: str | None, output: str | None, force: bool, as_json: bool
) -> None:
    """A module with an AllocatorStrategy subclass (NAME + Allocator) whose discover()
    returns the orders `workmanager generate` proposes, and a register function."""
    source = allocator_module(name, order_type)
    if output is not None:
        _write(output, source, force)
    cls = allocator_class_name(name)
    if as_json:
        emit_json(
            {"class": cls, "type": order_type or "example.type", "output": output, "source": source}
        )
    elif output is None:
        click.echo(source, nl=False)
    else:
        click.echo(f"wrote {cls} to {output}", err=True)
