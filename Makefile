# Two entry points for a fresh machine with Python 3.11 and make:
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
# uv (tox-uv) finds interpreters on PATH, not through --discover: put pyenv's real ones first,
# and never let it download one (a missing Python must fail, not fetch).
PYENV_BIN_DIRS := $(sort $(dir $(PYENV_INTERPRETERS)))
TOX_PATH := $(subst $(eval) ,:,$(strip $(PYENV_BIN_DIRS:%/=%))$(if $(PYENV_BIN_DIRS),:)$(PATH))
# uv installs without compiling bytecode, and the envs set PYTHONDONTWRITEBYTECODE: every
# process a test starts would compile its libraries again (twice the CPU of the core suite).
TOX_ENV := PATH="$(TOX_PATH)" UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1 PAYHOOK_PIP="$(abspath $(BIN))/uv pip"

# The core's suite runs on 3.11 and on each of 3.12 and 3.13 that answers here (a pyenv shim
# on PATH may not). A machine with only 3.11 runs that and says what it skipped; CI sets
# PAYHOOK_REQUIRE_ALL_PYTHONS=1, and a missing version fails the run there.
python_answers = $(shell for p in $(PYENV_INTERPRETERS) python$(1); do if [ "$${p##*/}" = "python$(1)" ] && "$$p" -c "" >/dev/null 2>&1; then echo yes; break; fi; done)
HAVE_PY312 := $(call python_answers,3.12)
HAVE_PY313 := $(call python_answers,3.13)
MISSING_PYTHONS := $(if $(HAVE_PY312),,3.12) $(if $(HAVE_PY313),,3.13)
comma := ,
TOX_ENVS := core-py311,latest$(if $(HAVE_PY312),$(comma)core-py312)$(if $(HAVE_PY313),$(comma)core-py313),registration,disputes,notify,django42,django5,bench,packages,lint,docs

.PHONY: run test test-fast lint demo clean

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

# tox-uv: uv makes the test envs and installs into them, in seconds instead of a minute each.
$(BIN)/uv: $(BIN)/tox
	$(BIN)/python -m pip install --quiet "tox-uv>=1.11"

run: $(BIN)/payhook
	EXAMPLE_WHSEC=$(EXAMPLE_WHSEC) $(BIN)/payhook serve --config examples/payhook.toml --host $(HOST) --port $(PORT)

demo: $(BIN)/payhook
	EXAMPLE_WHSEC=$(EXAMPLE_WHSEC) $(BIN)/payhook events trigger --config examples/payhook.toml \
		--tenant example-conf --url http://$(HOST):$(PORT)/example-conf payment_intent.succeeded

# pytest-xdist workers for each suite: one more than the cores, since tests also wait on the
# servers they start (on two cores the core suite took 3:34 with three workers, 4:17 with two).
export PAYHOOK_TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null) && echo $$((n + 1)) || echo auto)

# The envs run one after another, each suite under pytest-xdist, which keeps the cores busy. TEST_ENVS_AT_ONCE=2 runs two envs at a time (output live, the lines
# of two envs interleaved): measured here it was no faster (two core envs at once took 11.5
# minutes, one after the other about 10), since the suites are CPU-bound.
TEST_ENVS_AT_ONCE ?= 1
TOX_RUN := $(if $(filter 1,$(TEST_ENVS_AT_ONCE)),run,run-parallel --parallel $(TEST_ENVS_AT_ONCE) --parallel-live --parallel-no-spinner)

test: $(BIN)/uv
ifneq ($(strip $(MISSING_PYTHONS)),)
	@if [ -n "$$PAYHOOK_REQUIRE_ALL_PYTHONS" ]; then \
		echo "payhook: Python $(strip $(MISSING_PYTHONS)) not found; PAYHOOK_REQUIRE_ALL_PYTHONS is set" >&2; exit 1; fi
	@echo "payhook: the core's tests on Python $(strip $(MISSING_PYTHONS)) are SKIPPED: not installed here"
endif
	$(TOX_ENV) $(BIN)/tox $(TOX_RUN) $(TOX_DISCOVER) -e $(TOX_ENVS)

# The inner loop: the core suite once, on this .venv's Python, with the editable installs of
# `make run` plus the test tools; no browser test, no other env. The whole of `make test`
# before you push.
$(VENV)/.test-fast: $(BIN)/payhook pyproject.toml tests/payhook_testplugin/pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[postgres,testing]" ./tests/payhook_testplugin \
		"pytest-xdist>=3.2" "mypy>=1.11" "ruff>=0.6"
	touch $@

test-fast: $(VENV)/.test-fast
	$(BIN)/python -m pytest -n $(PAYHOOK_TEST_WORKERS) --dist worksteal -m "not browser" -p no:cacheprovider

lint: $(BIN)/uv
	$(TOX_ENV) $(BIN)/tox run -e lint $(TOX_DISCOVER)

clean:
	rm -rf $(VENV) .tox examples/payhook.db* examples/*.migrate-lock
