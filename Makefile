# enos-import: one command per everyday task. `make install` first; every target installs if needed.
# The newest supported Python here, or the one named: make install PYTHON=python3.12; a second
# environment beside the first: make install VENV=.venv-311 PYTHON=python3.11.
PYTHON  ?= python3.13 python3.12 python3.11
VENV    ?= .venv
BIN     := $(VENV)/bin
UV      := $(shell command -v uv 2>/dev/null || echo .bootstrap/bin/uv)
sources := $(wildcard worker tests bench migrations examples)

.PHONY: install demo test test-unit test-fuzz test-faults lint fmt typecheck simulator bench bench-e2e bench-phases dashboard migrate all clean

all: lint typecheck test

# uv sync is quick when nothing changed, and makes the environment again when the Python did.
# Then everything is compiled to bytecode once: uv does not compile at install, and where
# PYTHONDONTWRITEBYTECODE is set no process writes a cache, so each CLI run, worker and test
# process would compile every module it imports again (`enos-import --help`: 3.5 s, 1.1 s
# compiled). compileall skips what is up to date; a file that does not compile (a package's
# Python 2 leftovers) only stays uncompiled.
install:
	@command -v uv >/dev/null 2>&1 || [ -x .bootstrap/bin/uv ] || \
		(python3 -m venv .bootstrap && .bootstrap/bin/pip install --quiet "uv==0.13.9")
	@python=$$(scripts/find-python $(PYTHON)) && \
		UV_PROJECT_ENVIRONMENT=$(VENV) UV_PYTHON_DOWNLOADS=never $(UV) sync --frozen --quiet --python "$$python"
	@$(BIN)/python -m compileall -q -j 0 $(VENV)/lib $(sources) >/dev/null || true

demo: install
	$(BIN)/python -m worker.demo

test: install
	$(BIN)/pytest

# Everything but the end-to-end and fault tests (which start real processes).
test-unit: install
	$(BIN)/pytest --ignore=tests/e2e --ignore=tests/faults

# The property tests with fresh examples, many more of them (hypothesis profile "fuzz").
test-fuzz: install
	$(BIN)/pytest -q tests/readers/test_bad_input_properties.py --hypothesis-profile=fuzz

test-faults: install
	$(BIN)/python -m tests.faults.scenario --devices 100000 --write-docs
	$(BIN)/python -m tests.faults.scenario --devices 30000 --capped --write-docs

lint: install
	$(BIN)/ruff check $(sources)
	$(BIN)/ruff format --check $(sources)

fmt: install
	$(BIN)/ruff format $(sources)
	$(BIN)/ruff check --fix $(sources)

typecheck: install
	$(BIN)/mypy

simulator: install
	$(BIN)/enos-import simulator --seed-demo

# Every bench runs and writes its section, whatever an earlier one found; the exit status says
# whether every target passed.
bench: install
	@status=0; \
	for bench in simulator import_throughput fairness end_to_end; do \
		echo "$(BIN)/python -m bench.$$bench"; \
		$(BIN)/python -m bench.$$bench || status=1; \
	done; \
	exit $$status

# The service end to end against the strong peer, the SDK loop and the embedded runner (~10 min).
bench-e2e: install
	$(BIN)/python -m bench.end_to_end

# CPU per device of the intake and of sending, in one process (no Celery, no concurrency).
bench-phases: install
	$(BIN)/python -m bench.phase_cost

migrate: install
	$(BIN)/enos-import db upgrade

dashboard: install
	$(BIN)/python -m bench.dashboard

clean:
	rm -rf .venv .venv-* .pytest_cache .mypy_cache .ruff_cache
