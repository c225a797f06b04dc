# The two commands of the README: `make serve` and `make test`.
PYTHON ?= python3
PORT ?= 5000
DATA_DIR ?= ./trustyard-data

.PHONY: serve test install install-test lint check bench

install:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e .

serve: install
	trustyard serve --port $(PORT) --data-dir $(DATA_DIR)

install-test:
	bash scripts/install-deps.sh

lint:
	ruff format --check src tests
	ruff check src tests
	mypy
	lint-imports

test: install-test lint
	$(PYTHON) -m pytest -q

bench: install-test
	$(PYTHON) -m benchmarks --quick
