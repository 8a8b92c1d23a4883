"""labctl box: the Tiny Core gateway's Vagrant box and the kernel modules it carries.

The module and tce-load tests run on small trees of real files. The build test makes the
real box (root, apt and the Tiny Core files needed) and checks what Vagrant and libvirt
will read from it; booting it is the Vagrant tier's job (lab/vagrant-tier/run).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import zlib
from pathlib import Path

import pytest
from lab_yml import REPO, lab_yml_copy
from labctl.config import find_config, load_config
from labctl.errors import LabError
from labctl.tinycore.box import _restore_loop_mounts, build_box
from labctl.tinycore.kernel import module_closure


def _modules_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "lib/modules/6.1.0-test"
    folder.mkdir(parents=True)
    (folder / "modules.dep").write_text(
        "kernel/net/netfilter/xt_conntrack.ko.xz: kernel/net/netfilter/nf_conntrack.ko.xz "
        "kernel/net/netfilter/x_tables.ko.xz\n"
        "kernel/net/netfilter/nf_conntrack.ko.xz: kernel/lib/libcrc32c.ko.xz\n"
        "kernel/net/netfilter/x_tables.ko.xz:\n"
        "kernel/lib/libcrc32c.ko.xz:\n"
        "kernel/drivers/net/e1000.ko.xz:\n")
    (folder / "modules.builtin").write_text("kernel/drivers/block/loop.ko\n")
    return folder


def test_a_module_comes_with_everything_it_needs(tmp_path: Path) -> None:
    closure = module_closure(_modules_dir(tmp_path), ("xt_conntrack", "loop"))
    assert closure == ["kernel/lib/libcrc32c.ko.xz", "kernel/net/netfilter/nf_conntrack.ko.xz",
                       "kernel/net/netfilter/x_tables.ko.xz",
                       "kernel/net/netfilter/xt_conntrack.ko.xz"]


def test_a_module_the_kernel_lacks_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="no module virtio-net"):
        module_closure(_modules_dir(tmp_path), ("e1000", "virtio-net"))


def test_tce_load_gets_its_loop_mounts_back(tmp_path: Path) -> None:
    userland = tmp_path / "userland"
    (userland / "usr/bin").mkdir(parents=True)
    script = userland / "usr/bin/tce-load"
    script.write_text("#!/bin/sh\nKERNELVER=$(uname -r)\nCOPYINSTALL=TRUE # docker\n"
                      "while getopts c opt; do COPYINSTALL=TRUE; done\n")
    script.chmod(0o755)
    _restore_loop_mounts(userland, tmp_path / "layer")
    restored = tmp_path / "layer/usr/bin/tce-load"
    assert restored.read_text() == ("#!/bin/sh\nKERNELVER=$(uname -r)\n"
                                    "while getopts c opt; do COPYINSTALL=TRUE; done\n")
    assert restored.stat().st_mode & 0o777 == 0o755


def test_an_unchanged_tce_load_is_left_alone(tmp_path: Path) -> None:
    userland = tmp_path / "userland"
    (userland / "usr/bin").mkdir(parents=True)
    (userland / "usr/bin/tce-load").write_text("#!/bin/sh\nKERNELVER=$(uname -r)\n")
    _restore_loop_mounts(userland, tmp_path / "layer")
    assert not (tmp_path / "layer").exists()


def _gzip_members(data: bytes) -> list[bytes]:
    members = []
    while data:
        inflater = zlib.decompressobj(wbits=31)
        members.append(inflater.decompress(data))
        data = inflater.unused_data
    return members


def _box_prerequisites() -> str | None:
    if os.geteuid() != 0:
        return "building the box needs root (file owners inside the image)"
    for tool in ("apt-get", "depmod", "sfdisk", "qemu-img", "mkfs.ext4", "cpio", "vagrant"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (lab/install-host-packages installs it)"
    tinycore = load_config(find_config(REPO)).tinycore
    if not (tinycore.local() / tinycore.local_rootfs).is_file():
        return f"no Tiny Core root filesystem in {tinycore.local()} (set APPSIGHT_TINYCORE)"
    return None


@pytest.mark.slow
def test_the_box_is_what_vagrant_libvirt_boots(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    reason = _box_prerequisites()
    if reason:
        pytest.skip(reason)
    tinycore = load_config(find_config(REPO)).tinycore
    config = load_config(lab_yml_copy(
        tmp_path, machines__gateway__box_file=str(tmp_path / "box" / "gw.box"),
        tinycore__local_dir=str(tinycore.local())))
    built = build_box(config)

    # The catalog the Vagrantfile adds the box from: name, version, the file's SHA-256.
    catalog = json.loads(built.catalog.read_text())
    assert catalog["name"] == config.gateway_box
    (version,) = catalog["versions"]
    assert version["version"] == built.version and built.version.startswith("17.0.")
    (provider,) = version["providers"]
    assert provider["name"] == "libvirt" and provider["url"] == built.box.as_uri()
    assert provider["checksum"] == hashlib.sha256(built.box.read_bytes()).hexdigest()

    unpacked = tmp_path / "unpacked"
    with tarfile.open(built.box) as tar:
        assert sorted(tar.getnames()) == ["Vagrantfile", "box.img", "core.gz",
                                          "metadata.json", "vmlinuz"]
        tar.extractall(unpacked, filter="data")
    metadata = json.loads((unpacked / "metadata.json").read_text())
    assert metadata == {"provider": "libvirt", "format": "qcow2", "virtual_size": 2}
    vagrantfile = (unpacked / "Vagrantfile").read_text()
    assert 'config.ssh.username = "tc"' in vagrantfile
    assert "tce=vda1 opt=vda1" in vagrantfile and "nodhcp" in vagrantfile

    # core.gz: Tiny Core's root filesystem, the kernel's modules, the box's tce-load.
    members = _gzip_members((unpacked / "core.gz").read_bytes())
    assert len(members) == 3
    assert b"etc/init.d/tc-config" in members[0]
    assert b"kernel/net/netfilter/xt_conntrack.ko" in members[1]
    assert b"modules.alias" in members[1]
    assert b"usr/bin/tce-load" in members[2] and b"COPYINSTALL=TRUE #" not in members[2]

    # The disk: qcow2, an MBR with one Linux partition from 1 MiB.
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json",
                                      str(unpacked / "box.img")], capture_output=True,
                                     text=True, check=True).stdout)
    assert info["format"] == "qcow2" and info["virtual-size"] == 2048 * 1024 * 1024
    raw = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(unpacked / "box.img"), str(raw)],
                   check=True)
    table = subprocess.run(["sfdisk", "--json", str(raw)], capture_output=True, text=True,
                           check=True).stdout
    (partition,) = json.loads(table)["partitiontable"]["partitions"]
    assert partition["start"] == 2048 and partition["type"] == "83"

    # Built only once for the same inputs.
    stamp = built.box.stat().st_mtime_ns
    capsys.readouterr()
    again = build_box(config)
    assert again.version == built.version and built.box.stat().st_mtime_ns == stamp
    assert "is up to date" in capsys.readouterr().out
    assert "input kernel linux-image-" in built.log.read_text()
