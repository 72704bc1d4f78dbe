"""Two part mistakes that reached the database: a plan requiring more parts than an item
may hold (accepted, then never finalizable strictly: the last part refused, ``missing
parts`` at finalize), and a part's ``notes`` of the wrong type through the Python agent
API (the driver's own error on SQLite and for a dict on PostgreSQL; a list stored as the
text ``{x}`` there). SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from tests.support.types import Parts, Simple
from workmanager import Registry
from workmanager.db.models import Order, Part
from workmanager.errors import ValidationFailed


def test_a_plan_requiring_more_parts_than_an_item_holds_is_refused(make_wm, database) -> None:
    wm = make_wm(db=database, registry=Registry([Parts()]), max_parts_per_item=1)
    with pytest.raises(ValidationFailed) as refused:
        wm.propose("test.parts", {})
    [problem] = refused.value.details
    assert problem["path"] == "plan.parts_required"
    assert "WORK_MANAGER_MAX_PARTS_PER_ITEM (1)" in problem["message"]
    with wm.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(Order)) == 0


@pytest.mark.parametrize("notes", [{"a": 1}, ["x"], 5])
def test_part_notes_that_are_not_text_are_refused_before_the_database(
    make_wm, database, notes: object
) -> None:
    wm = make_wm(db=database, registry=Registry([Parts()]))
    order_id = wm.propose("test.parts", {})
    lease = wm.agent.checkout("agent-1", order_id=order_id)
    assert lease is not None
    with pytest.raises(ValidationFailed) as refused:
        wm.agent.submit_part(lease, "b", {"x": 1}, notes=notes)  # type: ignore[arg-type]
    assert [d["path"] for d in refused.value.details] == ["notes"]
    with wm.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(Part)) == 0
    wm.agent.submit_part(lease, "b", {"x": 1}, notes="fine")  # the same part, as text


@pytest.mark.parametrize("mode", ["strict", "best_effort"])
def test_finalize_meets_the_result_checks_a_submit_meets(make_wm, database, mode: str) -> None:
    """A finalize on an item of a whole-result type (no parts required, none sent)
    submitted ``{}`` past ``result_schema`` and ``validate_submission``, which a submit of
    ``{}`` meets (SPEC §4.1: never skipped): refused, nothing changed. An item of parts
    meets ``validate_assembled``, as upstream's: a type whose ``result_schema`` describes a
    whole submit still finalizes its parts."""

    class Both(Parts):
        def result_schema(self, item: Any) -> dict[str, Any]:
            return {"type": "object", "required": ["answer"]}

    wm = make_wm(db=database, registry=Registry([Simple(), Both()]))
    order_id = wm.propose("test.simple", {"n": 1})
    lease = wm.agent.checkout("agent-1", order_id=order_id)
    assert lease is not None
    with pytest.raises(ValidationFailed) as refused:
        wm.agent.finalize(lease, mode)
    [problem] = refused.value.details
    assert problem["path"] == "assembled_result" and "answer" in problem["message"]
    assert wm.queries.item(lease.item_id)["state"] == "leased"
    wm.agent.submit(lease, {"answer": 42})  # the lease still holds: a whole result goes in
    parts_order = wm.propose("test.parts", {})
    parts_lease = wm.agent.checkout("agent-1", order_id=parts_order)
    assert parts_lease is not None
    wm.agent.submit_part(parts_lease, "a", {"v": 1})
    wm.agent.submit_part(parts_lease, "b", {"x": 1})
    assert wm.agent.finalize(parts_lease, mode).item["state"] == "submitted"


def test_a_late_copy_of_a_refused_part_never_overwrites_the_corrected_one(
    make_wm, database
) -> None:
    """A refused part is stored ``rejected`` (its slot taken): its 422 is the request's
    committed outcome and stays under its key. A review found what freeing that key (as
    for a failure that changed nothing) would do: the client's retry of the first request,
    still queued when the agent sent the corrected part under a new key, ran again and
    wrote the rejected part over the validated one."""
    from fastapi.testclient import TestClient

    from workmanager.api import create_app
    from workmanager.services.tokens import TokenService

    wm = make_wm(db=database, registry=Registry([Parts()]))
    token, _ = TokenService(wm.ctx).create("agent-1", "propose,view,checkout,submit")
    http = TestClient(create_app(wm))
    auth = {"Authorization": f"Bearer {token}"}
    order_id = wm.propose("test.parts", {})
    leased = http.post(f"/agent/work/orders/{order_id}/checkout", headers=auth).json()["item"]
    lease = {**auth, "X-Lease-Token": str(leased["lease_token"])}
    path = f"/agent/work/items/{leased['id']}/parts"
    wrong, right = {"part_key": "a", "payload": {"v": "x"}}, {"part_key": "a", "payload": {"v": 1}}
    refused = http.post(path, json=wrong, headers={**lease, "Idempotency-Key": "k1"})
    assert refused.status_code == 422, refused.text
    taken = http.post(path, json=right, headers={**lease, "Idempotency-Key": "k2"})
    assert taken.status_code == 202, taken.text
    late = http.post(path, json=wrong, headers={**lease, "Idempotency-Key": "k1"})
    assert late.status_code == 422 and late.headers.get("Idempotent-Replayed") == "true"
    with wm.db.transaction() as s:
        assert list(s.scalars(select(Part.status).where(Part.part_key == "a"))) == ["validated"]
