"""The agent is installed on the gateway and its live process watches the internal network."""

from __future__ import annotations

import re

import testinfra
from labctl.config import LabConfig


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


def test_live_agent_logs(gateway: testinfra.host.Host, lab_yml: dict) -> None:
    log = gateway.file(lab_yml["agent"]["log_path"])
    assert log.exists and "starting appsight live" in log.content_string


def test_live_agent_classifies_with_the_deployed_model(
        gateway: testinfra.host.Host, lab_yml: dict) -> None:
    model = lab_yml["agent"]["model_path"]
    live = [line for line in gateway.check_output("ps -eo args").splitlines()
            if "appsight live" in line]
    if gateway.file(model).exists:
        assert all(f"-m {model}" in line for line in live), live
    else:
        assert not any(" -m " in line for line in live), live
