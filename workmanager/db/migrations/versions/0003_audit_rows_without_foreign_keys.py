"""audit rows (events, provenance) without foreign keys

Every event and provenance row is written in the transaction of the change it records, so
its order and item exist; the foreign keys only added a lookup and a ``FOR KEY SHARE``
lock on the order (and item) row per audit row, on the hottest statements there are.
Deleting an order still deletes its events and provenance (SPEC §3): a trigger on
``work_orders`` does what ``ON DELETE CASCADE`` did.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 02:40:00
"""

from __future__ import annotations

from alembic import op

# The SQL this migration runs, frozen here: a migration is a snapshot. What the code
# expects now is workmanager/db/sql/functions.sql (tests/integration/test_sql_files.py
# checks that the migrations, run in order, produce exactly that).
CASCADE_PG = """
CREATE OR REPLACE FUNCTION work_orders_delete_audit() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM work_events WHERE order_id = OLD.id;
  DELETE FROM work_provenance WHERE order_id = OLD.id;
  RETURN OLD;
END $$;
CREATE TRIGGER work_orders_delete_audit AFTER DELETE ON work_orders
  FOR EACH ROW EXECUTE FUNCTION work_orders_delete_audit();
"""
CASCADE_SQLITE = """
CREATE TRIGGER work_orders_delete_audit AFTER DELETE ON work_orders FOR EACH ROW BEGIN
  DELETE FROM work_events WHERE order_id = OLD.id;
  DELETE FROM work_provenance WHERE order_id = OLD.id;
END
"""
DROP_AUDIT_CASCADE_PG = "; ".join(
    (
        "DROP TRIGGER IF EXISTS work_orders_delete_audit ON work_orders",
        "DROP FUNCTION IF EXISTS work_orders_delete_audit()",
    )
)
DROP_AUDIT_CASCADE_SQLITE = "DROP TRIGGER IF EXISTS work_orders_delete_audit"

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

#: Names for the constraints 0001 left unnamed, so batch mode (SQLite) can find them; on
#: PostgreSQL these are the names it gave them.
NAMING = {"fk": "%(table_name)s_%(column_0_name)s_fkey"}
AUDIT = ("work_events", "work_provenance")
TARGETS = (("order_id", "work_orders"), ("item_id", "work_items"))


def upgrade() -> None:
    for table in AUDIT:
        with op.batch_alter_table(table, naming_convention=NAMING) as batch:
            for column, _ in TARGETS:
                batch.drop_constraint(f"{table}_{column}_fkey", type_="foreignkey")
    postgres = op.get_bind().dialect.name == "postgresql"
    op.execute(CASCADE_PG if postgres else CASCADE_SQLITE)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.execute(DROP_AUDIT_CASCADE_PG if postgres else DROP_AUDIT_CASCADE_SQLITE)
    for table in AUDIT:
        with op.batch_alter_table(table, naming_convention=NAMING) as batch:
            for column, target in TARGETS:
                batch.create_foreign_key(
                    f"{table}_{column}_fkey", target, [column], ["id"], ondelete="CASCADE"
                )
