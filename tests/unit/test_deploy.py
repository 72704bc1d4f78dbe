"""The files under deploy/ parse, name only metrics the services emit, and say what they
mean (dashboard queries, systemd ordering)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SPEC_METRICS = {
    "orders_created_total",
    "leases_acquired_total",
    "leases_released_total",
    "leases_expired_total",
    "items_submitted_total",
    "orders_approved_total",
    "orders_rejected_total",
    "orders_apply_failed_total",
    "items_failed_total",
    "leases_active",
    "queue_depth",
    "order_apply_duration_seconds",
    "order_time_to_approval_seconds",
}
EMITTED = SPEC_METRICS | {"stale_orders", "auto_approval_refused_total"}


def referenced(text: str) -> set[str]:
    names = set(re.findall(r"work_manager_([a-z_]+?)(?:_bucket|_count|_sum)?\b", text))
    return {n for n in names if n}


def test_alert_rules_parse_and_cover_the_three_alerts() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    assert set(alerts) == {
        "WorkManagerQueueDepthHigh",
        "WorkManagerLeaseExpiryRateHigh",
        "WorkManagerApplyFailures",
    }
    named = referenced(json.dumps(rules))
    assert {"queue_depth", "leases_expired_total", "orders_apply_failed_total"} <= named
    assert named <= EMITTED


def test_dashboard_and_mapping_name_only_emitted_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana/workmanager.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    named = referenced(" ".join(exprs))
    assert len(named) >= 8 and named <= EMITTED
    mapping = yaml.safe_load((DEPLOY / "statsd-exporter/mapping.yml").read_text())
    for rule in mapping["mappings"]:
        assert re.compile(rule["match"])
    names = [f"work_manager.{m}" for m in SPEC_METRICS]
    for name in names:
        assert any(re.fullmatch(r["match"], name) for r in mapping["mappings"]), name


def test_every_spec_metric_is_emitted_somewhere_in_the_services() -> None:
    source = "\n".join(p.read_text() for p in (DEPLOY.parent / "workmanager").rglob("*.py"))
    for name in SPEC_METRICS:
        assert f'"{name}"' in source, f"{name} is never reported"


def test_no_dashboard_query_joins_two_series_with_or() -> None:
    """``rate(a) or rate(b)`` with the same labels keeps only ``a``: the expired leases
    vanished from "acquired vs expired". Each series is its own query."""
    dashboard = json.loads((DEPLOY / "grafana/workmanager.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            assert not re.search(r"\)\s+or\s+", target["expr"]), (panel["title"], target)
    leases = next(p for p in dashboard["panels"] if "expired" in p["title"].lower())
    series = [referenced(t["expr"]) for t in leases["targets"]]
    assert {"leases_acquired_total"} in series and {"leases_expired_total"} in series
    assert len({t["refId"] for t in leases["targets"]}) == len(leases["targets"])


def test_systemd_units_that_wait_for_the_network_also_want_it() -> None:
    """``After=network-online.target`` orders nothing unless the target is pulled in."""
    units = sorted((DEPLOY / "systemd").glob("*.service"))
    assert len(units) >= 5
    for unit in units:
        lines = unit.read_text().splitlines()
        after = " ".join(line for line in lines if line.startswith("After="))
        wants = " ".join(line for line in lines if line.startswith("Wants="))
        if "network-online.target" in after:
            assert "network-online.target" in wants, unit.name
