# The two commands of the README: `make serve` and `make test`.
# Everything runs from the project's virtual environment (.venv, made by scripts/venv.sh from
# PYTHON, the python3 first on PATH unless given: `make serve PYTHON=/usr/bin/python3`).
PYTHON ?= python3
# Resolved now, before the venv's bin joins PATH below.
override PYTHON := $(shell command -v $(PYTHON) 2>/dev/null || echo $(PYTHON))
VENV ?= .venv
PORT ?= 5000
# Empty: trustyard's default data dir ($XDG_DATA_HOME/trustyard, else ~/.local/share/trustyard),
# the same store `trustyard gc` and `trustyard admin` open without flags.
DATA_DIR ?=
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-x -k manifest"`.
PYTEST_ARGS ?=
# Parallel pytest workers for the main pass (pytest-xdist); 0 runs in one process.
TEST_WORKERS ?= 2

export PYTHON VENV
# The venv's python, trustyard, ruff, mypy ... come first for every recipe and every test.
export PATH := $(abspath $(VENV))/bin:$(PATH)
export VIRTUAL_ENV := $(abspath $(VENV))

FAST = not integration and not needs_postgres and not needs_s3 and not needs_redis and not needs_root and not slow
CLIENT_SUITES = tests/integration/test_client_skopeo.py tests/integration/test_client_podman.py \
	tests/integration/test_client_oras.py tests/integration/test_client_docker.py \
	tests/integration/test_client_umoci.py

.PHONY: serve venv venv-test test test-fast install-test lint check bench bench-full

venv:
	@bash scripts/venv.sh serve

venv-test:
	@bash scripts/venv.sh test

serve: venv
	exec trustyard serve --port $(PORT) $(if $(DATA_DIR),--data-dir "$(DATA_DIR)")

install-test:
	bash scripts/install-deps.sh

lint: venv-test
	ruff format --check src tests benchmarks
	ruff check src tests benchmarks
	mypy
	lint-imports

test: install-test lint
	python -m pytest -q --durations=25 $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile) $(PYTEST_ARGS)
	# The client interop suites again, against replicas over PostgreSQL + S3 + Redis behind haproxy.
	TRUSTYARD_TEST_TOPOLOGY=replicas python -m pytest -q --durations=10 $(CLIENT_SUITES)

# Unit, contract (embedded backends) and in-process tests: no root, no services, no servers.
test-fast: venv-test
	python -m pytest -q --durations=10 -m "$(FAST)" $(PYTEST_ARGS)

bench: install-test
	python -m benchmarks --quick

bench-full: install-test
	python -m benchmarks --json benchmarks/results/latest.json
