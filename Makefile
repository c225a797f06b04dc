# The two commands of the README: `make serve` and `make test`.
PYTHON ?= python3
PORT ?= 5000
DATA_DIR ?= ./trustyard-data

.PHONY: serve test install install-test lint check bench bench-full

install:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e .

serve: install
	trustyard serve --port $(PORT) --data-dir $(DATA_DIR)

install-test:
	bash scripts/install-deps.sh

lint:
	ruff format --check src tests benchmarks
	ruff check src tests benchmarks
	mypy
	lint-imports

test: install-test lint
	$(PYTHON) -m pytest -q
	# The client interop suites again, against replicas over PostgreSQL + S3 + Redis behind haproxy.
	TRUSTYARD_TEST_TOPOLOGY=replicas $(PYTHON) -m pytest -q tests/integration/test_client_skopeo.py \
		tests/integration/test_client_podman.py tests/integration/test_client_oras.py \
		tests/integration/test_client_docker.py tests/integration/test_client_umoci.py

bench: install-test
	$(PYTHON) -m benchmarks --quick

bench-full: install-test
	$(PYTHON) -m benchmarks --json benchmarks/results/latest.json
