-- The SQLite objects the schema carries besides tables (see functions.sql for the
-- conventions; SQLite has no stored functions: the ORM store does the order steps).

-- name: work_orders_delete_audit (migration 0003)
CREATE TRIGGER work_orders_delete_audit AFTER DELETE ON work_orders FOR EACH ROW BEGIN
  DELETE FROM work_events WHERE order_id = OLD.id;
  DELETE FROM work_provenance WHERE order_id = OLD.id;
END
