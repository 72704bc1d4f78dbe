"""Lease backends: who holds which item (SPEC §4.5). The database stays the record of state."""

from .base import CheckoutQuery, LeaseBackend, LeaseStore
from .factory import build_lease_backend

__all__ = ["CheckoutQuery", "LeaseBackend", "LeaseStore", "build_lease_backend"]
