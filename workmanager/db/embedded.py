"""The embedded default's broker: a SQLite file (``sqla+sqlite:///…``), and the one rule
for its directory missing (a process started from another directory than ``db upgrade``
ran in), which start-up refuses, a send's hint and ``/readyz`` say."""

from __future__ import annotations

import os

from .session import sqlite_file

#: What a process told that the embedded broker's directory is missing should do.
NO_EMBEDDED_DIRECTORY = (
    "run `workmanager db upgrade` first (it creates the embedded broker's directory; a"
    " relative path is read from the current directory), or point WORK_MANAGER_BROKER_URL"
    " at a running broker"
)


def embedded_file(broker_url: str) -> str | None:
    """The embedded broker's SQLite file (``sqla+sqlite:///…``); ``None`` for any other."""
    bare = broker_url.removeprefix("sqla+")
    return sqlite_file(bare) if bare != broker_url and bare.startswith("sqlite") else None


def missing_embedded_directory(broker_url: str) -> str | None:
    """What is wrong when ``broker_url`` is the embedded broker and its directory does not
    exist (a process started from another directory than ``db upgrade`` ran in); ``None``
    otherwise. Start-up raises it, ``/readyz`` reports it, both with
    :data:`NO_EMBEDDED_DIRECTORY`."""
    path = embedded_file(broker_url)
    if path is None or os.path.isdir(os.path.dirname(path)):
        return None
    return f"no embedded broker at {path}: the directory {os.path.dirname(path)} does not exist"
