"""Storage: SQLAlchemy models, the engine and sessions, and the Alembic migrations."""

from .models import ApiToken, Base, Event, IdempotencyKey, Item, Order, Part, Provenance
from .session import Database

__all__ = [
    "ApiToken",
    "Base",
    "Database",
    "Event",
    "IdempotencyKey",
    "Item",
    "Order",
    "Part",
    "Provenance",
]
