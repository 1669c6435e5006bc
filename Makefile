# Two entry points for a fresh machine with Python 3.11 and make:
#   make run    set up a virtualenv and serve examples/payhook.toml on SQLite
#   make test   set up tox and run the whole suite (SQLite, plus PostgreSQL when reachable)

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
EXAMPLE_WHSEC ?= whsec_example_local_only
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The core and the bundled plugins, editable, so the example tenant can enable them.
$(BIN)/payhook: $(BIN)/python pyproject.toml plugins/*/pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[postgres]" \
		-e ./plugins/registration -e ./plugins/disputes -e ./plugins/notify
	touch $@

$(BIN)/tox: $(BIN)/python
	$(BIN)/python -m pip install --quiet "tox>=4.14"

run: $(BIN)/payhook
	EXAMPLE_WHSEC=$(EXAMPLE_WHSEC) $(BIN)/payhook serve --config examples/payhook.toml --host $(HOST) --port $(PORT)

demo: $(BIN)/payhook
	EXAMPLE_WHSEC=$(EXAMPLE_WHSEC) $(BIN)/payhook event trigger --config examples/payhook.toml \
		--tenant example-conf --url http://$(HOST):$(PORT)/example-conf payment_intent.succeeded

test: $(BIN)/tox
	$(BIN)/tox run

lint: $(BIN)/tox
	$(BIN)/tox run -e lint

clean:
	rm -rf $(VENV) .tox examples/payhook.db*
