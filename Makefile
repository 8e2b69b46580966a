# commhub: every target sets itself up on a fresh Debian 12 machine (run as root for the peers).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-dev
export PEERS_DIR ?= /tmp/commhub-peers

.PHONY: demo test check lint typecheck bench peers peers-stop install install-dev clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[dev]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(STAMP)

## make demo: SQLite, demo users and customers, the PBX simulator placing calls, an SMTP sink,
## the web app on http://127.0.0.1:8080 (log in as anna / demo-password).
demo: install
	$(BIN)/commhub migrate
	$(BIN)/commhub demo

## make peers: install (apt) and start PostgreSQL, Redis, Dovecot, Postfix, Kannel on 127.0.0.1.
peers:
	scripts/peers.sh install
	scripts/peers.sh start

peers-stop:
	scripts/peers.sh stop

## make test: dev dependencies, every real peer, then the whole suite.
test: install-dev peers
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check hub connectors web tests bench
	$(BIN)/ruff format --check hub connectors web

typecheck: install-dev
	$(BIN)/mypy

## make check: ruff, mypy, then the tests.
check: lint typecheck test

## make bench: benchmarks, each printing ratios against a baseline measured in the same run.
bench: install-dev peers
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) var test-artifacts .mypy_cache .ruff_cache
