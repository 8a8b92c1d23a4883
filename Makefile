# appsight: common tasks. `make install` builds .venv/, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install test lint bench clean

install: $(BIN)/appsight

$(BIN)/appsight: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

test: install
	$(BIN)/ruff check agent tests benchmarks
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check agent tests benchmarks

bench: install
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python benchmarks/bench_flows.py

clean:
	rm -rf $(VENV) build *.egg-info agent/*.egg-info .pytest_cache .ruff_cache
