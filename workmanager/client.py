"""A small HTTP client for agents (SPEC §6), with automatic heartbeats.

::

    from workmanager.client import WorkClient

    with WorkClient("http://127.0.0.1:8000", token, agent_id="research-agent-1") as wc:
        lease = wc.checkout(type="customer.research")   # None when nothing is free
        if lease is not None:
            with lease:                                   # heartbeats until closed
                lease.submit({"answer": 42})

While a :class:`LeaseHandle` is open a background thread heartbeats at the advised
interval. Every mutating call but a bare heartbeat carries a fresh idempotency key, and a
transport error or a 503 is retried with the *same* key, so a retry never does the work
twice. Every error is raised as :class:`ApiError` (its docstring says which code when).
A checkout by a type the server registers none of is warned about, once per type.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from .importing import import_extra

if TYPE_CHECKING:
    import httpx
else:  # a plain install has no httpx: one line naming the extra, not ModuleNotFoundError
    httpx = import_extra("httpx", "workmanager.client needs httpx", "client")

from .client_lease import MIN_HEARTBEAT_EVERY, LeaseHandle
from .client_wire import (
    CHECKOUT_FILTERS,
    PROPOSE_FIELDS,
    ApiError,
    check_base_url,
    check_header,
    decode,
    encode_json,
    error_body,
    known_keywords,
    retry_after,
    say_unknown_type,
    seconds_arg,
)
from .durations import MAX_SECONDS, MAX_WAIT_SECONDS

#: What the client module offers (``ApiError`` is raised by it: mypy --strict refused the
#: documented ``from workmanager.client import ApiError`` without it).
__all__ = ["ApiError", "LeaseHandle", "WorkClient"]
from .errors import UsageError

DEFAULT_PREFIX = "/agent/work"
RETRIES = 3
#: Answers retried with the same key: the server away (503), or a gateway between that
#: could not reach it or wait for it (502, 504), whether or not the server acted.
RETRIED_STATUSES = (502, 503, 504)
#: How long a retry of the client's own waits for the first try, still running on the
#: server (409 ``idempotency_in_flight``: a read timeout shorter than the call), to store
#: the answer it then replays.
IN_FLIGHT_PATIENCE = 120.0


class WorkClient:
    """One agent talking to one API server."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        agent_id: str | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        agent_name: str | None = None,
        agent_version: str | None = None,
        model_name: str | None = None,
        runtime: str | None = "workmanager.client",
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        token = token.strip() if isinstance(token, str) else token  # read from a file
        headers = {
            "Authorization": f"Bearer {token}" if token else None,
            "X-Agent-ID": agent_id,
            "X-Agent-Name": agent_name,
            "X-Agent-Version": agent_version,
            "X-Model-Name": model_name,
            "X-Runtime": runtime,
        }
        check_base_url(base_url)
        for name, value in headers.items():
            check_header(name, value)
        self.http = httpx.Client(
            base_url=base_url.rstrip("/") + prefix,
            headers={k.encode(): v.encode() for k, v in headers.items() if v},
            timeout=timeout,
            transport=transport,
        )
        # the header every server reads beside its WORK_MANAGER_IDEMPOTENCY_HEADER
        self.idempotency_header = "Idempotency-Key"
        #: set once the server answered a bare heartbeat 428: it requires keys on them
        self.keyed_heartbeats = False
        self.unknown_types: set[str] = set()  # checked out by type, none registered: said

    def __enter__(self) -> WorkClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # --- transport ----------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        json: Any = None,
        headers: dict[str, str] | None = None,
        params: Any = None,
        *,
        expect: str | None = None,
        timeout: float | None = None,
        keyed: bool = True,
    ) -> dict[str, Any]:
        """Send with retries on transport errors and 502/503/504, all with the same key
        (none when not ``keyed``: a call that may simply be sent again);
        raise :class:`ApiError` on 4xx/5xx, on a body that is not JSON (nothing sent), on a
        server out of reach after the retries, and on an answer that is not a JSON object
        (holding ``expect``). A retry told the first try is still running
        (``idempotency_in_flight``) waits for its answer, up to :data:`IN_FLIGHT_PATIENCE`."""
        if self.http.is_closed:
            raise UsageError(f"{method} {path}: this WorkClient is closed")
        key = {self.idempotency_header: uuid.uuid4().hex} if keyed else {}
        all_headers = {**key, **(headers or {})}
        content = None
        if json is not None:
            content = encode_json(json)
            all_headers["Content-Type"] = "application/json"
        limit: Any = self.http.timeout if timeout is None else timeout
        attempt, waited_since = 0, time.monotonic()
        while True:
            attempt += 1
            try:
                r = self.http.request(
                    method, path, content=content, headers=all_headers, params=params, timeout=limit
                )
            except httpx.TransportError as exc:
                if attempt < RETRIES:
                    time.sleep(0.2 * attempt)
                    continue
                message = f"{method} {path}: the server could not be reached ({exc!r})"
                details = {"exception": type(exc).__name__, "attempts": attempt}
                raise ApiError(503, error_body("unavailable", message, details)) from exc
            except httpx.RequestError as exc:  # an answer httpx could not read (decoding)
                message = f"{method} {path}: the answer could not be read ({exc!r})"
                details = {"exception": type(exc).__name__}
                raise ApiError(502, error_body("invalid_response", message, details)) from exc
            if r.status_code in RETRIED_STATUSES and attempt < RETRIES:
                time.sleep(retry_after(r))
                continue
            # our own first try, still running: its answer is replayed once stored
            waited = time.monotonic() - waited_since
            if attempt > 1 and _in_flight(r) and waited < IN_FLIGHT_PATIENCE:
                attempt -= 1  # waiting for it is not one of the tries
                time.sleep(retry_after(r))
                continue
            return decode(r, expect)  # raises ApiError on 4xx/5xx

    # --- producers and reviewers --------------------------------------------------------
    def propose(self, type: str, payload: dict[str, Any], **fields: Any) -> dict[str, Any]:
        """Create an order (``meta``, ``priority``, ``dedupe_key``, ``tenant_id`` as keywords)."""
        known_keywords("propose", fields, PROPOSE_FIELDS)
        body = {"type": type, "payload": payload, **fields}
        order: dict[str, Any] = self.request("POST", "/propose", body, expect="order")["order"]
        return order

    def order(self, order_id: str | uuid.UUID) -> dict[str, Any]:
        found: dict[str, Any] = self.request("GET", f"/orders/{order_id}", expect="order")["order"]
        return found

    def orders(self, **params: Any) -> dict[str, Any]:
        return self.request("GET", "/orders", params=params)

    def approve(self, order_id: str, wait: float | None = None) -> dict[str, Any]:
        """Approve; with ``wait`` (seconds) the server answers once the apply finished or
        the wait ran out, so the read timeout is the client's plus ``wait``."""
        wait = seconds_arg("approve", "wait", wait, 0, MAX_WAIT_SECONDS)  # before sending
        params = {"wait": wait} if wait else None
        timeout = self.http.timeout.read + wait if wait and self.http.timeout.read else None
        path = f"/orders/{order_id}/approve"
        return self.request("POST", path, params=params, expect="order", timeout=timeout)

    # --- agents -------------------------------------------------------------------------
    def checkout(
        self,
        order_id: str | None = None,
        *,
        heartbeat: bool = True,
        heartbeat_every: float | None = None,
        **filters: Any,
    ) -> LeaseHandle | None:
        """Lease an item (``type``, ``min_priority``, ``tenant_id`` filters); ``None`` when
        none is available. The handle heartbeats in the background until closed, every
        ``heartbeat_every`` seconds (default: the interval the server advises)."""
        known_keywords("checkout", filters, CHECKOUT_FILTERS)
        every = heartbeat_every  # checked before the checkout: a refusal leases nothing
        every = seconds_arg("checkout", "heartbeat_every", every, MIN_HEARTBEAT_EVERY, MAX_SECONDS)
        path = f"/orders/{order_id}/checkout" if order_id else "/checkout"
        body = {k: v for k, v in filters.items() if v is not None}
        try:
            answer = self.request("POST", path, body, expect="item")
        except ApiError as exc:
            if exc.code != "no_items_available":
                raise
            say_unknown_type(exc, self.unknown_types)
            return None
        item = answer["item"] if isinstance(answer.get("item"), dict) else {}
        if "lease_token" not in item:  # a checkout whose answer was lost on the way out
            message = (
                f"the checkout of item {item.get('id')} committed but its answer was lost: its"
                " lease token cannot be recovered; the lease runs out after its TTL"
            )
            raise ApiError(502, error_body("invalid_response", message, {"answer": answer}))
        return LeaseHandle(self, item, heartbeat, every)


def _in_flight(response: httpx.Response) -> bool:
    if response.status_code != 409:
        return False
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        return False
    return isinstance(error, dict) and error.get("code") == "idempotency_in_flight"
