"""Every statement the PostgreSQL store builds from ``db/sql/queries.sql`` parses and
plans on real PostgreSQL against a migrated schema: each is ``PREPARE``d (its psycopg
placeholders as ``$n`` parameters, their types inferred by the server) and deallocated."""

from __future__ import annotations

import re
from typing import Any

import pytest

from ..support.statements import every_statement

pytestmark = pytest.mark.postgres

_PARAM = re.compile(r"%\((\w+)\)s")


def as_prepared(sql: str) -> str:
    """``sql`` with each distinct ``%(name)s`` as ``$n`` (the same name, the same n)."""
    numbers: dict[str, int] = {}

    def number(found: re.Match[str]) -> str:
        return f"${numbers.setdefault(found[1], len(numbers) + 1)}"

    return _PARAM.sub(number, sql)


def test_every_statement_prepares_on_postgres(make_wm: Any) -> None:
    wm = make_wm(db="postgres")
    statements = every_statement()
    failed: dict[str, str] = {}

    def prepare_all(conn: Any) -> None:
        for n, (name, sql) in enumerate(statements.items()):
            assert "%(" not in as_prepared(sql), name
            try:
                if sql.startswith("SET LOCAL "):  # a utility statement: run, not prepared
                    with conn.transaction():
                        conn.execute(sql, prepare=False)
                    continue
                conn.execute(f"PREPARE wm_q{n} AS {as_prepared(sql)}", prepare=False)
                conn.execute(f"DEALLOCATE wm_q{n}", prepare=False)
            except Exception as exc:  # every failure is collected and shown
                conn.execute("ROLLBACK")
                failed[name] = str(exc)

    wm.db.raw.run(prepare_all)
    assert not failed, failed
