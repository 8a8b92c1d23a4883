"""The gateway's Tiny Core extensions: official ``.tcz`` files, or built from Debian packages.

The gateway needs four extensions besides Tiny Core's base: ``iptables`` (NAT and the
firewall), ``iproute2`` (the ``ip`` command with ``--json`` that the roles and testinfra
use), Python (Ansible's modules and the agent) and OpenSSH (Ansible, testinfra, people).
Each comes, in this order of preference, from

1. the Tiny Core mirror (``NAME.tcz`` with its ``.md5.txt`` and ``.dep``), when reachable;
2. a local folder holding official files (``iptables.tcz`` is one);
3. Debian bookworm's packages, built into an extension here and named as such
   (``python3.11-deb12.tcz``): the package files, the libraries they need that Tiny Core
   lacks, each ELF file pointed at Tiny Core's loader (:mod:`~labctl.tinycore.elf`), and a
   ``.info`` file listing every package, version and SHA-256 that went in.

A built extension is cached under a key of everything that decides its content (the
recipe below, the packages' versions and checksums, the Tiny Core base it must fit), so it is
built again only when one of them changes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from labctl.errors import LabError
from labctl.tinycore import debs
from labctl.tinycore.elf import Resolver, patch_for_tinycore
from labctl.tinycore.sources import TinyCoreSource, fetch_checked, md5_file, mirror_reachable

#: Bumped when the way extensions are built changes.
RECIPE = "2"

Log = Callable[[str], None]

_OPENSSH_START = """\
#!/bin/sh
# Tiny Core's service script for the Debian-built OpenSSH: start|stop|restart|status.
# Host keys and the configuration live in /usr/local/etc/ssh, as with Tiny Core's own
# openssh.tcz; list that folder in /opt/.filetool.lst to keep the keys across reboots.
conf=/usr/local/etc/ssh/sshd_config
pidfile=/var/run/sshd.pid
case "$1" in
    start)
        mkdir -p /run/sshd /var/empty
        chmod 755 /run/sshd
        /usr/bin/ssh-keygen -A -f /usr/local >/dev/null
        [ -f "$conf" ] || cp /usr/local/etc/ssh/sshd_config.orig "$conf"
        /usr/sbin/sshd -f "$conf"
        ;;
    stop) [ -f "$pidfile" ] && kill "$(cat "$pidfile")" ;;
    restart) "$0" stop; sleep 1; "$0" start ;;
    status) [ -f "$pidfile" ] && [ -d "/proc/$(cat "$pidfile")" ] ;;
    *) echo "usage: $0 start|stop|restart|status" >&2; exit 2 ;;
esac
"""

_SSHD_CONFIG = """\
# sshd_config of the Debian-built OpenSSH extension (the sshd_config.orig of Tiny Core's
# openssh.tcz plays the same part). Key login only; no PAM on Tiny Core.
HostKey /usr/local/etc/ssh/ssh_host_ed25519_key
HostKey /usr/local/etc/ssh/ssh_host_rsa_key
HostKey /usr/local/etc/ssh/ssh_host_ecdsa_key
PidFile /var/run/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PrintMotd no
UseDNS no
# Tiny Core's PATH (/etc/profile), which commands run over SSH would otherwise lack.
SetEnv PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
Subsystem sftp /usr/lib/openssh/sftp-server
"""

_OPENSSH_INSTALLED = """\
#!/bin/sh
# Run by tce-load after loading: the user sshd drops privileges to, which Tiny Core's
# base lacks (its /etc/passwd is made anew at every boot).
grep -q '^sshd:' /etc/passwd || adduser -S -D -H -h /var/empty -s /bin/false sshd
"""


@dataclass(frozen=True)
class DebianExtension:
    """An extension built from Debian packages when the official one cannot be had."""

    name: str  # the extension's name, e.g. python3.11-deb12
    replaces: str  # the official extension it stands in for, e.g. python3.11
    description: str
    packages: tuple[str, ...]  # their files go in whole (less documentation)
    drop: tuple[str, ...] = ()  # path prefixes (relative) left out
    links: dict[str, str] = field(default_factory=dict)  # path -> link target
    files: dict[str, tuple[str, int]] = field(default_factory=dict)  # path -> (text, mode)

    def key(self, packages: list[debs.DebPackage], base_md5: str) -> str:
        recipe = {
            "recipe": RECIPE, "name": self.name, "packages": self.packages, "drop": self.drop,
            "links": self.links, "files": self.files, "base": base_md5,
            "debs": [[p.name, p.version, p.sha256] for p in packages],
        }
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


_DOCS = ("usr/share/doc", "usr/share/man", "usr/share/lintian", "usr/share/bug",
         "usr/share/info", "usr/share/locale")

DEBIAN_EXTENSIONS = {
    "python3": DebianExtension(
        name="python3.11-deb12", replaces="python3.11",
        description="Python 3.11 with venv and ensurepip, from Debian bookworm's packages",
        packages=("python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib",
                  "python3.11", "python3.11-venv", "python3-pip-whl",
                  "python3-setuptools-whl"),
        drop=(*_DOCS, "usr/lib/python3.11/test", "usr/lib/python3.11/idlelib",
              "usr/lib/python3.11/tkinter", "usr/lib/python3.11/lib2to3",
              "usr/lib/python3.11/pydoc_data", "usr/bin/pydoc3.11", "usr/bin/pygettext3.11",
              "usr/share/pixmaps", "usr/share/applications", "usr/share/binfmts"),
        links={"usr/bin/python3": "python3.11",
               "usr/local/bin/python3": "/usr/bin/python3.11",
               "usr/local/bin/python3.11": "/usr/bin/python3.11"},
    ),
    "openssh": DebianExtension(
        name="openssh-deb12", replaces="openssh",
        description="OpenSSH server and client (sshd, ssh, scp, sftp-server, ssh-keygen), "
                    "from Debian bookworm's packages",
        packages=("openssh-server", "openssh-client", "openssh-sftp-server"),
        drop=(*_DOCS, "etc/init.d", "etc/pam.d", "etc/ufw", "etc/default", "usr/lib/systemd",
              "lib/systemd", "etc/network", "usr/share/openssh", "usr/share/apport",
              "etc/ssh/sshd_config", "etc/ssh/sshd_config.d", "usr/bin/ssh-copy-id",
              "usr/bin/ssh-argv0", "usr/lib/openssh/agent-launch", "etc/X11",
              "usr/lib/openssh/ssh-sk-helper", "usr/share/runit", "etc/sv", "etc/runit"),
        files={"usr/local/etc/init.d/openssh": (_OPENSSH_START, 0o755),
               "usr/local/etc/ssh/sshd_config.orig": (_SSHD_CONFIG, 0o644),
               "usr/local/tce.installed/openssh-deb12": (_OPENSSH_INSTALLED, 0o755)},
    ),
    "iproute2": DebianExtension(
        name="iproute2-deb12", replaces="iproute2",
        description="iproute2 (ip, ss, bridge, tc), from Debian bookworm's packages",
        packages=("iproute2",),
        drop=(*_DOCS, "usr/share/bash-completion", "usr/lib/x86_64-linux-gnu/tc",
              "etc/iproute2/rt_protos.d"),
    ),
}


def _log_package(log: Log, package: debs.DebPackage) -> None:
    log(f"  package {package.name} {package.version} sha256 {package.sha256}")


@dataclass(frozen=True)
class Extension:
    """One extension ready to go into a tce/optional folder."""

    name: str  # file name less .tcz, as onboot.lst and tce-load name it
    tcz: Path  # with NAME.tcz.md5.txt (and .dep, .info when there are) beside it
    origin: str  # "mirror", "local" or "debian"


def ensure_extensions(source: TinyCoreSource, wanted: dict[str, str], base_root: Path,
                      base_md5: str, cache: Path, log: Log) -> list[Extension]:
    """Every extension of ``wanted`` (role -> official name), each from the best source.

    Roles are the keys of :data:`DEBIAN_EXTENSIONS` plus ``iptables``. The mirror is asked
    first, then the local folder (whose files must have the md5 lab.yml pins for them, or
    an ``.md5.txt`` beside them), then Debian's packages.
    """
    online = mirror_reachable(source)
    log(f"Tiny Core mirror {source.mirror_base}: "
        f"{'reachable' if online else 'not reachable: local files and Debian packages'}")
    found: list[Extension] = []
    for role, official in wanted.items():
        if online:
            found += _from_mirror(source, official, cache, log)
            continue
        local = source.local() / f"{official}.tcz"
        if local.is_file():
            found.append(_from_local(source, official, local, cache, log))
        elif role in DEBIAN_EXTENSIONS:
            tcz = build_debian_extension(DEBIAN_EXTENSIONS[role], base_root, base_md5,
                                         cache, log)
            found.append(Extension(tcz.name[:-4], tcz, "debian"))
        else:
            raise LabError(f"no {official}.tcz: the mirror cannot be reached, {local} is "
                           f"missing, and it cannot be built from Debian packages")
    return found


def _from_local(source: TinyCoreSource, name: str, local: Path, cache: Path,
                log: Log) -> Extension:
    md5 = md5_file(local)
    pinned = source.local_md5.get(name)
    beside = local.with_name(f"{local.name}.md5.txt")
    if beside.is_file():
        pinned = beside.read_text().split()[0]
    if pinned is None:
        raise LabError(f"{local} has no .md5.txt beside it and lab.yml pins no md5 for it "
                       f"(tinycore.local_extension_md5.{name})")
    if md5 != pinned:
        raise LabError(f"{local}: md5 {md5} differs from the expected {pinned}")
    folder = cache / "local" / f"{name}-{md5}"
    folder.mkdir(parents=True, exist_ok=True)
    tcz = folder / local.name
    if not tcz.is_file():
        shutil.copy2(local, tcz)
    (folder / f"{local.name}.md5.txt").write_text(f"{md5}  {local.name}\n")
    dep = local.with_name(f"{local.name}.dep")
    (folder / f"{local.name}.dep").write_text(dep.read_text() if dep.is_file() else "")
    log(f"{name}: official extension from {local}, md5 {md5}")
    return Extension(name, tcz, "local")


def _from_mirror(source: TinyCoreSource, name: str, cache: Path, log: Log,
                 seen: set[str] | None = None) -> list[Extension]:
    """``name`` and, first, everything its ``.dep`` lists, from the mirror."""
    seen = set() if seen is None else seen
    if name in seen:
        return []
    seen.add(name)
    folder = cache / "downloads" / f"tcz-{source.version}"
    tcz = folder / f"{name}.tcz"
    url = f"{source.mirror_base}/tcz/{tcz.name}"
    if not (tcz.is_file() and (folder / f"{tcz.name}.md5.txt").is_file()):
        md5 = fetch_checked(url, tcz, log)
        (folder / f"{tcz.name}.md5.txt").write_text(f"{md5}  {tcz.name}\n")
        try:
            with urllib.request.urlopen(f"{url}.dep", timeout=10) as answer:
                (folder / f"{tcz.name}.dep").write_bytes(answer.read(65536))
        except urllib.error.HTTPError as exc:
            if exc.code != 404:  # no .dep: no dependencies
                raise LabError(f"cannot download {url}.dep: {exc}") from exc
            (folder / f"{tcz.name}.dep").write_text("")
        except (urllib.error.URLError, OSError) as exc:
            raise LabError(f"cannot download {url}.dep: {exc}") from exc
    log(f"{name}: official extension from {url}, md5 {md5_file(tcz)}")
    found: list[Extension] = []
    for line in (folder / f"{tcz.name}.dep").read_text().split():
        dependency = line.strip().removesuffix(".tcz")
        if dependency and "KERNEL" not in dependency:  # kernel modules come with ours
            found += _from_mirror(source, dependency, cache, log, seen)
    return [*found, Extension(name, tcz, "mirror")]


def build_debian_extension(spec: DebianExtension, base_root: Path, base_md5: str,
                           cache: Path, log: Log) -> Path:
    """``spec`` built into ``cache/extensions/<key>/NAME.tcz`` (cached by key)."""
    closure = debs.library_closure(list(spec.packages))
    packages = debs.describe(closure)
    key = spec.key(packages, base_md5)
    folder = cache / "extensions" / f"{spec.name}-{key}"
    tcz = folder / f"{spec.name}.tcz"
    if tcz.is_file() and (folder / f"{spec.name}.tcz.md5.txt").is_file():
        log(f"{spec.name}: cached ({tcz}, md5 {md5_file(tcz)})")
        return tcz
    log(f"{spec.name}: building from Debian packages (replaces the official "
        f"{spec.replaces}.tcz)")
    for package in packages:
        _log_package(log, package)
    wanted = {package.name for package in packages if package.name in spec.packages}
    deb_files = debs.fetch(packages, cache / "debs", log)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix="building-") as work:
        top, pool, staging = Path(work, "top"), Path(work, "pool"), Path(work, "staging")
        debs.unpack([path for path, package in zip(deb_files, packages, strict=True)
                     if package.name in wanted], top)
        debs.unpack(deb_files, pool)
        _select(top, staging, spec)
        carried = Resolver(base_root, pool).carry(staging)
        log(f"  libraries carried: {', '.join(carried) or 'none'}")
        patched = patch_for_tinycore(staging)
        log(f"  ELF files pointed at Tiny Core's loader: {patched}")
        built = Path(work, "out")
        built.mkdir()
        _squash(staging, built / tcz.name)
        _write_metadata(built, spec, packages, carried)
        shutil.rmtree(folder, ignore_errors=True)
        built.rename(folder)
    log(f"{spec.name}: built {tcz} ({tcz.stat().st_size // 1024} KiB, md5 {md5_file(tcz)})")
    return tcz


def _select(top: Path, staging: Path, spec: DebianExtension) -> None:
    """The top packages' files, less what the spec drops, plus its own links and files."""
    shutil.copytree(top, staging, symlinks=True)
    for prefix in spec.drop:
        target = staging / prefix
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
    for cached in list(staging.rglob("__pycache__")):
        shutil.rmtree(cached)
    for path, link in spec.links.items():
        target = staging / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            target.unlink()
        target.symlink_to(link)
    for path, (text, mode) in spec.files.items():
        target = staging / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)
    # Debian's merged /usr keeps /lib, /bin and /sbin as links into /usr; Tiny Core has
    # real folders there, which a link in the extension would replace.
    for merged in ("lib", "bin", "sbin", "lib64"):
        if (staging / merged).is_symlink():
            (staging / merged).unlink()


def _squash(staging: Path, tcz: Path) -> None:
    # Tiny Core's own extensions: 4 KiB blocks, no extended attributes, owned by root.
    done = subprocess.run(
        ["mksquashfs", str(staging), str(tcz), "-b", "4096", "-no-xattrs", "-all-root",
         "-noappend", "-quiet", "-no-progress", "-comp", "xz",
         # The same inputs give the same file, whatever the day of the build.
         "-mkfs-time", "0", "-all-time", "0"],
        capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise LabError(f"mksquashfs {tcz.name} failed: {done.stderr.strip()}")


def _write_metadata(folder: Path, spec: DebianExtension, packages: list[debs.DebPackage],
                    carried: list[str]) -> None:
    tcz = folder / f"{spec.name}.tcz"
    (folder / f"{tcz.name}.md5.txt").write_text(f"{md5_file(tcz)}  {tcz.name}\n")
    (folder / f"{tcz.name}.dep").write_text("")
    lines = [
        f"Title:          {tcz.name}",
        f"Description:    {spec.description}",
        f"Replaces:       {spec.replaces}.tcz (the official extension, when the Tiny Core "
        "mirror cannot be reached)",
        "Origin:         built by labctl from Debian bookworm packages: each ELF file uses "
        "Tiny Core's loader and finds the libraries carried here first",
        f"Libraries:      {', '.join(carried) or 'none'} (those Tiny Core lacks)",
        "Packages:",
        *(f"                {p.name} {p.version} sha256:{p.sha256}" for p in packages),
    ]
    (folder / f"{tcz.name}.info").write_text("\n".join(lines) + "\n")
