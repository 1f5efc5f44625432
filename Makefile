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

.PHONY: install demo test bench
install: $(BIN)/mlwarden

demo: install
	$(BIN)/mlwarden audit

test: install
	$(BIN)/python -m pytest

bench: install
	bash benchmarks/run.sh
