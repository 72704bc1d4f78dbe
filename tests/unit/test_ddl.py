"""The SQL files (workmanager/db/sql) hold the same rules as the Python side, and the SQL
the migrations run is frozen."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from workmanager.db import sql
from workmanager.states import HELD_ITEM_STATES, SUBMITTED_ITEM_STATES

VERSIONS = Path(__file__).resolve().parents[2] / "workmanager" / "db" / "migrations" / "versions"


def _section(name: str) -> str:
    [found] = [s.sql for s in sql.sections("functions.sql") if s.name == name]
    return found


def _listed(states: object) -> str:
    return ", ".join(f"'{s}'" for s in sorted(str(getattr(x, "value", x)) for x in states))  # type: ignore[attr-defined]


def test_the_submit_function_counts_the_submitted_item_states_as_done() -> None:
    body = _section("workmanager_submit_order")
    done = {s.value for s in SUBMITTED_ITEM_STATES}
    assert f"s.state NOT IN ({_listed(done)})" in body


def test_the_release_function_counts_the_held_item_states_as_held() -> None:
    body = _section("workmanager_release_order")
    held = ", ".join(f"'{s}'" for s in ("leased", "in_progress"))
    assert {s.value for s in HELD_ITEM_STATES} == {"leased", "in_progress"}
    assert body.count(f"s.state IN ({held})") == 2


def test_every_function_the_code_calls_has_a_signature() -> None:
    assert sql.function_signatures() == (
        "workmanager_start_order(uuid,timestamptz,text,text)",
        "workmanager_submit_order(uuid,uuid,timestamptz,text,text)",
        "workmanager_release_order(uuid,uuid,timestamptz,text,text)",
        "workmanager_put_part(uuid,uuid,text,integer,text,jsonb,jsonb,text,jsonb,text,text,"
        "timestamptz,timestamptz,integer)",
    )


#: The SQL constants each migration runs: they must never change (a change is a new
#: migration). sha256 of each, first 16 hex digits.
FROZEN = {
    "0003_audit_rows_without_foreign_keys": {
        "CASCADE_PG": "5c2ced605387924f",
        "CASCADE_SQLITE": "4216fc5a8dcbd3df",
        "DROP_AUDIT_CASCADE_PG": "2d35592a0c59bc66",
        "DROP_AUDIT_CASCADE_SQLITE": "4efa7888fa3ab3cd",
    },
    "0004_hot_path_order_functions": {
        "HOT_PATH_FUNCTIONS_V1": "35e94d5e44afa69b",
        "DROP_HOT_PATH_FUNCTIONS_V1": "50c46b5b9df643c1",
    },
    "0005_hot_release_order_function": {
        "HOT_PATH_FUNCTIONS_V2": "e601ad8732dac296",
        "DROP_HOT_PATH_FUNCTIONS_V2": "d9f7560db249c653",
    },
    "0011_put_part_function": {
        "PUT_PART_FUNCTION_V1": "d4f4fe6f31d7fb85",
        "DROP_PUT_PART_FUNCTION_V1": "929cde8740d22216",
    },
}


def test_the_sql_the_migrations_run_is_frozen() -> None:
    for module, constants in FROZEN.items():
        spec = importlib.util.spec_from_file_location(module, VERSIONS / f"{module}.py")
        assert spec is not None and spec.loader is not None
        loaded = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(loaded)
        found = {
            name: hashlib.sha256(repr(getattr(loaded, name)).encode()).hexdigest()[:16]
            for name in constants
        }
        assert found == constants, module
