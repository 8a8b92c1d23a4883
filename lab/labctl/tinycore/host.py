"""An emulated host that boots Tiny Core: its RAM root, its disk, and Tiny Core's own boot.

What a Tiny Core machine is, and how the namespace stands in for each part:

* **The root filesystem lives in RAM.** Here an overlay of Tiny Core's unpacked root
  filesystem under a tmpfs made afresh at every boot: nothing written outside the disk
  survives a reboot, exactly as on Tiny Core.
* **The disk** is an ext4 image (``.lab/hosts/gateway/disk.img``, laid out by
  :mod:`~labctl.tinycore.disk`) attached to a loop device and given to the namespace as
  ``/dev/sda1``; Tiny Core mounts it itself (boot codes ``tce=sda1 opt=sda1``).
* **The kernel** is the host's. Its command line, which Tiny Core reads its boot codes
  from, is a file bound over ``/proc/cmdline``; ``/sys`` is read-only, so udev inside the
  namespace cannot re-trigger the host's devices.
* **The boot** is Tiny Core's: busybox ``init`` runs ``/etc/init.d/rcS`` and ``tc-config``,
  which loads the extensions of ``onboot.lst`` with ``tce-load``, restores ``mydata.tgz``
  with ``filetool.sh -r`` and runs ``/opt/bootsync.sh`` and ``/opt/bootlocal.sh``.

Two files stand in for what the namespace cannot do, in a layer of their own above Tiny
Core's (which stays untouched): ``/etc/fstab`` names the disk (Tiny Core's
``rebuildfstab`` would scan the host's disks, so the ``nofstab`` boot code skips it), and
``/etc/inittab`` has no getty (there is no console; the log file is the console).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from labctl.errors import LabError
from labctl.hosts import Host
from labctl.tinycore.disk import BOOT_CODES

DEVICE = "sda1"

_BOOT = r"""
set -e
root=$1 lower=$2 layer=$3 ram=$4 cmdline=$5 disk=$6 name=$7
mount -t tmpfs -o mode=755 tmpfs "$ram"
mkdir "$ram/upper" "$ram/work"
mount -t overlay overlay -o "lowerdir=$layer:$lower,upperdir=$ram/upper,workdir=$ram/work" "$root"
mount -t proc proc "$root/proc"
mount --bind "$cmdline" "$root/proc/cmdline"
mount -t sysfs -o ro sysfs "$root/sys"
mount -t tmpfs -o mode=755 tmpfs "$root/dev"
for node in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
    IFS=: read -r dev major minor <<EOF
$node
EOF
    mknod -m 666 "$root/dev/$dev" c "$major" "$minor"
done
IFS=: read -r major minor <<EOF
$disk
EOF
mknod -m 660 "$root/dev/sda1" b "$major" "$minor"
mkdir "$root/dev/pts" "$root/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
hostname "$name"
exec chroot "$root" /sbin/init
"""

_FSTAB = """\
# /etc/fstab of the emulated Tiny Core gateway (labctl): Tiny Core's own four lines, /sys
# read-only, and the disk that rebuildfstab would have found.
proc            /proc        proc    defaults          0       0
sysfs           /sys         sysfs   ro                0       0
devpts          /dev/pts     devpts  defaults          0       0
tmpfs           /dev/shm     tmpfs   defaults          0       0
/dev/{device}       /mnt/{device}    ext4    noauto,defaults   0       0
"""

_INITTAB = """\
# /etc/inittab of the emulated Tiny Core gateway (labctl): Tiny Core's, less the getty on
# tty1 (the namespace has no console).
::sysinit:/etc/init.d/rcS
::restart:/etc/init.d/rc.shutdown
::restart:/sbin/init
::ctrlaltdel:/sbin/reboot
::shutdown:/etc/init.d/rc.shutdown
"""

#: Boot codes for what the namespace has not: no zram, no hardware clock, no disks to
#: scan, no NIC named eth* to ask DHCP on (the uplink's address is given by labctl).
EMULATED_CODES = ("nortc", "nofstab", "nodhcp", "noautologin")


class TinyCoreHost(Host):
    """A host booting Tiny Core from ``userland`` with ``disk.img`` as its disk."""

    @property
    def disk(self) -> Path:
        return self.folder / "disk.img"

    def prepare(self) -> None:
        for part in ("layer/etc", f"layer/mnt/{DEVICE}", "root", "ram"):
            (self.folder / part).mkdir(parents=True, exist_ok=True)
        (self.folder / "layer/etc/fstab").write_text(_FSTAB.format(device=DEVICE))
        (self.folder / "layer/etc/inittab").write_text(_INITTAB)
        codes = [code.format(device=DEVICE, hostname=self.name) for code in BOOT_CODES]
        (self.folder / "cmdline").write_text(" ".join([*codes, *EMULATED_CODES]) + "\n")

    def boot(self, lower: Path, log: Path) -> None:
        if not self.disk.is_file():
            raise LabError(f"{self.name} has no disk ({self.disk})")
        self.prepare()
        self._detach()
        device = _run("losetup", "--find", "--show", str(self.disk))
        numbers = _run("lsblk", "--nodeps", "--noheadings", "-o", "MAJ:MIN", device)
        command = [
            "ip", "netns", "exec", self.namespace,
            "unshare", "--mount", "--pid", "--uts", "--ipc", "--fork",
            "--kill-child=SIGKILL", "--propagation", "private",
            "sh", "-c", _BOOT, "boot",
            str(self.folder / "root"), str(lower), str(self.folder / "layer"),
            str(self.folder / "ram"), str(self.folder / "cmdline"), numbers.replace(" ", ""),
            self.name,
        ]
        self._spawn(command, log)

    def stop(self) -> None:
        super().stop()
        self._detach()

    def _detach(self) -> None:
        """Detach every loop device still holding the disk (power off, or a crash)."""
        if not self.disk.exists():
            return
        for line in _run("losetup", "--noheadings", "-O", "NAME", "-j",
                         str(self.disk)).splitlines():
            subprocess.run(["losetup", "-d", line.strip()], capture_output=True, check=False)


def _run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise LabError(f"{' '.join(command)}: {done.stderr.strip() or 'failed'}")
    return done.stdout.strip()
