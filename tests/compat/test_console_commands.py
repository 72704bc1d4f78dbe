"""More of upstream's console scenarios, replayed as an operator runs them: real
``workmanager ...`` subprocesses on the PostgreSQL database of a real ``workmanager serve``
(tests/compat/conftest.py's), the state made by an upstream agent over HTTP and checked
back through the API (tests/compat/test_console.py has the others).

Which upstream scenario (gregpriday/laravel-work-manager, ``tests/``) each test replays:

- ``test_dev_seed_and_reset``: Feature/Console/DevCommandsTest (all four).
- ``test_ops_check``: Feature/Console/HealthCommandTest (all three).
- ``test_lease_release_and_extend``: Feature/Console/LeaseCommandsTest "lease:release can
  release leased items", "requires selector", "dry-run shows what would happen",
  "lease:extend can extend lease TTL" (its reclaim scenario is test_console.py's).
- ``test_orders_and_items_list``: Feature/Console/InspectionCommandsTest "orders:list shows
  orders", "can filter by state", "can output json", "items:list shows items", "can filter
  by order" (its ops:tail scenarios are test_console.py's).
- ``test_orders_review``: upstream's ``orders:review`` command (src/Console/Orders/
  ReviewOrderCommand.php: approve; reject with a required reason, optionally for rework).
- ``test_make_order_type_and_allocator``: Feature/Console/GeneratorCommandsTest.
- ``test_mcp_refuses_an_unknown_transport``: Console/McpCommandTest.

Where this project differs by design (docs/migrating.md, console commands), the test
asserts this project's behaviour and says so: a command line the parser refuses exits 2
(``usage_error``; upstream's artisan exits 1).
"""

from __future__ import annotations

import json
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import BIN, PREFIX, base_env, idem

pytestmark = pytest.mark.postgres


def run(
    db_url: str, *args: str, code: int = 0, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``workmanager --dispatcher none ARGS`` on ``db_url``, as an operator."""
    done = subprocess.run(
        [str(BIN / "workmanager"), "--dispatcher", "none", *args],
        env=base_env(db_url),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == code, (args, done.returncode, done.stdout, done.stderr)
    return done


def run_json(db_url: str, *args: str, cwd: Path | None = None) -> Any:
    return json.loads(run(db_url, *args, "--json", cwd=cwd).stdout)


def usage_error(done: subprocess.CompletedProcess[str], *words: str) -> bool:
    """Exit 2 with one ``error [usage_error]`` line naming ``words`` (upstream: exit 1)."""
    line = done.stderr.strip().splitlines()[0]
    return line.startswith("error [usage_error]") and all(w in line for w in words)


def propose(upstream: Any, type: str = "test.simple") -> str:
    r = upstream.client("agent-a", "proposer").post(
        f"{PREFIX}/propose", json={"type": type, "payload": {"name": "test"}}
    )
    assert r.status_code == 201, r.text
    return str(r.json()["order"]["id"])


def lease(upstream: Any, order_id: str, agent: str) -> dict[str, Any]:
    r = upstream.client("agent-a", agent).post(f"{PREFIX}/orders/{order_id}/checkout")
    assert r.status_code == 200, r.text
    item: dict[str, Any] = r.json()["item"]
    return item


def order(upstream: Any, order_id: str) -> dict[str, Any]:
    found: dict[str, Any] = upstream.client("admin").get(f"{PREFIX}/orders/{order_id}").json()
    return dict(found["order"])


def test_dev_seed_and_reset(tmp_path: Path) -> None:
    """On a database of its own (a SQLite file): ``dev reset`` deletes the API tokens too,
    and the other tests' server keeps its tokens in the shared one. Differences: every
    proposal is planned here, so ``dev seed`` has no ``--auto-plan``; ``dev reset`` is
    refused without ``--force`` (upstream asks for a confirmation)."""
    url = f"sqlite:///{tmp_path / 'dev.db'}"
    run(url, "db", "upgrade", cwd=tmp_path)
    assert usage_error(run(url, "dev", "seed", code=2, cwd=tmp_path), "--type")  # requires type
    created = run_json(url, "dev", "seed", "--type", "test.simple", "--count", "3", cwd=tmp_path)
    assert len(created["created"]) == 3
    listed = run_json(url, "orders", "list", "--type", "test.simple", cwd=tmp_path)
    assert listed["meta"]["total"] == 3
    items = run_json(url, "items", "list", cwd=tmp_path)
    assert sorted(i["order_id"] for i in items) == sorted(created["created"])  # planned
    assert usage_error(run(url, "dev", "reset", code=2, cwd=tmp_path), "--force")
    assert run_json(url, "orders", "list", cwd=tmp_path)["meta"]["total"] == 3
    run(url, "dev", "reset", "--force", cwd=tmp_path)
    assert run_json(url, "orders", "list", cwd=tmp_path)["meta"]["total"] == 0


def test_ops_check(upstream: Any, api_db_url: str, tmp_path: Path) -> None:
    """'ops:check command shows health status', 'can output json', 'shows database
    status'."""
    propose(upstream)
    text = run(api_db_url, "ops", "check", cwd=tmp_path).stdout
    assert "database" in text and "ok" in text
    report = run_json(api_db_url, "ops", "check", cwd=tmp_path)
    assert report["ok"] is True and report["orders"]["queued"] >= 1, report


def test_lease_release_and_extend(upstream: Any, api_db_url: str) -> None:
    order_id = propose(upstream)
    item = lease(upstream, order_id, "test-agent")
    # 'lease:release requires selector' (exit 2 here: a usage error)
    assert usage_error(run(api_db_url, "leases", "release", code=2))
    # 'lease:release dry-run shows what would happen': nothing changes.
    report = run_json(api_db_url, "leases", "release", "--all", "--dry-run")
    assert report["dry_run"] is True and item["id"] in [c["item_id"] for c in report["leases"]]
    (held,) = order(upstream, order_id)["items"]
    assert held["state"] == "leased" and held["leased_by_agent_id"] == "test-agent"
    # 'lease:extend can extend lease TTL' (upstream's default, 900 s, without --seconds)
    run(api_db_url, "leases", "extend", "--agent", "test-agent")
    (extended,) = order(upstream, order_id)["items"]
    before = datetime.fromisoformat(item["lease_expires_at"])
    after = datetime.fromisoformat(extended["lease_expires_at"])
    assert 890 <= (after - before).total_seconds() <= 910
    run(api_db_url, "leases", "extend", "--agent", "test-agent", "--ttl", "60")  # its spelling
    # 'lease:release can release leased items'
    run(api_db_url, "leases", "release", "--agent", "test-agent")
    (released,) = order(upstream, order_id)["items"]
    assert released["state"] == "queued" and released["leased_by_agent_id"] is None


def test_orders_and_items_list(upstream: Any, api_db_url: str) -> None:
    order_id = propose(upstream)
    other = propose(upstream, "test.multi")
    lease(upstream, other, "list-agent")
    assert order_id in run(api_db_url, "orders", "list").stdout
    queued = run_json(api_db_url, "orders", "list", "--state", "queued")["data"]
    assert order_id in [o["id"] for o in queued] and {o["state"] for o in queued} == {"queued"}
    everything = run_json(api_db_url, "orders", "list")
    assert {order_id, other} <= {o["id"] for o in everything["data"]}
    assert str(order_id) in run(api_db_url, "items", "list").stdout
    items = run_json(api_db_url, "items", "list", "--order", other)
    assert len(items) == 2 and {i["order_id"] for i in items} == {other}


def submitted(upstream: Any) -> str:
    order_id = propose(upstream)
    item = lease(upstream, order_id, "review-agent")
    r = upstream.client("agent-a", "review-agent").post(
        f"{PREFIX}/items/{item['id']}/submit", json={"result": {"answer": 1}}, headers=idem()
    )
    assert r.status_code == 202, r.text
    return order_id


def test_orders_review(upstream: Any, api_db_url: str) -> None:
    """Approve: the order is approved and applied afterwards on a worker (upstream applied
    it in the command: docs/migrating.md, ``approve``); reject needs a reason; with
    ``--rework`` (upstream: ``--allow-rework``) it goes back to the queue."""
    approve, reject = submitted(upstream), submitted(upstream)
    done = run_json(api_db_url, "orders", "review", approve, "--approve")
    assert done["id"] == approve and done["state"] == "approved", done
    assert usage_error(run(api_db_url, "orders", "review", reject, "--reject", code=2), "--reason")
    done = run_json(
        api_db_url, "orders", "review", reject, "--reject", "--reason", "redo", "--rework"
    )
    assert done["state"] == "queued", done
    (error,) = order(upstream, reject)["last_error"]["errors"]
    assert error == {"code": "rejected_by_reviewer", "message": "redo"}


def test_make_order_type_and_allocator(tmp_path: Path, api_db_url: str) -> None:
    """'make:order-type generates order type class', '... with partials flag generates
    partial support', '... with tests flag generates test file', 'make:allocator generates
    allocator class'. Differences (docs/migrating.md): NAME is the type here (upstream: a
    class name and ``--type``), and the module is written where ``-o`` says; upstream's
    make:workspace (a Laravel app scaffold) has no counterpart."""
    path = tmp_path / "test_order.py"
    run(api_db_url, "make", "order-type", "test.order", "-o", str(path))
    source = path.read_text()
    assert "class TestOrderOrder(OrderType)" in source and 'type = "test.order"' in source
    parts = tmp_path / "partial_test.py"
    run(api_db_url, "make", "order-type", "partial.test", "--parts", "-o", str(parts))
    for hook in ("part_schema", "validate_part", "required_parts", "assemble"):
        assert f"def {hook}(" in parts.read_text(), hook
    assert "validate_assembled" in parts.read_text()
    with_tests = tmp_path / "with_tests.py"
    run(api_db_url, "make", "order-type", "with.tests", "--with-tests", "-o", str(with_tests))
    assert with_tests.is_file() and (tmp_path / "test_with_tests.py").is_file()
    allocator = tmp_path / "test_allocator.py"
    run(api_db_url, "make", "allocator", "Test", "--type", "test.type", "-o", str(allocator))
    source = allocator.read_text()
    assert "class TestAllocator(AllocatorStrategy)" in source and "test.type" in source
    assert usage_error(run(api_db_url, "make", "workspace", code=2), "workspace")


def test_mcp_refuses_an_unknown_transport(api_db_url: str) -> None:
    """'mcp command rejects invalid transport' (websocket, grpc) and '... with mixed case'
    (HTTP): exit 2 naming the transports there are (upstream: exit 1, 'Use stdio or
    http'). Upstream's start-up banner is not replayed: over stdio, stdout is the
    protocol's (its own warning says handlers must not write there)."""
    for transport in ("websocket", "HTTP", "grpc"):
        done = run(api_db_url, "mcp", "--transport", transport, code=2)
        assert usage_error(done, repr(transport), "stdio", "http", "sse"), done.stderr
