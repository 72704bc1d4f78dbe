"""``workmanager demo`` (SPEC §10) on the embedded default: no WORK_MANAGER_* variable set,
so SQLite and kombu's SQLAlchemy broker under ./var of a fresh directory, real Celery
worker and agent subprocesses, orders followed to ``completed``."""

from __future__ import annotations

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
    assert "database sqlite:///./var/workmanager.db" in out and "sqla+sqlite" in out
    assert (tmp_path / "var" / "workmanager.db").exists()  # the default, in the cwd
    rows = {
        cells[0].strip(): cells[1].strip()
        for line in out.splitlines()
        if (cells := [c for c in line.split("│") if c.strip()]) and len(cells) == 2
    }
    assert rows["orders completed"] == "4", rows
    assert int(rows["leases granted"]) >= 4, rows
