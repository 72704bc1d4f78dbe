"""The SQL functions of migrations 0004 and 0005 hold the same rules as the Python side."""

from __future__ import annotations

from workmanager.db import ddl
from workmanager.states import HELD_ITEM_STATES, SUBMITTED_ITEM_STATES


def test_the_submit_function_counts_the_submitted_item_states_as_done() -> None:
    assert set(ddl.HOT_PATH_DONE_ITEM_STATES_V1) == {s.value for s in SUBMITTED_ITEM_STATES}
    listed = ", ".join(f"'{s}'" for s in ddl.HOT_PATH_DONE_ITEM_STATES_V1)
    assert f"s.state NOT IN ({listed})" in ddl.HOT_PATH_FUNCTIONS_V1


def test_the_release_function_counts_the_held_item_states_as_held() -> None:
    assert set(ddl.HOT_PATH_HELD_ITEM_STATES_V2) == {s.value for s in HELD_ITEM_STATES}
    listed = ", ".join(f"'{s}'" for s in ddl.HOT_PATH_HELD_ITEM_STATES_V2)
    assert ddl.HOT_PATH_FUNCTIONS_V2.count(f"s.state IN ({listed})") == 2


#: Migrations run these strings: they must never change (a change is a new constant and a
#: new migration). sha256 of each, first 16 hex digits.
FROZEN = {
    "AUDIT_CASCADE_PG": "5c2ced605387924f",
    "AUDIT_CASCADE_SQLITE": "4216fc5a8dcbd3df",
    "DROP_AUDIT_CASCADE_PG": "2d35592a0c59bc66",
    "DROP_AUDIT_CASCADE_SQLITE": "4efa7888fa3ab3cd",
    "HOT_PATH_FUNCTIONS_V1": "35e94d5e44afa69b",
    "DROP_HOT_PATH_FUNCTIONS_V1": "50c46b5b9df643c1",
    "HOT_PATH_DONE_ITEM_STATES_V1": "8ce0721f6dcbff2e",
    "HOT_PATH_SIGNATURES_V1": "7b1e272d65335b54",
    "HOT_PATH_FUNCTIONS_V2": "e601ad8732dac296",
    "DROP_HOT_PATH_FUNCTIONS_V2": "d9f7560db249c653",
    "HOT_PATH_SIGNATURES_V2": "8fa2074621846ce6",
    "HOT_PATH_HELD_ITEM_STATES_V2": "5b696b62a4a2fd3a",
}


def test_the_sql_the_migrations_run_is_frozen() -> None:
    import hashlib

    found = {
        name: hashlib.sha256(repr(getattr(ddl, name)).encode()).hexdigest()[:16]
        for name in dir(ddl)
        if name.isupper()
    }
    assert found == FROZEN
