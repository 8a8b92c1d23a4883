"""The Vagrant box's kernel: Debian's, with only the modules a Tiny Core gateway loads.

Tiny Core's own kernel and ``modules64.gz`` come from its mirror. When the mirror is out of
reach, Debian bookworm's kernel package serves instead (the emulated lab needs none: it runs
on the host's kernel). From the package only ``vmlinuz`` and the modules listed in
:data:`MODULES` are taken, with every module they depend on, decompressed (Tiny Core's
busybox ``modprobe`` reads plain ``.ko`` files) and indexed again with ``depmod``, so that
udev finds the drivers and the kernel finds the netfilter modules when iptables asks.
"""

from __future__ import annotations

import lzma
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from labctl.errors import LabError
from labctl.tinycore import debs

#: The Debian metapackage whose current kernel the box boots. The full flavour, not
#: ``cloud-amd64``: it also drives VirtualBox's e1000 NICs and AHCI disks.
KERNEL_PACKAGE = "linux-image-amd64"

#: What the gateway needs of the kernel besides what is built in: disks and NICs under
#: libvirt (virtio) and VirtualBox (AHCI, e1000), its ext4 partition, extensions (loop,
#: squashfs), the firewall and NAT its roles set up with iptables, and the socket
#: diagnostics ``ss`` needs to show which device a socket is bound to (udhcpd's on the LAN).
MODULES = (
    "virtio_pci", "virtio_net", "virtio_blk", "virtio_rng", "e1000", "ahci", "sd_mod",
    "ext4", "crc32c_generic", "loop", "squashfs",
    "x_tables", "ip_tables", "iptable_filter", "iptable_nat", "iptable_mangle",
    "nf_conntrack", "nf_nat", "xt_MASQUERADE", "xt_conntrack", "xt_state", "xt_tcpudp",
    "ipt_REJECT", "udp_diag", "tcp_diag",
)

Log = Callable[[str], None]


@dataclass(frozen=True)
class Kernel:
    """A kernel image and a ``lib/modules/VERSION`` tree ready to go into an initramfs."""

    package: debs.DebPackage
    version: str  # uname -r
    vmlinuz: Path
    modules_root: Path  # holds lib/modules/VERSION


def kernel_package() -> debs.DebPackage:
    """The kernel package that apt's :data:`KERNEL_PACKAGE` currently depends on."""
    done = subprocess.run(["apt-cache", "depends", KERNEL_PACKAGE], capture_output=True,
                          text=True, check=False)
    names = re.findall(r"Depends: (linux-image-\S+)", done.stdout)
    if done.returncode != 0 or not names:
        raise LabError(f"apt knows no kernel behind {KERNEL_PACKAGE} (run apt-get update?)")
    (package,) = debs.describe(names[:1])
    return package


def prepare_kernel(package: debs.DebPackage, cache: Path, work: Path, log: Log) -> Kernel:
    """Fetch and unpack ``package`` into ``work`` and keep the gateway's modules only."""
    (deb,) = debs.fetch([package], cache / "debs", log)
    unpacked = work / "package"
    debs.unpack([deb], unpacked)
    kernels = sorted((unpacked / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise LabError(f"{deb.name}: expected one boot/vmlinuz-*, found {len(kernels)}")
    version = kernels[0].name.removeprefix("vmlinuz-")
    source = unpacked / "lib/modules" / version
    _depmod(unpacked, version)  # the package leaves the index to its maintainer script
    wanted = module_closure(source, MODULES)
    root = work / "modules"
    target = root / "lib/modules" / version
    target.mkdir(parents=True)
    for relative in wanted:
        _copy_module(source / relative, target / relative.removesuffix(".xz"))
    for index in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        if (source / index).is_file():
            shutil.copy2(source / index, target / index)
    _depmod(root, version)
    log(f"  kernel {version} from {package.deb_name}: {len(wanted)} modules "
        f"({', '.join(MODULES)} and their dependencies)")
    return Kernel(package, version, kernels[0], root)


def _depmod(root: Path, version: str) -> None:
    if shutil.which("depmod") is None:
        raise LabError("depmod not found (Debian: apt-get install kmod)")
    done = subprocess.run(["depmod", "-b", str(root), version], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise LabError(f"depmod failed: {done.stderr.strip()}")


def module_closure(modules_dir: Path, names: tuple[str, ...]) -> list[str]:
    """The paths (relative to ``modules_dir``) of ``names`` and everything they need.

    A name the kernel has built in needs no file; a name it has neither built in nor as a
    module is an error, so a kernel that lost a driver is noticed at build time.
    """
    dependencies: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        path, _, needs = line.partition(":")
        dependencies[path] = needs.split()
        by_name[_module_name(path)] = path
    builtin_file = modules_dir / "modules.builtin"
    builtin = {_module_name(line) for line in builtin_file.read_text().split()} \
        if builtin_file.is_file() else set()
    unknown = [name for name in names
               if _normal(name) not in by_name and _normal(name) not in builtin]
    if unknown:
        raise LabError(f"the kernel has no module {', '.join(unknown)}")
    wanted: set[str] = set()
    pending = [by_name[_normal(name)] for name in names if _normal(name) in by_name]
    while pending:
        path = pending.pop()
        if path not in wanted:
            wanted.add(path)
            pending.extend(dependencies[path])
    return sorted(wanted)


def _module_name(path: str) -> str:
    name = Path(path).name
    for suffix in (".xz", ".zst", ".gz", ".ko"):
        name = name.removesuffix(suffix)
    return _normal(name)


def _normal(name: str) -> str:
    return name.replace("-", "_")


def _copy_module(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.suffix == ".xz":
        with lzma.open(source) as compressed, target.open("wb") as out:
            shutil.copyfileobj(compressed, out)
    elif source.suffix == ".ko":
        shutil.copy2(source, target)
    else:
        raise LabError(f"{source.name}: module compression not supported")
