"""The benchmarks are the repository's own: every bench module imports from a fresh clone,
and the floors they compare with are measured by code in ``bench/``, not a file outside."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
MODULES = sorted(p.stem for p in BENCH.glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("name", MODULES)
def test_every_bench_module_imports(name: str) -> None:
    importlib.import_module(f"bench.{name}")


def test_no_bench_module_reaches_outside_the_repository() -> None:
    for path in BENCH.glob("*.py"):
        text = path.read_text()
        assert "shared/bench" not in text and "baseline.py" not in text, path.name
        assert "REPO_ROOT.parent" not in text, path.name


def test_the_floors_are_measured_by_bench_floor() -> None:
    from bench import floor

    for name in ("redis_floor", "postgres_floor", "Bare"):
        assert callable(getattr(floor, name)), name
    for script in (floor.ACQUIRE, floor.EXTEND, floor.RELEASE):
        assert "redis.call" in script


def test_bench_help_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.__main__ import parse_args

    with pytest.raises(SystemExit) as done:
        parse_args(["--help"])
    assert done.value.code == 0 and "--n-floor" in capsys.readouterr().out
