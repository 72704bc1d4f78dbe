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

import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from .importing import import_extra

if TYPE_CHECKING:
    import httpx
else:  # a plain install has no httpx: one line naming the extra, not ModuleNotFoundError
    httpx = import_extra("httpx", "workmanager.client needs httpx", "client")

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
from .jsonvalues import exception_text, failure_text

DEFAULT_PREFIX = "/agent/work"
#: The shortest heartbeat interval a handle keeps (seconds).
MIN_HEARTBEAT_EVERY = 0.05
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


#: Answers to a lease call meaning the lease is gone (another holder, expired, the item no
#: longer leased, not found, not ours): heartbeats stop and are not resumed.
LEASE_GONE_STATUSES = (403, 404, 409)


class LeaseHandle:
    """A held lease: heartbeat, submit, parts, finalize, release, fail.

    Only a *successful* submit, finalize, release or fail ends it. When one of those calls
    raises, the lease is still held as far as the client knows: the heartbeats it paused
    for the call resume (unless the server answered 403/404/409, the lease is gone), and
    leaving the ``with`` block still releases the item, or reports ``fail``."""

    def __init__(
        self,
        client: WorkClient,
        item: dict[str, Any],
        auto_heartbeat: bool = True,
        every: float | None = None,
    ) -> None:
        self.client = client
        self.item = item
        self.id: str = item["id"]
        self.token = str(item["lease_token"])
        self._stop = threading.Event()
        self._stop_reason = ""
        self._thread: threading.Thread | None = None
        self.heartbeat_errors: list[Exception] = []
        #: The error of the ``fail`` that leaving the block on an exception sent, when that
        #: call failed too (it is also added as a note to the block's exception).
        self.exit_error: Exception | None = None
        self.heartbeats = 0
        #: the server's advice is followed as it changes (a server restarted with another
        #: TTL answers another interval) unless the caller fixed ``every``
        self._advised = every is None
        advised = float(item.get("heartbeat_every_seconds") or 60)
        self.every = max(every or advised, MIN_HEARTBEAT_EVERY)
        if auto_heartbeat:
            self._start()

    @property
    def ended(self) -> str:
        """How the lease ended (``submitted``, ``finalized``, ``released``, ``failed``), or
        ``""`` while it is held."""
        return self._stop_reason

    def __enter__(self) -> LeaseHandle:
        return self

    def __exit__(self, _type: object, exc: BaseException | None, _tb: object) -> None:
        """Leaving the block without ending the lease gives the item back: released, or
        reported ``fail`` (``agent_exception``, retryable) when the block raised, also when
        what raised was a submit or finalize that failed. An error of that ``fail`` never
        hides the block's exception: it is added to it as a note and kept in
        ``exit_error``."""
        self.stop()
        if self._stop_reason:
            return
        if exc is None:
            self.release()
            return
        try:
            said = f"{type(exc).__name__}: {exception_text(exc)}"
            self.fail("agent_exception", failure_text(said))
        except (ApiError, httpx.HTTPError) as error:
            self.exit_error = error
            exc.add_note(f"workmanager.client: reporting fail for item {self.id} failed: {error}")

    def _start(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(self._stop,), daemon=True)
        self._thread.start()

    def _beat(self, stop: threading.Event) -> None:
        while not stop.wait(self.every):
            try:
                self.heartbeat()
                self.heartbeats += 1
            except ApiError as exc:
                self.heartbeat_errors.append(exc)
                if exc.http_status in LEASE_GONE_STATUSES:
                    return  # the lease is gone; nothing more to extend
            except UsageError as exc:  # the client was closed under the lease
                self.heartbeat_errors.append(exc)
                return
            except httpx.HTTPError as exc:
                self.heartbeat_errors.append(exc)

    def stop(self) -> None:
        """Stop the background heartbeats (submit, finalize, release and fail do this)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _heartbeating(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def _post(
        self, action: str, body: Any = None, expect: str | None = None, keyed: bool = True
    ) -> dict[str, Any]:
        return self.client.request(
            "POST",
            f"/items/{self.id}/{action}",
            body,
            headers={"X-Lease-Token": self.token},
            expect=expect,
            keyed=keyed,
        )

    def _end(self, reason: str, action: str, body: Any = None) -> dict[str, Any]:
        """The call that ends the lease: heartbeats pause for it and stop for good once it
        succeeded; if it raised, they resume unless the lease is gone."""
        resume = self._heartbeating()
        self.stop()
        try:
            answer = self._post(action, body, expect="item")
        except Exception as exc:  # not on KeyboardInterrupt and the like: no resuming
            gone = isinstance(exc, ApiError) and exc.http_status in LEASE_GONE_STATUSES
            if resume and not gone:
                self._start()
            raise
        self._stop_reason = reason
        return answer

    def heartbeat(
        self, progress: float | None = None, checkpoint: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        given = (("progress", progress), ("checkpoint", checkpoint))
        body = {k: v for k, v in given if v is not None}
        # a bare beat carries no key: sent again it only extends the lease again, and a key
        # makes the server record it (a database write a Redis lock-only beat spares)
        keyed = bool(body) or self.client.keyed_heartbeats
        try:
            answer = self._post("heartbeat", body, expect="lease_expires_at", keyed=keyed)
        except ApiError as exc:  # a server told to require keys on heartbeats gets one,
            if keyed or exc.code != "idempotency_key_required":  # from now on
                raise
            self.client.keyed_heartbeats = True
            answer = self._post("heartbeat", body, expect="lease_expires_at")
        advised = answer.get("heartbeat_every_seconds") if isinstance(answer, dict) else None
        if self._advised and isinstance(advised, int | float) and not isinstance(advised, bool):
            self.every = max(float(advised), MIN_HEARTBEAT_EVERY)
        return answer

    def submit(
        self, result: dict[str, Any], evidence: Any = None, notes: str | None = None
    ) -> dict[str, Any]:
        return self._end(
            "submitted", "submit", {"result": result, "evidence": evidence, "notes": notes}
        )

    def submit_part(
        self,
        part_key: str,
        payload: dict[str, Any],
        seq: int | None = None,
        evidence: Any = None,
        notes: str | None = None,
    ) -> dict[str, Any]:
        """One part (``POST /items/{id}/parts``); its evidence and notes as a submit's. A
        misspelled keyword is Python's ``TypeError`` (it took ``**extra`` and sent them,
        and the server ignored ``evidnce=``)."""
        body = {"part_key": part_key, "payload": payload, "seq": seq}
        body |= {"evidence": evidence, "notes": notes}
        return self._post("parts", body, expect="part")

    def finalize(self, mode: str = "strict") -> dict[str, Any]:
        return self._end("finalized", "finalize", {"mode": mode})

    def release(self) -> dict[str, Any]:
        return self._end("released", "release")

    def fail(self, code: str, message: str, retryable: bool = True) -> dict[str, Any]:
        body = {"error": {"code": code, "message": message}, "retryable": retryable}
        return self._end("failed", "fail", body)


def _in_flight(response: httpx.Response) -> bool:
    if response.status_code != 409:
        return False
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        return False
    return isinstance(error, dict) and error.get("code") == "idempotency_in_flight"
