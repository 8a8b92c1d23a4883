"""Making Debian's binaries run on Tiny Core: which libraries they need, and where to look.

A binary built for Debian asks for its loader at ``/lib64/ld-linux-x86-64.so.2`` and finds
its libraries in Debian's multiarch folders (``/usr/lib/x86_64-linux-gnu``), neither of
which Tiny Core has. So an extension built from Debian packages carries every library its
binaries need that Tiny Core itself does not provide (with the symbol versions asked for:
Tiny Core's ``libcrypt.so.1`` lacks libxcrypt's ``XCRYPT_2.0``, which Debian's sshd needs),
and each of its ELF files is patched (``patchelf``) to use Tiny Core's loader and to look in
the multiarch folders first. Nothing outside the extension changes: Tiny Core's own
programs never see Debian's libraries.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerDefSection, GNUVerNeedSection

from labctl.errors import LabError

#: Tiny Core's dynamic loader (x86_64).
LOADER = "/lib/ld-linux-x86-64.so.2"
#: Where the extension's own libraries live, searched before Tiny Core's.
MULTIARCH_DIRS = ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu")
#: Library folders of Tiny Core's base system.
BASE_LIBRARY_DIRS = ("lib", "usr/lib", "usr/local/lib")
#: Library folders of unpacked Debian packages.
DEBIAN_LIBRARY_DIRS = ("usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu", "usr/lib", "lib")


def is_elf(path: Path) -> bool:
    if path.is_symlink() or not path.is_file():
        return False
    with path.open("rb") as handle:
        return handle.read(4) == b"\x7fELF"


@dataclass
class ElfInfo:
    """What the loader needs to know of one ELF file."""

    needed: list[str] = field(default_factory=list)
    #: For each needed library, the symbol versions asked of it.
    versions_needed: dict[str, set[str]] = field(default_factory=dict)
    versions_defined: set[str] = field(default_factory=set)
    interpreter: str | None = None


def read_elf(path: Path) -> ElfInfo:
    info = ElfInfo()
    try:
        with path.open("rb") as handle:
            elf = ELFFile(handle)
            for segment in elf.iter_segments():
                if segment.header.p_type == "PT_INTERP":
                    info.interpreter = segment.get_interp_name()
            for section in elf.iter_sections():
                if isinstance(section, DynamicSection):
                    info.needed += [tag.needed for tag in section.iter_tags()
                                    if tag.entry.d_tag == "DT_NEEDED"]
                elif isinstance(section, GNUVerNeedSection):
                    for need, auxiliaries in section.iter_versions():
                        info.versions_needed.setdefault(need.name, set()).update(
                            aux.name for aux in auxiliaries)
                elif isinstance(section, GNUVerDefSection):
                    for _definition, auxiliaries in section.iter_versions():
                        info.versions_defined.update(aux.name for aux in auxiliaries)
    except (ELFError, OSError) as exc:
        raise LabError(f"cannot read the ELF file {path}: {exc}") from exc
    return info


def _library_index(root: Path, folders: Iterable[str]) -> dict[str, Path]:
    """File name -> path of every library (file or link) in ``folders`` below ``root``."""
    index: dict[str, Path] = {}
    for folder in folders:
        base = root / folder
        if not base.is_dir():
            continue
        for entry in sorted(base.iterdir()):
            if ".so" in entry.name and entry.name not in index:
                index[entry.name] = entry
    return index


class Resolver:
    """Finds, for the ELF files of an extension, the libraries it must carry."""

    def __init__(self, base_root: Path, pool_root: Path) -> None:
        self.base_root = base_root
        self.pool_root = pool_root
        self.base = _library_index(base_root, BASE_LIBRARY_DIRS)
        self.pool = _library_index(pool_root, DEBIAN_LIBRARY_DIRS)
        self._base_versions: dict[str, set[str]] = {}

    def base_satisfies(self, soname: str, versions: set[str]) -> bool:
        """Whether Tiny Core's own copy of ``soname`` has every symbol version asked for."""
        path = self.base.get(soname)
        if path is None:
            return False
        if not versions:
            return True
        if soname not in self._base_versions:
            self._base_versions[soname] = read_elf(path.resolve()).versions_defined
        return versions <= self._base_versions[soname]

    def carry(self, staging: Path) -> list[str]:
        """Copy into ``staging`` every library its ELF files need and Tiny Core lacks.

        Returns the libraries copied. A library that neither Tiny Core nor the packages
        provide is an error naming it and the file that needs it.
        """
        carried: list[str] = []
        queue = [path for path in walk_files(staging) if is_elf(path)]
        present = {path.name for path in walk_files(staging)}
        while queue:
            path = queue.pop()
            info = read_elf(path)
            for soname in info.needed:
                if soname in present:
                    continue
                if self.base_satisfies(soname, info.versions_needed.get(soname, set())):
                    continue
                source = self.pool.get(soname)
                if source is None:
                    raise LabError(f"{path.relative_to(staging)} needs {soname}, which "
                                   f"neither Tiny Core nor the Debian packages provide")
                target = _copy_library(source, self.pool_root, staging)
                present.add(soname)
                carried.append(soname)
                queue.append(target)
        return sorted(carried)


def _copy_library(source: Path, pool_root: Path, staging: Path) -> Path:
    """Copy a library and the chain of links that leads to it; returns the real file."""
    relative = source.relative_to(pool_root)
    # Debian's merged /usr: /lib is a link to /usr/lib there, so keep the /usr path.
    target = staging / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_symlink():
        link = os.readlink(source)
        if not target.exists() and not target.is_symlink():
            target.symlink_to(link)
        real = (source.parent / link).resolve()
        if not str(real).startswith(str(pool_root.resolve())):
            raise LabError(f"{relative} points outside the packages: {link}")
        return _copy_library(pool_root / real.relative_to(pool_root.resolve()),
                             pool_root, staging)
    if not target.exists():
        shutil.copy2(source, target)
    return target


def walk_files(root: Path) -> Iterator[Path]:
    for folder, _dirs, files in os.walk(root):
        for name in files:
            yield Path(folder) / name


def patch_for_tinycore(staging: Path) -> int:
    """Point every ELF file below ``staging`` at Tiny Core's loader and the multiarch
    folders; returns how many files were patched."""
    patched = 0
    rpath = ":".join(MULTIARCH_DIRS)
    for path in sorted(walk_files(staging)):
        if not is_elf(path):
            continue
        info = read_elf(path)
        command = ["patchelf"]
        if info.interpreter and info.interpreter != LOADER:
            command += ["--set-interpreter", LOADER]
        if info.needed:
            command += ["--set-rpath", rpath]
        if len(command) == 1:
            continue
        mode = path.stat().st_mode
        path.chmod(mode | 0o200)
        done = subprocess.run([*command, str(path)], capture_output=True, text=True,
                              check=False)
        path.chmod(mode)
        if done.returncode != 0:
            raise LabError(f"patchelf {path.relative_to(staging)}: {done.stderr.strip()}")
        patched += 1
    return patched
