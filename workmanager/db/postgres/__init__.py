"""The PostgreSQL store: every write of the busy operations as hand-written SQL on raw
psycopg connections (:mod:`workmanager.db.raw`), the one path on PostgreSQL.

* :mod:`.leases` — :class:`.leases.PostgresStore`: checkout, heartbeat, release (and
  submit through :mod:`.submit`; fail, submit_part and finalize through :mod:`.endings`);
* :mod:`.sql` — the statements, built once per shape, and the row helpers.
"""
