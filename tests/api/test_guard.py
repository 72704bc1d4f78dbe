"""The work-order-only guard (SPEC §6.4) on a host app of its own: as a FastAPI dependency
(with the error handlers installed) and as ASGI middleware."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from tests.support.types import Simple
from workmanager import Registry, WorkManager
from workmanager.api import WorkOrderGuard, WorkOrderOnlyMiddleware, install_error_handlers

HEADER = "X-Work-Order-ID"


@pytest.fixture
def wm(make_wm: Any) -> WorkManager:
    return make_wm(registry=Registry([Simple()]))  # type: ignore[no-any-return]


def host_app(wm: WorkManager) -> FastAPI:
    """A host's own app, its mutating route guarded by the dependency."""
    app = FastAPI()
    install_error_handlers(app)
    guard = WorkOrderGuard(wm)

    @app.post("/customers", dependencies=[Depends(guard)])  # as docs/http-api.md shows
    def create() -> dict[str, bool]:
        return {"created": True}

    return app


def middleware_app(wm: WorkManager) -> Any:
    app = FastAPI()

    @app.get("/customers")
    def read() -> list[str]:
        return []

    @app.post("/customers")
    def create() -> dict[str, bool]:
        return {"created": True}

    return WorkOrderOnlyMiddleware(app, wm)


def refused(response: Any, **details: Any) -> None:
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["code"] == "work_order_required"
    assert error["details"]["header"] == HEADER
    for key, value in details.items():
        assert error["details"][key] == value


@pytest.mark.parametrize("build", [host_app, middleware_app], ids=["dependency", "middleware"])
def test_only_orders_being_worked_on_may_change_the_host(wm: WorkManager, build: Any) -> None:
    client = TestClient(build(wm))
    refused(client.post("/customers"))  # no header
    refused(client.post("/customers", headers={HEADER: "not-a-uuid"}))
    unknown = str(uuid.uuid4())
    refused(client.post("/customers", headers={HEADER: unknown}), order_id=unknown, state=None)
    order_id = wm.propose("test.simple", {})
    refused(client.post("/customers", headers={HEADER: str(order_id)}), state="queued")
    lease = wm.agent.checkout("agent-1")  # the order is in progress now
    assert lease is not None
    allowed = client.post("/customers", headers={HEADER: str(order_id)})
    assert allowed.status_code == 200, allowed.text
    wm.agent.submit(lease, {"answer": 1})  # submitted: still allowed (apply may run)
    assert client.post("/customers", headers={HEADER: str(order_id)}).status_code == 200


def test_the_middleware_lets_reads_through(wm: WorkManager) -> None:
    client = TestClient(middleware_app(wm))
    assert client.get("/customers").status_code == 200


def test_allowed_states_can_be_narrowed(wm: WorkManager) -> None:
    guard = WorkOrderGuard(wm, allowed_states=["in_progress"])
    order_id = wm.propose("test.simple", {})
    assert wm.agent.checkout("agent-1") is not None
    assert guard.check(str(order_id)) == order_id


def test_the_host_keeps_its_own_error_answers(wm: WorkManager) -> None:
    """``install_error_handlers`` installed the API's handlers on the whole host app: a
    host route's bad path parameter became 404 ``not_found``, a bad query parameter 400
    ``invalid_query``, and its ``HTTPException(400)`` ``malformed_json``."""
    from fastapi import HTTPException

    app = host_app(wm)

    @app.get("/customers/{cid}")
    def read(cid: int, page: int = 1) -> dict[str, int]:
        raise HTTPException(400, "email address is not valid")

    client = TestClient(app)
    assert client.get("/customers/abc").status_code == 422
    assert client.get("/customers/1", params={"page": "x"}).status_code == 422
    said = client.get("/customers/1")
    assert (said.status_code, said.json()) == (400, {"detail": "email address is not valid"})
    refused(client.post("/customers"))  # workmanager's own: still the envelope
