"""The agent is installed on the gateway and its live process watches the internal network."""

from __future__ import annotations

import hashlib
import re

import pytest
import testinfra
from labctl.config import LabConfig

from .hostinfo import LIVE_SCRIPT


def _live_processes(gateway: testinfra.host.Host) -> list[str]:
    """The command lines of the gateway's appsight live processes."""
    return [line for line in gateway.check_output("ps -eo args").splitlines()
            if "appsight live" in line]


def test_agent_is_installed(gateway: testinfra.host.Host, lab_yml: dict) -> None:
    venv = f"{lab_yml['agent']['install_dir']}/venv"
    version = gateway.check_output(f"{venv}/bin/appsight --version")
    assert re.fullmatch(r"appsight \d+\.\d+\.\d+\S*", version.strip()), version


def test_live_agent_runs_on_the_internal_interface(
        gateway: testinfra.host.Host, lan: str, lab: LabConfig) -> None:
    processes = gateway.check_output("ps -eo args")
    live = [line for line in processes.splitlines() if "appsight live" in line]
    assert live, processes
    assert any(f" live {lan} " in line and f"--device {lab.subnet}" in line
               for line in live), live


def test_live_agent_logs(gateway: testinfra.host.Host, lab_yml: dict, lan: str) -> None:
    log = gateway.file(lab_yml["agent"]["log_path"])
    assert log.exists and "starting appsight live" in log.content_string
    assert f"appsight: listening on {lan}" in log.content_string


def test_restart_returns_once_the_agent_listens(
        gateway: testinfra.host.Host, lab_yml: dict, lan: str) -> None:
    """After `appsight-live restart` (what Ansible does with a new model) traffic is seen at
    once: the restart waits for the new appsight live to say it listens."""
    restart = gateway.run(f"{LIVE_SCRIPT} restart")
    assert restart.rc == 0, restart.stderr
    assert f"appsight live listens on {lan}" in restart.stdout, restart.stdout
    # The newest appsight live (started by the restart) is the one that said it listens.
    lines = gateway.file(lab_yml["agent"]["log_path"]).content_string.splitlines()
    started = [n for n, line in enumerate(lines) if "starting appsight live" in line]
    listening = [n for n, line in enumerate(lines) if f"appsight: listening on {lan}" in line]
    assert started and listening and listening[-1] > started[-1], lines[-10:]
    live = _live_processes(gateway)
    assert any(f" live {lan} " in line for line in live), live


def test_live_agent_classifies_with_the_deployed_model(
        gateway: testinfra.host.Host, lab_yml: dict) -> None:
    model = lab_yml["agent"]["model_path"]
    live = _live_processes(gateway)
    if gateway.file(model).exists:
        assert all(f"-m {model}" in line for line in live), live
    else:
        assert not any(" -m " in line for line in live), live


def test_live_agent_loads_only_the_model_ansible_listed(
        gateway: testinfra.host.Host, lab_yml: dict) -> None:
    """Where Ansible deployed a model, it listed its SHA-256 (root's, not writable by others)
    and appsight live runs with --trusted-models, so a model put in its place is refused."""
    model, trusted = lab_yml["agent"]["model_path"], lab_yml["agent"]["trusted_models_path"]
    listing = gateway.file(trusted)
    if not gateway.file(model).exists:
        pytest.skip("no model deployed yet (lab/run-lab-tests runs this again after the demo)")
    assert listing.exists
    # ls -ln rather than testinfra's user and mode: Tiny Core has no stat command.
    permissions, _, uid = gateway.check_output(f"ls -ln {trusted}").split()[:3]
    assert uid == "0" and permissions[5] != "w" and permissions[8] != "w", permissions
    digest = hashlib.sha256(gateway.file(model).content).hexdigest()  # no sha256sum there
    assert listing.content_string.split()[0] == digest
    live = _live_processes(gateway)
    assert live and all(f"--trusted-models {trusted}" in line for line in live), live
