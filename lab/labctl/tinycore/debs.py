"""Debian packages as raw material: which versions apt would take, fetched once, unpacked.

The Tiny Core mirror is often out of reach (and always is on the machines this lab is tested
on), but Debian's archive is not. The extensions that Tiny Core would take from its mirror
(Python, OpenSSH, iproute2) are then built from Debian bookworm's packages. This module only
deals with the packages: asking apt for the candidate version and SHA-256 of each (no
download needed, so a cache key can be computed first), downloading the ``.deb`` files into
a cache checked against those SHA-256s, and unpacking them with ``dpkg-deb``.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from labctl.errors import LabError

#: Packages never taken from Debian: Tiny Core's own C library and loader serve in their
#: place, and the rest are scripts and data that only dpkg needs.
NEVER = frozenset({
    "libc6", "libc-bin", "gcc-12-base", "debconf", "cdebconf", "dpkg", "install-info",
    "tar", "perl-base", "usr-is-merged", "usrmerge", "init-system-helpers", "lsb-base",
    "sensible-utils", "readline-common", "libtirpc-common", "libsemanage-common",
    "libaudit-common", "runit-helper", "ucf", "adduser", "passwd", "media-types", "tzdata",
    "mailcap", "mime-support", "netbase",
})


@dataclass(frozen=True)
class DebPackage:
    """One package as apt's index describes it: enough to fetch and verify it."""

    name: str
    version: str
    filename: str  # the archive's pool path
    sha256: str

    @property
    def deb_name(self) -> str:
        return Path(self.filename).name


def _apt(*args: str) -> str:
    done = subprocess.run(["apt-cache", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise LabError(f"apt-cache {' '.join(args[:2])} failed: "
                       f"{done.stderr.strip() or 'no output'} (run apt-get update?)")
    return done.stdout


def library_closure(top: list[str]) -> list[str]:
    """``top`` plus every library package they depend on, recursively (no recommends).

    Only library packages (``lib*``) are followed beyond the top ones: the ELF linking of
    the extension decides later which of them are really needed, and the rest (maintainer
    scripts' helpers such as perl or debconf) are never needed by a binary.
    """
    output = _apt("depends", "--recurse", "--no-recommends", "--no-suggests",
                  "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances",
                  "--no-pre-depends", *top)
    names = {line.strip() for line in output.splitlines()
             if line and not line.startswith(" ") and not line.startswith("<")}
    wanted = set(top) | {name for name in names if name.startswith("lib")}
    return sorted(wanted - NEVER)


def describe(names: list[str]) -> list[DebPackage]:
    """The candidate version of each package, with its pool path and SHA-256."""
    output = _apt("show", "--no-all-versions", *names)
    packages = []
    for stanza in output.split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            key, sep, value = line.partition(": ")
            if sep and not line.startswith(" "):
                fields[key] = value.strip()
        if "Package" in fields:
            try:
                packages.append(DebPackage(fields["Package"], fields["Version"],
                                           fields["Filename"], fields["SHA256"]))
            except KeyError as exc:
                raise LabError(f"apt-cache show {fields['Package']}: no {exc} field") from exc
    found = {package.name for package in packages}
    missing = sorted(set(names) - found)
    if missing:
        raise LabError(f"apt knows no candidate for {', '.join(missing)} (run apt-get update?)")
    return sorted(packages, key=lambda package: package.name)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(packages: list[DebPackage], cache: Path, log) -> list[Path]:
    """The ``.deb`` files of ``packages`` in ``cache``, downloaded where missing or wrong."""
    cache.mkdir(parents=True, exist_ok=True)
    paths = []
    for package in packages:
        path = cache / package.deb_name
        if not (path.is_file() and sha256_file(path) == package.sha256):
            _download(package, cache, log)
        if sha256_file(path) != package.sha256:
            raise LabError(f"{path.name}: SHA-256 differs from apt's index")
        log(f"  deb {package.deb_name} sha256 {package.sha256}")
        paths.append(path)
    return paths


def _download(package: DebPackage, cache: Path, log) -> None:
    # apt-get download writes into the current folder; a private one keeps partial files
    # out of the cache.
    with tempfile.TemporaryDirectory(dir=cache) as staging:
        done = subprocess.run(
            ["apt-get", "download", "-q", f"{package.name}={package.version}"],
            cwd=staging, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise LabError(f"apt-get download {package.name}={package.version} failed: "
                           f"{done.stderr.strip().splitlines()[-1:] or 'no output'}")
        (downloaded,) = Path(staging).glob("*.deb")
        shutil.move(str(downloaded), cache / package.deb_name)
    log(f"  downloaded {package.deb_name}")


def unpack(debs: list[Path], target: Path) -> None:
    """Unpack every ``.deb`` into ``target`` (data only, no maintainer scripts run)."""
    target.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        done = subprocess.run(["dpkg-deb", "-x", str(deb), str(target)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise LabError(f"dpkg-deb -x {deb.name} failed: {done.stderr.strip()}")
