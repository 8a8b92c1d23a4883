"""Which model files an operator allows the agent to load: a list of their SHA-256s.

A model file's own SHA-256 (in its header) proves the file is whole, not who made it:
anyone who can write the file can recompute it. On a gateway the agent loads models as
root, so the operator can pin what it may load with ``--trusted-models FILE``: the file
lists the SHA-256 of every model allowed, in ``sha256sum``'s format, so

    sha256sum model.skops > /opt/appsight/trusted-models.sha256

makes one. A model whose whole-file SHA-256 is not listed is refused before skops reads it.
The list protects only if an attacker who can replace the model cannot also edit the list,
so a list that its owner's group or others may write (or that is a symlink) is refused,
as sshd refuses a world-writable ``authorized_keys``.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import AppsightError

MAX_LIST_BYTES = 1 << 20
#: ``sha256sum`` lines: the digest, then (optionally) a space, a space or ``*``, and a name.
LINE = re.compile(r"(?P<digest>[0-9a-fA-F]{64})(?:[ \t][ *]?(?P<name>.*))?")


class TrustError(AppsightError):
    """A trusted-models list that cannot be used, or a model it does not allow."""


@dataclass(frozen=True)
class TrustedModels:
    """The SHA-256s (lower case) an operator allows, and the file they came from."""

    source: str
    digests: frozenset[str]

    def check(self, model: str | Path, digest: str) -> None:
        """Refuse ``model`` (its whole-file SHA-256 is ``digest``) unless it is listed."""
        if digest.lower() not in self.digests:
            raise TrustError(f"{model}: SHA-256 {digest} is not in {self.source}; refusing the "
                             "model (add its line from sha256sum if you trust it)")


def read_trusted_models(path: str | Path) -> TrustedModels:
    """Read and check an allow-list written by ``sha256sum`` (``#`` comments allowed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise TrustError(f"{path}: no such trusted-models list") from None
    except OSError as exc:
        reason = "it is a symlink" if exc.errno == errno.ELOOP else exc.strerror
        raise TrustError(f"{path}: cannot read the trusted-models list: {reason}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise TrustError(f"{path}: the trusted-models list is not a regular file")
        if info.st_mode & 0o022:
            raise TrustError(f"{path}: the trusted-models list may be written by others "
                             f"(mode {stat.S_IMODE(info.st_mode):o}); chmod go-w it")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(MAX_LIST_BYTES + 1)
    except OSError as exc:
        raise TrustError(f"{path}: cannot read the trusted-models list: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_LIST_BYTES:
        raise TrustError(f"{path}: the trusted-models list is over {MAX_LIST_BYTES >> 20} MB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise TrustError(f"{path}: the trusted-models list is not UTF-8 text") from None
    digests = set()
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = LINE.fullmatch(line)
        if match is None:
            raise TrustError(f"{path}:{number}: not a SHA-256 line (sha256sum's format: "
                             "64 hex digits, two spaces, a name)")
        digests.add(match["digest"].lower())
    if not digests:
        raise TrustError(f"{path}: the trusted-models list names no model")
    return TrustedModels(str(path), frozenset(digests))
