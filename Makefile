# The two commands of the README: `make demo` and `make test`, on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-test

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,spark,parquet]'
	touch $(STAMP)

## demo: fluvial serve with the example flows and simulated devices; live views until Ctrl-C
demo: $(STAMP)
	$(BIN)/fluvial demo

## test: the whole test suite (unit, property, integration, conformance), then the doctests
test: $(STAMP)
	$(BIN)/python -m pytest -q tests
	$(BIN)/python -m pytest -q --doctest-modules src/fluvial

## lint: ruff and mypy over the sources
lint: $(STAMP)
	$(BIN)/python -m pip install --quiet ruff mypy
	$(BIN)/python -m ruff check src tests bench
	$(BIN)/python -m mypy

## bench: every benchmark (needs the bench extra: PySpark and Java 17)
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	bash bench/run_all.sh

clean:
	rm -rf $(VENV) .fluvial .pytest_cache .hypothesis
