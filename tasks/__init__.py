"""The one Celery app of workmanager, and its thin tasks (SPEC §8).

``celery -A tasks worker|beat|flower`` finds ``tasks.app``.
"""

from .app import app
from .producer import enqueue_order

__all__ = ["app", "enqueue_order"]
