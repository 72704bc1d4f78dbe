"""A small HTTP client for agents (SPEC §6), with automatic heartbeats.

::

    from workmanager.client import WorkClient

    with WorkClient("http://127.0.0.1:8000", token, agent_id="research-agent-1") as wc:
        lease = wc.checkout(type="customer.research")   # None when nothing is free
        if lease is not None:
            with lease:                                   # heartbeats until closed
                lease.submit({"answer": 42})

While a :class:`LeaseHandle` is open a background thread heartbeats at the advised
interval. Every mutating call carries a fresh idempotency key, and a transport error or a
503 is retried with the *same* key, so a retry never does the work twice. Errors are raised
as :class:`ApiError` with the server's ``code``, ``message`` and ``details``.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import httpx

from .errors import WorkManagerError

DEFAULT_PREFIX = "/agent/work"
RETRIES = 3


class ApiError(WorkManagerError):
    """The API answered with an error envelope."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        error = body.get("error") or {}
        super().__init__(error.get("message") or f"HTTP {status}", details=error.get("details"))
        self.code = str(error.get("code") or "http_error")
        self.http_status = status


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
        headers = {
            "Authorization": f"Bearer {token}" if token else None,
            "X-Agent-ID": agent_id,
            "X-Agent-Name": agent_name,
            "X-Agent-Version": agent_version,
            "X-Model-Name": model_name,
            "X-Runtime": runtime,
        }
        self.http = httpx.Client(
            base_url=base_url.rstrip("/") + prefix,
            headers={k: v for k, v in headers.items() if v},
            timeout=timeout,
            transport=transport,
        )
        self.idempotency_header = "X-Idempotency-Key"

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
    ) -> dict[str, Any]:
        """Send with retries on transport errors and 503; raise :class:`ApiError` on 4xx/5xx."""
        all_headers = {self.idempotency_header: uuid.uuid4().hex, **(headers or {})}
        for attempt in range(1, RETRIES + 1):
            try:
                r = self.http.request(method, path, json=json, headers=all_headers, params=params)
            except httpx.TransportError:
                if attempt == RETRIES:
                    raise
                time.sleep(0.2 * attempt)
                continue
            if r.status_code == 503 and attempt < RETRIES:
                time.sleep(float(r.headers.get("Retry-After", "1")))
                continue
            body: dict[str, Any] = r.json() if r.content else {}
            if r.status_code >= 400:
                raise ApiError(r.status_code, body)
            return body
        raise AssertionError("unreachable")

    # --- producers and reviewers --------------------------------------------------------
    def propose(self, type: str, payload: dict[str, Any], **fields: Any) -> dict[str, Any]:
        """Create an order (``meta``, ``priority``, ``dedupe_key``, ``tenant_id`` as keywords)."""
        order: dict[str, Any] = self.request(
            "POST", "/propose", {"type": type, "payload": payload, **fields}
        )["order"]
        return order

    def order(self, order_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.request("GET", f"/orders/{order_id}")["order"]
        return found

    def orders(self, **params: Any) -> dict[str, Any]:
        return self.request("GET", "/orders", params=params)

    def approve(self, order_id: str, wait: float | None = None) -> dict[str, Any]:
        params = {"wait": wait} if wait else None
        return self.request("POST", f"/orders/{order_id}/approve", params=params)

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
        path = f"/orders/{order_id}/checkout" if order_id else "/checkout"
        try:
            item = self.request("POST", path, {k: v for k, v in filters.items() if v is not None})
        except ApiError as exc:
            if exc.code == "no_items_available":
                return None
            raise
        return LeaseHandle(self, item["item"], heartbeat, heartbeat_every)


class LeaseHandle:
    """A held lease: heartbeat, submit, parts, finalize, release, fail."""

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
        self.heartbeats = 0
        self.every = max(every or float(item.get("heartbeat_every_seconds") or 60), 0.05)
        if auto_heartbeat:
            self._thread = threading.Thread(target=self._beat, daemon=True)
            self._thread.start()

    def __enter__(self) -> LeaseHandle:
        return self

    def __exit__(self, _type: object, exc: BaseException | None, _tb: object) -> None:
        """Leaving the block without submitting gives the item back (failed on an error)."""
        self.stop()
        if self._stop_reason:
            return
        if exc is not None:
            self.fail("agent_exception", f"{type(exc).__name__}: {exc}")
        else:
            self.release()

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.heartbeat()
                self.heartbeats += 1
            except ApiError as exc:
                self.heartbeat_errors.append(exc)
                if exc.http_status in (403, 404, 409):
                    return  # the lease is gone; nothing more to extend
            except httpx.HTTPError as exc:
                self.heartbeat_errors.append(exc)

    def stop(self) -> None:
        """Stop the background heartbeats (submit, finalize, release and fail do this)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _post(self, action: str, body: Any = None) -> dict[str, Any]:
        return self.client.request(
            "POST", f"/items/{self.id}/{action}", body, headers={"X-Lease-Token": self.token}
        )

    def _end(self, reason: str, action: str, body: Any = None) -> dict[str, Any]:
        self.stop()
        self._stop_reason = reason
        return self._post(action, body)

    def heartbeat(
        self, progress: float | None = None, checkpoint: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        body = {
            k: v for k, v in (("progress", progress), ("checkpoint", checkpoint)) if v is not None
        }
        return self._post("heartbeat", body)

    def submit(
        self, result: dict[str, Any], evidence: Any = None, notes: str | None = None
    ) -> dict[str, Any]:
        return self._end(
            "submitted", "submit", {"result": result, "evidence": evidence, "notes": notes}
        )

    def submit_part(
        self, part_key: str, payload: dict[str, Any], seq: int | None = None, **extra: Any
    ) -> dict[str, Any]:
        return self._post("parts", {"part_key": part_key, "payload": payload, "seq": seq, **extra})

    def finalize(self, mode: str = "strict") -> dict[str, Any]:
        return self._end("finalized", "finalize", {"mode": mode})

    def release(self) -> dict[str, Any]:
        return self._end("released", "release")

    def fail(self, code: str, message: str, retryable: bool = True) -> dict[str, Any]:
        body = {"error": {"code": code, "message": message}, "retryable": retryable}
        return self._end("failed", "fail", body)
