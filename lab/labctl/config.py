"""The lab's parameters, read from ``lab/lab.yml`` and checked once, at the start.

Everything the emulated lab builds is derived here from that one file: namespace names,
addresses, the management links. A missing or malformed value is a one-line
:class:`~labctl.errors.LabError` naming the key, never a traceback halfway through ``up``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from appsight.bursts import MAX_BURST_GAP

from labctl.errors import LabError
from labctl.tinycore.sources import TinyCoreSource

#: The lab's hosts, in the order they boot. ``upstream`` stands in for the Internet.
HOST_NAMES = ("upstream", "gateway", "phone")

#: What the gateway may run: Tiny Core (the lab's gateway) or a Debian stand-in.
GATEWAY_OSES = ("tinycore", "debian")

#: Packages of the Debian root filesystem the emulated hosts share. The gateway needs the
#: routing and DHCP tools and Python for Ansible and the agent; the phone and upstream need
#: a DHCP client and servers (busybox, curl, openssl) and Python with YAML for the
#: synthetic apps and their servers.
ROOTFS_PACKAGES = (
    "openssh-server", "python3", "python3-venv", "python3-yaml", "iptables", "busybox",
    "iproute2", "procps", "curl", "sudo", "ca-certificates", "openssl", "tcpdump",
)

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_PREFIX = re.compile(r"^[a-z][a-z0-9-]{0,9}$")
_BOX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class ManagementLink:
    """A point-to-point link from the host's own namespace to one lab host, for SSH only."""

    host_side: str  # interface name in the host's namespace
    host_address: ipaddress.IPv4Interface
    lab_address: ipaddress.IPv4Interface


@dataclass(frozen=True)
class AgentSettings:
    """lab.yml's agent section as the demo uses it: how the live agent runs on the gateway."""

    log_path: str
    json_log_path: str
    burst_gap: float
    threshold: float | None  # None: the model's own


@dataclass(frozen=True)
class LabConfig:
    """The parameters labctl uses, derived from lab.yml."""

    source: Path
    subnet: ipaddress.IPv4Network
    gateway_address: ipaddress.IPv4Address
    gateway_lan_mac: str
    dhcp_range: tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]
    dns: tuple[ipaddress.IPv4Address, ...]
    lease_seconds: int
    uplink_subnet: ipaddress.IPv4Network
    uplink_gateway_address: ipaddress.IPv4Address
    upstream_address: ipaddress.IPv4Address
    management_subnet: ipaddress.IPv4Network
    namespace_prefix: str
    suite: str
    mirror: str
    cache_dir: Path
    gateway_os: str
    gateway_disk_mb: int
    gateway_box: str  # the Vagrant box's name
    gateway_box_file: Path  # where `labctl box` writes it
    tinycore: TinyCoreSource
    agent: AgentSettings

    def namespace(self, host: str) -> str:
        """The network namespace of ``host``."""
        return f"{self.namespace_prefix}{host}"

    def management(self, host: str) -> ManagementLink:
        """The management link of ``host``: the i-th /30 of the management subnet."""
        block = list(self.management_subnet.subnets(new_prefix=30))[HOST_NAMES.index(host)]
        first, second = block[1], block[2]
        return ManagementLink(
            host_side=f"{self.namespace_prefix.rstrip('-')[:6]}-{host}"[:15],
            host_address=ipaddress.IPv4Interface(f"{first}/30"),
            lab_address=ipaddress.IPv4Interface(f"{second}/30"),
        )


def find_config(start: Path | None = None) -> Path:
    """The lab.yml to use: ``$APPSIGHT_LAB_CONFIG``, else ``lab/lab.yml`` above ``start``."""
    if os.environ.get("APPSIGHT_LAB_CONFIG"):
        return Path(os.environ["APPSIGHT_LAB_CONFIG"]).resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "lab" / "lab.yml"
        if candidate.is_file():
            return candidate
    packaged = Path(__file__).resolve().parent.parent / "lab.yml"
    if packaged.is_file():
        return packaged
    raise LabError("no lab/lab.yml here or above; run labctl in the repository or set "
                   "APPSIGHT_LAB_CONFIG")


def load_config(path: Path) -> LabConfig:
    """Read and check lab.yml."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise LabError(f"cannot read {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise LabError(f"{path} is not valid YAML: {exc}".replace("\n", " ")) from exc
    if not isinstance(data, dict):
        raise LabError(f"{path}: expected a mapping at the top level")
    reader = _Reader(path, data)
    subnet = reader.network("network.subnet")
    gateway_address = reader.address("network.gateway_address")
    if gateway_address not in subnet:
        raise LabError(f"{path}: network.gateway_address {gateway_address} is not in {subnet}")
    dhcp_range = reader.addresses("network.dhcp_range")
    if len(dhcp_range) != 2 or dhcp_range[0] > dhcp_range[1]:
        raise LabError(f"{path}: network.dhcp_range must be [first, last]")
    if any(address not in subnet for address in dhcp_range) or (
            dhcp_range[0] <= gateway_address <= dhcp_range[1]):
        raise LabError(f"{path}: network.dhcp_range must lie in {subnet} and leave out "
                       f"the gateway's address")
    lease_seconds = reader.value("network.lease_seconds")
    if not isinstance(lease_seconds, int) or isinstance(lease_seconds, bool) or \
            lease_seconds < 60:
        raise LabError(f"{path}: network.lease_seconds must be a whole number >= 60")
    uplink_subnet = reader.network("emulated.uplink_subnet")
    uplink_gateway = reader.address("emulated.uplink_gateway_address")
    upstream = reader.address("emulated.upstream_address")
    for key, value in (("emulated.uplink_gateway_address", uplink_gateway),
                       ("emulated.upstream_address", upstream)):
        if value not in uplink_subnet:
            raise LabError(f"{path}: {key} {value} is not in {uplink_subnet}")
    management = reader.network("emulated.management_subnet")
    if management.prefixlen > 30 or len(HOST_NAMES) > 2 ** (30 - management.prefixlen):
        raise LabError(f"{path}: emulated.management_subnet {management} is too small for "
                       f"a /30 per host")
    for name, net in (("network.subnet", subnet), ("emulated.uplink_subnet", uplink_subnet)):
        if management.overlaps(net):
            raise LabError(f"{path}: emulated.management_subnet overlaps {name}")
    mac = reader.string("network.gateway_lan_mac").lower()
    if not _MAC.match(mac):
        raise LabError(f"{path}: network.gateway_lan_mac {mac!r} is not a MAC address")
    gateway_os = reader.string("machines.gateway.os")
    if gateway_os not in GATEWAY_OSES:
        raise LabError(f"{path}: machines.gateway.os must be one of {', '.join(GATEWAY_OSES)}")
    disk_mb = reader.value("machines.gateway.disk_mb")
    if not isinstance(disk_mb, int) or isinstance(disk_mb, bool) or not 512 <= disk_mb <= 65536:
        raise LabError(f"{path}: machines.gateway.disk_mb must be a whole number of MB "
                       f"from 512 to 65536")
    box = reader.string("machines.gateway.box")
    if not _BOX.match(box):
        raise LabError(f"{path}: machines.gateway.box must be a Vagrant box name such as "
                       f"appsight/tinycore-gateway")
    prefix = reader.string("emulated.namespace_prefix")
    if not _PREFIX.match(prefix.rstrip("-")):
        raise LabError(f"{path}: emulated.namespace_prefix must be a short lower-case name")
    return LabConfig(
        source=path,
        subnet=subnet,
        gateway_address=gateway_address,
        gateway_lan_mac=mac,
        dhcp_range=(dhcp_range[0], dhcp_range[1]),
        dns=tuple(reader.addresses("network.dns")),
        lease_seconds=lease_seconds,
        uplink_subnet=uplink_subnet,
        uplink_gateway_address=uplink_gateway,
        upstream_address=upstream,
        management_subnet=management,
        namespace_prefix=prefix,
        suite=reader.string("emulated.suite"),
        mirror=reader.string("emulated.mirror"),
        cache_dir=Path(reader.string("emulated.cache_dir")),
        gateway_os=gateway_os,
        gateway_disk_mb=disk_mb,
        gateway_box=box,
        gateway_box_file=(path.parent.parent / reader.string("machines.gateway.box_file")),
        tinycore=_tinycore(reader, path),
        agent=_agent(reader, path),
    )


def _agent(reader: _Reader, path: Path) -> AgentSettings:
    """lab.yml's agent section: a burst gap in seconds, a threshold in [0, 1] or null."""
    gap, threshold = reader.value("agent.burst_gap"), reader.value("agent.threshold")
    if isinstance(gap, bool) or not isinstance(gap, int | float) or not 0 < gap <= MAX_BURST_GAP:
        raise LabError(f"{path}: agent.burst_gap must be a number of seconds above 0 "
                       f"(as appsight --burst-gap takes it)")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(
            threshold, int | float) or not 0 <= threshold <= 1):
        raise LabError(f"{path}: agent.threshold must be a number from 0 to 1, or null")
    return AgentSettings(
        log_path=reader.string("agent.log_path"),
        json_log_path=reader.string("agent.json_log_path"),
        burst_gap=float(gap),
        threshold=None if threshold is None else float(threshold),
    )


def _tinycore(reader: _Reader, path: Path) -> TinyCoreSource:
    """lab.yml's tinycore section; local_dir is relative to the repository (lab/..)."""
    md5 = re.compile(r"^[0-9a-f]{32}$")
    pins = reader.value("tinycore.local_extension_md5")
    if not isinstance(pins, dict) or not all(
            isinstance(key, str) and isinstance(value, str) and md5.match(value)
            for key, value in pins.items()):
        raise LabError(f"{path}: tinycore.local_extension_md5 must map extension names to "
                       f"md5 sums")
    rootfs_md5 = reader.string("tinycore.local_rootfs_md5")
    if not md5.match(rootfs_md5):
        raise LabError(f"{path}: tinycore.local_rootfs_md5 is not an md5 sum")
    version = reader.string("tinycore.version")
    if not re.match(r"^\d+\.x$", version):
        raise LabError(f"{path}: tinycore.version must name a release series such as 17.x")
    mirror = reader.string("tinycore.mirror")
    if not mirror.startswith(("http://", "https://")):
        raise LabError(f"{path}: tinycore.mirror must be an http(s) URL")
    python = reader.string("tinycore.python_extension")
    if not re.match(r"^[A-Za-z0-9._+-]+$", python):
        raise LabError(f"{path}: tinycore.python_extension must be an extension name")
    return TinyCoreSource(
        version=version, mirror=mirror,
        local_dir=(path.parent.parent / reader.string("tinycore.local_dir")).resolve(),
        local_rootfs=reader.string("tinycore.local_rootfs"),
        local_rootfs_md5=rootfs_md5, local_md5=dict(pins), python_extension=python)


class _Reader:
    """Typed access to dotted keys of lab.yml, with errors that name the key."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    def value(self, key: str) -> Any:
        node: Any = self.data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise LabError(f"{self.path}: {key} is missing")
            node = node[part]
        return node

    def string(self, key: str) -> str:
        value = self.value(key)
        if not isinstance(value, str) or not value:
            raise LabError(f"{self.path}: {key} must be a non-empty string")
        return value

    def address(self, key: str) -> ipaddress.IPv4Address:
        try:
            return ipaddress.IPv4Address(self.string(key))
        except ValueError as exc:
            raise LabError(f"{self.path}: {key}: {exc}") from exc

    def addresses(self, key: str) -> list[ipaddress.IPv4Address]:
        value = self.value(key)
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise LabError(f"{self.path}: {key} must be a list of IPv4 addresses")
        try:
            return [ipaddress.IPv4Address(item) for item in value]
        except ValueError as exc:
            raise LabError(f"{self.path}: {key}: {exc}") from exc

    def network(self, key: str) -> ipaddress.IPv4Network:
        try:
            return ipaddress.IPv4Network(self.string(key))
        except ValueError as exc:
            raise LabError(f"{self.path}: {key}: {exc}") from exc
