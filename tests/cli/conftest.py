"""The operator console under click's CliRunner, on a WorkManager the test holds."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tests.support.dispatch import RecordingDispatcher
from tests.support.types import Multi, Simple
from workmanager import Registry, WorkManager
from workmanager.cli.app import Env, cli


@dataclass
class Console:
    """Runs ``workmanager …`` in-process against ``wm`` (its recording dispatcher kept)."""

    wm: WorkManager

    def __call__(self, *args: str, code: int | None = 0) -> Result:
        result = CliRunner().invoke(cli, list(args), obj=Env(self.wm), catch_exceptions=True)
        if code is not None:
            assert result.exit_code == code, (result.output, result.exception)
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)

    def jsonl(self, *args: str) -> list[Any]:
        return [json.loads(line) for line in self(*args, "--json").stdout.splitlines()]

    @property
    def dispatched(self) -> RecordingDispatcher:
        dispatcher = self.wm.dispatcher
        assert isinstance(dispatcher, RecordingDispatcher)
        return dispatcher


@pytest.fixture
def console_for(make_wm: Callable[..., WorkManager], tmp_path: Any) -> Callable[..., Console]:
    def build(db: str = "sqlite", backend: str = "memory", **kw: Any) -> Console:
        registry = kw.pop("registry", None) or Registry([Simple(), Multi()])
        kw.setdefault("broker_url", f"sqla+sqlite:///{tmp_path}/broker.db")
        return Console(make_wm(db=db, backend=backend, registry=registry, **kw))

    return build


@pytest.fixture
def console(console_for: Callable[..., Console]) -> Console:
    return console_for()
