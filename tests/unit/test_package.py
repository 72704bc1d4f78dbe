"""The package's namespace (``workmanager/__init__.py``): its public names load on first
use, so importing one submodule runs nothing of the others (the command line's Ctrl-C
handler covers all its loading; an agent on the HTTP client never loads the order-type
layer). Each check runs in a fresh interpreter: this one has imported everything."""

from __future__ import annotations

import subprocess
import sys

import workmanager

ROOT = __import__("pathlib").Path(workmanager.__file__).parents[1]


def fresh(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_every_public_name_and_submodule_is_there_after_import_workmanager() -> None:
    """A review: ``import workmanager`` then ``workmanager.errors.PermanentError`` (as
    docs/agents.md names it) was an AttributeError once the package stopped importing
    its submodules itself."""
    said = fresh(
        "import workmanager\n"
        "said = [workmanager.errors.PermanentError.__name__, workmanager.jsonvalues.__name__]\n"
        "names = [getattr(workmanager, n).__name__ for n in workmanager.__all__[:-1]]\n"
        "print(len(names), *said, hasattr(workmanager, 'nope'))"
    )
    assert said == f"{len(workmanager.__all__) - 1} PermanentError workmanager.jsonvalues False"


def test_a_submodule_imports_only_what_it_needs() -> None:
    said = fresh(
        "import sys, workmanager.client\n"
        "print(sorted(m for m in ('workmanager.order_types', 'workmanager.registry',"
        " 'workmanager.container', 'sqlalchemy') if m in sys.modules))"
    )
    assert said == "[]"
