# The two commands of the README: `make demo` and `make test`, on a fresh machine.
# Every install takes the exact versions of requirements.lock (hash-checked); `make lock`
# refreshes the lock from pyproject.toml.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-lock
PIP    := $(BIN)/python -m pip --quiet
# pip itself, pinned like everything else.
PIP_VERSION := 26.3
# uv resolves the lock (it is in the dev extra, so the lock pins it too).
UV_VERSION  := 0.13.9
UPGRADE ?=

.PHONY: install demo test lint lock bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install pip==$(PIP_VERSION)

$(STAMP): requirements.lock pyproject.toml | $(BIN)/python
	$(PIP) install --require-hashes -r requirements.lock
	$(PIP) install --no-deps --no-build-isolation -e .
	touch $(STAMP)

## install: .venv with fluvial and exactly the locked versions of every extra
install: $(STAMP)

## demo: fluvial serve with the example flows and simulated devices; live views until Ctrl-C
demo: $(STAMP)
	$(BIN)/fluvial demo

# Test processes in parallel (pytest-xdist): 2 on this 2-core machine, where many tests wait on
# servers and subprocesses; `make test JOBS=0` runs them in one process.
JOBS ?= 2

# The integration tests of the commands and the server run a second time with the backends
# spelled out (--log/--store through the environment, as a deployment would set them), where
# they must behave as with the defaults; not the slow fault tests, nor those that name their
# backends themselves (both ran in the first pass), to keep the suite under 20 minutes.
SPELLED := FLUVIAL_LOG='file://{data_dir}/log' FLUVIAL_STORE='sqlite://{data_dir}/views.db'
SPELLED_TESTS := tests/integration/test_cli.py tests/integration/test_serve_e2e.py \
                 tests/integration/test_serve_cli.py tests/integration/test_lambda_merge.py \
                 tests/integration/test_serve_workers.py tests/integration/test_backend_urls.py

# The Spark tests run in one process of their own, beside the rest: Spark gives a new Python
# worker a fixed 10 s to connect back, so the rest runs at a lower CPU priority (nice), and a
# busy machine slows it rather than the Spark tests.  That process also takes the long tests
# marked `serial` (clusters and kills of their own), one after another, so that both halves end
# about together.  Its output goes to SPARK_LOG (follow it with `tail -f`), shown at the end.
SPARK_LOG := .pytest-spark.log
NICE := nice -n 10

## test: the whole test suite (unit, property, integration, conformance): the Spark tests (and the long
## `serial` ones) in one process, beside the others in JOBS processes (at a lower CPU priority); then the command and server tests again
## with --log/--store spelled out, and the doctests; the exit status is the first failure's
test: $(STAMP)
	@export FLUVIAL_TEST_RUN="make-$$$$-$$(date +%s)"; \
	echo "The Spark and serial tests run in one process beside the others; their output: $(SPARK_LOG)"; \
	$(BIN)/python -m pytest -q -p no:xdist --durations=15 -m "spark or serial" tests > $(SPARK_LOG) 2>&1 & spark=$$!; \
	trap 'kill $$spark 2>/dev/null; exit 130' INT TERM; \
	$(NICE) $(BIN)/python -m pytest -q -n $(JOBS) --dist worksteal --durations=15 -m "not spark and not serial" tests; rest=$$?; \
	$(NICE) env $(SPELLED) $(BIN)/python -m pytest -q -n $(JOBS) --dist worksteal \
	    -m "not spark and not explicit_backends and not slow" $(SPELLED_TESTS); spelled=$$?; \
	$(BIN)/python -m pytest -q -p no:xdist --doctest-modules src/fluvial; doctests=$$?; \
	wait $$spark; sparked=$$?; \
	echo "==================== the Spark and serial tests ($(SPARK_LOG)) ===================="; cat $(SPARK_LOG); \
	echo "exit status: the rest $$rest, spelled out $$spelled, Spark and serial $$sparked, doctests $$doctests"; \
	for status in $$rest $$spelled $$sparked $$doctests; do [ $$status = 0 ] || exit $$status; done

## lint: ruff and mypy over the sources (--strict for the pure packages: the overrides of [tool.mypy])
lint: $(STAMP)
	$(BIN)/python -m ruff check src tests bench
	$(BIN)/python -m mypy

## lock: re-resolve requirements.lock from pyproject.toml, keeping current pins where they
## still fit; `make lock UPGRADE=1` takes the newest versions pyproject.toml allows
lock: | $(BIN)/python
	$(PIP) install uv==$(UV_VERSION)
	$(BIN)/uv pip compile pyproject.toml requirements-build.in --all-extras --universal \
	    --python-version 3.11 --generate-hashes --no-emit-package fluvial --quiet \
	    $(if $(UPGRADE),--upgrade) -o requirements.lock

## bench: every benchmark (needs PySpark and Java 17, both in the lock)
bench: $(STAMP)
	bash bench/run_all.sh

clean:
	rm -rf $(VENV) .fluvial .pytest_cache .hypothesis
