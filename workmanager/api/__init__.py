"""The HTTP API (SPEC §6): an adapter over the services. Needs the ``api`` extra."""

from .app import create_app
from .errors import install_for_host as install_error_handlers
from .guard import WorkOrderGuard, WorkOrderOnlyMiddleware

__all__ = ["WorkOrderGuard", "WorkOrderOnlyMiddleware", "create_app", "install_error_handlers"]
