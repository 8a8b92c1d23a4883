"""Network namespaces for the live tests and the live benchmark.

:func:`veth_pair` creates two network namespaces and a veth pair between them: the sending
end in one, the receiving end (where the agent listens) in the other. Nothing of it touches
the host's own namespace: frames sent into the sending end can only reach the receiving end.
IPv6 is switched off in both namespaces before the links come up, so the kernel adds no
traffic of its own (router solicitations, MLD reports, DAD): the receiving end sees exactly
the frames a test sends. Deleting the namespaces (always, in ``finally``) deletes the veth
pair; processes a test started inside them are ended first, by their pid.

Frames are sent from this process through an ``AF_PACKET`` socket opened inside the sending
namespace (a helper thread enters the namespace with ``setns`` just to create the socket, so
the rest of the process stays where it is). :class:`Replayer` sends captured frames with
their timing (scaled and with long silences shortened) or at a fixed rate, and records the
wall-clock time of every send, so a pcap of exactly what was sent can be written.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")
SOL_PACKET, PACKET_STATISTICS = 263, 6


def netns_unavailable() -> str | None:
    """Why namespaces cannot be used here (a skip reason), or None if they can."""
    if os.geteuid() != 0:
        return "live tests need root (network namespaces, veth pairs, raw sockets)"
    if shutil.which("ip") is None:
        return "live tests need iproute2's 'ip' command"
    probe = f"aspr{os.getpid()}"
    try:
        done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True,
                              timeout=10, check=False)
        if done.returncode != 0:
            return f"'ip netns add' does not work here: {done.stderr.strip()}"
        link = subprocess.run(
            ["ip", "-n", probe, "link", "add", "pv0", "type", "veth", "peer", "name", "pv1"],
            capture_output=True, text=True, timeout=10, check=False,
        )
        if link.returncode != 0:
            return f"cannot create a veth pair: {link.stderr.strip()}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"'ip netns' is unavailable: {exc}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10,
                       check=False)
    return None


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _in_netns(ns: str, *cmd: str) -> None:
    done = subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True,
                          timeout=10, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"in {ns}: {' '.join(cmd)}: {done.stderr.strip()}")


@dataclass
class VethPair:
    """Two namespaces joined by a veth pair: frames sent on ``tx_if`` arrive on ``rx_if``."""

    tx_ns: str
    rx_ns: str
    tx_if: str
    rx_if: str
    started: list[subprocess.Popen] = field(default_factory=list)

    def command(self, *cmd: str | os.PathLike[str], cpu: int | None = None) -> list[str]:
        """``cmd`` run inside the receiving namespace (optionally pinned to one CPU)."""
        pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
        return ["ip", "netns", "exec", self.rx_ns, *pin, *(str(c) for c in cmd)]

    def popen(self, *cmd: str | os.PathLike[str], cpu: int | None = None,
              **kwargs: object) -> subprocess.Popen:
        """Start ``cmd`` in the receiving namespace; it is killed when the pair goes."""
        env = dict(os.environ)
        env.pop("SUDO_USER", None)  # else the agent would switch to that user on its own
        env.setdefault("PYTHONUNBUFFERED", "1")
        proc = subprocess.Popen(self.command(*cmd, cpu=cpu), env=env, **kwargs)  # type: ignore[call-overload]
        self.started.append(proc)
        return proc

    def packet_sockets(self, pid: int) -> list[dict[str, int]]:
        """The AF_PACKET sockets that process ``pid`` holds (from /proc/PID/net/packet, which
        lists those of its whole namespace, matched by inode with its open files)."""
        inodes = set()
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(int(target[8:-1]))
        try:
            lines = Path(f"/proc/{pid}/net/packet").read_text().splitlines()[1:]
        except OSError:
            return []
        rows = []
        for line in lines:
            parts = line.split()
            if int(parts[8]) in inodes:
                rows.append({"iface": int(parts[4]), "running": int(parts[5]),
                             "rmem": int(parts[6]), "inode": int(parts[8])})
        return rows

    def wait_listening(self, proc: subprocess.Popen, timeout: float = 20.0,
                       settle: float = 0.3) -> None:
        """Wait until ``proc`` has a packet socket bound to the receiving end.

        scapy flushes what arrived between ``bind`` and the end of its set-up, so the
        function waits ``settle`` seconds more before frames may be sent.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the agent ended before listening (status {proc.returncode})")
            if any(s["iface"] != 0 for s in self.packet_sockets(proc.pid)):
                time.sleep(settle)
                return
            time.sleep(0.02)
        raise TimeoutError("the agent did not open its capture socket in time")

    def sender(self) -> Replayer:
        return Replayer(open_packet_socket(self.tx_ns, self.tx_if))

    def link_stats(self, side: str = "rx") -> dict[str, int]:
        """The kernel's counters of one end (``ip -s link``): packets, bytes, dropped."""
        ns, name = (self.rx_ns, self.rx_if) if side == "rx" else (self.tx_ns, self.tx_if)
        done = subprocess.run(["ip", "-n", ns, "-s", "-s", "link", "show", name],
                              capture_output=True, text=True, timeout=10, check=True)
        lines = done.stdout.splitlines()
        stats: dict[str, int] = {}
        for i, line in enumerate(lines):
            words = line.split()
            if words[:1] in (["RX:"], ["TX:"]):
                values = lines[i + 1].split()
                prefix = words[0][:2].lower()
                for key, value in zip(words[1:], values, strict=False):
                    with contextlib.suppress(ValueError):
                        stats[f"{prefix}_{key}"] = int(value)
        return stats


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGKILL a process we started if it is still running, and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)


@contextlib.contextmanager
def veth_pair(tag: str, mtu: int = 1500) -> Iterator[VethPair]:
    """Create the namespaces and the veth pair; delete everything afterwards, also on failure.

    ``tag`` makes the names unique (use the pid and a counter); interface names stay within
    Linux's 15 characters.
    """
    tag = re.sub(r"[^a-z0-9]", "", tag.lower())[-9:]
    pair = VethPair(tx_ns=f"astx-{tag}", rx_ns=f"asrx-{tag}", tx_if=f"vt{tag}",
                    rx_if=f"vr{tag}")
    created: list[str] = []
    try:
        for ns in (pair.tx_ns, pair.rx_ns):
            _ip("netns", "add", ns)
            created.append(ns)
            # no IPv6 (where the kernel has it), so links that come up stay silent
            _in_netns(ns, "sh", "-c", "if [ -d /proc/sys/net/ipv6 ]; then "
                      "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 && "
                      "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6; fi")
        _ip("link", "add", pair.tx_if, "netns", pair.tx_ns, "type", "veth", "peer", "name",
            pair.rx_if, "netns", pair.rx_ns)
        for ns, name in ((pair.tx_ns, pair.tx_if), (pair.rx_ns, pair.rx_if)):
            _ip("-n", ns, "link", "set", name, "mtu", str(mtu), "up")
        yield pair
    finally:
        for proc in pair.started:
            stop_process(proc)
        for ns in created:
            # anything else still running in our namespaces was started by this process
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                                  timeout=10, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10,
                           check=False)


def open_packet_socket(ns: str, iface: str) -> socket.socket:
    """An AF_PACKET socket bound to ``iface`` inside namespace ``ns``, for sending only."""
    result: dict[str, object] = {}

    def enter_and_open() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(NETNS_DIR / ns, os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({ns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            # protocol 0: the socket receives nothing, it only sends
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            sock.bind((iface, 0))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            result["socket"] = sock
        except BaseException as exc:  # handed to the caller
            result["error"] = exc

    # The thread's namespace dies with the thread; the socket stays in the namespace.
    thread = threading.Thread(target=enter_and_open, name="netns-open")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["socket"]  # type: ignore[return-value]


@dataclass
class Sent:
    """What a replay sent: the frames and the wall-clock time (ns) of each send."""

    frames: list[bytes]
    times_ns: list[int]

    @property
    def bytes(self) -> int:
        return sum(len(f) for f in self.frames)


class Replayer:
    """Sends frames into the sending end of a :class:`VethPair`."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.count = 0  # frames sent so far (read by other threads)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Replayer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_timed(self, frames: Sequence[bytes], offsets_ns: Sequence[int],
                   stop: threading.Event | None = None) -> Sent:
        """Send frame ``i`` at ``offsets_ns[i]`` after the start (sleeping, then spinning)."""
        times: list[int] = []
        send = self.sock.send
        start = time.monotonic_ns()
        for frame, offset in zip(frames, offsets_ns, strict=True):
            if stop is not None and stop.is_set():
                break
            due = start + offset
            while True:
                left = due - time.monotonic_ns()
                if left <= 0:
                    break
                if left > 2_000_000:
                    time.sleep((left - 1_000_000) / 1e9)
            send(frame)
            times.append(time.time_ns())
            self.count += 1
        return Sent(list(frames[: len(times)]), times)

    def send_rate(self, frames: Sequence[bytes], count: int, pps: float | None,
                  stop: threading.Event | None = None, record: bool = False) -> tuple[int, float]:
        """Send ``count`` frames (cycling through ``frames``) at ``pps`` (None: at once).

        Returns (frames sent, seconds taken). Pacing is checked every 64 frames, so the rate
        holds over milliseconds, not per frame.
        """
        send = self.sock.send
        n = len(frames)
        sent = 0
        start = time.perf_counter()
        step = 64
        while sent < count:
            if stop is not None and stop.is_set():
                break
            if pps is not None:
                due = start + sent / pps
                now = time.perf_counter()
                if due > now:
                    if due - now > 0.002:
                        time.sleep(due - now - 0.001)
                    while time.perf_counter() < due:
                        pass
            upto = min(sent + step, count)
            for i in range(sent, upto):
                send(frames[i % n])
            sent = upto
            self.count = sent
        return sent, time.perf_counter() - start


def kernel_line_counts(text: str) -> tuple[int, int] | None:
    """(received, dropped) from appsight's 'kernel: R packets received ..., D dropped' line."""
    found = re.findall(r"kernel: (\d+) packets received by the socket, (\d+) dropped", text)
    if not found:
        return None
    received, dropped = found[-1]
    return int(received), int(dropped)


def write_pcap(path: Path, frames: Sequence[bytes], times_ns: Sequence[int]) -> None:
    """A classic nanosecond pcap (Ethernet) of ``frames`` stamped ``times_ns``."""
    with open(path, "wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262_144, 1))
        for frame, ts in zip(frames, times_ns, strict=True):
            seconds, nanos = divmod(ts, 1_000_000_000)
            out.write(struct.pack("<IIII", seconds, nanos, len(frame), len(frame)))
            out.write(frame)
