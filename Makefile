# The two commands a newcomer runs: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: demo test lint typecheck pytest pytest-mypyc mypyc bench docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,integrations]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/python examples/demo.py

lint: $(STAMP)
	$(BIN)/ruff check src tests examples bench
	$(BIN)/ruff format --check src tests examples bench

typecheck: $(STAMP)
	$(BIN)/mypy --strict src

# The pure build's run measures branch coverage (coverage starts before pytest, so the
# package's own pytest plugin, loaded at start-up, is measured too) and fails below the floor.
COVERAGE_FLOOR := 95

pytest: $(STAMP)
	$(BIN)/coverage erase
	$(BIN)/coverage run -m pytest
	$(BIN)/coverage report --fail-under=$(COVERAGE_FLOOR)

# The compiled build (docs/performance.md, "Builds"): a wheel whose hot path mypyc
# compiles, unpacked into build/mypyc; `pytest-mypyc` and `bench` put it first on
# sys.path. The wheel is built from a copy of the tree: the build hook compiles in
# place, and compiled modules left in src/ would shadow the sources an editable
# install runs (tests/conftest.py refuses a run whose build is not the one expected).
MYPYC_DIR := $(CURDIR)/build/mypyc
MYPYC_STAMP := $(MYPYC_DIR)/.built
MYPYC_SOURCES := pyproject.toml README.md $(wildcard src/pqlkit/*.py src/pqlkit/*/*.py)

$(MYPYC_STAMP): $(MYPYC_SOURCES) | $(BIN)/python
	rm -rf $(MYPYC_DIR) build/mypyc-wheel
	stage=$$(mktemp -d) && cp -r pyproject.toml README.md src "$$stage"/ && \
	  HATCH_BUILD_HOOK_ENABLE_MYPYC=1 $(BIN)/python -m pip wheel --quiet --no-deps \
	    -w build/mypyc-wheel "$$stage" ; status=$$? ; rm -rf "$$stage" ; exit $$status
	$(BIN)/python -m pip install --quiet --no-deps --target $(MYPYC_DIR) build/mypyc-wheel/pqlkit-*.whl
	touch $@

mypyc: $(MYPYC_STAMP)

pytest-mypyc: $(STAMP) $(MYPYC_STAMP)
	PYTHONPATH=$(MYPYC_DIR) PQLKIT_EXPECT_BUILD=mypyc $(BIN)/pytest

test: lint typecheck pytest pytest-mypyc

# The benchmark suite (issue 7): peers and profilers come from the `bench` extra.
# `make bench BENCH_ARGS=--quick` for the small sizes; the full run takes long.
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

bench: $(BENCH_STAMP) $(MYPYC_STAMP)
	PYTHONPATH=$(MYPYC_DIR) $(BIN)/python bench/run.py $(BENCH_ARGS)

docs: $(VENV)/.installed-docs
	$(BIN)/mkdocs build --strict

$(VENV)/.installed-docs: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[docs]'
	touch $@

clean:
	rm -rf $(VENV) site build .mypy_cache .ruff_cache .coverage
