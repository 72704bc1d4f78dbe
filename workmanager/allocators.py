"""Allocator strategies: code that discovers work and proposes orders on a schedule.

``workmanager.orders.generate`` (beat, every 15 minutes) and ``workmanager generate`` ask
every registered strategy for order requests and propose each one. Give requests a
``dedupe_key`` so that discovering the same work twice creates one order.

:class:`Generator` is that run: it asks each strategy, proposes what it discovered and
reports what failed, without letting one strategy stop the others.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import Unavailable, WorkManagerError
from .usercode import USER_CODE_FAILURES

if TYPE_CHECKING:
    from .services.context import ServiceContext
    from .services.orders import OrderService


@dataclass(frozen=True)
class OrderRequest:
    """One order a strategy wants proposed."""

    type: str
    payload: dict[str, Any]
    priority: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    dedupe_key: str | None = None


class AllocatorStrategy:
    """Subclass, set ``name`` and implement :meth:`discover`; register with
    ``registry.register_allocator(MyStrategy())``."""

    name: ClassVar[str] = ""

    def discover(self) -> list[OrderRequest]:
        raise NotImplementedError


def strategy_name(strategy: AllocatorStrategy) -> str:
    """What a strategy is called in the registry and in reports: its ``name``, else its
    class's (a strategy without one was reported as "allocator  failed")."""
    return strategy.name or type(strategy).__name__


log = logging.getLogger("workmanager.generate")
#: The code of a strategy whose ``discover()`` raised or returned something else.
ALLOCATOR_ERROR = "allocator_error"


@dataclass
class GenerateReport:
    discovered: list[OrderRequest] = field(default_factory=list)
    created: int = 0
    existing: int = 0
    #: what failed, each ``{strategy, type, dedupe_key, code, message}``: a strategy that
    #: raised (``allocator_error``, no type), or a request refused (the error's code)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def failed(
        self, strategy: str, code: str, message: str, request: OrderRequest | None = None
    ) -> None:
        self.errors.append(
            {
                "strategy": strategy,
                "type": request.type if request is not None else None,
                "dedupe_key": request.dedupe_key if request is not None else None,
                "code": code,
                "message": message[:500],
            }
        )


class Generator:
    def __init__(self, ctx: ServiceContext, orders: OrderService) -> None:
        self.ctx = ctx
        self.orders = orders

    def run(self, dry_run: bool = False) -> GenerateReport:
        """Ask each strategy for work; propose it unless ``dry_run``. A failing strategy is
        logged and skipped, so one bad strategy does not stop the others."""
        report = GenerateReport()
        #: a dry run's proposals by dedupe key, as an order each (a real run finds the
        #: first one's order under the key)
        self._rehearsed: dict[str, dict[str, Any]] = {}
        for strategy in self.ctx.registry.allocators():
            name = strategy_name(strategy)
            try:
                found: Any = strategy.discover()
                listed = isinstance(found, Iterable) and not isinstance(found, str | dict)
                requests: list[Any] = list(found) if listed else [found]
                wrong = [r for r in requests if not isinstance(r, OrderRequest)]
                if wrong:
                    raise TypeError(
                        f"discover() must return a list of OrderRequest objects, got {wrong[0]!r}"[
                            :300
                        ]
                    )
            except USER_CODE_FAILURES as exc:  # the strategy's own code: logged, the next one
                log.exception("allocator %s failed", name)
                report.failed(name, ALLOCATOR_ERROR, f"{type(exc).__name__}: {exc}")
                continue
            report.discovered.extend(requests)
            self._propose(name, requests, report, dry_run)
        return report

    def _propose(
        self, strategy: str, requests: list[OrderRequest], report: GenerateReport, dry_run: bool
    ) -> None:
        """Propose each request; a dry run stores nothing but meets every refusal a real run
        would (type, payload, schema, plan, a dedupe key naming another proposal, in the
        database or earlier in this run)."""
        for req in requests:
            try:
                created = (self._rehearse if dry_run else self._create)(req, report)
            except Unavailable:  # the database down: one error for the run
                raise
            except WorkManagerError as exc:
                report.failed(strategy, exc.code, exc.one_line(), req)
                continue
            if dry_run:
                continue
            if created:
                report.created += 1
            else:
                report.existing += 1

    def _create(self, req: OrderRequest, report: GenerateReport) -> bool:
        proposal = self.orders.propose(
            req.type, req.payload, priority=req.priority, meta=req.meta, dedupe_key=req.dedupe_key
        )
        return proposal.created

    def _rehearse(self, req: OrderRequest, report: GenerateReport) -> bool:
        key = req.dedupe_key
        order, _ = self.orders.planned(req.type, req.payload, req.priority, req.meta, key)
        if key is None:
            return True
        earlier = self._rehearsed.get(key)
        if earlier is not None:  # what the real run's propose compares
            from .services.proposals import same_proposal

            same_proposal(earlier, req.type, req.payload, key, order.tenant_id)
            return False
        # refused (another proposal holds the key), it is not kept as the key's: the next
        # request under it meets what the real run meets, the database's order
        new = self.orders.repeated(req.type, req.payload, key, order.tenant_id) is None
        self._rehearsed[key] = {
            "id": str(order.id),
            "type": req.type,
            "payload": req.payload,
            "tenant_id": order.tenant_id,
        }
        return new
