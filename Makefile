# enos-import: one command per everyday task. `make install` first; every target installs if needed.
VENV    := .venv
BIN     := $(VENV)/bin
UV      := $(shell command -v uv 2>/dev/null || echo .bootstrap/bin/uv)
sources := $(wildcard worker tests bench migrations examples)

.PHONY: install demo test test-faults lint fmt typecheck simulator bench bench-e2e migrate all clean

all: lint typecheck test

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || [ -x .bootstrap/bin/uv ] || \
		(python3 -m venv .bootstrap && .bootstrap/bin/pip install --quiet "uv==0.13.9")
	UV_PYTHON_DOWNLOADS=never $(UV) sync --frozen --python python3.11
	@touch $@

demo: install
	$(BIN)/python -m worker.demo

test: install
	$(BIN)/pytest

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

bench: install
	$(BIN)/python -m bench.simulator
	$(BIN)/python -m bench.import_throughput
	$(BIN)/python -m bench.end_to_end

# The service end to end against the strong peer, the SDK loop and the embedded runner (~10 min).
bench-e2e: install
	$(BIN)/python -m bench.end_to_end

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
