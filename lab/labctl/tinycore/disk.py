"""The gateway's persistent partition, as a Tiny Core installation lays it out.

Tiny Core runs from RAM; what survives a reboot is on one partition, found by the boot codes
``tce=`` (extensions) and ``opt=`` (a persistent ``/opt``)::

    tce/optional/NAME.tcz (+ .md5.txt, .dep, .info)   every extension the gateway may load
    tce/onboot.lst        the extensions loaded at every boot (tce-load -wi adds to it)
    tce/mydata.tgz        what filetool.sh -b saved of the paths in /opt/.filetool.lst
    opt/bootsync.sh       run at boot, waited for: the hostname, then bootlocal.sh
    opt/bootlocal.sh      run at boot in the background: sshd (the roles add their lines)
    opt/.filetool.lst     the backup list: login keys, sshd's host keys (the roles add)

The emulated lab and the Vagrant box start from the same layout; only the login differs
(root with the lab's key in the emulated lab, user ``tc`` with Vagrant's key in the box,
which provisioning replaces). At first boot only OpenSSH is loaded: Python, iptables and
iproute2 wait in ``tce/optional`` until the Ansible roles load them with ``tce-load``.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from labctl.errors import LabError
from labctl.tinycore.extensions import Extension

#: The Tiny Core boot codes the gateway's disk is made for (besides console settings).
BOOT_CODES = ("tce={device}", "opt={device}", "host={hostname}", "nozswap", "noswap")

_BOOTSYNC = """\
#!/bin/sh
# put other system startup commands here, the boot process will wait until they complete.
# Use bootlocal.sh for system startup commands that can run in the background
# and therefore not slow down the boot process.
/usr/bin/sethostname {hostname}
{dhcp}/opt/bootlocal.sh &
"""

#: The lines that ask for the uplink's address (boot code nodhcp keeps Tiny Core from
#: asking on every NIC), as Tiny Core's dhcp.sh would, once udev has made the NIC (its
#: driver is loaded in the background: under software emulation that can take a while).
_DHCP = """\
(
    for second in $(seq 120); do [ -e /sys/class/net/{interface} ] && break; sleep 1; done
    /sbin/udhcpc -b -i {interface} -x hostname:{hostname} -p /var/run/udhcpc.{interface}.pid
) >/dev/null 2>&1 &
"""

_BOOTLOCAL = """\
#!/bin/sh
# put other system startup commands here
/usr/local/etc/init.d/openssh start
"""


@dataclass(frozen=True)
class Login:
    """Who may log in over SSH at first boot, with which public key."""

    user: str  # root or tc
    public_key: str

    @property
    def home(self) -> str:
        return "root" if self.user == "root" else f"home/{self.user}"


def populate(folder: Path, userland: Path, extensions: list[Extension], onboot: list[str],
             hostname: str, login: Login, dhcp_interface: str | None = None) -> None:
    """Lay out the partition's files in ``folder`` (which must not exist yet).

    With ``dhcp_interface``, bootsync.sh asks for that NIC's address by DHCP (a VM's
    uplink); without, the uplink's address is set from outside (the emulated lab)."""
    optional = folder / "tce" / "optional"
    optional.mkdir(parents=True)
    for extension in extensions:
        for companion in extension.tcz.parent.glob(f"{extension.tcz.name}*"):
            shutil.copy2(companion, optional / companion.name)
    names = {extension.name for extension in extensions}
    missing = [name for name in onboot if name not in names]
    if missing:
        raise LabError(f"onboot extensions not built: {', '.join(missing)}")
    (folder / "tce" / "onboot.lst").write_text("".join(f"{name}.tcz\n" for name in onboot))
    opt = folder / "opt"
    shutil.copytree(userland / "opt", opt, symlinks=True)
    dhcp = _DHCP.format(interface=dhcp_interface, hostname=hostname) if dhcp_interface else ""
    _write(opt / "bootsync.sh", _BOOTSYNC.format(hostname=hostname, dhcp=dhcp), 0o775)
    _write(opt / "bootlocal.sh", _BOOTLOCAL, 0o775)
    # /opt itself is persistent (opt=), so it is not in the list; /home (tc's keys), root's
    # keys when root logs in, and sshd's host keys are.
    kept = ["home", *([f"{login.home}/.ssh"] if login.user == "root" else []),
            "usr/local/etc/ssh"]
    _write(opt / ".filetool.lst", "".join(f"{path}\n" for path in kept), 0o664)
    (folder / "tce" / "mydata.tgz").write_bytes(_mydata(login))


def _write(path: Path, text: str, mode: int) -> None:
    path.write_text(text)
    path.chmod(mode)


def _mydata(login: Login) -> bytes:
    """A first ``mydata.tgz``: the login's authorized key, as filetool.sh -b would save it."""
    buffer = io.BytesIO()
    uid = 0 if login.user == "root" else 1001  # tc, the user tc-config creates
    gid = 0 if login.user == "root" else 50  # staff
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path, mode in ((login.home, 0o755 if login.user != "root" else 0o700),
                           (f"{login.home}/.ssh", 0o700)):
            entry = tarfile.TarInfo(path)
            entry.type, entry.mode, entry.uid, entry.gid = tarfile.DIRTYPE, mode, uid, gid
            tar.addfile(entry)
        data = (login.public_key.strip() + "\n").encode()
        entry = tarfile.TarInfo(f"{login.home}/.ssh/authorized_keys")
        entry.size, entry.mode, entry.uid, entry.gid = len(data), 0o600, uid, gid
        tar.addfile(entry, io.BytesIO(data))
    return buffer.getvalue()


def make_ext4(folder: Path, image: Path, size_mb: int, label: str) -> None:
    """An ext4 file system image of ``size_mb`` (sparse) holding ``folder``; no mount."""
    image.unlink(missing_ok=True)
    with image.open("wb") as handle:
        handle.truncate(size_mb * 1024 * 1024)
    done = subprocess.run(["mkfs.ext4", "-q", "-F", "-L", label, "-d", str(folder),
                           "-E", "root_owner=0:0", str(image)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        image.unlink(missing_ok=True)
        raise LabError(f"mkfs.ext4 failed: {done.stderr.strip()}")
