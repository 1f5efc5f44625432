# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create the virtual environment and install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/mlwarden: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[all,test]'
	touch $(BIN)/mlwarden

# MLServer (a third-party OIP v2 server the interop tests attack) lives in its own environment, as its
# users run it; the tests start it from here.
MLSERVER := .venv-mlserver/bin/mlserver
$(MLSERVER):
	$(PY) -m venv .venv-mlserver
	.venv-mlserver/bin/pip install -q --upgrade pip
	.venv-mlserver/bin/pip install -q mlserver==1.7.1 mlserver-sklearn==1.7.1
	touch $(MLSERVER)

.PHONY: install demo test test-fast bench
install: $(BIN)/mlwarden

# Both environments are built side by side; the tests run on every core (pytest-xdist), a module's tests on
# one worker (its module-scoped fixtures are built once), and the slowest 30 are listed at the end.
PYTEST := $(BIN)/python -m pytest -n auto --dist loadfile

demo: install
	$(BIN)/mlwarden audit

test:
	$(MAKE) -j2 install $(MLSERVER)
	$(PYTEST) --durations=30

# The edit-run loop: everything but the end-to-end CLI runs and the tests that train for long (marked
# `slow`); about 3 minutes on 2 cores.
test-fast: install
	$(PYTEST) -m "not slow"

# `make bench` runs every benchmark, `make bench NAME=scan` (or NAME="scan federated") the named ones, each in
# benchmarks/.venv-bench with its pinned peers (benchmarks/run.sh builds it; the test environment is not needed).
NAME ?=
bench:
	PYTHON=$(PY) bash benchmarks/run.sh $(NAME)
