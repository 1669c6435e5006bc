# Two entry points for a fresh machine with Python 3.11 and make (make test also needs 3.12, 3.13):
#   make run    set up a virtualenv and serve examples/payhook.toml on SQLite
#   make test   set up tox and run the whole suite (SQLite, plus PostgreSQL when reachable),
#               the core's tests on Python 3.11, 3.12 and 3.13

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
EXAMPLE_WHSEC ?= whsec_example_local_only
HOST ?= 127.0.0.1
PORT ?= 8000

# tox looks for python3.12 and python3.13 on PATH, where pyenv puts shims that answer only
# for the versions pyenv has activated (usually one): point tox at every installed 3.11-3.13
# itself. Without pyenv this is empty and PATH has the real interpreters.
PYENV_ROOT_DIR := $(shell pyenv root 2>/dev/null)
PYENV_INTERPRETERS := $(if $(PYENV_ROOT_DIR),$(wildcard $(PYENV_ROOT_DIR)/versions/3.1[123].*/bin/python3.1[123]))
TOX_DISCOVER := $(if $(PYENV_INTERPRETERS),--discover $(PYENV_INTERPRETERS))

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

# The envs run one after another: `tox run-parallel` on two cores took 6 minutes instead of
# about 10, but the timing-bound scale-out tests then ran past the 60 s test timeout.
test: $(BIN)/tox
	$(BIN)/tox run $(TOX_DISCOVER)

lint: $(BIN)/tox
	$(BIN)/tox run -e lint $(TOX_DISCOVER)

clean:
	rm -rf $(VENV) .tox examples/payhook.db*
