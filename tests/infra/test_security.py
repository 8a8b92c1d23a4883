"""Nothing from the Internet side gets into the internal network or to the gateway's LAN side.

The emulated upstream knows the route to the internal network (labctl gives it one), so
only the gateway's firewall keeps it out. Each test first shows that the target really
listens (a local connection succeeds), so a refusal proves the firewall, not a typo.
"""

from __future__ import annotations

import ipaddress

import testinfra
from labctl.config import LabConfig

PORT = 8765


def _listen(host: testinfra.host.Host) -> None:
    """A TCP listener on PORT for 20 s; checked to be up before returning."""
    host.check_output(f"timeout 20 busybox nc -ll -p {PORT} -e /bin/true >/dev/null 2>&1 &"
                      " sleep 0.5")
    assert host.run(f"curl -s --max-time 2 http://127.0.0.1:{PORT}/").rc != 7, \
        "the test listener did not start"


def _can_connect(host: testinfra.host.Host, address: str) -> bool:
    # curl exits 7 when the connection is refused, 28 when it times out: the firewall drops.
    return host.run(f"curl -s --max-time 3 http://{address}:{PORT}/").rc not in (7, 28)


def test_upstream_cannot_open_a_connection_to_the_phone(
        phone: testinfra.host.Host, upstream: testinfra.host.Host,
        phone_address: ipaddress.IPv4Address) -> None:
    _listen(phone)
    assert not _can_connect(upstream, str(phone_address))


def test_upstream_cannot_reach_the_gateway_internal_address(
        gateway: testinfra.host.Host, upstream: testinfra.host.Host, lab: LabConfig) -> None:
    _listen(gateway)
    assert not _can_connect(upstream, str(lab.gateway_address))


def test_phone_can_reach_the_gateway_internal_address(
        gateway: testinfra.host.Host, phone: testinfra.host.Host,
        phone_address: ipaddress.IPv4Address, lab: LabConfig) -> None:
    # The counterpart of the test above: the internal side is not cut off.
    _listen(gateway)
    assert _can_connect(phone, str(lab.gateway_address))
