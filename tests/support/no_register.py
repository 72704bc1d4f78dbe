"""A module named in ``WORK_MANAGER_ORDER_TYPES`` with no ``register``: imported, nothing else."""

from __future__ import annotations

IMPORTED = True
