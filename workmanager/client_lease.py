"""A held lease on the agent's side: background heartbeats, and the calls that end it.

:class:`LeaseHandle` is what :meth:`workmanager.client.WorkClient.checkout` returns; the
HTTP itself (keys, retries, decoding) is the client's.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import httpx  # imported by workmanager.client only, after it named the extra when missing

from .client_wire import ApiError
from .errors import UsageError
from .jsonvalues import exception_text, failure_text

if TYPE_CHECKING:
    from .client import WorkClient

#: The shortest heartbeat interval a handle keeps (seconds).
MIN_HEARTBEAT_EVERY = 0.05
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
