"""Reaching the phone to record its ground truth: over SSH (emulated) or adb (Android-x86).

Both phones are asked the same things in the same POSIX shell (Android's mksh understands
it too): sample the kernel's socket tables while traffic runs, and list the apps with their
UIDs. Only the transport differs, so the labeller downstream cannot tell them apart.
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from labctl.errors import LabError

#: Samples the socket tables every 0.05 s (one process per sample, so it stays cheap), in
#: the format appsight's socket labeller reads. A socket that opens and closes between two
#: samples is missed; its flow stays unlabelled (the demo reports how many were labelled).
SOCKET_SAMPLER = ("while :; do cat /proc/net/tcp /proc/net/tcp6 /proc/net/udp /proc/net/udp6; "
                  "sleep 0.05; done")

#: Where the phone keeps its samples while a session runs.
PHONE_WORK_DIR = "/data/local/tmp/appsight"


@dataclass(frozen=True)
class SshPhone:
    """The emulated phone, reached with the lab's ssh_config."""

    ssh_config: Path
    host: str = "phone"

    def command(self, script: str) -> list[str]:
        """The local command that runs ``script`` in the phone's shell."""
        return ["ssh", "-F", str(self.ssh_config), self.host, script]

    def shell(self, script: str, timeout: float = 60) -> str:
        """Run ``script`` on the phone and return its output; a failure is a LabError."""
        try:
            done = subprocess.run(self.command(script), capture_output=True, text=True,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"the phone did not answer within {timeout:.0f} s") from exc
        if done.returncode != 0:
            message = done.stderr.strip().splitlines()[-1:] or ["no message"]
            raise LabError(f"on the phone: {script[:60]}...: {message[0]}")
        return done.stdout

    def start_sampler(self, name: str) -> str:
        """Start sampling the socket tables into a file on the phone; its path."""
        path = f"{PHONE_WORK_DIR}/{name}.sockets"
        pid = self.shell(f"mkdir -p {PHONE_WORK_DIR}; "
                         f"nohup sh -c {shlex.quote(SOCKET_SAMPLER)} > {path} 2>/dev/null "
                         f"< /dev/null & echo $!").strip()
        self.shell(f"echo {pid} > {path}.pid")
        return path

    def stop_sampler(self, path: str) -> None:
        self.shell(f"kill $(cat {path}.pid) 2>/dev/null; rm -f {path}.pid")

    def fetch(self, path: str, local: Path) -> Path:
        """Copy a file from the phone."""
        local.parent.mkdir(parents=True, exist_ok=True)
        with local.open("wb") as out:
            done = subprocess.run(self.command(f"cat {shlex.quote(path)}"), stdout=out,
                                  stderr=subprocess.PIPE, timeout=120, check=False)
        if done.returncode != 0:
            raise LabError(f"cannot fetch {path} from the phone: "
                           f"{done.stderr.decode(errors='replace').strip()}")
        return local
