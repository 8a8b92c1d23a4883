"""The gateway routes and NATs the internal network and serves it DHCP, as lab.yml says."""

from __future__ import annotations

import re

import pytest
import testinfra
from labctl.config import LabConfig


def test_gateway_runs_the_os_lab_yml_names(gateway: testinfra.host.Host,
                                            lab_yml: dict) -> None:
    os_release = gateway.file("/etc/os-release").content_string
    print(os_release)
    expected = {"tinycore": "NAME=TinyCore", "debian": 'NAME="Debian GNU/Linux"'}
    assert expected[lab_yml["machines"]["gateway"]["os"]] in os_release.splitlines()


def test_tiny_core_loaded_the_gateway_extensions_at_boot(
        gateway: testinfra.host.Host, lab_yml: dict) -> None:
    if lab_yml["machines"]["gateway"]["os"] != "tinycore":
        pytest.skip("the gateway is not Tiny Core")
    loaded = gateway.check_output("ls /usr/local/tce.installed").split()
    tce = gateway.check_output("readlink /etc/sysconfig/tcedir")
    onboot = gateway.file(f"{tce}/onboot.lst").content_string.split()
    python = lab_yml["tinycore"]["python_extension"]
    for official in ("openssh", "iproute2", "iptables", python):
        # The official extension, or its stand-in built from Debian packages.
        names = [official, f"{official}-deb12"]
        assert any(name in loaded for name in names), (official, loaded)
        assert any(f"{name}.tcz" in onboot for name in names), (official, onboot)


def test_ip_forwarding_is_on(gateway: testinfra.host.Host) -> None:
    assert gateway.sysctl("net.ipv4.ip_forward") == 1


def test_internal_interface_has_the_static_gateway_address(
        gateway: testinfra.host.Host, lan: str, lab: LabConfig) -> None:
    expected = f"{lab.gateway_address}/{lab.subnet.prefixlen}"
    assert expected in gateway.check_output(f"ip -4 -o addr show dev {lan}")


def test_uplink_is_masqueraded(gateway: testinfra.host.Host, uplink: str) -> None:
    rules = gateway.iptables.rules("nat", "POSTROUTING")
    assert any(f"-o {uplink}" in rule and "-j MASQUERADE" in rule for rule in rules), rules


def test_forward_policy_drops_by_default(gateway: testinfra.host.Host) -> None:
    assert "-P FORWARD DROP" in gateway.iptables.rules("filter", "FORWARD")


def test_forward_allows_internal_to_uplink(
        gateway: testinfra.host.Host, lan: str, uplink: str) -> None:
    rules = gateway.iptables.rules("filter", "FORWARD")
    assert any(f"-i {lan}" in rule and f"-o {uplink}" in rule and "-j ACCEPT" in rule
               and "state" not in rule for rule in rules), rules


def test_forward_lets_in_only_replies_from_uplink(
        gateway: testinfra.host.Host, lan: str, uplink: str) -> None:
    rules = gateway.iptables.rules("filter", "FORWARD")
    inbound = [rule for rule in rules
               if f"-i {uplink}" in rule and f"-o {lan}" in rule and "-j ACCEPT" in rule]
    assert inbound, rules
    for rule in inbound:
        assert re.search(r"--ctstate (RELATED,ESTABLISHED|ESTABLISHED,RELATED)", rule), rule


def _udhcpd_config(gateway: testinfra.host.Host) -> str:
    """The configuration file the running udhcpd was started with."""
    command = gateway.check_output("ps -eo args | grep '[u]dhcpd'")
    words = command.split()
    configs = [word for word in words if word.endswith(".conf")]
    assert configs, f"udhcpd was started without a configuration file: {command!r}"
    return gateway.file(configs[-1]).content_string


def test_udhcpd_is_running(gateway: testinfra.host.Host) -> None:
    assert gateway.run("ps -eo args | grep '[u]dhcpd'").stdout.strip()


def test_udhcpd_serves_the_configured_range(
        gateway: testinfra.host.Host, lan: str, lab: LabConfig) -> None:
    config = _udhcpd_config(gateway)
    first, last = lab.dhcp_range
    assert re.search(rf"^start\s+{first}\s*$", config, re.M), config
    assert re.search(rf"^end\s+{last}\s*$", config, re.M), config
    assert re.search(rf"^interface\s+{lan}\s*$", config, re.M), config


def test_udhcpd_hands_out_router_dns_and_lease(
        gateway: testinfra.host.Host, lab: LabConfig) -> None:
    config = _udhcpd_config(gateway)
    assert re.search(rf"^opt(ion)?\s+router\s+{lab.gateway_address}\s*$", config, re.M)
    dns = " ".join(str(server) for server in lab.dns)
    assert re.search(rf"^opt(ion)?\s+dns\s+{dns}\s*$", config, re.M), config
    assert re.search(rf"^opt(ion)?\s+lease\s+{lab.lease_seconds}\s*$", config, re.M)


def test_udhcpd_listens_on_udp_67_on_the_internal_side(
        gateway: testinfra.host.Host, lan: str) -> None:
    # udhcpd binds its socket to the device, which ss shows as ADDRESS%DEVICE.
    sockets = gateway.check_output("ss -H -u -l -n")
    assert re.search(rf"%{re.escape(lan)}:67\s", sockets), sockets
