"""The emulated lab as a whole: bring it up, reboot a host, report its state, tear it down.

Topology (from lab.yml)::

    host namespace ── mgmt0 (SSH only, one /30 per host) ──┬──────────────┬─────────────┐
                                                     upstream        gateway          phone
                       uplink subnet:  uplink0 ───────── uplink0
                       internal subnet:                     lan0 (MAC) ──── lan0 (DHCP)

labctl plays the hypervisor: it creates the namespaces and links, gives the gateway's
uplink its address and default route (a provider's NAT network does that with DHCP), and
boots each host. Everything the gateway does on top of that (its internal address,
forwarding, NAT, the firewall, DHCP) is the Ansible role's job.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from labctl.config import HOST_NAMES, LabConfig
from labctl.errors import LabError
from labctl.guest import GATEWAY_LAN, PHONE_LAN, UPLINK, write_guest_files
from labctl.hosts import Host, namespace_pids, wait_for_port
from labctl.rootfs import ensure_rootfs
from labctl.sshfiles import close_connections, ensure_key, write_inventory, write_ssh_config
from labctl.tinycore.build import BuildLog, emulated_disk, gateway_parts
from labctl.tinycore.host import TinyCoreHost

_REQUIRED_TOOLS = ("ip", "unshare", "ssh", "ssh-keygen", "debootstrap", "ethtool")
_SSH_TIMEOUT = 60.0


@dataclass(frozen=True)
class Link:
    """A veth pair between two hosts."""

    a: str
    a_interface: str
    b: str
    b_interface: str
    a_mac: str | None = None


class Lab:
    """The emulated lab described by ``config``, with its state under ``state_dir``."""

    def __init__(self, config: LabConfig, state_dir: Path) -> None:
        self.config = config
        self.state_dir = state_dir
        self.hosts = {name: self._host_type(name)(name, config.namespace(name),
                                                  state_dir / "hosts" / name)
                      for name in HOST_NAMES}
        self.links = (
            Link("gateway", UPLINK, "upstream", UPLINK),
            Link("gateway", GATEWAY_LAN, "phone", PHONE_LAN, a_mac=config.gateway_lan_mac),
        )

    def _host_type(self, name: str) -> type[Host]:
        tinycore = name == "gateway" and self.config.gateway_os == "tinycore"
        return TinyCoreHost if tinycore else Host

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def _lowers(self, *, fresh_disk: str | None = None) -> dict[str, Path]:
        """Each host's root filesystem: Debian's, or Tiny Core's for a Tiny Core gateway.

        With ``fresh_disk`` (the lab's public key), a Tiny Core gateway also gets a new
        disk, as a new VM gets its box's disk.
        """
        lowers: dict[str, Path] = {}
        debian: Path | None = None
        for name, host in self.hosts.items():
            if isinstance(host, TinyCoreHost):
                log = BuildLog(self.log_dir / "tinycore.log")
                parts = gateway_parts(self.config, log)
                if fresh_disk is not None:
                    emulated_disk(self.config, parts, host.disk, fresh_disk, log)
                lowers[name] = parts.userland.root
            else:
                if debian is None:
                    debian = ensure_rootfs(self.config, self.log_dir / "debootstrap.log")
                lowers[name] = debian
        return lowers

    # -- the commands --------------------------------------------------------------------

    def up(self) -> None:
        """Build and boot the whole lab; on any failure, tear down what was built."""
        _check_host()
        if any(self._namespace_exists(host) for host in self.hosts.values()):
            if all(host.running() for host in self.hosts.values()):
                print("labctl: the lab is already up", file=sys.stderr)
                return
            raise LabError("a part of the lab is left from an earlier run: "
                           "run 'labctl down' first")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        public_key = ensure_key(self.state_dir)
        try:
            for host in self.hosts.values():
                host.prepare()
            lowers = self._lowers(fresh_disk=public_key)
            for host in self.hosts.values():
                if not isinstance(host, TinyCoreHost):
                    write_guest_files(self.config, host.name, host.upper, public_key)
                self._create_namespace(host)
            for link in self.links:
                self._create_link(link)
            for name in HOST_NAMES:
                self._plug_in(name)
                self._start(name, lowers[name])
            write_ssh_config(self.state_dir, self.config)
            write_inventory(self.state_dir, self.config)
            for name in HOST_NAMES:
                self._wait_ready(name)
        except BaseException:
            self.down()
            raise
        _note(f"up: {', '.join(HOST_NAMES)}; ssh -F {self.state_dir / 'ssh_config'} gateway")

    def reboot(self, name: str) -> None:
        """Power-cycle one host: all runtime state is lost, its disk is kept.

        A Debian host's disk is its overlay's upper folder; a Tiny Core host's is its disk
        image, and its root filesystem (RAM) starts afresh from Tiny Core's, so what comes
        back is what Tiny Core restores (extensions, mydata.tgz, /opt).

        The host's network namespace is replaced by a new one, which drops its addresses,
        routes, firewall, sysctls and processes, as powering off a machine does. Its network
        cards survive, as a machine's do: they wait in a holding namespace meanwhile, so the
        hosts at the other end of its links only see the link go down and up again.
        """
        if name not in self.hosts:
            raise LabError(f"no host {name!r}; the hosts are {', '.join(HOST_NAMES)}")
        host = self.hosts[name]
        if not self._namespace_exists(host):
            raise LabError("the lab is not up: run 'labctl up' first")
        lower = self._lowers()[name]
        host.stop()
        cards = self._cards(name)
        holding = f"{host.namespace}-off"
        _run("ip", "netns", "add", holding)
        try:
            for card in cards:
                _run("ip", "-n", host.namespace, "link", "set", card, "netns", holding)
            _run("ip", "netns", "delete", host.namespace)
            _run("ip", "netns", "add", host.namespace)
            _run("ip", "-n", host.namespace, "link", "set", "lo", "up")
            for card in cards:
                _run("ip", "-n", holding, "link", "set", card, "netns", host.namespace)
        finally:
            _run("ip", "netns", "delete", holding)
        self._plug_in(name)
        self._start(name, lower)
        self._wait_ready(name)
        _note(f"rebooted {name}")

    def down(self) -> None:
        """Stop every host and remove the namespaces, links and host disks."""
        close_connections(self.state_dir)
        for host in self.hosts.values():
            host.stop()
            if self._namespace_exists(host):
                _run("ip", "netns", "delete", host.namespace)
            # The host's end of the management link goes with the namespace, a moment
            # later; delete it if it is still there (and ignore it vanishing meanwhile).
            link = self.config.management(host.name).host_side
            subprocess.run(["ip", "link", "delete", link], capture_output=True, check=False)
        shutil.rmtree(self.state_dir / "hosts", ignore_errors=True)
        for name in ("ssh_config", "inventory.ini", "known_hosts"):
            (self.state_dir / name).unlink(missing_ok=True)

    def status(self) -> list[tuple[str, str, str]]:
        """One row per host: name, state, management address."""
        rows = []
        for name, host in self.hosts.items():
            address = str(self.config.management(name).lab_address.ip)
            if not self._namespace_exists(host):
                state = "down"
            elif not host.running():
                state = "stopped (namespace left: run 'labctl down')"
            else:
                state = "running"
            rows.append((name, state, address))
        return rows

    def is_up(self) -> bool:
        """Whether every host of the lab is running."""
        return all(state == "running" for _, state, _ in self.status())

    def leftovers(self) -> list[str]:
        """What of the lab still exists on the host: empty once 'down' has run."""
        found = []
        for host in self.hosts.values():
            if self._namespace_exists(host):
                found.append(f"namespace {host.namespace}")
            if namespace_pids(host.namespace):
                found.append(f"processes in {host.namespace}")
            if host.folder.exists():
                found.append(f"disk {host.folder}")
            link = self.config.management(host.name).host_side
            if Path(f"/sys/class/net/{link}").exists():
                found.append(f"link {link}")
        mounts = Path("/proc/self/mountinfo").read_text()
        if str(self.state_dir) in mounts:
            found.append(f"mounts under {self.state_dir}")
        return found

    # -- the steps -----------------------------------------------------------------------

    def _namespace_exists(self, host: Host) -> bool:
        return Path("/run/netns", host.namespace).exists()

    def _create_namespace(self, host: Host) -> None:
        """The host's namespace with its management link (the host's end in our own)."""
        management = self.config.management(host.name)
        _run("ip", "netns", "add", host.namespace)
        _run("ip", "-n", host.namespace, "link", "set", "lo", "up")
        _run("ip", "link", "add", management.host_side, "type", "veth",
             "peer", "name", "mgmt0", "netns", host.namespace)
        _run("ip", "addr", "add", str(management.host_address), "dev", management.host_side)
        _run("ip", "link", "set", management.host_side, "up")

    def _create_link(self, link: Link) -> None:
        a, b = self.hosts[link.a].namespace, self.hosts[link.b].namespace
        command = ["ip", "-n", a, "link", "add", link.a_interface]
        if link.a_mac:
            command += ["address", link.a_mac]
        _run(*command, "type", "veth", "peer", "name", link.b_interface, "netns", b)

    def _cards(self, name: str) -> list[str]:
        """The host's network cards: its management card and its ends of the links."""
        ends = [link.a_interface for link in self.links if link.a == name]
        ends += [link.b_interface for link in self.links if link.b == name]
        return ["mgmt0", *ends]

    def _plug_in(self, name: str) -> None:
        """Bring a host's cards up with what the hypervisor gives them before it boots.

        That is the management address, and for the gateway's uplink what a provider's NAT
        network gives by DHCP: an address and the default route. Upstream, the Internet,
        knows the way to the internal network, so only the gateway's firewall keeps it out,
        which is what the security tests check.
        """
        namespace = self.config.namespace(name)
        config = self.config
        _run("ip", "-n", namespace, "addr", "add",
             str(config.management(name).lab_address), "dev", "mgmt0")
        for card in self._cards(name):
            _run("ip", "-n", namespace, "link", "set", card, "up")
            if card != "mgmt0":
                # A veth hands whole 64 kB TCP segments across unless told not to; on a real
                # network card they leave as MTU-sized packets, which is what the agent
                # must see at the gateway.
                _run("ip", "netns", "exec", namespace, "ethtool", "-K", card,
                     "tso", "off", "gso", "off", "gro", "off")
        prefix = config.uplink_subnet.prefixlen
        if name == "gateway":
            _run("ip", "-n", namespace, "addr", "add",
                 f"{config.uplink_gateway_address}/{prefix}", "dev", UPLINK)
            _run("ip", "-n", namespace, "route", "add", "default", "via",
                 str(config.upstream_address))
        elif name == "upstream":
            _run("ip", "-n", namespace, "addr", "add", f"{config.upstream_address}/{prefix}",
                 "dev", UPLINK)
            _run("ip", "-n", namespace, "route", "add", str(config.subnet), "via",
                 str(config.uplink_gateway_address))

    def _start(self, name: str, lower: Path) -> None:
        self.hosts[name].boot(lower, self.log_dir / f"{name}.log")

    def _wait_ready(self, name: str) -> None:
        address = str(self.config.management(name).lab_address.ip)
        try:
            wait_for_port(address, 22, _SSH_TIMEOUT)
        except LabError as exc:
            raise LabError(f"{name} did not boot: {exc}; see "
                           f"{self.log_dir / (name + '.log')}") from exc


def _check_host() -> None:
    if os.geteuid() != 0:
        raise LabError("the emulated lab needs root (namespaces, veth pairs, mounts): "
                       "run labctl with sudo")
    missing = [tool for tool in _REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        raise LabError(f"missing on this host: {', '.join(missing)} "
                       "(apt-get install iproute2 util-linux openssh-client debootstrap ethtool)")


def _run(*command: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise LabError(f"{' '.join(command)}: {done.stderr.strip() or 'failed'}")


def _note(text: str) -> None:
    print(f"labctl: {text}", file=sys.stderr, flush=True)
