"""The read side: what the adapters show, never a state change.

``queries`` (an order with its items and events, item logs, parts), ``listing`` (the
filtered, paginated lists of orders, items, events and provenance) and ``overview`` (the
console's dashboard and review queue). They read with SQLAlchemy on both databases and
shape rows with :mod:`workmanager.services.views`; every write is a service's
(:mod:`workmanager.services`) through the stores (:mod:`workmanager.db.store`).
"""
