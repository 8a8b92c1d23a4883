"""Output files that a failed run cannot destroy, and that an attacker cannot redirect.

The agent runs as root on a gateway, so an output path is never opened as given: the data goes
to a new file beside it (exclusive create, random name: nothing planted there, not even a
symbolic link, is followed), which replaces the target only when the command decides that what
it wrote is worth keeping. A run that could read nothing leaves an existing file as it was. And
an output that is also one of the command's inputs is refused before anything is read.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from .errors import UsageError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class AtomicFile:
    """A file written under a temporary name beside ``target``; :meth:`commit` renames it over
    the target, :meth:`abort` deletes it. As a context manager: commit on success, abort on an
    exception."""

    def __init__(self, target: str | Path, binary: bool = False, newline: str | None = "") -> None:
        self.target = Path(target)
        self.done = False
        #: A device, pipe or terminal (``/dev/stdout``, ``/dev/null``): written in place, as
        #: there is no file to keep and a rename would replace the device node itself.
        self.direct = _is_special(self.target)
        if self.direct:
            try:
                self.handle: IO[Any] = open(  # noqa: SIM115 - closed by commit or abort
                    self.target, "wb" if binary else "w",
                    **({} if binary else {"newline": newline, "encoding": "utf-8"}))
            except OSError as exc:
                raise UsageError(f"{target}: cannot write: {exc.strerror}") from None
            self.path = self.target
            return
        folder = self.target.parent
        try:
            fd, name = tempfile.mkstemp(dir=folder, prefix=f".{self.target.name}.",
                                        suffix=".part")
        except OSError as exc:
            raise UsageError(f"{target}: cannot write: {exc.strerror}") from None
        self.path = Path(name)
        os.fchmod(fd, 0o666 & ~_umask())  # what open() would have given, not mkstemp's 0600
        self.handle = (os.fdopen(fd, "wb") if binary else
                       os.fdopen(fd, "w", newline=newline, encoding="utf-8"))

    def commit(self) -> None:
        """Close and put the file in place of the target (a symbolic link there is replaced,
        not followed)."""
        if self.done:
            return
        self.done = True
        try:
            self.handle.close()
            if not self.direct:
                os.replace(self.path, self.target)
        except OSError as exc:
            self._discard()
            raise UsageError(f"{self.target}: cannot write: {exc.strerror}") from None

    def abort(self) -> None:
        """Close and delete the temporary file; the target stays as it was."""
        if self.done:
            return
        self.done = True
        with contextlib.suppress(OSError):  # a full disk: the file goes anyway
            self.handle.close()
        self._discard()

    def _discard(self) -> None:
        """Delete the temporary file; never the target (a device written in place)."""
        if not self.direct and self.path != self.target:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        if kind is None:
            self.commit()
        else:
            self.abort()


def _is_special(path: Path) -> bool:
    """Whether ``path`` (followed through links) exists and is not a regular file."""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def refuse_input_as_output(output: str | Path | None, inputs: Iterable[str | Path]) -> None:
    """A one-line error when the output would overwrite one of the inputs."""
    if output in (None, "-"):
        return
    target = Path(output)  # type: ignore[arg-type]
    if not target.exists():
        return
    for item in inputs:
        if str(item) != "-" and _same_file(Path(item), target):
            raise UsageError(f"{output}: is also an input; write the output elsewhere")
