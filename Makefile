# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATE   ?=
STAGE  ?= dev

.PHONY: install test lint demo demo-reset clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

## The whole suite, with branch coverage of chalicelib enforced at 90%.
test: install
	$(BIN)/python -m pytest --cov=chalicelib --cov-branch --cov-report=term --cov-fail-under=90

## ruff (lint + format) and mypy --strict on chalicelib.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## Run the three checks for DATE (default: today in Sydney) on an embedded AWS.
demo: install
	$(BIN)/python -m chalicelib.demo $(if $(DATE),--date $(DATE))

## Forget the demo's embedded AWS state and outbox.
demo-reset:
	rm -rf .demo outbox

clean: demo-reset
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov
