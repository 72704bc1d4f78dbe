"""How a consumer agent runs user code: a function, or a class with hooks for parts."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from workmanager import Lease, WorkManager
from workmanager.errors import LeaseConflict, LeaseExpired, WorkManagerError
from workmanager.importing import import_object
from workmanager.types import JSON, AgentInfo, ItemView


class PartsHandler(Protocol):
    """A class-based handler that submits its result in parts, then finalizes."""

    finalize_mode: str

    def parts(self, item: ItemView, lease: Lease) -> Iterable[tuple[str, JSON]]:
        """Yield ``(part_key, payload)`` pairs; each is submitted as it comes."""
        ...


Handler = Callable[[ItemView, Lease], JSON]


def load_handler(reference: str) -> Any:
    """``pkg.mod:callable`` or ``pkg.mod:Class`` (instantiated with no arguments)."""
    target = import_object(reference, "--handler")
    return target() if isinstance(target, type) else target


class Heartbeater:
    """Heartbeats a lease in the background while the handler runs."""

    def __init__(self, wm: WorkManager, lease: Lease, agent: AgentInfo, every: float) -> None:
        self.wm, self.lease, self.agent, self.every = wm, lease, agent, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="wm-heartbeat")

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.lease = self.wm.agent.heartbeat(self.lease, agent=self.agent)
            except (LeaseConflict, LeaseExpired):
                return  # lost: the submit that follows is refused and reported as lost
            except WorkManagerError:
                continue  # transient: try again at the next beat

    def __enter__(self) -> Heartbeater:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def run_handler(wm: WorkManager, handler: Any, lease: Lease, agent: AgentInfo) -> str:
    """Run the handler on a leased item and submit (or finalize) what it produced."""
    assert lease.item is not None
    if hasattr(handler, "parts"):
        for part_key, payload in handler.parts(lease.item, lease):
            wm.agent.submit_part(lease, part_key, payload, agent=agent)
        wm.agent.finalize(lease, getattr(handler, "finalize_mode", "strict"), agent=agent)
        return "finalized"
    call = handler.handle if hasattr(handler, "handle") else handler
    result = call(lease.item, lease)
    wm.agent.submit(lease, result, agent=agent)
    return "submitted"
