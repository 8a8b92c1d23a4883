"""Lab hosts reached through a local command (ssh, adb): run a shell script, fetch a file.

The gateway and the emulated phone are reached over SSH with the lab's ssh_config; the
Android phone over adb (:mod:`labctl.phone`). What is asked of them is the same.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from labctl.errors import LabError


class RemoteHost:
    """A host of the lab; subclasses say which local command reaches its shell."""

    name = "host"

    def command(self, script: str) -> list[str]:
        """The local command that runs ``script`` in the host's shell."""
        raise NotImplementedError

    def shell(self, script: str, timeout: float = 60) -> str:
        """Run ``script`` on the host and return its output; a failure is a LabError."""
        try:
            done = subprocess.run(self.command(script), capture_output=True, text=True,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"the {self.name} did not answer within {timeout:.0f} s") from exc
        if done.returncode != 0:
            message = done.stderr.strip().splitlines()[-1:] or ["no message"]
            raise LabError(f"on the {self.name}: {script[:60]}...: {message[0]}")
        return done.stdout

    def fetch(self, path: str, local: Path) -> Path:
        """Copy a file from the host (byte for byte: ``cat`` through the transport)."""
        local.parent.mkdir(parents=True, exist_ok=True)
        with local.open("wb") as out:
            done = subprocess.run(self.command(f"cat {shlex.quote(path)}"), stdout=out,
                                  stderr=subprocess.PIPE, timeout=120, check=False)
        if done.returncode != 0:
            raise LabError(f"cannot fetch {path} from the {self.name}: "
                           f"{done.stderr.decode(errors='replace').strip()}")
        return local


class SshHost(RemoteHost):
    """A host of the emulated lab, over SSH with the lab's ssh_config."""

    def __init__(self, ssh_config: Path, host: str) -> None:
        self.ssh_config = ssh_config
        self.host = host
        self.name = host

    def command(self, script: str) -> list[str]:
        return ["ssh", "-F", str(self.ssh_config), self.host, script]
