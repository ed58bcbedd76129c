# Ketch: `make run` and `make test` do everything on a fresh Debian 12 machine (as root).
SHELL := /bin/bash
PY ?= /usr/bin/python3
VENV := $(CURDIR)/.venv
PREFIX ?= /usr/local
BIN := $(PREFIX)/bin
PYTEST_ARGS ?=

.PHONY: install deps venv launchers run lint unit test bench clean-demo man

install: deps venv launchers

deps:
	bash scripts/install-deps.sh

$(VENV)/.stamp: pyproject.toml
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

venv: deps $(VENV)/.stamp

launchers: venv
	bash scripts/install-launchers.sh $(BIN)

run: install
	bash scripts/demo.sh

# what lint checks and how: [tool.ruff] and [tool.mypy] in pyproject.toml
lint: venv
	$(VENV)/bin/ruff check ketch tests
	$(VENV)/bin/mypy

# the tier that needs no root and runs in seconds (also as an unprivileged user)
unit: venv
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider tests/unit $(PYTEST_ARGS)

# the whole suite (unit and root tiers), with the runtime launcher this checkout just installed
test: install
	KETCH_TEST_RUNTIME=$(BIN)/ketch-runtime $(VENV)/bin/python -m pytest $(PYTEST_ARGS)

bench: install
	bash bench/run.sh

# man pages for ketch and each of its commands, roff written from the CLI's parser (ketch/cli/manpage.py)
MANDIR ?= $(CURDIR)/build/man
man: $(VENV)/.stamp
	$(VENV)/bin/python -m ketch.cli.manpage $(MANDIR)
