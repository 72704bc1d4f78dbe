"""The root command group; each sub-module adds one group of commands."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence

import click

from ..container import WorkManager
from ..dispatch import Dispatcher
from ..settings import Settings
from ..types import Actor


class LazyDispatcher:
    """Builds the real dispatcher on the first announcement, so read-only commands never
    import Celery or touch the broker."""

    def __init__(self, build: Callable[[], Dispatcher]) -> None:
        self._build = build
        self._target: Dispatcher | None = None

    @property
    def target(self) -> Dispatcher:
        if self._target is None:
            self._target = self._build()
        return self._target

    def order_submitted(self, order_id: uuid.UUID) -> bool | None:
        return self.target.order_submitted(order_id)

    def order_approved(self, order_id: uuid.UUID) -> bool | None:
        return self.target.order_approved(order_id)

    def items_available(self, order_type: str, item_ids: Sequence[uuid.UUID]) -> None:
        if item_ids:
            self.target.items_available(order_type, item_ids)

    def waiting(self, order_type: str) -> int | None:
        return self.target.waiting(order_type)


class Env:
    """Built lazily, so ``--help`` and bad settings never touch the database.

    Tests pass a ready ``wm``; it is then used as given (its dispatcher included).
    """

    def __init__(self, wm: WorkManager | None = None, dispatcher: str = "celery") -> None:
        self._wm = wm
        self._given = wm is not None
        self.dispatcher = dispatcher
        self._announcing = False
        #: who the operator console acts as, in events and order ``requested_by``
        self.actor = Actor("user", "cli")

    @property
    def settings(self) -> Settings:
        return self.wm.settings if self._wm else Settings.from_env()

    @property
    def wm(self) -> WorkManager:
        if self._wm is None:
            self._wm = WorkManager(Settings.from_env())
        return self._wm

    @property
    def console(self) -> WorkManager:
        """The WorkManager for operator commands that change state: what they make
        available (requeued items, approved orders) is announced to the workers through
        the root ``--dispatcher`` (Celery by default), as the HTTP API does."""
        wm = self.wm
        if not self._given and not self._announcing:
            from .serve import build_dispatcher

            ref = self.dispatcher
            if ref in ("celery", "none"):  # Celery loads on the first announcement
                wm.dispatcher = LazyDispatcher(lambda: build_dispatcher(ref, wm))
            else:  # the operator's own factory, called before anything changes: one
                # that raises or returns no dispatcher refuses the command, not its
                # announcement after the change was saved
                wm.dispatcher = build_dispatcher(ref, wm)
            self._announcing = True
        return wm


pass_env = click.make_pass_decorator(Env, ensure=True)


@click.group()
@click.version_option(package_name="workmanager")
@click.option(
    "--dispatcher",
    default="celery",
    show_default=True,
    help="how console commands announce work to workers: celery, none, or pkg.mod:factory(wm)",
)
@click.pass_context
def cli(ctx: click.Context, dispatcher: str) -> None:
    """workmanager: a work-order control plane for AI agents, on Celery."""
    env = ctx.ensure_object(Env)
    if not env._given:
        from .serve import checked_dispatcher

        env.dispatcher = checked_dispatcher(dispatcher)


def _register() -> None:
    # each module attaches its commands
    from . import (  # noqa: F401
        db,
        demo,
        dev,
        items,
        leases,
        maintain,
        mcp,
        ops,
        orders,
        provenance,
        serve,
        tokens,
    )


_register()
