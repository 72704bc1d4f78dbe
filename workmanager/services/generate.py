"""Run the allocator strategies and propose what they discover."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..allocators import OrderRequest
from ..errors import WorkManagerError
from .context import ServiceContext
from .orders import OrderService

log = logging.getLogger("workmanager.generate")


@dataclass
class GenerateReport:
    discovered: list[OrderRequest] = field(default_factory=list)
    created: int = 0
    existing: int = 0
    errors: list[str] = field(default_factory=list)


class Generator:
    def __init__(self, ctx: ServiceContext, orders: OrderService) -> None:
        self.ctx = ctx
        self.orders = orders

    def run(self, dry_run: bool = False) -> GenerateReport:
        """Ask each strategy for work; propose it unless ``dry_run``. A failing strategy is
        logged and skipped, so one bad strategy does not stop the others."""
        report = GenerateReport()
        for strategy in self.ctx.registry.allocators():
            try:
                requests = strategy.discover()
            except Exception as exc:
                log.exception("allocator %s failed", strategy.name)
                report.errors.append(f"{strategy.name}: {exc}")
                continue
            report.discovered.extend(requests)
            if not dry_run:
                self._propose(requests, report)
        return report

    def _propose(self, requests: list[OrderRequest], report: GenerateReport) -> None:
        for req in requests:
            try:
                proposal = self.orders.propose(
                    req.type,
                    req.payload,
                    priority=req.priority,
                    meta=req.meta,
                    dedupe_key=req.dedupe_key,
                )
            except WorkManagerError as exc:
                report.errors.append(f"{req.type}: {exc.message}")
                continue
            if proposal.created:
                report.created += 1
            else:
                report.existing += 1
