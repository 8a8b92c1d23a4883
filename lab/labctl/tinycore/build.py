"""Putting the gateway together: Tiny Core's userland, its extensions and its first disk.

Both gateways start here: the emulated lab's (:func:`emulated_disk`, an ext4 image) and the
Vagrant box (:mod:`labctl.tinycore.box`). Every input is logged with its checksum, in a log
that names the source of each file, so a run can always say what it booted.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from labctl.config import LabConfig
from labctl.tinycore.disk import Login, make_ext4, populate
from labctl.tinycore.extensions import Extension, ensure_extensions
from labctl.tinycore.sources import Userland, ensure_userland

#: The file system label of the gateway's persistent partition.
DISK_LABEL = "tcgateway"


@dataclass(frozen=True)
class GatewayParts:
    """What a Tiny Core gateway is made of."""

    userland: Userland
    extensions: list[Extension]
    onboot: list[str]  # loaded at first boot; the roles load the rest


class BuildLog:
    """Appends to a log file and says where it is; summary lines go to stderr too."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, line: str) -> None:
        with self.path.open("a") as out:
            out.write(line + "\n")
        if not line.startswith("  "):
            print(f"labctl: {line}", file=sys.stderr, flush=True)


def wanted_extensions(config: LabConfig) -> dict[str, str]:
    """Role -> official name of every extension the gateway needs (in load order)."""
    return {"openssh": "openssh", "iproute2": "iproute2", "iptables": "iptables",
            "python3": config.tinycore.python_extension}


def gateway_parts(config: LabConfig, log: Callable[[str], None]) -> GatewayParts:
    cache = config.cache_dir / "tinycore"
    userland = ensure_userland(config.tinycore, cache, log)
    extensions = ensure_extensions(config.tinycore, wanted_extensions(config), userland.root,
                                   userland.md5, cache, log)
    # The extension providing sshd is the last one the openssh role resolved to.
    ssh = [extension.name for extension in extensions if extension.name.startswith("openssh")]
    return GatewayParts(userland, extensions, onboot=ssh[-1:])


def emulated_disk(config: LabConfig, parts: GatewayParts, image: Path, public_key: str,
                  log: Callable[[str], None]) -> None:
    """The emulated gateway's disk image, fresh, with tc's login key from the lab."""
    image.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=image.parent, prefix="disk-") as work:
        folder = Path(work, "partition")
        populate(folder, parts.userland.root, parts.extensions, parts.onboot, "gateway",
                 Login("tc", public_key))
        make_ext4(folder, image, config.gateway_disk_mb, DISK_LABEL)
    log(f"gateway disk: {image} ({config.gateway_disk_mb} MB ext4, label {DISK_LABEL}; "
        f"extensions {', '.join(e.name for e in parts.extensions)}; "
        f"onboot {', '.join(parts.onboot)})")
