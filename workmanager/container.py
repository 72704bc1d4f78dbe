"""The WorkManager: builds every service from one Settings object."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from .allocators import Generator
from .db.models import utcnow
from .db.session import Database
from .dispatch import Dispatcher, NullDispatcher
from .leases.base import LeaseBackend
from .leases.factory import build_lease_backend
from .metrics.base import Metrics
from .metrics.factory import build_metrics
from .provenance.recorder import ProvenanceRecorder, build_enricher
from .ratelimit.factory import build_limiter
from .reads.queries import Queries
from .registry import Registry
from .services.agent import AgentAPI
from .services.apply import ApplyService
from .services.context import ServiceContext
from .services.idempotency import IdempotencyService
from .services.lease_admin import Sweeper
from .services.maintenance import Maintenance
from .services.orders import OrderService
from .settings import Settings
from .types import JSON, Actor, AgentInfo


class WorkManager:
    """One per process: holds the database, the lease backend, metrics and the services.

    Build it explicitly and pass it to whatever needs it::

        wm = WorkManager(Settings.from_env())
        wm.registry.register(MyType())
        order = wm.propose("my.type", {"x": 1})
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        registry: Registry | None = None,
        metrics: Metrics | None = None,
        leases: LeaseBackend | None = None,
        dispatcher: Dispatcher | None = None,
        database: Database | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.registry = registry or Registry()
        if registry is None:
            self.registry.load_modules(self.settings.order_types)
        self.ctx = ServiceContext(
            settings=self.settings,
            db=database or Database(self.settings.database_url),
            registry=self.registry,
            metrics=metrics or build_metrics(self.settings),
            provenance=ProvenanceRecorder(build_enricher(self.settings)),
            leases=leases or build_lease_backend(self.settings),
            dispatcher=dispatcher or NullDispatcher(),
            clock=clock,
        )
        self._built_leases, self._built_metrics = leases is None, metrics is None
        #: The rate limits (SPEC §13): checkout here, API requests in the HTTP adapter.
        self.limits = build_limiter(self.settings, self.ctx.db)
        self.agent = AgentAPI(self.ctx, self.limits)
        self.orders = OrderService(self.ctx)
        self.executor = ApplyService(self.ctx)
        self.sweeper = Sweeper(self.ctx)
        self.maintenance = Maintenance(self.ctx)
        self.idempotency = IdempotencyService(self.ctx)
        self.queries = Queries(self.ctx)
        self.generator = Generator(self.ctx, self.orders)

    @property
    def db(self) -> Database:
        return self.ctx.db

    @property
    def metrics(self) -> Metrics:
        return self.ctx.metrics

    @property
    def dispatcher(self) -> Dispatcher:
        return self.ctx.dispatcher

    @dispatcher.setter
    def dispatcher(self, value: Dispatcher) -> None:
        self.ctx.dispatcher = value

    def propose(
        self,
        type: str,
        payload: JSON,
        priority: int = 0,
        meta: JSON | None = None,
        dedupe_key: str | None = None,
        *,
        order_id: uuid.UUID | str | None = None,
        tenant_id: str | None = None,
        agent: AgentInfo | None = None,
        requested_by: Actor | None = None,
    ) -> uuid.UUID:
        """Create and plan an order now; returns its id (an existing one for a known
        ``dedupe_key``). ``order_id``: the id you chose; ``agent`` or ``requested_by``:
        who proposes (:meth:`OrderService.propose`)."""
        proposal = self.orders.propose(
            type, payload, priority=priority, meta=meta, dedupe_key=dedupe_key,
            order_id=order_id, tenant_id=tenant_id, agent=agent, requested_by=requested_by,
        )  # fmt: skip
        return uuid.UUID(proposal.order["id"])

    def approve(self, order_id: uuid.UUID | str, actor: Actor | None = None) -> dict[str, Any]:
        return self.orders.approve(order_id, actor or Actor("user", "library"))

    def close(self) -> None:
        """Let go of every connection this object opened: the database's pools, and the
        Redis clients and StatsD sockets it built (a lease backend or metrics passed in
        are the caller's to close)."""
        self.ctx.db.dispose()
        self.limits.close()
        for built, owned in (
            (self._built_leases, self.ctx.leases),
            (self._built_metrics, self.ctx.metrics),
        ):
            close = getattr(owned, "close", None)
            if built and close is not None:
                close()
