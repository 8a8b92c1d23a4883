"""One emulated host: its network namespace, its overlay root filesystem and its init.

A host is booted by ``ip netns exec NS unshare --mount --pid --uts --ipc --fork`` running a
short shell that mounts the host's overlay and its ``/proc``, ``/sys``, ``/dev``, ``/run`` and
``/tmp`` inside the new mount namespace, then ``chroot``\\ s into it and execs busybox init as
PID 1. Every mount lives and dies with that mount namespace, so nothing is left mounted on the
host whatever happens, and killing the ``unshare`` process (``--kill-child``) ends the PID
namespace and every process in it. Only the overlay's upper folder persists: it is the
host's disk.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from labctl.errors import LabError

_BOOT = r"""
set -e
root=$1 lower=$2 upper=$3 work=$4 name=$5
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$upper,workdir=$work" "$root"
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount -t tmpfs -o mode=755 tmpfs "$root/dev"
for node in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
    IFS=: read -r dev major minor <<EOF
$node
EOF
    mknod -m 666 "$root/dev/$dev" c "$major" "$minor"
done
mkdir "$root/dev/pts" "$root/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
mount -t tmpfs tmpfs "$root/dev/shm"
mount -t tmpfs -o mode=755 tmpfs "$root/run"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
hostname "$name"
exec chroot "$root" /bin/busybox init
"""


@dataclass(frozen=True)
class Host:
    """Where one host's files live and what its namespace is called."""

    name: str
    namespace: str
    folder: Path  # .lab/hosts/NAME

    @property
    def upper(self) -> Path:
        return self.folder / "upper"

    @property
    def pid_file(self) -> Path:
        return self.folder / "pid"

    def prepare(self) -> None:
        """Create the overlay's folders (the upper one survives reboots)."""
        for part in ("upper", "work", "root"):
            (self.folder / part).mkdir(parents=True, exist_ok=True)

    def boot(self, lower: Path, log: Path) -> None:
        """Start the host's init in its namespaces, in the background."""
        # The work folder must be empty at each mount; it holds nothing worth keeping.
        shutil.rmtree(self.folder / "work", ignore_errors=True)
        (self.folder / "work").mkdir()
        command = [
            "ip", "netns", "exec", self.namespace,
            "unshare", "--mount", "--pid", "--uts", "--ipc", "--fork",
            "--kill-child=SIGKILL", "--propagation", "private",
            "sh", "-c", _BOOT, "boot",
            str(self.folder / "root"), str(lower), str(self.upper), str(self.folder / "work"),
            self.name,
        ]
        self._spawn(command, log)

    def _spawn(self, command: list[str], log: Path) -> None:
        """Start the boot command in the background, its output appended to ``log``."""
        with log.open("a") as out:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        self.pid_file.write_text(f"{process.pid}\n")

    def running(self) -> bool:
        """Whether the host's boot process (and so its PID namespace) is alive."""
        pid = self._pid()
        return pid is not None and _alive(pid)

    def stop(self) -> None:
        """End every process of the host: its init's namespace first, then strays."""
        pid = self._pid()
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGKILL)  # unshare ignores SIGTERM; --kill-child does the rest
            _wait_gone(pid)
        for stray in namespace_pids(self.namespace):
            with contextlib.suppress(ProcessLookupError):
                os.kill(stray, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)

    def _pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None


def namespace_pids(namespace: str) -> list[int]:
    """The processes inside a network namespace (empty if it does not exist)."""
    done = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True,
                          check=False)
    return [int(word) for word in done.stdout.split()] if done.returncode == 0 else []


def wait_for_port(address: str, port: int, timeout: float) -> None:
    """Wait until something accepts TCP connections at ``address:port``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((address, port), timeout=1):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise LabError(f"{address}:{port} did not answer within {timeout:.0f} s "
                               f"({exc})") from exc
            time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes; reap it if it is our child.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state == "Z":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def _wait_gone(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
