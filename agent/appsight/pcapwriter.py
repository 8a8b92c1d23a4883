"""Writing captures: classic pcap files, rotated by size and time, never left corrupt.

Files are classic pcap with nanosecond timestamps (readable by tcpdump, Wireshark, scapy and
appsight). Each record is written whole or not at all: on a write error (a full disk) the
file is cut back to its last complete record and closed, so whatever is on disk is valid.
"""

from __future__ import annotations

import contextlib
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import AppsightError

PCAP_NS_MAGIC = 0xA1B23C4D
SNAPLEN = 262_144
_HEADER = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")


class CaptureWriteError(AppsightError):
    """Writing a capture file failed (a full disk, a folder that cannot be written)."""


@dataclass
class WriterStats:
    files: int = 0
    packets: int = 0
    bytes: int = 0


class RotatingPcapWriter:
    """Writes frames to ``DIR/<prefix>[-<label>]-<time>-<n>.pcap``, starting a new file when
    the current one passes ``rotate_bytes`` or has been open ``rotate_seconds``."""

    def __init__(
        self,
        folder: str | Path,
        linktype: int,
        prefix: str = "appsight",
        label: str | None = None,
        rotate_bytes: int | None = None,
        rotate_seconds: float | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.linktype = linktype
        self.stem = prefix + (f"-{_safe(label)}" if label else "")
        self.rotate_bytes = rotate_bytes
        self.rotate_seconds = rotate_seconds
        self.stats = WriterStats()
        self.paths: list[Path] = []
        self._file = None
        self._file_bytes = 0
        self._opened_at = 0.0
        #: Whether this writer created the folder (only such a folder is handed to --user).
        self.made_folder = False
        try:
            self.folder.mkdir(parents=True)
            self.made_folder = True
        except FileExistsError:
            if not self.folder.is_dir():
                raise CaptureWriteError(f"{folder}: exists and is not a folder") from None
        except OSError as exc:
            raise CaptureWriteError(f"{folder}: cannot create the folder: {exc.strerror}") from None

    def set_linktype(self, linktype: int) -> None:
        """Frames of another link type from now on: a pcap file holds one link type, so the
        next frames start a new file."""
        if linktype != self.linktype:
            self.close()
            self.linktype = linktype

    def _create(self, stamp: str) -> Path:
        """A new file, never an existing one: exclusive create, no symbolic link followed (the
        agent may be root); a name taken already (a restart in the same second) gets the next
        number."""
        number = len(self.paths) + 1
        while True:
            path = self.folder / f"{self.stem}-{stamp}-{number:04d}.pcap"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            except FileExistsError:
                number += 1
                continue
            except OSError as exc:
                raise CaptureWriteError(f"{path}: cannot write: {exc.strerror}") from None
            self._file = os.fdopen(fd, "wb")
            return path

    def _open_next(self) -> None:
        self.close()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        path = self._create(stamp)
        try:
            header = _HEADER.pack(PCAP_NS_MAGIC, 2, 4, 0, 0, SNAPLEN, self.linktype)
            self._file.write(header)
            self._file.flush()
        except OSError as exc:
            raise CaptureWriteError(f"{path}: cannot write: {exc.strerror}") from None
        self.paths.append(path)
        self.stats.files += 1
        self._file_bytes = _HEADER.size
        self._opened_at = time.monotonic()

    def _due(self) -> bool:
        if self._file is None:
            return True
        if self.rotate_bytes is not None and self._file_bytes >= self.rotate_bytes:
            return True
        return (
            self.rotate_seconds is not None
            and time.monotonic() - self._opened_at >= self.rotate_seconds
        )

    def write(self, frames: list[tuple[int, int, bytes]]) -> None:
        """Append frames as (timestamp ns, original length, captured bytes)."""
        while frames:
            if self._due():
                self._open_next()
            cut = len(frames)
            if self.rotate_bytes is not None:
                # Split where the file reaches its size: no file passes it by more than a packet.
                room = self.rotate_bytes - self._file_bytes
                for k, (_, _, frame) in enumerate(frames):
                    room -= _RECORD.size + len(frame)
                    if room <= 0:
                        cut = k + 1
                        break
            self._write_chunk(frames[:cut])
            frames = frames[cut:]

    def _write_chunk(self, frames: list[tuple[int, int, bytes]]) -> None:
        chunk = bytearray()
        for ts_ns, wirelen, frame in frames:
            seconds, nanos = divmod(ts_ns, 1_000_000_000)
            chunk += _RECORD.pack(seconds & 0xFFFFFFFF, nanos, len(frame), wirelen)
            chunk += frame
        assert self._file is not None
        good = self._file_bytes
        try:
            self._file.write(chunk)
            self._file.flush()
        except OSError as exc:
            self._cut_back(good)
            raise CaptureWriteError(
                f"{self.paths[-1]}: cannot write ({exc.strerror}); the file was closed after "
                "its last complete packet"
            ) from None
        self._file_bytes += len(chunk)
        self.stats.packets += len(frames)
        self.stats.bytes += sum(len(f) for _, _, f in frames)

    def _cut_back(self, size: int) -> None:
        """Drop a partly written chunk so the file ends on a record boundary."""
        handle, self._file = self._file, None
        with contextlib.suppress(OSError):
            if handle is not None:
                handle.close()
        with contextlib.suppress(OSError):
            os.truncate(self.paths[-1], size)

    def rotate_if_due(self) -> None:
        """Start a new file now if the time limit has passed (also without new packets)."""
        if self._file is not None and self.rotate_seconds is not None and self._due():
            self.close()

    def close(self) -> None:
        if self._file is not None:
            handle, self._file = self._file, None
            with contextlib.suppress(OSError):
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(OSError):
                handle.close()


def _safe(label: str) -> str:
    """A label as a file-name part: letters, digits, dot, dash and underscore."""
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in label)
    return cleaned.strip("._") or "label"
