# The two commands a newcomer runs: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: demo test lint typecheck pytest pytest-mypyc pytest-pythons mypyc bench docs clean browser \
	pgbouncer demo-mypyc wheels-config

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,integrations]'
	touch $@

# `make demo` runs the pure-Python build (an editable install); `make demo-mypyc` (below)
# the compiled one. The demo says which it ran.
demo: $(VENV)/.installed
	$(BIN)/python examples/demo.py

lint: $(STAMP)
	$(BIN)/ruff check src tests examples bench docs/hooks
	$(BIN)/ruff format --check src tests examples bench docs/hooks

typecheck: $(STAMP)
	$(BIN)/mypy --strict src

# The pure build's run measures branch coverage (coverage starts before pytest, so the
# package's own pytest plugin, loaded at start-up, is measured too) and fails below the floor.
COVERAGE_FLOOR := 95

# Debian's chromium, for the tests that open pages in a real headless browser
browser:
	.ci/ensure-chromium

# Debian's pgbouncer, for the tests that run through PgBouncer in transaction pooling mode
# (`pytest -m pgbouncer`): the suite starts one on a free port of its own and stops it at
# the end (tests/pgbouncer.py), or uses PQLKIT_TEST_PGBOUNCER_DSN
pgbouncer:
	.ci/ensure-pgbouncer

pytest: $(STAMP) browser pgbouncer
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
MYPYC_SOURCES := pyproject.toml README.md $(wildcard src/pqlkit/*.py src/pqlkit/*/*.py) \
	$(wildcard src/pqlkit/*/*/*.py src/pqlkit/*/*/*/*.py src/pqlkit/integrations/static/*)

$(MYPYC_STAMP): $(MYPYC_SOURCES) | $(BIN)/python
	rm -rf $(MYPYC_DIR) build/mypyc-wheel
	stage=$$(mktemp -d) && cp -r pyproject.toml README.md src "$$stage"/ && \
	  HATCH_BUILD_HOOK_ENABLE_MYPYC=1 $(BIN)/python -m pip wheel --quiet --no-deps \
	    -w build/mypyc-wheel "$$stage" ; status=$$? ; rm -rf "$$stage" ; exit $$status
	$(BIN)/python -m pip install --quiet --no-deps --target $(MYPYC_DIR) build/mypyc-wheel/pqlkit-*.whl
	touch $@

mypyc: $(MYPYC_STAMP)

# the demo on the compiled build (built by `make mypyc`: needs a C compiler)
demo-mypyc: $(VENV)/.installed $(MYPYC_STAMP)
	PYTHONPATH=$(MYPYC_DIR) $(BIN)/python examples/demo.py

# The release's compiled wheels are built by cibuildwheel ([tool.cibuildwheel] in
# pyproject.toml) on each platform's CI runner; here, what it would build, as it reads it
wheels-config: $(STAMP)
	$(BIN)/cibuildwheel --print-build-identifiers --platform linux .
	$(BIN)/cibuildwheel --print-build-identifiers --platform macos .
	$(BIN)/cibuildwheel --print-build-identifiers --platform windows .

pytest-mypyc: $(STAMP) $(MYPYC_STAMP)
	PYTHONPATH=$(MYPYC_DIR) PQLKIT_EXPECT_BUILD=mypyc $(BIN)/pytest

# Every Python the classifiers in pyproject.toml promise. $(PYTHON) (the main interpreter, .venv)
# runs everything above: lint, types, the whole suite with coverage, the compiled build. Each
# other promised Python runs the not-slow suite on the pure build, in its own .venv-3.X that make
# creates when missing; .ci/find-python finds the interpreter (PATH, then pyenv's and uv's
# installations). One that is missing is skipped with a message, and is an error under CI=true.
# The oracle tests run their local example counts there (PQLKIT_TEST_ORACLE_QUICK): the main
# interpreter runs CI's larger counts, twice (pure and compiled).
PYTHON_VERSIONS := 3.10 3.11 3.12 3.13
MAIN_VERSION := $(shell py=$(BIN)/python; [ -x $$py ] || py=$(PYTHON); \
	$$py -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
OTHER_VERSIONS := $(filter-out $(MAIN_VERSION),$(PYTHON_VERSIONS))
.PHONY: $(addprefix pytest-py,$(PYTHON_VERSIONS))

pytest-pythons: $(addprefix pytest-py,$(OTHER_VERSIONS))

$(addprefix pytest-py,$(PYTHON_VERSIONS)): pytest-py%:
	@if ! .ci/find-python $* >/dev/null; then \
	  case "$$(printf %s "$${CI:-}" | tr A-Z a-z)" in 1|true|yes) \
	    echo "error: Python $* is promised (pyproject.toml classifiers) but not found;" \
	      "CI must test it (install it, e.g. pyenv install $*)" >&2; \
	    exit 1;; \
	  esac; \
	  echo "*** SKIPPED Python $*: not found (PATH, pyenv, uv); the suite did not run on it ***"; \
	  exit 0; \
	fi; \
	$(MAKE) --no-print-directory .venv-$*/.installed-dev && \
	echo "== the not-slow suite on Python $* (.venv-$*)" && \
	PQLKIT_TEST_ORACLE_QUICK=1 .venv-$*/bin/python -m pytest -m "not slow" -q

$(foreach v,$(PYTHON_VERSIONS),.venv-$(v)/bin/python): .venv-%/bin/python:
	@python=$$(.ci/find-python $*) || { echo "error: Python $* not found" >&2; exit 1; }; \
	  echo "$$python -m venv .venv-$*"; "$$python" -m venv .venv-$*
	.venv-$*/bin/python -m pip install --quiet --upgrade pip

$(foreach v,$(PYTHON_VERSIONS),.venv-$(v)/.installed-dev): .venv-%/.installed-dev: pyproject.toml | .venv-%/bin/python
	.venv-$*/bin/python -m pip install --quiet -e '.[dev,integrations]'
	touch $@

test: lint typecheck pytest pytest-mypyc pytest-pythons

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
	rm -rf $(VENV) $(VENV)-3.* site build .mypy_cache .ruff_cache .coverage
