"""workmanager: a work-order control plane for AI agents and background services."""

from .container import WorkManager
from .diff import Diff
from .errors import (
    IllegalStateTransition,
    LeaseConflict,
    LeaseExpired,
    NotFound,
    TransientError,
    ValidationFailed,
    WorkManagerError,
)
from .order_types import ItemSpec, OrderType, Part
from .registry import Registry
from .settings import Settings
from .states import ItemState, OrderState
from .types import Actor, AgentInfo, ApplyContext, ItemView, Lease, OrderView

__version__ = "0.1.0"

__all__ = [
    "Actor",
    "AgentInfo",
    "ApplyContext",
    "Diff",
    "IllegalStateTransition",
    "ItemSpec",
    "ItemState",
    "ItemView",
    "Lease",
    "LeaseConflict",
    "LeaseExpired",
    "NotFound",
    "OrderState",
    "OrderType",
    "OrderView",
    "Part",
    "Registry",
    "Settings",
    "TransientError",
    "ValidationFailed",
    "WorkManager",
    "WorkManagerError",
    "__version__",
]
