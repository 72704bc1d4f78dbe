"""``workmanager orders create`` from the shell against real workers (issue 14): checked
like ``enqueue_order``, and ``--wait`` follows the order to its end (exit 0 only when it
completed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

BIN = Path(sys.executable).parent


def workmanager(stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "workmanager"), *args],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_create_and_wait_until_completed(make_stack) -> None:
    stack = make_stack()
    stack.worker()
    stack.agent("e2e.echo", "tests.support.pipeline:echo_handler", concurrency=1)
    done = workmanager(
        stack,
        *("orders", "create", "--type", "e2e.echo", "--payload", '{"n": 5}'),
        *("--priority", "3", "--meta", '{"by": "shell"}', "--tenant", "acme-cli"),
        *("--wait", "--timeout", "90", "--json"),
    )
    assert done.returncode == 0, done.stderr
    order = json.loads(done.stdout)
    assert (order["state"], order["priority"], order["meta"]) == ("completed", 3, {"by": "shell"})
    # --tenant travels through enqueue_order and the create task; the item inherits it
    assert order["tenant_id"] == "acme-cli" and order["items"][0]["tenant_id"] == "acme-cli"
    assert order["items"][0]["result"]["echo"] == {"n": 5}


def test_mistakes_are_refused_before_anything_is_sent(make_stack) -> None:
    stack = make_stack()
    unknown = workmanager(stack, "orders", "create", "--type", "e2e.nope", "--payload", "{}")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("error [unknown_order_type]"), unknown.stderr
    assert "known types" in unknown.stderr and "Traceback" not in unknown.stderr
    invalid = workmanager(
        stack, "orders", "create", "--type", "e2e.strict", "--payload", '{"n": "x"}', "--json"
    )
    assert invalid.returncode == 1
    error = json.loads(invalid.stdout)["error"]
    assert error["code"] == "validation_failed"
    assert error["details"][0]["path"] == "payload.n"
    not_json = workmanager(stack, "orders", "create", "--type", "e2e.echo", "--payload", "[1")
    assert not_json.returncode == 2
    assert "--payload" in not_json.stderr


def test_wait_exits_non_zero_when_the_order_fails(make_stack) -> None:
    stack = make_stack()
    stack.worker()  # no agent: the test takes the item and fails it
    proc = subprocess.Popen(
        [
            *(str(BIN / "workmanager"), "orders", "create", "--type", "e2e.strict"),
            *("--payload", '{"n": 1}', "--dedupe-key", "wait-fail", "--wait", "--timeout", "90"),
        ],
        env=stack.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lease = stack.wait_for(
        lambda: stack.wm.agent.checkout("tester", type="e2e.strict"), 60, "the order's item"
    )
    stack.wm.agent.fail(lease, {"code": "boom", "message": "it broke"}, retryable=False)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert out.strip() == f"{lease.order_id} failed: [boom] it broke", (out, err)
