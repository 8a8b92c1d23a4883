"""Command-line inputs: which capture files a list of paths stands for."""

from __future__ import annotations

from pathlib import Path

from .errors import UsageError

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".pcap.gz", ".pcapng.gz", ".cap.gz")


def expand_captures(inputs: list[str]) -> list[str]:
    """Files as given, folders replaced by the captures below them (sorted), ``-`` kept."""
    if not inputs:
        raise UsageError("no capture given (a file, a folder, or - for standard input)")
    found: list[str] = []
    for item in inputs:
        if item == "-":
            found.append(item)
            continue
        path = Path(item)
        if path.is_dir():
            below = sorted(
                str(p) for p in path.rglob("*")
                if p.is_file() and p.name.lower().endswith(CAPTURE_SUFFIXES)
            )
            if not below:
                raise UsageError(f"{item}: folder holds no .pcap/.pcapng/.cap files")
            found.extend(below)
        elif path.exists():
            found.append(item)
        else:
            raise UsageError(f"{item}: no such file or folder")
    return found
