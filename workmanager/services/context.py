"""What every service shares: the database, settings, registry and the pluggable ports."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from ..db.models import utcnow
from ..db.session import Database
from ..dispatch import Dispatcher, NullDispatcher
from ..leases.base import LeaseBackend
from ..metrics.base import Metrics
from ..provenance.recorder import ProvenanceRecorder
from ..registry import Registry
from ..settings import Settings


@dataclass
class ServiceContext:
    """Passed explicitly to every service; built once by :class:`workmanager.WorkManager`."""

    settings: Settings
    db: Database
    registry: Registry
    metrics: Metrics
    provenance: ProvenanceRecorder
    leases: LeaseBackend
    dispatcher: Dispatcher = field(default_factory=NullDispatcher)
    clock: Callable[[], datetime] = utcnow
