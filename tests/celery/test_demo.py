"""``workmanager demo`` (SPEC §10) on the embedded default: no WORK_MANAGER_* variable set,
so SQLite and kombu's SQLAlchemy broker under ./var of a fresh directory, real Celery
worker and agent subprocesses, orders followed to ``completed``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_completes_its_orders_on_the_embedded_default(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORK_MANAGER_")}
    env["PYTHONPATH"] = str(ROOT)  # ``tasks`` and ``workers`` from this checkout
    env["COLUMNS"] = "200"  # rich: one line per table row
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "workmanager"),
            "demo",
            "--orders",
            "4",
            "--agents",
            "2",
            "--timeout",
            "150",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    # the database shown as ops check shows it: absolute, so the reader knows which file
    assert f"database sqlite:///{tmp_path.resolve()}/var/workmanager.db" in out, out[:400]
    assert "sqla+sqlite" in out
    assert (tmp_path / "var" / "workmanager.db").exists()  # the default, in the cwd
    rows = {
        cells[0].strip(): cells[1].strip()
        for line in out.splitlines()
        if (cells := [c for c in line.split("│") if c.strip()]) and len(cells) == 2
    }
    assert rows["orders completed"] == "4", rows
    assert int(rows["leases granted"]) >= 4, rows
    assert "logs: var/log/demo-agent.log, var/log/demo-control.log" in out
    assert "next steps:" in out and "  3. " in out


EXE = Path(sys.executable).parent / "workmanager"


def test_demo_json_summary_on_the_embedded_broker(tmp_path: Path) -> None:
    """Orders through the same real worker processes, summarised as JSON. (Its speed is
    the embedded broker's 50 ms poll, held by ``test_the_embedded_broker_polls_every_50_ms``
    below, not by a wall-clock bound that a loaded machine breaks.)"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORK_MANAGER_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        # the demo's own timeout first: if it runs out, it says how far it got
        [str(EXE), "demo", "--orders", "6", "--timeout", "200", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout)
    assert summary["orders_completed"] == 6, summary
    assert summary["logs"] == ["var/log/demo-agent.log", "var/log/demo-control.log"]
    assert len(summary["next_steps"]) == 3
    assert summary["wall_seconds"] > 0, summary


def test_the_embedded_broker_polls_every_50_ms(tmp_path: Path) -> None:
    """What makes the demo seconds, not the 45 s of kombu's 1 s polls: on the embedded
    default the workers' broker connection is our SQLAlchemy transport, polling empty
    queues every 50 ms (celeryconfig.py, tasks/embedded_transport.py)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORK_MANAGER_")}
    env["PYTHONPATH"] = str(ROOT)
    probe = (
        "import json, tasks\n"
        "with tasks.app.connection_for_write() as conn:\n"
        "    t = conn.transport\n"
        "    print(json.dumps([type(t).__module__, t.polling_interval]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert json.loads(done.stdout) == ["tasks.embedded_transport", 0.05]


def test_a_demo_stopped_by_a_signal_stops_its_workers(tmp_path: Path) -> None:
    """SIGTERM to the demo (a supervisor, ``kill``) left its control worker and agent
    running, orphaned and busy; Ctrl-C printed a KeyboardInterrupt traceback."""
    import signal
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith("WORK_MANAGER_")}
    env["PYTHONPATH"] = str(ROOT)
    command = [sys.executable, "-m", "workers.demo", "--orders", "400", "--agents", "1"]
    ways = [
        (signal.SIGTERM, 128 + signal.SIGTERM, ""),
        (signal.SIGINT, 130, "error [aborted]: interrupted (Ctrl-C)"),
    ]
    for stop, code, said in ways:
        demo = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        children: list[int] = []
        deadline = time.monotonic() + 60
        while len(children) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
            listed = Path(f"/proc/{demo.pid}/task/{demo.pid}/children").read_text().split()
            children = [int(pid) for pid in listed]
        assert len(children) == 2, "the demo never started its two workers"
        started = {pid: _started_at(pid) for pid in children}
        demo.send_signal(stop)
        out, err = demo.communicate(timeout=60)
        # the exit status, or death by the signal itself: a shell sees both as 128 + signal
        assert demo.returncode in (code, -stop), (out[-2000:], err[-2000:])
        assert "Traceback" not in err, err[-2000:]
        assert said in err
        for pid in children:  # reaped by the demo: gone (or its pid reused), not orphaned
            same = _started_at(pid) == started[pid]  # pid_max is 32,768 here: reused fast
            assert not same or "Z" in _state(pid), (pid, _state(pid))


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command's name; None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None


def test_a_demo_stopped_while_its_workers_start_stops_them_too(tmp_path: Path) -> None:
    """A loaded CI run: a SIGTERM that came between the two workers' starts left the
    first one running, orphaned (the list of workers was the starting function's until it
    returned). The stop is held until both have started, then acted on."""
    import signal
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith("WORK_MANAGER_")}
    env["PYTHONPATH"] = str(ROOT)
    command = [sys.executable, "-m", "workers.demo", "--orders", "400", "--agents", "1"]
    demo = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    children: list[int] = []
    deadline = time.monotonic() + 60
    while not children and time.monotonic() < deadline:  # the first worker, at once
        listed = Path(f"/proc/{demo.pid}/task/{demo.pid}/children").read_text().split()
        children = [int(pid) for pid in listed]
    assert children, "the demo never started a worker"
    demo.send_signal(signal.SIGTERM)
    out, err = demo.communicate(timeout=90)
    assert demo.returncode == 128 + signal.SIGTERM, (out[-2000:], err[-2000:])
    assert "Traceback" not in err, err[-2000:]
    started = {pid: _started_at(pid) for pid in children}
    for pid in children:
        alive = _started_at(pid) == started[pid] and _started_at(pid) is not None
        assert not alive or "Z" in _state(pid), (pid, _state(pid))
    leftovers = subprocess.run(
        ["pgrep", "-f", f"workers.agent.*{tmp_path.name}|demo-agent-1"],
        capture_output=True,
        text=True,
    )
    assert all(
        Path(f"/proc/{pid}/cwd").resolve() != tmp_path.resolve()
        for pid in leftovers.stdout.split()
        if Path(f"/proc/{pid}").exists()
    ), leftovers.stdout


def _state(pid: int) -> str:
    fields = _stat(pid)
    return "Z" if fields is None else fields[0]


def _started_at(pid: int) -> str | None:
    """When the process of ``pid`` started (clock ticks since boot): tells it from a later
    process given the same pid."""
    fields = _stat(pid)
    return None if fields is None else fields[19]
