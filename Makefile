# workmanager — the commands a newcomer needs: make demo, make test, make check.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# pytest-xdist workers for make test: the suite mostly waits (leases expiring, processes
# starting), so three share two cores well; tests/support/parallel.py says what runs where
TEST_WORKERS ?= 3

.PHONY: install demo test check lint typecheck bench soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)  ## the main job on the embedded default (SQLite, no servers)
	$(BIN)/workmanager demo

test: $(STAMP)  ## every test tier; PostgreSQL/Redis tests skip locally when absent, fail in CI
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadgroup tests

lint: $(STAMP)
	$(BIN)/ruff check workmanager tasks workers tests celeryconfig.py bench
	$(BIN)/ruff format --check workmanager tasks workers celeryconfig.py

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test  ## what CI runs, and more

bench: $(STAMP)  ## benchmarks (not tests): figures beside the bare-client floor
	$(BIN)/python -m bench
	$(BIN)/python -m bench.pipeline
	$(BIN)/python -m bench.http
	$(BIN)/python -m bench.replay
	$(BIN)/python -m bench.console
	$(BIN)/python -m bench.workers
	$(BIN)/python -m bench.longlease

soak: $(STAMP)  ## long stress runs, not part of make test
	$(BIN)/pytest -q -m slow tests

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
