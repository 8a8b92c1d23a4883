"""The Tiny Core gateway as a Vagrant box for libvirt: ``labctl box`` (``make box``).

The box boots the way the emulated gateway does, from the same parts
(:func:`~labctl.tinycore.build.gateway_parts`), on a kernel of its own:

* ``vmlinuz`` and ``core.gz``, booted directly by libvirt (the box's Vagrantfile names them):
  ``core.gz`` is Tiny Core's root filesystem as a gzip'd cpio, followed by a second cpio
  with the kernel's modules (:mod:`~labctl.tinycore.kernel`); the kernel unpacks both into
  its RAM root, exactly as it unpacks Tiny Core's ``core.gz`` and ``modules64.gz``;
* ``box.img``, the persistent disk (qcow2): an MBR with one ext4 partition laid out by
  :mod:`~labctl.tinycore.disk`, where user ``tc`` logs in with Vagrant's publicly known
  insecure key, which ``vagrant up`` replaces at once (and the playbook's ``filetool.sh -b``
  makes the replacement stick).

Next to the box, a catalog (``NAME.json``) gives it a name, a version derived from its
inputs and its SHA-256, so that the project's Vagrantfile adds it and checks it, and a new
build is a new version that ``vagrant up`` picks up. A log (``NAME.log``) names every input
with its checksum. The box is built again only when an input changes.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from labctl.config import LabConfig
from labctl.errors import LabError
from labctl.tinycore import kernel as kernels
from labctl.tinycore.build import DISK_LABEL, BuildLog, GatewayParts, gateway_parts
from labctl.tinycore.debs import sha256_file
from labctl.tinycore.disk import BOOT_CODES, Login, make_ext4, populate
from labctl.tinycore.sources import md5_file

#: Bumped when the way the box is made changes (besides the code and inputs it hashes).
RECIPE = "1"

#: The disk as the guest sees it (virtio), and its one partition.
DEVICE = "vda1"

#: Boot codes for the box besides :data:`~labctl.tinycore.disk.BOOT_CODES`: the serial
#: console (libvirt's log); DHCP only on the uplink, by bootsync.sh (Tiny Core would ask on
#: every NIC, and the internal one's address is the playbook's); and a wait of up to 120 s
#: for the disk, which udev finds in the background: under software emulation its driver
#: can load after tc-config looks for ``opt=``, which then leaves /opt in RAM and never
#: runs the disk's bootsync.sh.
BOX_CODES = ("console=ttyS0", "nodhcp", f"waitusb=120:LABEL={DISK_LABEL}")

#: The uplink (Vagrant's management network, NIC 1) takes its address by DHCP.
UPLINK = "eth0"

_PARTITION_START_MB = 1

_BOX_VAGRANTFILE = """\
# -*- mode: ruby -*-
# The Vagrantfile inside the appsight Tiny Core gateway box (labctl box). libvirt boots
# Tiny Core's kernel and root filesystem (vmlinuz, core.gz) directly; box.img is the
# persistent disk (tce= and opt= on {device}).
Vagrant.configure("2") do |config|
  config.ssh.username = "tc"
  config.ssh.shell = "/bin/sh"
  # Tiny Core has neither rsync nor an NFS client.
  config.vm.synced_folder ".", "/vagrant", disabled: true
  config.vm.provider :libvirt do |lv|
    lv.kernel = File.join(__dir__, "vmlinuz")
    lv.initrd = File.join(__dir__, "core.gz")
    lv.cmd_line = "{cmdline}"
    lv.disk_bus = "virtio"
    lv.nic_model_type = "virtio"
  end
end
"""


@dataclass(frozen=True)
class BoxFiles:
    """What ``labctl box`` leaves: the box, its catalog and its build log."""

    box: Path
    catalog: Path
    log: Path
    version: str
    sha256: str


def box_files(config: LabConfig) -> tuple[Path, Path, Path]:
    box = config.gateway_box_file
    stem = box.name.removesuffix(".box")
    return box, box.with_name(f"{stem}.json"), box.with_name(f"{stem}.log")


def vagrant_insecure_key() -> str:
    """Vagrant's publicly known insecure public key, from the installed Vagrant."""
    keys = sorted(Path("/usr/share/rubygems-integration/all/gems").glob("vagrant-2*/keys/*.pub"))
    keys += sorted(Path("/opt/vagrant/embedded/gems").glob("gems/vagrant-2*/keys/*.pub"))
    if not keys:
        raise LabError("Vagrant's insecure public key not found: install vagrant "
                       "(Debian: apt-get install vagrant)")
    return "".join(key.read_text() for key in keys)


def cmdline() -> str:
    codes = [code.format(device=DEVICE, hostname="gateway") for code in BOOT_CODES]
    return " ".join([*BOX_CODES, *codes])


def build_box(config: LabConfig, force: bool = False) -> BoxFiles:
    """The gateway box, built where lab.yml says unless an identical one is there."""
    box, catalog, log_path = box_files(config)
    box.parent.mkdir(parents=True, exist_ok=True)
    inputs_log = box.with_name(f".{box.name}.inputs")
    inputs_log.unlink(missing_ok=True)
    log = BuildLog(inputs_log)
    parts = gateway_parts(config, log)
    package = kernels.kernel_package()
    login_key = vagrant_insecure_key()
    inputs = _inputs(config, parts, package, login_key)
    for line in inputs:
        log(f"  input {line}")
    key = hashlib.sha256("\n".join(inputs).encode()).hexdigest()
    version = f"{_tinycore_release(parts)}.{int(key[:8], 16)}"
    if not force and _current(catalog, box, version):
        inputs_log.unlink(missing_ok=True)
        sha256 = json.loads(catalog.read_text())["versions"][0]["providers"][0]["checksum"]
        print(f"labctl: box {config.gateway_box} {version} is up to date: {box}")
        return BoxFiles(box, catalog, log_path, version, sha256)

    with tempfile.TemporaryDirectory(dir=box.parent, prefix="building-") as work_dir:
        work = Path(work_dir)
        kernel = kernels.prepare_kernel(package, config.cache_dir / "tinycore", work, log)
        out = work / "box"
        out.mkdir()
        shutil.copyfile(kernel.vmlinuz, out / "vmlinuz")
        _initramfs(parts, kernel, work, out / "core.gz")
        log(f"  core.gz: Tiny Core {parts.userland.md5} + modules of {kernel.version}, "
            f"md5 {md5_file(out / 'core.gz')}")
        _disk(config, parts, login_key, work, out / "box.img")
        size_gb = -(-config.gateway_disk_mb // 1024)
        (out / "metadata.json").write_text(json.dumps(
            {"provider": "libvirt", "format": "qcow2", "virtual_size": size_gb}) + "\n")
        (out / "Vagrantfile").write_text(_BOX_VAGRANTFILE.format(device=DEVICE,
                                                                 cmdline=cmdline()))
        partial = work / "gateway.box"
        with tarfile.open(partial, "w:gz", compresslevel=1) as tar:
            for name in ("metadata.json", "Vagrantfile", "vmlinuz", "core.gz", "box.img"):
                tar.add(out / name, arcname=name)
        sha256 = sha256_file(partial)
        partial.replace(box)
    catalog.write_text(json.dumps(_catalog(config, box, version, sha256), indent=2) + "\n")
    log(f"box {config.gateway_box} {version}: {box} "
        f"({box.stat().st_size / 1e6:.0f} MB, sha256 {sha256})")
    inputs_log.replace(log_path)
    print(f"labctl: inputs and checksums: {log_path}")
    return BoxFiles(box, catalog, log_path, version, sha256)


def _inputs(config: LabConfig, parts: GatewayParts, package, login_key: str) -> list[str]:
    """One line per input of the box, with its checksum: the build's cache key."""
    here = Path(__file__).parent
    lines = [f"recipe {RECIPE}",
             f"tinycore {parts.userland.origin} md5 {parts.userland.md5}",
             f"kernel {package.name} {package.version} sha256 {package.sha256}",
             f"modules {' '.join(kernels.MODULES)}",
             f"login tc key sha256 {hashlib.sha256(login_key.encode()).hexdigest()}",
             f"disk {config.gateway_disk_mb} MB, cmdline {cmdline()}"]
    for extension in parts.extensions:
        lines.append(f"extension {extension.name}.tcz ({extension.origin}) "
                     f"md5 {md5_file(extension.tcz)}")
    lines.append(f"onboot {' '.join(parts.onboot)}")
    for module in ("box.py", "disk.py", "kernel.py"):
        lines.append(f"code {module} sha256 {sha256_file(here / module)}")
    return lines


def _tinycore_release(parts: GatewayParts) -> str:
    """Tiny Core's version (17.0), from its os-release, for the box's version."""
    for line in (parts.userland.root / "etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_ID="):
            return line.partition("=")[2].strip('"')
    return "0.0"


def _current(catalog: Path, box: Path, version: str) -> bool:
    if not (catalog.is_file() and box.is_file()):
        return False
    try:
        entry = json.loads(catalog.read_text())["versions"][0]
        return entry["version"] == version and \
            entry["providers"][0]["checksum"] == sha256_file(box)
    except (ValueError, KeyError, IndexError, TypeError):
        return False


def _catalog(config: LabConfig, box: Path, version: str, sha256: str) -> dict:
    """A Vagrant box catalog (the format of ``vagrant box add URL``) for the one box."""
    return {
        "name": config.gateway_box,
        "description": "appsight's Tiny Core gateway (labctl box)",
        "versions": [{
            "version": version,
            "providers": [{"name": "libvirt", "url": box.resolve().as_uri(),
                           "checksum_type": "sha256", "checksum": sha256}],
        }],
    }


def _initramfs(parts: GatewayParts, kernel: kernels.Kernel, work: Path, target: Path) -> None:
    """Tiny Core's root filesystem, the modules, then the box's own files, each a gzip'd
    newc cpio (a later one's file replaces an earlier one's)."""
    layer = work / "layer"
    _restore_loop_mounts(parts.userland.root, layer)
    with target.open("wb") as out:
        for root in (parts.userland.root, kernel.modules_root, layer):
            out.write(gzip.compress(_cpio(root), compresslevel=9))


def _restore_loop_mounts(userland: Path, layer: Path) -> None:
    """``tce-load`` as Tiny Core ships it: extensions loop-mounted, not copied.

    Root filesystems repackaged for containers (where loop mounts fail) set
    ``COPYINSTALL=TRUE`` at the top of ``tce-load``, which unpacks every extension into RAM
    with ``unsquashfs``; on a 512 MB gateway that fails ("Requested memory size too large")
    while tce-load still reports success. Dropping that one line restores Tiny Core's own
    behaviour; an unchanged ``tce-load`` is left alone.
    """
    source = userland / "usr/bin/tce-load"
    lines = source.read_text().splitlines(keepends=True)
    kept = [line for line in lines if not line.startswith("COPYINSTALL=TRUE")]
    if len(kept) == len(lines):
        return
    target = layer / "usr/bin/tce-load"
    target.parent.mkdir(parents=True)
    target.write_text("".join(kept))
    shutil.copystat(source, target)
    for folder in (layer, layer / "usr", layer / "usr/bin"):
        folder.chmod(0o755)
    status = source.stat()
    os.chown(target, status.st_uid, status.st_gid)


def _cpio(root: Path) -> bytes:
    """A newc cpio of everything under ``root``, owners and device nodes as they are."""
    names = subprocess.run(["find", ".", "-mindepth", "1", "-print0"], cwd=root,
                           capture_output=True, check=True).stdout
    done = subprocess.run(["cpio", "--quiet", "-o", "-H", "newc", "--null"], cwd=root,
                          input=names, capture_output=True, check=False)
    if done.returncode != 0:
        raise LabError(f"cpio of {root} failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def _disk(config: LabConfig, parts: GatewayParts, login_key: str, work: Path,
          target: Path) -> None:
    """The persistent disk: an MBR, one ext4 partition from 1 MiB, as qcow2."""
    folder = work / "partition"
    populate(folder, parts.userland.root, parts.extensions, parts.onboot, "gateway",
             Login("tc", login_key), dhcp_interface=UPLINK)
    partition = work / "partition.img"
    make_ext4(folder, partition, config.gateway_disk_mb - _PARTITION_START_MB, DISK_LABEL)
    raw = work / "disk.raw"
    with raw.open("wb") as handle:
        handle.truncate(config.gateway_disk_mb * 1024 * 1024)
    _run(["sfdisk", "--quiet", str(raw)], stdin=f"start={_PARTITION_START_MB}MiB, type=83\n")
    _run(["dd", f"if={partition}", f"of={raw}", "bs=1M", f"seek={_PARTITION_START_MB}",
          "conv=notrunc,sparse", "status=none"])
    partition.unlink()
    _run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(target)])
    raw.unlink()


def _run(command: list[str], stdin: str | None = None) -> None:
    if shutil.which(command[0]) is None:
        raise LabError(f"{command[0]} not found (lab/install-host-packages installs it)")
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise LabError(f"{command[0]} failed: {done.stderr.strip() or 'no output'}")
