"""The root command group; each sub-module adds one group of commands."""

from __future__ import annotations

import click

from ..container import WorkManager
from ..settings import Settings


class Env:
    """Built lazily, so ``--help`` and bad settings never touch the database."""

    def __init__(self) -> None:
        self._wm: WorkManager | None = None

    @property
    def settings(self) -> Settings:
        return self.wm.settings if self._wm else Settings.from_env()

    @property
    def wm(self) -> WorkManager:
        if self._wm is None:
            self._wm = WorkManager(Settings.from_env())
        return self._wm


pass_env = click.make_pass_decorator(Env, ensure=True)


@click.group()
@click.version_option(package_name="workmanager")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """workmanager: a work-order control plane for AI agents, on Celery."""
    ctx.ensure_object(Env)


def _register() -> None:
    # each module attaches its commands
    from . import db, demo, mcp, orders, serve, tokens  # noqa: F401


_register()
