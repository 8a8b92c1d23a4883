# appsight: common tasks. `make install` builds .venv/, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install box demo demo-clean sample-demo test test-unit test-lab test-vagrant lint lint-lab bench sample clean

install: $(BIN)/appsight

$(BIN)/appsight: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,lab,plots]'
	@touch $@

# The Tiny Core gateway's Vagrant box (root), for `vagrant up` (labctl box; docs/vagrant.md).
box:
	lab/install-host-packages
	$(MAKE) install
	$(BIN)/labctl box $(BOX_OPTIONS)

# The main job (root): the emulated lab, provisioned and tested, labelled captures of every
# synthetic app, retraining, live reports on the gateway, evaluation (labctl demo).
demo:
	lab/install-host-packages
	$(MAKE) install
	$(BIN)/labctl demo $(DEMO_OPTIONS)

# Leaves the host as it was before the demo: the lab, its cached root filesystem, the
# wheelhouse, the results and the venv go.
demo-clean:
	-[ -x $(BIN)/labctl ] && $(BIN)/labctl down --purge
	rm -rf build results .lab .lab-test-logs
	$(MAKE) clean

# The main job on the embedded sample capture alone, without the lab (no root needed).
sample-demo: install
	$(BIN)/appsight flows --device 10.77.0.2 examples/sample.pcap

# Everything: lint, the unit and integration tests, then the lab end to end (root).
test: lint test-unit test-lab

test-unit: install
	$(BIN)/pytest

# The emulated lab: up, provision, testinfra, idempotence, reboot, down (lab/run-lab-tests).
test-lab: install
	lab/run-lab-tests

# The lab as real VMs under libvirt with software emulation (root): the project's Vagrantfile
# and roles, testinfra, a reboot, testinfra again, destroy (lab/vagrant-tier/run; ~11 min).
test-vagrant: install
	lab/vagrant-tier/run $(VAGRANT_TIER_OPTIONS)

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
