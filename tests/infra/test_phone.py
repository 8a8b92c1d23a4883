"""The phone gets its network from the gateway and reaches the Internet through its NAT."""

from __future__ import annotations

import ipaddress

import testinfra
from labctl.config import LabConfig

from .hostinfo import default_route


def test_phone_has_a_lease_inside_the_range(
        phone_address: ipaddress.IPv4Address, lab: LabConfig) -> None:
    first, last = lab.dhcp_range
    assert first <= phone_address <= last


def test_phone_routes_through_the_gateway(
        phone: testinfra.host.Host, phone_address: ipaddress.IPv4Address,
        lab: LabConfig) -> None:
    assert default_route(phone)[0] == str(lab.gateway_address)


def test_phone_resolver_is_the_leased_dns(
        phone: testinfra.host.Host, phone_address: ipaddress.IPv4Address,
        lab: LabConfig) -> None:
    servers = [line.split()[1] for line in phone.file("/etc/resolv.conf").content_string
               .splitlines() if line.startswith("nameserver")]
    assert servers == [str(server) for server in lab.dns]


def test_phone_reaches_upstream_through_nat(
        phone: testinfra.host.Host, upstream: testinfra.host.Host,
        phone_address: ipaddress.IPv4Address, lab: LabConfig) -> None:
    # Watch upstream's uplink for the phone's connection: it must arrive from the
    # gateway's uplink address, not from the phone's private one.
    watch = ("timeout 15 tcpdump -l -n -c 1 -i uplink0 "
             "'tcp dst port 80 and tcp[tcpflags] & tcp-syn != 0' > /tmp/syn.txt 2>/dev/null &"
             " sleep 1")
    upstream.check_output(watch)
    page = phone.check_output(f"curl -sS --max-time 5 http://{lab.upstream_address}/")
    assert page.strip() == "appsight lab upstream"
    seen = upstream.check_output("sleep 0.5; cat /tmp/syn.txt")
    assert f"IP {lab.uplink_gateway_address}." in seen, seen
    assert str(phone_address) not in seen
