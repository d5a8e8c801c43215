# oomtuner — developer entry points. `make demo` runs the main job, `make test` runs the tests.
# Both install what they need: the Python venv (.venv), and the lab's Go-built binaries, cached in
# $OOMTUNER_CACHE (default ~/.cache/oomtuner) so only the first build is slow.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
# Every dependency pinned with its hashes (`make lock` writes them from pyproject.toml): dev.lock for
# the venv (the test extra and what builds the package), runtime.lock and build.lock for the image.
LOCK   := requirements/dev.lock
COMPILE = $(VENV)/bin/uv pip compile --quiet --generate-hashes --universal --python-version 3.11 --no-header

.PHONY: all venv lock deps lab-build lab-up lab-down lab-status demo test test-unit test-e2e test-chart lint crds clean

all: test

# Only what the lock names, checked against its hashes; then the package itself, built with the
# locked setuptools (no build isolation: nothing unpinned is fetched).
$(STAMP): pyproject.toml $(LOCK)
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check --require-hashes --no-deps -r $(LOCK)
	$(PIP) install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

venv: $(STAMP)

# Re-resolve the locks after a change of pyproject.toml's dependencies (needs PyPI).
lock: venv
	$(COMPILE) pyproject.toml --extra dashboard -o requirements/runtime.lock
	$(COMPILE) requirements/build.in -o requirements/build.lock
	$(COMPILE) pyproject.toml requirements/build.in --extra test -o $(LOCK)
	@touch $(STAMP)

# Debian packages the lab and tests use (installed only when missing).
deps:
	@bash hack/install-deps.sh

lab-build: deps
	bash hack/lab/build.sh

lab-up: venv lab-build
	$(VENV)/bin/oomtuner lab up

lab-down: venv
	$(VENV)/bin/oomtuner lab down

lab-status: venv
	$(VENV)/bin/oomtuner lab status

demo: venv lab-build
	$(PY) hack/demo.py

crds: venv
	$(VENV)/bin/oomtuner crds --output crds --chart deploy/helm/oomtuner

test-unit: venv
	$(VENV)/bin/pytest tests/unit

test-e2e: venv lab-build
	$(VENV)/bin/pytest tests/integration tests/e2e tests/agent tests/dashboard tests/realnode

test-chart: venv lab-build
	$(VENV)/bin/pytest tests/chart

# The guards that keep the structure (ARCHITECTURE.md, "Guards"): ruff with a complexity bound,
# the import-linter contracts of .importlinter, and mypy (strict on api, domain and services).
lint: venv
	$(VENV)/bin/ruff check operator tests bench hack
	PYTHONPATH=operator $(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

# The whole suite: unit, integration (real API server) and e2e (real operator on the lab, or on
# kind when KUBECONFIG is set). One pytest run, so an empty selection can never pass silently.
test: venv lint lab-build
	$(VENV)/bin/pytest tests

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis
