"""The files under deploy/ parse, name only metrics the services emit, and say what they
mean (dashboard queries, systemd ordering)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
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
EMITTED = SPEC_METRICS | {
    "stale_orders",
    "auto_approval_refused_total",
    "maintenance_last_run_timestamp_seconds",
}


def referenced(text: str) -> set[str]:
    names = set(re.findall(r"work_manager_([a-z_]+?)(?:_bucket|_count|_sum)?\b", text))
    return {n for n in names if n}


def test_alert_rules_parse_and_cover_the_four_alerts() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    assert set(alerts) == {
        "WorkManagerQueueDepthHigh",
        "WorkManagerLeaseExpiryRateHigh",
        "WorkManagerApplyFailures",
        "WorkManagerMaintenanceStalled",
    }
    named = referenced(json.dumps(rules))
    assert {"queue_depth", "leases_expired_total", "orders_apply_failed_total"} <= named
    assert "maintenance_last_run_timestamp_seconds" in named
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


# --- Compose and Kubernetes (no container engine runs here: the files are validated) -----

COMPOSE_SERVICES = {
    "postgres",
    "redis",
    "api",
    "worker",
    "beat",
    "flower",
    "agent",
    "statsd-exporter",
    "prometheus",
    "grafana",
}
K8S_VERSION = "1.33.0"


def compose_schema() -> dict[str, object]:
    """The Compose specification's JSON schema as check-jsonschema vendors it (its
    ``vendor.compose-spec``, from github.com/compose-spec/compose-spec): no download."""
    from importlib import resources

    text = (
        resources.files("check_jsonschema.builtin_schemas.vendor")
        .joinpath("compose-spec.json")
        .read_text()
    )
    return dict(json.loads(text))


def compose_errors(document: object) -> list[str]:
    import jsonschema

    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [e.message for e in validator.iter_errors(document)]


def k8s_documents() -> list[tuple[str, dict[str, object]]]:
    out = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        out += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return out


def k8s_errors(document: dict[str, object]) -> str | None:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return str(exc)
    return None


def settings_names() -> set[str]:
    from workmanager.settings_parsing import SPECS as _SPECS

    return {name for spec in _SPECS for name in spec.names}


def test_compose_file_is_valid_against_the_compose_spec_schema() -> None:
    document = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert compose_errors(document) == []
    assert set(document["services"]) >= COMPOSE_SERVICES
    # The validator refuses what Compose would refuse (so the check above can fail).
    broken = json.loads(json.dumps(document))
    broken["services"]["api"]["healthcheck"]["interval"] = ["10s"]
    broken["services"]["api"]["restartt"] = "always"
    assert len(compose_errors(broken)) >= 2


def test_compose_services_have_health_checks_and_one_beat() -> None:
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    for name in COMPOSE_SERVICES - {"beat"}:  # beat serves nothing to probe
        assert "healthcheck" in services[name], name
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    assert services["beat"]["deploy"]["replicas"] == 1
    api_deps = services["api"]["depends_on"]
    assert api_deps["postgres"]["condition"] == "service_healthy"
    assert api_deps["migrate"]["condition"] == "service_completed_successfully"
    for relative in ("prometheus/prometheus.yml", "grafana/provisioning/datasources"):
        assert (DEPLOY / relative).exists(), relative


def test_kubernetes_manifests_are_valid_against_the_kubernetes_schemas() -> None:
    documents = k8s_documents()
    kinds = {(name, d["kind"]) for name, d in documents}
    assert len(documents) >= 10, kinds
    for name, document in documents:
        assert k8s_errors(document) is None, (name, document["kind"], k8s_errors(document))
    # Strict validation refuses a misspelt field and a wrongly typed one.
    deployment = next(d for _, d in documents if d["kind"] == "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["replica"] = 2
    assert k8s_errors(broken) is not None
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["replicas"] = "two"
    assert k8s_errors(broken) is not None


def deployment(name: str) -> dict[str, object]:
    for _, document in k8s_documents():
        if document["kind"] == "Deployment" and document["metadata"]["name"] == name:
            return document
    raise AssertionError(f"no Deployment {name}")


def test_kubernetes_probes_single_beat_and_agents_scaled_by_queue_depth() -> None:
    api = deployment("workmanager-api")["spec"]["template"]["spec"]["containers"][0]
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    beat = deployment("workmanager-beat")["spec"]
    assert beat["replicas"] == 1 and beat["strategy"]["type"] == "Recreate"
    # The consumers have no HTTP port: Celery's ping to their own node name is the probe.
    for name, node in (
        ("workmanager-worker", "celery@$HOSTNAME"),
        ("workmanager-agent-demo-research", "agent-$HOSTNAME-1@$HOSTNAME"),
    ):
        [container] = deployment(name)["spec"]["template"]["spec"]["containers"]
        probe = " ".join(container["livenessProbe"]["exec"]["command"])
        assert f"inspect ping -d {node}" in probe, (name, probe)
    [hpa] = [d for _, d in k8s_documents() if d["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "workmanager-agent-demo-research"
    metric = hpa["spec"]["metrics"][0]["external"]["metric"]
    assert metric["name"] == "work_manager_queue_depth"
    assert metric["selector"]["matchLabels"]["type"] == "demo.research"


def test_deploy_files_use_only_documented_settings() -> None:
    """Every WORK_MANAGER_* variable the files set is a setting and is in the docs."""
    docs = (DEPLOY.parent / "docs/configuration.md").read_text()
    known = settings_names()
    texts = [(DEPLOY / "compose.yaml").read_text()]
    texts += [p.read_text() for p in (DEPLOY / "kubernetes").glob("*.yaml")]
    used = set(re.findall(r"\b(WORK_MANAGER_[A-Z_]+)\b", "\n".join(texts)))
    assert len(used) >= 8
    for name in sorted(used):
        assert name in known, name
        assert f"`{name}`" in docs, name


# --- The shipped commands, as an operator copies them ------------------------------------

ROOT = DEPLOY.parent


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def unit(name: str) -> dict[str, list[str]]:
    """``Key=value`` lines of a systemd unit, every value of a repeated key kept."""
    out: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";")):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def container(name: str) -> dict[str, object]:
    [first, *_] = deployment(name)["spec"]["template"]["spec"]["containers"]
    return first


def shown_commands(program: str) -> list[str]:
    """Every line of README.md and docs/operations.md that runs ``program``."""
    text = (ROOT / "README.md").read_text() + (ROOT / "docs/operations.md").read_text()
    return [line for line in text.splitlines() if program in line]


def worker_commands() -> dict[str, str]:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    commands = {
        "Procfile": procfile()["worker"],
        "workmanager-worker.service": " ".join(unit("workmanager-worker.service")["ExecStart"]),
        "compose.yaml": " ".join(compose["worker"]["command"]),
        "workers.yaml": " ".join(container("workmanager-worker")["command"]),
    }
    for i, line in enumerate(shown_commands("celery -A tasks worker")):
        commands[f"docs line {i}: {line[:60]}"] = line  # prose writes `-Q`, quoted
    return commands


def test_a_worker_without_q_consumes_exactly_the_configured_control_plane_queues(
    monkeypatch,
) -> None:
    """The reason the shipped worker commands give no ``-Q``: celeryconfig.py declares the
    queues of WORK_MANAGER_CONTROL_QUEUE and _APPLY_QUEUE (no agent queue), so a plain
    worker follows those settings where a hard-coded ``-Q`` listened on the defaults."""
    import importlib.util

    from celery import Celery

    monkeypatch.setenv("WORK_MANAGER_CONTROL_QUEUE", "acme.control")
    monkeypatch.setenv("WORK_MANAGER_APPLY_QUEUE", "acme.apply")
    spec = importlib.util.spec_from_file_location("_celeryconfig_probe", ROOT / "celeryconfig.py")
    assert spec and spec.loader
    config = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(config)
    app = Celery("probe")
    app.config_from_object(config)
    assert set(app.amqp.queues) == {"acme.control", "acme.apply"}
    assert app.amqp.router.route({}, "workmanager.orders.apply")["queue"].name == "acme.apply"
    assert app.amqp.router.route({}, "workmanager.orders.create")["queue"].name == "acme.control"


def test_shipped_worker_commands_take_their_queues_from_the_settings() -> None:
    """A ``-Q workmanager,workmanager.apply`` in a shipped command listens on the default
    names whatever WORK_MANAGER_CONTROL_QUEUE / _APPLY_QUEUE say: orders pile up unconsumed."""
    commands = worker_commands()
    assert len(commands) >= 4
    for where, command in commands.items():
        assert "celery -A tasks worker" in command, where
        assert not re.search(r"(^|\s)(-Q|--queues)(\s|=|$)", command), (where, command)
    # The Procfile the docs show is the Procfile.
    docs = (ROOT / "docs/operations.md").read_text()
    assert (ROOT / "Procfile").read_text().strip() in docs


def test_flower_listens_on_loopback_where_it_runs_on_the_host() -> None:
    """Flower can revoke and rate-limit tasks: the docs say loopback or authentication."""
    assert "--address=127.0.0.1" in procfile()["flower"].split()
    assert "--address=127.0.0.1" in unit("workmanager-flower.service")["ExecStart"][0].split()
    for line in shown_commands("celery -A tasks flower"):
        if "`celery -A tasks flower`" in line:  # prose naming the program, no command
            continue
        assert "--address=127.0.0.1" in line, line
    # In Compose it listens inside its container, published on the host's loopback only.
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    assert services["flower"]["ports"] == ["127.0.0.1:5555:5555"]


def test_systemd_units_have_the_directories_they_write_made_for_them() -> None:
    """A path under /var/lib, /var/cache, /var/log or /run in a command exists only if the
    unit asks systemd to create it (owned by ``User=``); nothing else makes it."""
    kinds = {
        "/var/lib/": "StateDirectory",
        "/var/cache/": "CacheDirectory",
        "/var/log/": "LogsDirectory",
        "/run/": "RuntimeDirectory",
    }
    seen = 0
    for path in sorted((DEPLOY / "systemd").glob("*.service")):
        keys = unit(path.name)
        commands = " ".join(v for k, vs in keys.items() if k.startswith("Exec") for v in vs)
        for prefix, directive in kinds.items():
            for sub in re.findall(re.escape(prefix) + r"([\w.-]+)", commands):
                seen += 1
                made = " ".join(keys.get(directive, [])).split()
                assert sub in made, (path.name, prefix + sub, directive)
    assert seen >= 1  # the beat schedule
    beat = unit("workmanager-beat.service")
    assert "/var/lib/workmanager/celerybeat-schedule" in beat["ExecStart"][0]
    assert beat["StateDirectory"] == ["workmanager"]


MIGRATE = ["workmanager", "db", "upgrade"]


def test_kubernetes_pods_that_need_the_schema_migrate_it_before_they_start() -> None:
    """No Job to order by hand (and none to re-apply: a Job's template is immutable): each
    Deployment whose process refuses an older schema runs the upgrade as an init container,
    with the image and environment of its process."""
    for name in (
        "workmanager-api",
        "workmanager-worker",
        "workmanager-beat",
        "workmanager-agent-demo-research",
    ):
        pod = deployment(name)["spec"]["template"]["spec"]
        [init] = pod["initContainers"]
        [main] = pod["containers"]
        assert init["command"] == MIGRATE, name
        assert init["image"] == main["image"], name
        assert init["envFrom"] == main["envFrom"], name
    kinds = [d["kind"] for _, d in k8s_documents()]
    assert "Job" not in kinds


def test_deploy_files_and_docs_name_only_files_that_exist() -> None:
    """``kubectl apply -f migrate.yaml`` named a file that was never shipped."""
    texts = [p.read_text() for p in (DEPLOY / "kubernetes").glob("*.yaml")]
    texts += [(ROOT / "docs/operations.md").read_text(), (DEPLOY / "README.md").read_text()]
    for text in texts:
        for name in re.findall(r"kubectl apply -f (\S+)", text):
            assert (DEPLOY / "kubernetes" / Path(name).name).exists(), name
        for name in re.findall(r"`([\w-]+\.yaml)`", text):
            hits = list(DEPLOY.rglob(name))
            assert hits, name
    operations = (ROOT / "docs/operations.md").read_text()
    assert "init container" in operations
    assert "migration Job)" not in operations


def test_worker_units_stop_warm_by_signalling_the_main_process_only() -> None:
    """systemd's default KillMode (control-group) sends SIGTERM to every process of the
    unit: the prefork children running tasks died mid-task, a cold shutdown where the unit
    promised a warm one (Celery's docs ask for ``KillMode=mixed``; a Celery pass)."""
    for name in ("workmanager-worker.service", "workmanager-agent@.service"):
        assert unit(name)["KillMode"] == ["mixed"], name


def test_retention_runs_daily_one_at_a_time_without_asking() -> None:
    """A volume pass: nothing ran ``ops prune``, so orders, events and provenance grew
    for ever. The systemd timer and the Kubernetes CronJob run the same command, which
    must not wait on its question (``--yes``)."""
    prune = ["workmanager", "ops", "prune", "--older-than", "90d", "--yes", "--json"]
    service = unit("workmanager-prune.service")
    assert service["Type"] == ["oneshot"]
    assert service["ExecStart"][0].split()[1:] == prune[1:]
    assert service["ExecStart"][0].split()[0].endswith("/workmanager")
    timer = unit("workmanager-prune.timer")
    assert timer["OnCalendar"] and timer["Persistent"] == ["true"]
    [job] = [d for _, d in k8s_documents() if d["kind"] == "CronJob"]
    assert job["metadata"]["name"] == "workmanager-prune"
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    [main] = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert main["command"] == prune
    assert main["envFrom"] == container("workmanager-worker")["envFrom"]


def test_systemd_units_that_restart_keep_restarting() -> None:
    """``Restart=always`` alone restarts after 100 ms and gives up after 5 starts in 10 s:
    the web unit's ``db upgrade`` against a database a few seconds late, or a worker
    started before the schema was upgraded, stayed failed for good."""
    for path in sorted((DEPLOY / "systemd").glob("*.service")):
        keys = unit(path.name)
        if keys.get("Restart") != ["always"]:
            continue
        assert keys.get("RestartSec") == ["5"], path.name
        assert keys.get("StartLimitIntervalSec") == ["0"], path.name


@pytest.mark.skipif(
    shutil.which("promtool") is None and not os.environ.get("CI"),
    reason="promtool not installed (apt-get install prometheus; .ci/run installs it)",
)
def test_the_alert_rules_fire_when_their_tests_say() -> None:
    """deploy/prometheus/alerts_test.yml: statsd_exporter makes a counter at its first
    increment, at 1, so the apply-failure alert's ``increase()`` alone saw 0 for a first
    failure; the stalled-maintenance alert fires once the run's time is 5 minutes old
    (the exporter keeps a gauge's last value) or was never reported, and not before."""
    done = subprocess.run(
        ["promtool", "test", "rules", "alerts_test.yml"],
        cwd=DEPLOY / "prometheus",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
