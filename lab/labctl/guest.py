"""The files labctl puts into each emulated host: its init table and its role's stand-ins.

Each host boots busybox ``init`` as PID 1 of its own PID namespace, with an ``inittab``
written here: sshd supervised, then ``/etc/rc.local`` once if it is executable, the same hook
Debian's systemd honours. That hook is where the gateway role persists the gateway's state,
so ``labctl reboot gateway`` proves the persistence the role set up and nothing else.

The phone and upstream get what stands in for their real counterparts: the phone runs a
DHCP client on its internal interface (an Android VM asks the gateway for its address the
same way); upstream, the Internet, runs a web server.
"""

from __future__ import annotations

from pathlib import Path

from labctl.config import LabConfig

#: The phone's interface on the internal network.
PHONE_LAN = "lan0"
#: The gateway's interfaces: internal network (found by MAC by the roles) and uplink.
GATEWAY_LAN = "lan0"
UPLINK = "uplink0"
#: The web page upstream serves: tests fetch it through the gateway's NAT.
UPSTREAM_PAGE = "appsight lab upstream\n"

_INITTAB_COMMON = """\
# Written by labctl at every boot: this host's init table (busybox init, PID 1).
::sysinit:/etc/lab/sysinit
::respawn:/usr/sbin/sshd -D -e
::once:/etc/lab/rc-local
"""

_SYSINIT = """\
#!/bin/sh
# First thing at boot: what sshd and the rest need. /run and /tmp are fresh each boot.
[ -e /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -A >/dev/null
mkdir -p /run/sshd /var/log
ip link set lo up
"""

_RC_LOCAL = """\
#!/bin/sh
# Run /etc/rc.local once at boot if it is executable, as Debian's rc-local unit does.
if [ -x /etc/rc.local ]; then
    /etc/rc.local >/var/log/rc.local.log 2>&1
fi
"""

_UDHCPC_SCRIPT = """\
#!/bin/sh
# busybox udhcpc event script of the emulated phone: address, default route and DNS
# from the gateway's lease, as Android's DHCP client applies them.
case "$1" in
    deconfig)
        ip -4 addr flush dev "$interface"
        ip link set "$interface" up
        ;;
    bound|renew)
        ip -4 addr flush dev "$interface"
        ip addr add "$ip/$mask" dev "$interface"
        for hop in $router; do
            ip route replace default via "$hop" dev "$interface"
            break
        done
        : > /etc/resolv.conf
        for server in $dns; do
            echo "nameserver $server" >> /etc/resolv.conf
        done
        ;;
esac
exit 0
"""


def write_guest_files(config: LabConfig, host: str, upper: Path, public_key: str) -> None:
    """Write labctl's files into ``host``'s overlay (its persistent layer)."""
    inittab = _INITTAB_COMMON
    if host == "phone":
        inittab += (f"::respawn:/bin/busybox udhcpc -f -i {PHONE_LAN} -T 3 -A 3 "
                    f"-x hostname:phone -s /etc/lab/udhcpc.script\n")
    if host == "upstream":
        inittab += "::respawn:/bin/busybox httpd -f -p 80 -h /srv/www\n"
        _write(upper / "srv/www/index.html", UPSTREAM_PAGE)
    _write(upper / "etc/inittab", inittab)
    _write(upper / "etc/lab/sysinit", _SYSINIT, mode=0o755)
    _write(upper / "etc/lab/rc-local", _RC_LOCAL, mode=0o755)
    if host == "phone":
        _write(upper / "etc/lab/udhcpc.script", _UDHCPC_SCRIPT, mode=0o755)
    _write(upper / "etc/hostname", f"{host}\n")
    _write(upper / "etc/hosts", f"127.0.0.1 localhost\n127.0.1.1 {host}\n")
    # No DNS server is reachable from the lab hosts: a local one that refuses at once
    # keeps lookups (sshd, sudo, Ansible's facts) from waiting for a timeout. The phone's
    # DHCP client replaces it with the servers of its lease.
    _write(upper / "etc/resolv.conf", "nameserver 127.0.0.1\n")
    _write(upper / "root/.ssh/authorized_keys", public_key, mode=0o600)
    (upper / "root/.ssh").chmod(0o700)


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
