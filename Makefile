# The README's two commands: `make demo` and `make test`. Both create .venv from python3.11,
# install the fully pinned lock with uv (pip's resolver backtracks for minutes on this graph),
# install glcic_tf in editable mode, then run.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.glcic-installed
PYTEST_ARGS ?=

.PHONY: venv demo test bench lock lint clean

venv: $(STAMP)

$(STAMP): requirements.lock setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(BIN)/uv || $(BIN)/python -m pip install -q --disable-pip-version-check "$$(grep '^uv==' requirements.lock)"
	$(BIN)/uv pip sync -q --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python pipelines/train.py

# One pytest-xdist worker per core, at most 4: much of the suite is single-threaded graph
# tracing, so two workers on 2 cores take ~0.7 of the serial time (docs/architecture.md).
# `make test PYTEST_ARGS="-n 0"` runs it in one process.
test: $(STAMP)
	$(BIN)/python -m pytest -n auto --maxprocesses 4 --dist worksteal $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python pipelines/benchmark.py

# Regenerate requirements.lock from requirements.in (needs uv; `make venv` installs one).
lock:
	$(BIN)/uv pip compile --python-version 3.11 requirements.in -o requirements.lock

lint: $(STAMP)
	$(BIN)/python -m flake8 glcic_tf pipelines serving tests

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
