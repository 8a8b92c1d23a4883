"""The lab's testinfra suite: what a correctly set-up lab is, checked over real SSH.

These tests run only with ``pytest tests/infra --lab SSH_CONFIG`` against a lab that is up
and provisioned (``make test-lab`` does it all on the emulated lab). The hosts are reached
by their names in that ssh_config, ``gateway``, ``phone`` and ``upstream``, which both
``labctl`` and ``vagrant ssh-config`` write. Expected values come from ``lab/lab.yml``
through labctl's reader, so the suite checks the lab against its one parameter file.
"""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path

import pytest
import testinfra
import yaml
from labctl.config import LabConfig, find_config, load_config

from .hostinfo import default_route

REPO = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--lab"):
        return
    skip = pytest.mark.skip(reason="lab suite: run 'make test-lab' (or pytest tests/infra "
                                   "--lab .lab/ssh_config against an up, provisioned lab)")
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def lab() -> LabConfig:
    return load_config(find_config(REPO))


@pytest.fixture(scope="session")
def lab_yml(lab: LabConfig) -> dict:
    """lab.yml as plain data, for the settings labctl itself has no use for."""
    return yaml.safe_load(lab.source.read_text())


def _host(request: pytest.FixtureRequest, name: str) -> testinfra.host.Host:
    ssh_config = Path(request.config.getoption("--lab")).resolve()
    if not ssh_config.is_file():
        pytest.fail(f"--lab {ssh_config}: no such ssh_config")
    return testinfra.get_host(f"ssh://{name}", ssh_config=str(ssh_config), sudo=True)


@pytest.fixture(scope="session")
def gateway(request: pytest.FixtureRequest) -> testinfra.host.Host:
    return _host(request, "gateway")


@pytest.fixture(scope="session")
def phone(request: pytest.FixtureRequest) -> testinfra.host.Host:
    return _host(request, "phone")


@pytest.fixture(scope="session")
def upstream(request: pytest.FixtureRequest) -> testinfra.host.Host:
    return _host(request, "upstream")


@pytest.fixture(scope="session")
def lan(gateway: testinfra.host.Host, lab: LabConfig) -> str:
    """The gateway's internal interface: the one with the MAC address lab.yml gives it."""
    links = gateway.check_output("ip -o link show")
    for line in links.splitlines():
        if f"link/ether {lab.gateway_lan_mac}" in line:
            return line.split(":")[1].strip().split("@")[0]
    pytest.fail(f"the gateway has no interface with MAC {lab.gateway_lan_mac}")


@pytest.fixture(scope="session")
def uplink(gateway: testinfra.host.Host) -> str:
    """The gateway's uplink: the interface of its default IPv4 route."""
    return default_route(gateway)[1]


@pytest.fixture(scope="session")
def phone_address(phone: testinfra.host.Host, lab: LabConfig) -> ipaddress.IPv4Address:
    """The phone's address on the internal network, once its DHCP client has a lease.

    The phone keeps asking until the gateway answers; a lease normally arrives within a few
    seconds of the gateway's DHCP server starting, so waiting up to 40 s is generous.
    """
    deadline = time.monotonic() + 40
    while True:
        for word in phone.check_output("ip -4 -o addr show").split():
            if "/" in word:
                address = ipaddress.IPv4Interface(word).ip
                if address in lab.subnet:
                    return address
        if time.monotonic() > deadline:
            pytest.fail("the phone got no address on the internal network within 40 s")
        time.sleep(1)
