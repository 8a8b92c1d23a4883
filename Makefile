# appsight: common tasks. `make install` builds .venv/, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint bench sample clean

install: $(BIN)/appsight

$(BIN)/appsight: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

# The main job on the embedded sample capture: the per-burst report and a feature table.
demo: install
	$(BIN)/appsight flows --device 10.77.0.2 examples/sample.pcap
	@mkdir -p results
	$(BIN)/appsight features --device 10.77.0.2 examples/sample.pcap -o results/sample-features.csv
	@echo "feature table: results/sample-features.csv"

test: install
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python benchmarks/bench_flows.py

# Re-record examples/sample.pcap (root; real TLS and UDP between two network namespaces).
sample:
	examples/make_sample_capture.sh examples/sample.pcap

clean:
	rm -rf $(VENV) build *.egg-info agent/*.egg-info .pytest_cache .ruff_cache
