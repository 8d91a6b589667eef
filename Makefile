# Two commands on a fresh clone: `make demo` and `make test`. Each creates .venv/ when missing.
.DEFAULT_GOAL := help
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
SCALE ?= small
SEED ?= 7
export MMREC_DATA_DIR ?= $(CURDIR)/data/$(SCALE)

## help: list the targets
.PHONY: help
help:
	@grep -E '^## ' $(MAKEFILE_LIST) | sed 's/^## //'

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

## venv: create .venv/ from pyproject.toml (done by every target that needs it)
.PHONY: venv
venv: $(BIN)/.installed

## demo: the main job end to end on the embedded defaults (SCALE=small, SEED=7)
.PHONY: demo
demo: venv
	$(BIN)/mmrec generate --scale $(SCALE) --seed $(SEED)
	$(BIN)/mmrec features build
	$(BIN)/mmrec features apply
	$(BIN)/mmrec features materialize
	$(BIN)/mmrec features show --user-id 1 --item-id 1

## test: the pytest suite (tiny world; slow end-to-end tests included)
.PHONY: test
test: venv
	$(BIN)/python -m pytest

## lint: ruff
.PHONY: lint
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## bench-features: PIT join, materialize and online-read benchmarks at bench scale
.PHONY: bench-features
bench-features: venv
	$(BIN)/python -m bench.feature_store_bench

## clean: remove generated data (keeps .venv/)
.PHONY: clean
clean:
	rm -rf data bench/results
