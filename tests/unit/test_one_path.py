"""The services and the HTTP/MCP surface hold no database driver and no per-database branch:
each database's statements are its store's, under ``workmanager/db/`` (issue 12)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import workmanager

ROOT = Path(workmanager.__file__).parent


def offences(source: str) -> list[str]:
    """psycopg imported, or ``is_postgres`` asked, anywhere in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        elif isinstance(node, ast.Attribute) and node.attr == "is_postgres":
            names = ["is_postgres"]
        else:
            continue
        found += [
            f"{node.lineno}: {n}" for n in names if n.split(".")[0] in {"psycopg", "is_postgres"}
        ]
    return found


@pytest.mark.parametrize("package", ["services", "surface"])
def test_no_driver_and_no_database_branch(package: str) -> None:
    found = {
        str(path.relative_to(ROOT)): hits
        for path in sorted((ROOT / package).rglob("*.py"))
        if (hits := offences(path.read_text(encoding="utf-8")))
    }
    assert not found, f"move these into a store under workmanager/db/: {found}"


def test_the_check_sees_each_form() -> None:
    source = (
        "import psycopg\nfrom psycopg.rows import dict_row\n"
        "def f(db):\n    from psycopg import sql\n    return db.is_postgres\n"
    )
    assert offences(source) == ["1: psycopg", "2: psycopg.rows", "4: psycopg", "5: is_postgres"]
    assert offences("import sqlalchemy\nx = 'is_postgres psycopg'\n") == []
