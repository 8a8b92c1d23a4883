"""Where Tiny Core's own files come from: its mirror, checked against its md5, or a local copy.

Tiny Core publishes every file with an ``.md5.txt`` beside it. When the mirror answers, the
root filesystem (``rootfs64.gz``) and the official extensions are taken from it and checked
against those. When it does not (no Internet, or a mirror that is down), the same files are
looked for in a local folder (``$APPSIGHT_TINYCORE``, else ``tinycore.local_dir`` of lab.yml),
and the root filesystem there must have the md5 that lab.yml pins, so that a changed file is
refused instead of booted.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from labctl.errors import LabError

Log = Callable[[str], None]
_TIMEOUT = 5.0


@dataclass(frozen=True)
class TinyCoreSource:
    """lab.yml's ``tinycore`` section."""

    version: str  # the release series, e.g. "17.x"
    mirror: str  # e.g. http://tinycorelinux.net
    local_dir: Path
    local_rootfs: str  # file name in local_dir
    local_rootfs_md5: str
    #: md5 of local official extensions that come without an .md5.txt (iptables.tcz).
    local_md5: dict[str, str]
    #: The official extension that brings Python 3.
    python_extension: str

    @property
    def mirror_base(self) -> str:
        return f"{self.mirror.rstrip('/')}/{self.version}/x86_64"

    def local(self) -> Path:
        """The local folder: ``$APPSIGHT_TINYCORE`` wins over lab.yml."""
        override = os.environ.get("APPSIGHT_TINYCORE")
        return Path(override).resolve() if override else self.local_dir


def md5_file(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def mirror_reachable(source: TinyCoreSource) -> bool:
    """Whether the mirror answers for this release (a quick request, no download)."""
    request = urllib.request.Request(
        f"{source.mirror_base}/release/distribution_files/rootfs64.gz.md5.txt", method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT):
            return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def fetch_checked(url: str, target: Path, log: Log) -> str:
    """Download ``url`` and its ``.md5.txt`` into ``target``; returns the md5 checked."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(f"{url}.md5.txt", timeout=_TIMEOUT) as answer:
            expected = answer.read(4096).decode("ascii", "replace").split()[0].lower()
        with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as partial, \
                urllib.request.urlopen(url, timeout=60) as answer:
            shutil.copyfileobj(answer, partial)
    except (urllib.error.URLError, OSError, IndexError) as exc:
        raise LabError(f"cannot download {url}: {exc}") from exc
    actual = md5_file(Path(partial.name))
    if actual != expected:
        Path(partial.name).unlink()
        raise LabError(f"{url}: md5 {actual} differs from the mirror's {expected}")
    Path(partial.name).rename(target)
    log(f"  downloaded {url} md5 {actual} (checked against its .md5.txt)")
    return actual


@dataclass(frozen=True)
class Userland:
    """Tiny Core's root filesystem, unpacked: what the gateway boots."""

    root: Path
    md5: str  # of the file it was unpacked from
    origin: str  # where that file came from, for the logs


def ensure_userland(source: TinyCoreSource, cache: Path, log: Log) -> Userland:
    """Tiny Core's root filesystem unpacked under ``cache``, from the mirror or locally."""
    if mirror_reachable(source):
        url = f"{source.mirror_base}/release/distribution_files/rootfs64.gz"
        archive = cache / "downloads" / f"rootfs64-{source.version}.gz"
        md5 = md5_file(archive) if archive.is_file() else fetch_checked(url, archive, log)
        origin = url
    else:
        archive = source.local() / source.local_rootfs
        if not archive.is_file():
            raise LabError(f"the Tiny Core mirror {source.mirror} cannot be reached and "
                           f"there is no {archive} (set APPSIGHT_TINYCORE to a folder with "
                           f"{source.local_rootfs}, or tinycore.local_dir in lab.yml)")
        md5 = md5_file(archive)
        if md5 != source.local_rootfs_md5:
            raise LabError(f"{archive}: md5 {md5}, but lab.yml pins "
                           f"{source.local_rootfs_md5} (tinycore.local_rootfs_md5)")
        origin = str(archive)
    root = cache / f"userland-{md5}"
    log(f"Tiny Core root filesystem: {origin} md5 {md5}")
    if not (root / "etc/init.d/tc-config").is_file():
        _unpack(archive, root)
    return Userland(root=root, md5=md5, origin=origin)


def _unpack(archive: Path, root: Path) -> None:
    """Unpack a ``.tar.xz`` (a repackaged root filesystem) or a gzip'd cpio (Tiny Core's)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="unpacking-", dir=root.parent))
    try:
        # Device nodes and ownership must come out as they are: tar and cpio as root.
        if tarfile.is_tarfile(archive):
            done = subprocess.run(["tar", "-xf", str(archive), "-C", str(staging),
                                   "--numeric-owner"], capture_output=True, check=False)
        else:
            with tempfile.TemporaryFile(dir=root.parent) as cpio_file:
                with gzip.open(archive) as compressed:
                    shutil.copyfileobj(compressed, cpio_file)
                cpio_file.seek(0)
                done = subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"],
                                      stdin=cpio_file, cwd=staging, capture_output=True,
                                      check=False)
        if done.returncode != 0:
            raise LabError(f"cannot unpack {archive}: "
                           f"{done.stderr.decode(errors='replace').strip()}")
        if not (staging / "etc/init.d/tc-config").is_file():
            raise LabError(f"{archive} holds no Tiny Core root filesystem "
                           "(no etc/init.d/tc-config)")
        staging.chmod(0o755)
        staging.rename(root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
