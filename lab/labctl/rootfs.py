"""The Debian root filesystem every emulated host boots from, built once and cached.

``debootstrap --variant=minbase`` takes about a minute; every later ``labctl up`` reuses the
result. The cache is keyed by suite, mirror and package list, so changing any of them in
lab.yml or here builds a fresh one instead of silently booting a stale one. A build goes to
a temporary folder that is renamed into place only when it succeeded, under a lock, so an
interrupted or concurrent build never leaves a half-made root filesystem in the cache.
Hosts never write to it: each boots with its own overlay on top.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from labctl.config import ROOTFS_PACKAGES, LabConfig
from labctl.errors import LabError

#: Bumped when the way the root filesystem is prepared changes.
_RECIPE_VERSION = "2"


def rootfs_key(config: LabConfig) -> str:
    """A short digest of everything that determines the root filesystem's content."""
    recipe = "\n".join([_RECIPE_VERSION, config.suite, config.mirror, *ROOTFS_PACKAGES])
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def ensure_rootfs(config: LabConfig, log: Path) -> Path:
    """The cached root filesystem for ``config``, built first if it is not there yet."""
    cache = config.cache_dir
    target = cache / f"rootfs-{config.suite}-{rootfs_key(config)}"
    if (target / "usr/sbin/sshd").exists():
        return target
    if shutil.which("debootstrap") is None:
        raise LabError("debootstrap is not installed (apt-get install debootstrap)")
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / ".lock"):
        if (target / "usr/sbin/sshd").exists():  # another labctl built it meanwhile
            return target
        _build(config, target, log)
    return target


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _build(config: LabConfig, target: Path, log: Path) -> None:
    staging = Path(tempfile.mkdtemp(prefix="building-", dir=target.parent))
    print(f"labctl: building the {config.suite} root filesystem (once; about a minute), "
          f"log: {log}", file=sys.stderr, flush=True)
    started = time.monotonic()
    command = [
        "debootstrap", "--variant=minbase", f"--include={','.join(ROOTFS_PACKAGES)}",
        config.suite, str(staging), config.mirror,
    ]
    try:
        with log.open("w") as out:
            done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0:
            raise LabError(f"debootstrap failed (exit {done.returncode}); see {log}")
        _prepare(staging)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    print(f"labctl: root filesystem ready in {time.monotonic() - started:.0f} s",
          file=sys.stderr, flush=True)


def _prepare(root: Path) -> None:
    """Changes every host needs, made once in the shared layer."""
    # mkdtemp made the folder private; as a host's / it must be open to every user (the
    # phone runs each synthetic app under its own UID).
    root.chmod(0o755)
    # No host keys in the shared layer: each host makes its own at first boot.
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # The package cache is only dead weight in every overlay's lower layer.
    for leftover in (root / "var/cache/apt/archives").glob("*.deb"):
        leftover.unlink()


def purge_cache(config: LabConfig) -> None:
    """Delete every cached root filesystem (the next ``up`` builds one again)."""
    cache = config.cache_dir
    if not cache.is_dir():
        return
    with _locked(cache / ".lock"):
        for entry in cache.iterdir():
            if entry.name.startswith(("rootfs-", "building-")):
                shutil.rmtree(entry, ignore_errors=True)
    (cache / ".lock").unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # something else lives there too: leave it
        cache.rmdir()
