# Ketch: `make run` and `make test` do everything on a fresh Debian 12 machine (as root).
SHELL := /bin/bash
PY ?= /usr/bin/python3
VENV := $(CURDIR)/.venv
PREFIX ?= /usr/local
BIN := $(PREFIX)/bin
PYTEST_ARGS ?=

.PHONY: install deps venv launchers run test bench clean-demo

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

test: install
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

bench: install
	bash bench/run.sh
