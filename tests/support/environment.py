"""The environment of a subprocess a test starts: this one's, without any
``WORK_MANAGER_*`` variable of the shell running the tests, with the repository on
``PYTHONPATH`` and the settings given."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def clean_env(**settings: str) -> dict[str, str]:
    """``settings`` by their variable names (``WORK_MANAGER_BROKER_URL=…``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORK_MANAGER_")}
    return env | {"PYTHONPATH": str(ROOT), **settings}
