# appsight: common tasks. `make install` builds .venv/, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test test-unit test-lab lint lint-lab bench sample clean

install: $(BIN)/appsight

$(BIN)/appsight: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,lab]'
	@touch $@

# The main job on the embedded sample capture: the per-burst report and a feature table.
demo: install
	$(BIN)/appsight flows --device 10.77.0.2 examples/sample.pcap
	@mkdir -p results
	$(BIN)/appsight features --device 10.77.0.2 examples/sample.pcap -o results/sample-features.csv
	@echo "feature table: results/sample-features.csv"

# Everything: lint, the unit and integration tests, then the lab end to end (root).
test: lint test-unit test-lab

test-unit: install
	$(BIN)/pytest

# The emulated lab: up, provision, testinfra, idempotence, reboot, down (lab/run-lab-tests).
test-lab: install
	lab/run-lab-tests

lint: install lint-lab
	$(BIN)/ruff check .

# Ansible and YAML: every playbook parses, ansible-lint's production profile, yamllint.
lint-lab: install
	$(BIN)/yamllint -s .
	cd ansible && for playbook in *.yml; do \
		PATH="$(CURDIR)/$(BIN):$$PATH" ansible-playbook --syntax-check "$$playbook" \
			>/dev/null || exit 1; \
	done
	cd ansible && PATH="$(CURDIR)/$(BIN):$$PATH" ansible-lint --profile production

bench: install
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python benchmarks/bench_flows.py

# Re-record examples/sample.pcap (root; real TLS and UDP between two network namespaces).
sample:
	examples/make_sample_capture.sh examples/sample.pcap

clean:
	rm -rf $(VENV) build *.egg-info agent/*.egg-info .pytest_cache .ruff_cache
