"""The SQL functions of migration 0004 hold the same rules as the Python side."""

from __future__ import annotations

from workmanager.db import ddl
from workmanager.states import SUBMITTED_ITEM_STATES


def test_the_submit_function_counts_the_submitted_item_states_as_done() -> None:
    assert set(ddl.HOT_PATH_DONE_ITEM_STATES_V1) == {s.value for s in SUBMITTED_ITEM_STATES}
    listed = ", ".join(f"'{s}'" for s in ddl.HOT_PATH_DONE_ITEM_STATES_V1)
    assert f"s.state NOT IN ({listed})" in ddl.HOT_PATH_FUNCTIONS_V1
