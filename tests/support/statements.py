"""Every SQL statement the PostgreSQL store sends, built for every shape and variant its
builders take, by a name saying which: what the query-file tests check."""

from __future__ import annotations

import itertools
from dataclasses import fields

from workmanager.db import claims
from workmanager.db.postgres import admin, control, order_admin, order_rows, requests, sql
from workmanager.leases import limits
from workmanager.leases.selection import Shape
from workmanager.ratelimit.database import take_sql


def every_statement() -> dict[str, str]:
    """The statements (whole ones, not their parts), built from ``queries.sql``."""
    out: dict[str, str] = {}
    names = [f.name for f in fields(Shape)]
    for bits in itertools.product((False, True), repeat=len(names)):
        shape = Shape(**dict(zip(names, bits, strict=True)))
        key = ",".join(n for n, b in zip(names, bits, strict=True) if b) or "plain"
        out[f"grant[{key}]"] = sql.grant_sql(shape)
    for guarded, assembled in itertools.product((False, True), repeat=2):
        out[f"submit[guarded={guarded}, assembled={assembled}]"] = sql.submit_sql(
            guarded, assembled
        )
    out["submit[guarded=True, keyed=True]"] = sql.submit_sql(True, keyed=True)
    for keyed in (False, True):
        out[f"finalize[keyed={keyed}]"] = sql.finalize_sql(keyed)
        for event in ("part_submitted", "part_rejected"):
            out[f"part[{event}, keyed={keyed}]"] = sql.part_sql(event, keyed)
    for keyed in (False, True):
        out[f"release[keyed={keyed}]"] = sql.release_sql(keyed)
        out[f"fail[keyed={keyed}]"] = sql.fail_sql(keyed)
    for progress in (False, True):
        for keyed in (False, True):
            out[f"heartbeat[progress={progress}, keyed={keyed}]"] = sql.heartbeat_sql(
                progress, keyed
            )
    out |= {
        "lock_item": sql.LOCK_ITEM,
        "order_exists": sql.ORDER_EXISTS,
        "latest_parts": sql.LATEST_PARTS,
        "finalize_read": sql.FINALIZE_READ,
        "create_order": control._CREATE,
        "create_order[provenance]": control._CREATE_WITH_PROVENANCE,
        "approve": control._APPROVE,
        "approve[provenance]": control._APPROVE_WITH_PROVENANCE,
        "lock_order": order_rows.LOCK_ORDER,
        "order_items": order_rows.ORDER_ITEMS,
        "read_order": order_rows.READ_ORDER,
        "find_order": control._FIND_ORDER,
        "start_apply": control._START_APPLY,
        "record_apply": control._RECORD_APPLY,
        "reject_order": order_admin._REJECT,
        "reject_order[provenance]": order_admin._REJECT_WITH_PROVENANCE,
        "unblock_order": order_admin._UNBLOCK,
        "retry_order": order_admin._RETRY,
        "fail_apply": order_admin._FAIL_APPLY,
        "lock_item_order": order_admin._LOCK_ITEM_ORDER,
        "other_items": order_admin._OTHER_ITEMS,
        "retry_item": order_admin._RETRY_ITEM,
        "dead_letter": order_admin._DEAD_LETTER,
        "touch_queued[order]": order_admin._TOUCH_ORDER,
        "touch_queued[untouched]": order_admin._TOUCH_UNTOUCHED,
        "claim_stale[applies]": order_admin._STUCK_APPLIES,
        "claim_stale[auto_approvals]": order_admin._STUCK_AUTO_APPROVALS,
        "refuse_order": control._REFUSE,
        "drop_order": control._DROP,
        "record_event": control._RECORD_EVENT,
        "prune_orders": order_admin._PRUNE_ORDERS,
        "prune_audit[events]": order_admin._PRUNE_AUDIT["events"],
        "prune_audit[provenance]": order_admin._PRUNE_AUDIT["provenance"],
        "mark_claim": claims.RAW_MARK,
        "advisory_lock": limits.ADVISORY_SQL,
        "limits_lock_timeout": limits.LOCK_TIMEOUT_SQL,
        "held_locked": admin.HELD_LOCKED,
        "held_locked[skip]": admin.HELD_LOCKED_SKIP,
        "held_refresh": admin.REFRESH_SQL,
        "held_reclaim": admin.RECLAIM_SQL,
        "held_release": admin.RELEASE_HELD_SQL,
        "held_extend": admin.EXTEND_SQL,
        "token_by_digest": requests.TOKEN,
        "touch_token": requests.TOUCH_TOKEN,
        "claim_key": requests.CLAIM_KEY,
        "existing_key": requests.EXISTING_KEY,
        "complete_key": requests.COMPLETE_KEY,
        "abandon_key": requests.ABANDON_KEY,
        "lease_row": requests.LEASE_ROW,
        "rate_take": take_sql(postgres=True),
    }
    return out
