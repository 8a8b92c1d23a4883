"""The live agent on real interfaces: a veth pair between two network namespaces.

Frames of a real capture are sent into one end of a veth pair (see :mod:`netns`); ``appsight
capture``, ``flows`` and ``live`` listen on the other end, each in its own process inside the
receiving namespace, as a user runs them. What they report is compared with the offline
commands on a pcap of exactly what was sent (the frames, stamped with the times they were
sent): the same flows, burst for burst, and with a model the same app and confidence per flow.
Each burst's report must appear within the burst gap + 0.3 s of the burst's last packet.

One replay of nDPI's ``signal.pcap`` (637 packets in 9 bursts at a 0.5 s gap; silences
shortened to 0.9 s, gaps inside bursts capped at 0.3 s so that no gap sits near the burst gap)
feeds all three commands at once (a module fixture); the other tests each make their own
namespaces. Tests that need namespaces are skipped, with the reason, without root or without
``ip netns``; those that replay a corpus capture (marked ``shared_data``) without the corpus.
The standard-input tests need neither root nor namespaces.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from netns import (
    Sent,
    VethPair,
    kernel_line_counts,
    netns_unavailable,
    stop_process,
    veth_pair,
    write_pcap,
)
from test_train_classify import SAMPLE, SAMPLE_LABELS

REPO = Path(__file__).resolve().parent.parent
APPSIGHT = [sys.executable, "-m", "appsight"]
GAP = 0.5  # --burst-gap of the replay tests
#: A burst's report comes from the clock: after GAP of silence, while the interface or stream
#: is still open. How soon after the gap (about 10 ms on an idle machine) depends on the load
#: beside the test, so it is not a test's business; this bound only tells a hang from a delay.
HANG_BOUND = 30.0
#: The sender stamps a packet after writing it, the agent starts its silence clock when the
#: packet arrives: that much earlier a report still came after the gap.
CLOCK_SKEW = 0.05
REPLAYED = "signal.pcap"
_counter = itertools.count()


# ------------------------------------------------------------------------------ helpers
@pytest.fixture(scope="session")
def netns_ok() -> None:
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def veth(netns_ok: None) -> Iterator[VethPair]:
    """A fresh veth pair between two fresh namespaces, deleted afterwards whatever happens."""
    with veth_pair(f"{os.getpid()}{next(_counter)}") as pair:
        yield pair


@pytest.fixture(scope="module")
def sample_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model from the sample capture, trained as in test_train_classify."""
    folder = tmp_path_factory.mktemp("live-model")
    (folder / "labels.csv").write_text(SAMPLE_LABELS)
    model = folder / "sample.model"
    done = subprocess.run(
        [*APPSIGHT, "train", "--labels", folder / "labels.csv", SAMPLE, "-o", model,
         "--trees", "10"], capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
    )
    assert done.returncode == 0, done.stderr
    return model


def read_frames(path: Path) -> tuple[list[bytes], list[int]]:
    """Frames and timestamps (ns) of a pcap or pcapng file, read with scapy (not appsight)."""
    from scapy.utils import RawPcapNgReader, RawPcapReader

    frames, stamps = [], []
    with open(path, "rb") as handle:
        ng = handle.read(4) == b"\x0a\x0d\x0d\x0a"
    with (RawPcapNgReader if ng else RawPcapReader)(str(path)) as reader:
        for data, meta in reader:
            frames.append(bytes(data))
            if ng:
                stamps.append(((meta.tshigh << 32) | meta.tslow) * 1_000_000_000
                              // meta.tsresol)
            else:
                unit = 1 if reader.nano else 1000
                stamps.append(meta.sec * 1_000_000_000 + meta.usec * unit)
    return frames, stamps


def schedule(stamps: Sequence[int], gap: float) -> tuple[list[int], list[int]]:
    """Send offsets (ns) keeping the capture's timing, and the burst number of each packet.

    Silences longer than ``gap`` become ``gap`` + 0.4 s and gaps inside a burst are capped
    at ``gap`` - 0.2 s: the bursts stay those of the capture, and no gap is close enough to
    the burst gap for scheduling jitter to move a packet into another burst.
    """
    gap_ns = round(gap * 1e9)
    offsets, bursts = [0], [0]
    for before, after in itertools.pairwise(stamps):
        delta = after - before
        if delta > gap_ns:
            offsets.append(offsets[-1] + gap_ns + 400_000_000)
            bursts.append(bursts[-1] + 1)
        else:
            offsets.append(offsets[-1] + min(max(delta, 0), gap_ns - 200_000_000))
            bursts.append(bursts[-1])
    return offsets, bursts


@dataclass
class Agent:
    """An appsight process in the receiving namespace; stdout lines kept with arrival times."""

    proc: subprocess.Popen
    lines: list[tuple[int, str]] = field(default_factory=list)
    err: list[str] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    terminated: bool = False  # SIGTERM sent once: a second one would interrupt the shutdown

    @classmethod
    def start(cls, pair: VethPair, *args: str | os.PathLike[str]) -> Agent:
        """Run appsight in the receiving namespace; return once its socket listens."""
        proc = pair.popen(*APPSIGHT, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, cwd=REPO)
        agent = cls.attach(proc)
        pair.wait_listening(proc)
        return agent

    @classmethod
    def attach(cls, proc: subprocess.Popen) -> Agent:
        """Follow the standard output and error of a process started with pipes."""
        agent = cls(proc)
        agent.threads = [
            threading.Thread(target=agent._pump, args=(proc.stdout, True), daemon=True),
            threading.Thread(target=agent._pump, args=(proc.stderr, False), daemon=True),
        ]
        for thread in agent.threads:
            thread.start()
        return agent

    def _pump(self, stream: object, is_out: bool) -> None:
        for raw in stream:  # type: ignore[attr-defined]
            line = raw.decode() if isinstance(raw, bytes) else raw
            if is_out:
                self.lines.append((time.time_ns(), line.rstrip("\n")))
            else:
                self.err.append(line.rstrip("\n"))

    def rows(self) -> list[dict[str, object]]:
        return [json.loads(line) for _, line in self.lines]

    def wait_for(self, predicate: object, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():  # type: ignore[operator]
                return True
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        return bool(predicate())  # type: ignore[operator]

    def signal(self, signum: int) -> None:
        if signum == signal.SIGTERM:
            self.terminated = True
        self.proc.send_signal(signum)

    def finish(self, timeout: float = 15.0) -> int:
        """SIGTERM (if still running), then the exit status once the output is read."""
        if self.proc.poll() is None and not self.terminated:
            self.signal(signal.SIGTERM)
        try:
            status = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process(self.proc)
            raise AssertionError(f"the agent ignored SIGTERM; stderr: {self.err}") from None
        for thread in self.threads:
            thread.join(timeout=5)
        return status

    @property
    def stderr(self) -> str:
        return "\n".join(self.err)


def appsight(*args: str | os.PathLike[str], stdin: bytes | None = None) -> str:
    """An offline command's standard output (it must succeed)."""
    done = subprocess.run([*APPSIGHT, *(str(a) for a in args)], input=stdin,
                          capture_output=True, timeout=120, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def json_rows(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def flow_key(row: dict[str, object]) -> tuple:
    """A flow as live and offline must agree on: burst, 5-tuple, packets and bytes each way."""
    return (row["burst"], row["proto"], row["src"], row["sport"], row["dst"], row["dport"],
            row["packets_fwd"], row["packets_bwd"], row["bytes_fwd"], row["bytes_bwd"])


def without_capture(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    return sorted(({k: v for k, v in r.items() if k != "capture"} for r in rows),
                  key=lambda r: json.dumps(r, sort_keys=True))


def pcap_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.pcap"), key=lambda p: p.name)


def frames_of(paths: Sequence[Path]) -> tuple[list[bytes], list[int]]:
    frames: list[bytes] = []
    stamps: list[int] = []
    for path in paths:
        f, t = read_frames(path)
        frames += f
        stamps += t
    return frames, stamps


def tcpdump_count(path: Path) -> int | None:
    """Packets tcpdump reads from ``path`` (None without tcpdump); it must read cleanly."""
    if shutil.which("tcpdump") is None:
        return None
    done = subprocess.run(["tcpdump", "-nn", "-r", str(path)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "truncated" not in done.stderr.lower(), done.stderr
    return len(done.stdout.splitlines())


WROTE = re.compile(r"wrote (\d+) packets \((\d+) bytes\) to (\d+) files")


def send_spaced(pair: VethPair, frames: Sequence[bytes], spacing: float) -> Sent:
    with pair.sender() as sender:
        return sender.send_timed(frames, [round(i * spacing * 1e9) for i in range(len(frames))])


def ip_frames(count: int, size: int = 200) -> list[bytes]:
    """``count`` distinct UDP frames of ``size`` bytes (checksums left zero: never parsed)."""
    frames = []
    for i in range(count):
        payload = i.to_bytes(4, "big") * ((size - 42) // 4 + 1)
        udp_len = size - 34
        ip = (bytes.fromhex("4500") + (size - 14).to_bytes(2, "big") + bytes(4)
              + bytes.fromhex("4011") + bytes(2) + bytes([10, 9, 0, 1, 10, 9, 0, 2]))
        udp = (40000 + i % 50).to_bytes(2, "big") + (5000).to_bytes(2, "big") \
            + udp_len.to_bytes(2, "big") + bytes(2)
        frame = bytes.fromhex("020000000002020000000001") + b"\x08\x00" + ip + udp
        frames.append((frame + payload)[:size])
    return frames


# --------------------------------------------------------------- the shared replay
@dataclass
class Replay:
    sent: Sent
    bursts: list[int]  # burst number of each sent packet
    sent_pcap: Path
    flows: Agent
    live: Agent
    live_free: Agent  # live without a model
    capture: Agent
    capture_dir: Path
    live_pcap_dir: Path
    statuses: dict[str, int]
    usr1_stderr: dict[str, str]
    rx_stats: dict[str, int]
    iface: str


@pytest.fixture(scope="module")
def replay(netns_ok: None, shared_data: Path, sample_model: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replay]:
    """signal.pcap replayed with its timing to `flows`, `live -m`, `live` (no model) and
    `capture` at once."""
    folder = tmp_path_factory.mktemp("replay")
    frames, stamps = read_frames(shared_data / "ndpi" / REPLAYED)
    offsets, bursts = schedule(stamps, GAP)
    with veth_pair(f"{os.getpid()}{next(_counter)}") as pair:
        capture_dir = folder / "capture"
        live_pcap_dir = folder / "live-pcap"
        flows = Agent.start(pair, "flows", pair.rx_if, "--json", "--burst-gap", str(GAP))
        live = Agent.start(pair, "live", pair.rx_if, "-m", sample_model, "--json",
                           "--burst-gap", str(GAP), "--write-pcap", live_pcap_dir)
        live_free = Agent.start(pair, "live", pair.rx_if, "--json", "--burst-gap", str(GAP))
        capture = Agent.start(pair, "capture", pair.rx_if, "-o", capture_dir, "--label",
                              "signal")
        with pair.sender() as sender:
            sent = sender.send_timed(frames, offsets)
        last_burst = bursts[-1]

        def reported(agent: Agent) -> bool:
            return any(f'"burst": {last_burst},' in line for _, line in agent.lines)

        for agent in (flows, live, live_free):
            agent.wait_for(lambda a=agent: reported(a), timeout=HANG_BOUND)
        usr1 = {}
        for name, agent in (("flows", flows), ("live", live), ("capture", capture)):
            before = len(agent.err)
            agent.signal(signal.SIGUSR1)
            agent.wait_for(lambda a=agent, n=before: len(a.err) > n, timeout=HANG_BOUND)
            usr1[name] = "\n".join(agent.err[before:])
        rx_stats = pair.link_stats("rx")
        statuses = {name: agent.finish()
                    for name, agent in (("flows", flows), ("live", live),
                                        ("live_free", live_free), ("capture", capture))}
    sent_pcap = folder / "sent.pcap"
    write_pcap(sent_pcap, sent.frames, sent.times_ns)
    yield Replay(sent, bursts, sent_pcap, flows, live, live_free, capture, capture_dir,
                 live_pcap_dir, statuses, usr1, rx_stats, pair.rx_if)


@pytest.mark.shared_data
def test_replay_reached_only_the_agent(replay: Replay) -> None:
    """The receiving end got exactly the frames sent and sent nothing itself."""
    assert len(replay.sent.frames) == 637
    assert replay.rx_stats["rx_packets"] == len(replay.sent.frames)
    assert replay.rx_stats["rx_bytes"] == replay.sent.bytes
    assert replay.rx_stats["tx_packets"] == 0


@pytest.mark.shared_data
def test_agents_say_when_they_listen(replay: Replay) -> None:
    """`flows` and `live` on an interface say once, first, that they listen: supervisors
    (appsight-live restart) wait for that line before traffic that must be seen starts."""
    for agent in (replay.flows, replay.live, replay.live_free):
        said = [line for line in agent.err if "listening" in line]
        assert said == [f"appsight: listening on {replay.iface}"], agent.err
        assert agent.err[0] == said[0], agent.err


@pytest.mark.shared_data
def test_replay_kept_the_bursts(replay: Replay, shared_data: Path) -> None:
    """Offline, the pcap of what was sent has the original capture's flows and bursts."""
    original = json_rows(appsight("flows", "--json", "--burst-gap", GAP,
                                  shared_data / "ndpi" / REPLAYED))
    sent = json_rows(appsight("flows", "--json", "--burst-gap", GAP, replay.sent_pcap))
    assert sorted(map(flow_key, sent)) == sorted(map(flow_key, original))
    assert max(r["burst"] for r in sent) == replay.bursts[-1] == 8


@pytest.mark.shared_data
def test_live_flows_equal_offline_flows(replay: Replay) -> None:
    """`flows IFACE --json` reports the flows of `flows --json` on what was sent, burst for
    burst, with the kernel's receive times (within 50 ms of the send times)."""
    assert replay.statuses["flows"] == 0, replay.flows.stderr
    offline = json_rows(appsight("flows", "--json", "--burst-gap", GAP, replay.sent_pcap))
    live = replay.flows.rows()
    assert sorted(map(flow_key, live)) == sorted(map(flow_key, offline))
    assert {r["capture"] for r in live} == {replay.iface}  # named after IFACE
    by_key = {flow_key(r): r for r in offline}
    for row in live:
        twin = by_key[flow_key(row)]
        assert abs(row["first_ts"] - twin["first_ts"]) < 0.05
        assert abs(row["last_ts"] - twin["last_ts"]) < 0.05


def _latencies(agent: Agent, replay: Replay) -> dict[int, float]:
    """Seconds from each burst's last packet sent to its first report line on stdout."""
    last_sent: dict[int, int] = {}
    for burst, ts in zip(replay.bursts, replay.sent.times_ns, strict=True):
        last_sent[burst] = ts
    first_seen: dict[int, int] = {}
    for arrived, line in agent.lines:
        first_seen.setdefault(json.loads(line)["burst"], arrived)
    assert set(first_seen) == set(last_sent)
    return {b: (first_seen[b] - last_sent[b]) / 1e9 for b in last_sent}


@pytest.mark.shared_data
def test_live_without_model_equals_flows(replay: Replay) -> None:
    """`live IFACE --json` without -m reports what `flows IFACE --json` reports, with no
    app or confidence: a gateway can run the agent before a model is trained."""
    assert replay.statuses["live_free"] == 0, replay.live_free.stderr
    free, flows = replay.live_free.rows(), replay.flows.rows()
    assert sorted(map(flow_key, free)) == sorted(map(flow_key, flows))
    assert set(free[0]) == set(flows[0])  # the same keys: no app, no confidence
    assert kernel_line_counts(replay.live_free.err[-1]) == (len(replay.sent.frames), 0)


@pytest.mark.shared_data
@pytest.mark.parametrize("command", ["flows", "live", "live_free"])
def test_burst_reported_by_the_clock(replay: Replay, command: str) -> None:
    latency = _latencies(getattr(replay, command), replay)
    hung = {b: round(s, 3) for b, s in latency.items() if s > HANG_BOUND}
    assert not hung, f"bursts reported only at the end (s after their last packet): {hung}"
    # and not before the gap passed
    assert all(s >= GAP - CLOCK_SKEW for s in latency.values()), latency


@pytest.mark.shared_data
def test_live_model_equals_classify(replay: Replay, sample_model: Path) -> None:
    """`live IFACE -m MODEL --json` names the same app with the same confidence as
    `classify -m MODEL --json` on the packets it received (its own --write-pcap files), and
    has the flows of `classify` on the pcap of what was sent."""
    assert replay.statuses["live"] == 0, replay.live.stderr
    live = replay.live.rows()
    written = pcap_files(replay.live_pcap_dir)
    assert len(written) == 1 and written[0].name.startswith("live-")
    offline = json_rows(appsight("classify", "-m", sample_model, "--json", "--burst-gap", GAP,
                                 written[0]))
    assert without_capture(live) == without_capture(offline)
    assert all({"app", "confidence"} <= set(r) for r in live)
    sent = json_rows(appsight("classify", "-m", sample_model, "--json", "--burst-gap", GAP,
                              replay.sent_pcap))
    assert sorted(map(flow_key, live)) == sorted(map(flow_key, sent))


@pytest.mark.shared_data
def test_live_write_pcap_holds_every_packet(replay: Replay) -> None:
    frames, stamps = frames_of(pcap_files(replay.live_pcap_dir))
    assert frames == replay.sent.frames
    assert all(abs(a - b) < 50_000_000 for a, b in zip(stamps, replay.sent.times_ns,
                                                       strict=True))
    assert f"wrote {len(frames)} packets to 1 files" in replay.live.stderr


@pytest.mark.shared_data
def test_capture_holds_every_packet_sent(replay: Replay) -> None:
    """`capture` wrote every frame sent, byte for byte and in order, into files that tcpdump
    and scapy read; the label is in the file name; its summary line counts them."""
    assert replay.statuses["capture"] == 0, replay.capture.stderr
    files = pcap_files(replay.capture_dir)
    assert len(files) == 1
    assert re.fullmatch(r"appsight-signal-\d{8}T\d{6}-0001\.pcap", files[0].name)
    frames, _ = frames_of(files)
    assert len(frames) == len(replay.sent.frames)
    assert sum(map(len, frames)) == replay.sent.bytes
    assert frames == replay.sent.frames
    wrote = WROTE.search(replay.capture.stderr)
    assert wrote and wrote.groups() == (str(len(frames)), str(replay.sent.bytes), "1")
    counted = tcpdump_count(files[0])
    assert counted in (None, len(frames))
    from scapy.utils import rdpcap

    assert len(rdpcap(str(files[0]))) == len(frames)


@pytest.mark.shared_data
@pytest.mark.parametrize("command", ["flows", "live", "capture"])
def test_drop_counters_on_sigusr1_and_at_exit(replay: Replay, command: str) -> None:
    """SIGUSR1 prints the kernel's counters (every frame received, none dropped) and the
    process goes on; the same line ends its standard error at exit."""
    agent: Agent = getattr(replay, command)
    n = len(replay.sent.frames)
    assert kernel_line_counts(replay.usr1_stderr[command]) == (n, 0), replay.usr1_stderr
    assert replay.usr1_stderr[command].startswith("appsight: kernel:")
    assert kernel_line_counts(agent.err[-1]) == (n, 0), agent.stderr
    assert "Traceback" not in agent.stderr


# ----------------------------------------------------------------------- capture alone
def test_capture_count_stops_after_n_packets(veth: VethPair, tmp_path: Path) -> None:
    frames = ip_frames(100)
    agent = Agent.start(veth, "capture", veth.rx_if, "-o", tmp_path, "--count", "40")
    send_spaced(veth, frames, 0.002)
    assert agent.wait_for(lambda: agent.proc.poll() is not None, timeout=HANG_BOUND), \
        "capture --count 40 did not stop by itself"
    assert agent.finish() == 0, agent.stderr
    got, _ = frames_of(pcap_files(tmp_path))
    assert got == frames[:40]
    wrote = WROTE.search(agent.stderr)
    assert wrote and wrote.group(1) == "40"


def test_capture_rotates_by_size(veth: VethPair, tmp_path: Path) -> None:
    """--rotate-mb 0.02 with 500-byte frames arriving one by one: a new file once a file
    holds 20 kB, so every file but the last has 20,000 to 20,000 + one record bytes; all
    files together hold every frame in order, and each opens in tcpdump."""
    frames = ip_frames(200, 500)
    agent = Agent.start(veth, "capture", veth.rx_if, "-o", tmp_path, "--rotate-mb", "0.02",
                        "--label", "You Tube/HD")
    send_spaced(veth, frames, 0.003)
    time.sleep(0.3)  # the last frames reach the file
    assert agent.finish() == 0, agent.stderr
    files = pcap_files(tmp_path)
    assert all(re.fullmatch(r"appsight-You_Tube_HD-\d{8}T\d{6}-\d{4}\.pcap", f.name)
               for f in files), [f.name for f in files]
    assert [f.name[-9:-5] for f in files] == [f"{i:04d}" for i in range(1, len(files) + 1)]
    sizes = [f.stat().st_size for f in files]
    record = 16 + 500
    assert len(files) in (5, 6), sizes  # 39 records of 516 bytes pass 20 kB: 5 x 39 + 5
    # a packet that arrives with another in one read may push a file one record further
    assert all(20_000 <= s < 20_000 + 2 * record for s in sizes[:-1]), sizes
    got, _ = frames_of(files)
    assert got == frames
    for f in files:
        assert tcpdump_count(f) in (None, (f.stat().st_size - 24) // record)


def test_capture_rotates_by_size_within_a_burst(veth: VethPair, tmp_path: Path) -> None:
    """2,000 frames in one fast burst with --rotate-mb 0.1: like tcpdump -C, no file should
    pass the limit by more than one packet."""
    frames = ip_frames(2000, 500)
    agent = Agent.start(veth, "capture", veth.rx_if, "-o", tmp_path, "--rotate-mb", "0.1")
    with veth.sender() as sender:
        sender.send_rate(frames, len(frames), None)
    time.sleep(0.5)  # the last frames reach the file
    assert agent.finish() == 0, agent.stderr
    files = pcap_files(tmp_path)
    assert frames_of(files)[0] == frames
    sizes = [f.stat().st_size for f in files]
    assert max(sizes) <= 100_000 + 16 + 500, sizes


def test_capture_rotates_by_time(veth: VethPair, tmp_path: Path) -> None:
    """--rotate-seconds 1 with a frame every 50 ms for 2.6 s: three files, each spanning at
    most about a second, together holding every frame in order."""
    frames = ip_frames(52)
    agent = Agent.start(veth, "capture", veth.rx_if, "-o", tmp_path, "--rotate-seconds", "1")
    sent = send_spaced(veth, frames, 0.05)
    time.sleep(0.3)  # the last frames reach the file
    assert agent.finish() == 0, agent.stderr
    files = pcap_files(tmp_path)
    assert len(files) == 3, [f.name for f in files]
    got, _ = frames_of(files)
    assert got == sent.frames
    for f in files:
        _, stamps = read_frames(f)
        assert stamps and (stamps[-1] - stamps[0]) / 1e9 < 1.0 + 0.2, f.name


# --------------------------------------------------------------- SIGTERM mid-burst
@dataclass
class Interrupted:
    frames: list[bytes]
    sent: int
    agent: Agent
    status: int
    folder: Path


def send_then_sigterm(pair: VethPair, agent: Agent, frames: list[bytes]) -> int:
    """Send all but the last 500 frames at 20,000 per second, the last 500 as fast as
    possible, and SIGTERM the agent the moment the last one is sent: mid-burst, while it is
    still reading. Returns the number of frames sent."""
    with pair.sender() as sender:
        paced, _ = sender.send_rate(frames[:-500], len(frames) - 500, 20_000)
        tail, _ = sender.send_rate(frames[-500:], 500, None)
        agent.signal(signal.SIGTERM)
    return paced + tail


@pytest.fixture(scope="module")
def interrupted_capture(netns_ok: None, tmp_path_factory: pytest.TempPathFactory
                        ) -> Iterator[Interrupted]:
    """`capture` gets SIGTERM in the middle of a burst of 10,500 frames."""
    folder = tmp_path_factory.mktemp("sigterm")
    frames = ip_frames(10_500, 300)
    with veth_pair(f"{os.getpid()}{next(_counter)}") as pair:
        agent = Agent.start(pair, "capture", pair.rx_if, "-o", folder)
        sent = send_then_sigterm(pair, agent, frames)
        status = agent.finish()
    yield Interrupted(frames, sent, agent, status, folder)


def test_sigterm_mid_burst_leaves_a_valid_file(interrupted_capture: Interrupted) -> None:
    """Exit 0 with the summary line; the file opens in tcpdump and scapy and holds exactly
    the packets it counts, the first ones sent, byte for byte."""
    run = interrupted_capture
    assert run.status == 0, run.agent.stderr
    wrote = WROTE.search(run.agent.stderr)
    assert wrote, run.agent.stderr
    files = pcap_files(run.folder)
    got, _ = frames_of(files)
    assert len(got) == int(wrote.group(1)) > 0
    assert got == run.frames[: len(got)]
    for f in files:
        assert tcpdump_count(f) in (None, len(read_frames(f)[0]))


def test_sigterm_mid_burst_loses_nothing_received(interrupted_capture: Interrupted) -> None:
    """Every frame the kernel handed to the socket (received - dropped) is in the file."""

    run = interrupted_capture
    counts = kernel_line_counts(run.agent.stderr)
    wrote = WROTE.search(run.agent.stderr)
    assert counts and wrote
    received, dropped = counts
    assert received == run.sent
    assert int(wrote.group(1)) == received - dropped, run.agent.stderr


def test_flows_sigterm_mid_burst_reports_every_packet_received(veth: VethPair) -> None:
    """`flows IFACE` reports, at SIGTERM, the open burst with every frame already received."""
    agent = Agent.start(veth, "flows", veth.rx_if, "--json")
    sent = send_then_sigterm(veth, agent, ip_frames(10_500, 300))
    assert agent.finish() == 0, agent.stderr
    counts = kernel_line_counts(agent.stderr)
    assert counts and counts[0] == sent
    reported = sum(r["packets_fwd"] + r["packets_bwd"] for r in agent.rows())
    assert reported == counts[0] - counts[1], agent.stderr


@pytest.mark.parametrize("command", ["capture", "flows"])
def test_sigterm_ends_the_run_under_overload(veth: VethPair, tmp_path: Path,
                                             command: str) -> None:
    """Frames keep arriving faster than the agent can read them (sent flat out): SIGTERM
    must still end the run promptly, not only once the traffic stops."""
    args = ["-o", tmp_path] if command == "capture" else ["--json"]
    agent = Agent.start(veth, command, veth.rx_if, *args)
    stop = threading.Event()
    frames = ip_frames(2000, 300)

    def flood() -> None:
        with veth.sender() as sender:
            sender.send_rate(frames, 10**9, None, stop=stop)

    sender = threading.Thread(target=flood)
    sender.start()
    try:
        time.sleep(0.5)
        agent.signal(signal.SIGTERM)
        ended = agent.wait_for(lambda: agent.proc.poll() is not None, timeout=HANG_BOUND)
    finally:
        stop.set()
        sender.join()
    assert agent.finish() == 0, agent.stderr
    assert ended, f"still running {HANG_BOUND:.0f} s after SIGTERM while frames kept arriving"
    counts, wrote = kernel_line_counts(agent.err[-1]), WROTE.search(agent.stderr)
    assert counts is not None, agent.stderr
    if command == "capture":  # the counters are the stop's: each packet written or counted
        unread = re.search(r"(\d+) queued before the stop", agent.err[-1])
        assert wrote is not None, agent.stderr
        assert int(wrote.group(1)) + counts[1] + (int(unread.group(1)) if unread else 0) == \
            counts[0], agent.stderr


QUEUED_AT_STOP = 120_000  # frames queued while the agent is paused: over 1 s of its reading


def test_sigterm_writes_every_packet_queued_before_it(veth: VethPair, tmp_path: Path) -> None:
    """A stop writes what the kernel had queued, however long reading it takes (within
    live.DRAIN_SECONDS), and accounts for every packet. The agent is paused (SIGSTOP) while
    the frames arrive, so all of them wait in its socket when SIGTERM comes; before, a 0.5 s
    drain wrote part of them and the kernel line still said "0 dropped"."""
    agent = Agent.start(veth, "capture", veth.rx_if, "-o", tmp_path)
    frames = ip_frames(QUEUED_AT_STOP, 60)
    agent.proc.send_signal(signal.SIGSTOP)
    try:
        with veth.sender() as sender:
            sent, _ = sender.send_rate(frames, len(frames), None)
        agent.signal(signal.SIGTERM)
    finally:
        agent.proc.send_signal(signal.SIGCONT)
    assert agent.finish(timeout=HANG_BOUND) == 0, agent.stderr
    counts = kernel_line_counts(agent.err[-1])
    assert counts is not None, agent.stderr
    received, dropped = counts
    assert received == sent == QUEUED_AT_STOP
    assert "not read within" not in agent.stderr
    got, _ = frames_of(pcap_files(tmp_path))
    wrote = WROTE.search(agent.stderr)
    assert wrote and int(wrote.group(1)) == len(got)
    assert len(got) + dropped == received  # every packet written or counted
    assert dropped == 0, "the socket's 64 MB buffer should hold them all"
    assert got == frames


# ------------------------------------------------------------------ privileges, errors
def test_capture_user_switches_and_still_writes(veth: VethPair) -> None:
    """--user nobody: the socket is opened as root, then the run goes on as nobody and writes
    its files (owned by nobody) into the output folder appsight created."""
    import pwd
    import tempfile

    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' on this machine")
    base = Path(tempfile.mkdtemp(prefix="appsight-user-"))
    try:
        base.chmod(0o755)
        out = base / "captures"  # created by appsight
        frames = ip_frames(20)
        agent = Agent.start(veth, "capture", veth.rx_if, "-o", out, "--user", "nobody")
        send_spaced(veth, frames, 0.01)
        time.sleep(0.3)  # the last frames reach the file
        status = agent.finish()
        assert "appsight: running as nobody" in agent.stderr
        assert status == 0, agent.stderr
        files = pcap_files(out)
        assert frames_of(files)[0] == frames
        assert all(f.stat().st_uid == nobody.pw_uid for f in files)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("command", ["capture", "flows", "live"])
def test_bad_interface_name_is_one_line_exit_2(veth: VethPair, command: str,
                                               sample_model: Path, tmp_path: Path) -> None:
    """Inside the receiving namespace (so no real interface can be hit), a name that is no
    interface gives one 'appsight: error:' line and exit status 2."""
    args = {"capture": ["-o", tmp_path / "out"], "flows": [], "live": ["-m", sample_model]}
    done = subprocess.run(veth.command(*APPSIGHT, command, "nosuch0", *args[command]),
                          capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    lines = done.stderr.splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("appsight: error:"), done.stderr
    assert "nosuch0" in lines[0]
    assert done.stdout == ""


# ----------------------------------------------------------------- pcap stream on stdin
@pytest.mark.shared_data
def test_stream_on_stdin_equals_offline(shared_data: Path, sample_model: Path,
                                        tmp_path: Path) -> None:
    """`flows -` and `live - -m MODEL --write-pcap DIR` on a capture cat into standard input
    report what the offline commands report on the file; the written pcap holds its frames."""
    capture = shared_data / "ndpi" / REPLAYED
    data = capture.read_bytes()
    gap = ["--burst-gap", str(GAP)]
    flows_stream = json_rows(appsight("flows", "-", "--json", *gap, stdin=data))
    flows_file = json_rows(appsight("flows", capture, "--json", *gap))
    assert without_capture(flows_stream) == without_capture(flows_file)
    assert {r["capture"] for r in flows_stream} == {"stdin"}
    live_stream = json_rows(appsight("live", "-", "-m", sample_model, "--json", *gap,
                                     "--write-pcap", tmp_path, stdin=data))
    classified = json_rows(appsight("classify", "-m", sample_model, "--json", *gap, capture))
    assert without_capture(live_stream) == without_capture(classified)
    frames, stamps = frames_of(pcap_files(tmp_path))
    assert (frames, stamps) == read_frames(capture)


def test_stream_burst_clock(tmp_path: Path) -> None:
    """A pcap stream written in three bursts (`tcpdump -U -w -` style): each burst is
    reported once the stream has been silent for the burst gap, while the stream is still
    open and before the next burst is written."""
    frames = ip_frames(60)
    proc = subprocess.Popen([*APPSIGHT, "flows", "-", "--json", "--burst-gap", str(GAP)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=REPO)
    agent = Agent.attach(proc)
    assert proc.stdin is not None
    proc.stdin.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262_144, 1))
    latency: list[float] = []
    try:
        for burst in range(3):
            for frame in frames[burst * 20: (burst + 1) * 20]:
                seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
                proc.stdin.write(struct.pack("<IIII", seconds, nanos, len(frame), len(frame))
                                 + frame)
                proc.stdin.flush()
                written = time.time_ns()
                time.sleep(0.01)
            def reported(burst: int = burst) -> list[int]:
                return [t for t, line in agent.lines if json.loads(line)["burst"] == burst]

            agent.wait_for(reported, HANG_BOUND)
            seen = reported()
            assert seen, f"burst {burst} not reported while the stream was open: {agent.err}"
            latency.append((seen[0] - written) / 1e9)
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
        for thread in agent.threads:
            thread.join(timeout=5)
    assert proc.returncode == 0, agent.stderr
    assert all(GAP - CLOCK_SKEW <= s <= HANG_BOUND for s in latency), latency
    rows = agent.rows()
    assert sorted({r["burst"] for r in rows}) == [0, 1, 2]
    assert sum(r["packets_fwd"] + r["packets_bwd"] for r in rows) == 60


def test_json_log_holds_what_classify_json_prints(tmp_path: Path, sample_model: Path) -> None:
    """--json-log keeps a machine-readable copy beside the human report, as classify --json."""
    log = tmp_path / "live.jsonl"
    live = subprocess.run([*APPSIGHT, "live", "-", "-m", sample_model, "--json-log", log],
                          input=SAMPLE.read_bytes(), capture_output=True, timeout=120, cwd=REPO,
                          check=False)
    assert live.returncode == 0, live.stderr.decode()
    assert b" app " in live.stdout  # the report itself is unchanged
    offline = subprocess.run([*APPSIGHT, "classify", "-m", sample_model, "--json", "-"],
                             input=SAMPLE.read_bytes(), capture_output=True, timeout=120,
                             cwd=REPO, check=True)
    assert log.read_bytes() == offline.stdout
    assert all("app" in json.loads(line) for line in log.read_text().splitlines())


def test_json_log_that_cannot_be_written_is_a_one_line_error(tmp_path: Path) -> None:
    done = subprocess.run([*APPSIGHT, "live", "-", "--json-log", tmp_path / "no" / "f.jsonl"],
                          input=SAMPLE.read_bytes(), capture_output=True, text=False,
                          timeout=60, cwd=REPO, check=False)
    assert done.returncode == 2
    assert b"cannot write the JSON log" in done.stderr and b"Traceback" not in done.stderr
