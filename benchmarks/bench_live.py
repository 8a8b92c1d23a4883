"""Live throughput: the highest replay rate each tool takes without losing a packet.

Real frames (IP frames of a few nDPI captures from ``APPSIGHT_DATA``, default
``../shared/data``) are sent into one end of a veth pair between two network namespaces made
for the run (see ``tests/netns.py``); the tool listens on the other end, in its own process,
pinned to one core (``--tool-cpu``, default 1); the sender, this process, is pinned to another
(``--sender-cpu``, default 0), so the kernel's delivery work (veth to the tool's socket) is
done on the sender's core, not the tool's. Tools, side by side in one run:

* ``appsight capture IFACE -o DIR`` (packets counted by its 'wrote N packets' line);
* ``appsight flows IFACE --json`` and ``appsight live IFACE -m MODEL --json`` (packets counted
  as the sum of the flows' packets; the model is trained on the sample capture first);
* a plain ``scapy`` ``sniff(prn=count, store=False)`` on the same kind of socket
  (``conf.L2listen``), the baseline.

For each tool, rates climb a ladder (``--rates``, packets/s; ``max`` sends as fast as this
process can). At each rate a fresh tool process gets ``--seconds`` worth of frames; once its
socket queue is empty (and, for flows/live, the burst has been reported) it gets SIGTERM and
its count and the kernel's drop counter (PACKET_STATISTICS) are read. A run is loss-free when
count == sent and drops == 0. Each rate is run ``--repeat`` times (default 2); a tool climbs
while every run at a rate is loss-free, then gets one run flat out to measure what it handles
when overloaded (frames counted / seconds from the first frame until its socket queue was
empty). The rate reported is the one achieved by the sender (frames / seconds).

Usage (root)::

    .venv/bin/python benchmarks/bench_live.py                       # ~10 min, markdown tables
    .venv/bin/python benchmarks/bench_live.py --tools capture,live --rates 20000,50000 --seconds 3
    .venv/bin/python benchmarks/bench_live.py --json out.json

``--memory`` measures something else, and needs neither root nor the corpus: the memory of
one long run. It builds 30 minutes (``--minutes``) of traffic that never falls silent for the
burst gap (``long_capture`` of ``tests/test_live_memory.py``: 8 flows sending every 0.1 s
and ``--short-flows`` new two-packet flows a second) and writes it to the standard input of
``appsight flows -`` (``--command``; ``flows -`` and ``live -`` run the same live loop, and
``flows`` exists in older versions too) in ``--slices`` parts. After each part, once the
process has gone idle, its RSS and peak RSS (VmHWM) are read; then 1.5 s without input let
the burst clock end the burst, and the peak is read once more. ``--pythonpath DIR`` runs
another version of appsight, e.g. the last commit's (``git archive HEAD agent | tar -x -C
/tmp/before``, then ``--pythonpath /tmp/before/agent``)::

    .venv/bin/python benchmarks/bench_live.py --memory                 # ~1 min
    .venv/bin/python benchmarks/bench_live.py --memory --pythonpath /tmp/before/agent
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from netns import (  # noqa: E402 - the tests' helpers, found through the path above
    VethPair,
    kernel_line_counts,
    netns_unavailable,
    stop_process,
    veth_pair,
    write_pcap,
)

CAPTURES = ("signal.pcap", "443-firefox.pcap", "wa_video.pcap", "dns-tunnel-iodine.pcap",
            "tinc.pcap", "whatsappfiles.pcap", "netflix.pcap", "youtubeupload.pcap")
DEFAULT_RATES = "500,1000,2000,5000,10000,20000,50000,75000,100000,125000,150000,200000,max"
TOOLS = ("capture", "flows", "live", "scapy")
APPSIGHT = [sys.executable, "-m", "appsight"]
SAMPLE_LABELS_FROM = REPO / "tests" / "test_train_classify.py"


# ------------------------------------------------------------------ the scapy baseline
def sniff_worker(iface: str) -> int:
    """Count frames with scapy's sniff(prn=...) until SIGTERM; print count and drops."""
    import struct

    from scapy.all import conf, sniff

    sock = conf.L2listen(iface=iface)  # what sniff(iface=...) opens itself
    count = 0

    def prn(_packet: object) -> None:
        nonlocal count
        count += 1

    def stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    with contextlib.suppress(KeyboardInterrupt):
        sniff(opened_socket=sock, prn=prn, store=False)
    received, dropped = struct.unpack("II", sock.ins.getsockopt(263, 6, 8))
    print(json.dumps({"count": count, "received": received, "dropped": dropped}), flush=True)
    return 0


# --------------------------------------------------------------------------- frames
def load_frames(data: Path) -> tuple[list[bytes], str]:
    """IP frames (Ethernet, at most 1514 bytes) of captures appsight counts in full."""
    from appsight.pipeline import PipelineOptions, iter_flow_blocks
    from scapy.utils import RawPcapNgReader, RawPcapReader

    frames: list[bytes] = []
    used = []
    for name in CAPTURES:
        path = data / "ndpi" / name
        if not path.exists():
            continue
        with open(path, "rb") as handle:
            ng = handle.read(4) == b"\x0a\x0d\x0d\x0a"
        with (RawPcapNgReader if ng else RawPcapReader)(str(path)) as reader:
            mine = [bytes(d) for d, _ in reader]
        mine = [f for f in mine if 14 < len(f) <= 1514 and f[12:14] in (b"\x08\x00", b"\x86\xdd")]
        with tempfile.TemporaryDirectory() as tmp:
            probe = Path(tmp) / "probe.pcap"
            write_pcap(probe, mine, [i * 1000 for i in range(len(mine))])
            blocks = iter_flow_blocks(probe, PipelineOptions(burst_gap=None))
            counted = sum(int(b.flows.packets_fwd.sum() + b.flows.packets_bwd.sum())
                          for b in blocks)
        if counted == len(mine) and mine:
            frames += mine
            used.append(name)
    if not frames:
        raise SystemExit(f"no usable captures under {data / 'ndpi'} (set APPSIGHT_DATA)")
    return frames, ", ".join(used)


def train_model(folder: Path) -> Path:
    text = SAMPLE_LABELS_FROM.read_text()
    labels = re.search(r'SAMPLE_LABELS = """\\\n(.*?)"""', text, re.S)
    assert labels, "SAMPLE_LABELS not found in tests/test_train_classify.py"
    (folder / "labels.csv").write_text(labels.group(1))
    model = folder / "sample.model"
    subprocess.run([*APPSIGHT, "train", "--labels", str(folder / "labels.csv"),
                    str(REPO / "examples" / "sample.pcap"), "-o", str(model), "--trees", "10"],
                   check=True, capture_output=True, cwd=REPO, timeout=300)
    return model


# ----------------------------------------------------------------------------- a run
@dataclass
class Result:
    tool: str
    requested: float | None
    sent: int
    seconds: float
    counted: int
    received: int
    dropped: int
    cpu_seconds: float  # the tool's CPU time while the frames were being sent
    busy_seconds: float  # from the first frame sent until the tool's socket queue was empty

    @property
    def rate(self) -> float:
        return self.sent / self.seconds

    @property
    def processed_rate(self) -> float:
        """Frames the tool handled per second while busy: its capacity when overloaded."""
        return self.counted / self.busy_seconds

    @property
    def lossless(self) -> bool:
        return self.counted == self.sent and self.dropped == 0


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _drained(pair: VethPair, pid: int, quiet: float = 0.4, timeout: float = 60.0) -> float:
    """Wait until the tool's socket queue has stayed empty for ``quiet`` seconds; return the
    time (``perf_counter``) it was first seen empty."""
    deadline = time.monotonic() + timeout
    empty_since = None
    first_empty = time.perf_counter()
    while time.monotonic() < deadline:
        sockets = pair.packet_sockets(pid)
        if sockets and all(s["rmem"] == 0 for s in sockets):
            empty_since = empty_since or time.monotonic()
            if time.monotonic() - empty_since >= quiet:
                return first_empty
        else:
            empty_since = None
            first_empty = time.perf_counter()
        time.sleep(0.05)
    return time.perf_counter()


def run_once(pair: VethPair, tool: str, frames: list[bytes], rate: float | None,
             seconds: float, args: argparse.Namespace, model: Path, workdir: Path) -> Result:
    out_dir = workdir / f"{tool}-{int(time.time() * 1000)}"
    command = {
        "capture": [*APPSIGHT, "capture", pair.rx_if, "-o", str(out_dir)],
        "flows": [*APPSIGHT, "flows", pair.rx_if, "--json", "--burst-gap", str(args.gap)],
        "live": [*APPSIGHT, "live", pair.rx_if, "-m", str(model), "--json", "--burst-gap",
                 str(args.gap)],
        "scapy": [sys.executable, str(Path(__file__).resolve()), "--sniff-worker", pair.rx_if],
    }[tool]
    proc = pair.popen(*command, cpu=args.tool_cpu, stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE, cwd=REPO)
    out: list[bytes] = []
    err: list[bytes] = []
    pumps = [threading.Thread(target=lambda s=s, d=d: d.extend(s), daemon=True)
             for s, d in ((proc.stdout, out), (proc.stderr, err))]
    for pump in pumps:
        pump.start()
    try:
        pair.wait_listening(proc, timeout=60, settle=0.5)
        cpu_before = _cpu_seconds(proc.pid)
        count = round(seconds * rate) if rate else round(seconds * 400_000)
        started = time.perf_counter()
        with pair.sender() as sender:
            sent, took = sender.send_rate(frames, count, rate)
        cpu = _cpu_seconds(proc.pid) - cpu_before  # while the frames were being sent
        busy = _drained(pair, proc.pid) - started
        if tool in ("flows", "live"):
            # the clock reports the last burst once the gap has passed: wait for a report and
            # then for the output to stay quiet, so SIGTERM finds nothing left to report
            deadline = time.monotonic() + args.gap + 60
            lines, quiet_since = -1, time.monotonic()
            while time.monotonic() < deadline:
                if len(out) != lines:
                    lines, quiet_since = len(out), time.monotonic()
                elif out and time.monotonic() - quiet_since > args.gap + 0.5:
                    break
                time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        stop_process(proc)
        for pump in pumps:
            pump.join(timeout=10)
    stdout = b"".join(out).decode()
    stderr = b"".join(err).decode()
    if tool == "scapy":
        info = json.loads(stdout.strip().splitlines()[-1])
        counted, received, dropped = info["count"], info["received"], info["dropped"]
    else:
        counts = kernel_line_counts(stderr)
        if counts is None:
            raise RuntimeError(f"{tool}: no drop counters in its output:\n{stderr}")
        received, dropped = counts
        if tool == "capture":
            wrote = re.search(r"wrote (\d+) packets", stderr)
            counted = int(wrote.group(1)) if wrote else 0
        else:
            counted = sum(r["packets_fwd"] + r["packets_bwd"]
                          for r in map(json.loads, stdout.splitlines()))
    subprocess.run(["rm", "-rf", str(out_dir)], check=False)
    return Result(tool, rate, sent, took, counted, received, dropped, cpu, max(busy, took))


# ----------------------------------------------------------------------------- report
def machine() -> dict[str, str]:
    cpu = platform.machine()
    text = Path("/proc/cpuinfo").read_text()
    for line in text.splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    if " hypervisor" in text:
        cpu += " (virtual machine)"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "agent"], cwd=REPO,
                           capture_output=True, text=True, check=False).stdout.strip()
    import appsight
    import scapy

    rmem = Path("/proc/sys/net/core/rmem_max").read_text().strip()
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "scapy": scapy.VERSION,
        "appsight": f"{appsight.__version__} (commit {commit}"
                    + (" plus uncommitted changes in agent/)" if dirty else ")"),
        "rmem_max": rmem,
        "load": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def _rate(r: float | None) -> str:
    return "max" if r is None else f"{r:,.0f}"


def runs_table(results: list[Result]) -> str:
    lines = ["| tool | asked pkt/s | sent | achieved pkt/s | counted | kernel drops | lost "
             "| tool CPU while sending | loss-free |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: |"]
    for r in results:
        lost = r.sent - r.counted
        busy = r.cpu_seconds / r.seconds * 100 if r.seconds else float("nan")
        lines.append(f"| {r.tool} | {_rate(r.requested)} | {r.sent:,} | {r.rate:,.0f} | "
                     f"{r.counted:,} | {r.dropped:,} | {lost:,} | {r.cpu_seconds:.1f} s "
                     f"({busy:.0f}%) | {'yes' if r.lossless else 'no'} |")
    return "\n".join(lines)


def summary_table(results: list[Result], tools: list[str]) -> str:
    """Per tool: the highest rate at which every run was loss-free, the first rate at which
    one was not, and what the tool handled flat out."""
    lines = ["| tool | highest rate with every run loss-free (pkt/s) | first rate with loss: "
             "runs with loss, worst loss (kernel drops) | handled pkt/s, sent flat out |",
             "| --- | ---: | --- | ---: |"]
    for tool in tools:
        mine = [r for r in results if r.tool == tool and r.requested is not None]
        by_rate: dict[float, list[Result]] = {}
        for r in mine:
            by_rate.setdefault(r.requested, []).append(r)  # type: ignore[arg-type]
        clean = [min(r.rate for r in runs) for runs in by_rate.values()
                 if all(r.lossless for r in runs)]
        lossy = [runs for runs in by_rate.values() if not all(r.lossless for r in runs)]
        best = f"{max(clean):,.0f}" if clean else "none (lost at the lowest rate)"
        if lossy:
            runs = lossy[0]
            worst = max(runs, key=lambda r: r.sent - r.counted)
            first = (f"{min(r.rate for r in runs):,.0f}: {sum(not r.lossless for r in runs)} of "
                     f"{len(runs)} runs, {worst.sent - worst.counted:,} of {worst.sent:,} lost "
                     f"({worst.dropped:,})")
        else:
            first = "none up to the top of the ladder"
        flat_out = [r for r in results if r.tool == tool and r.requested is None]
        capacity = f"{flat_out[-1].processed_rate:,.0f}" if flat_out else "n/a"
        lines.append(f"| {tool} | {best} | {first} | {capacity} |")
    return "\n".join(lines)


# ---------------------------------------------------------- memory over a long run
@dataclass
class MemorySample:
    minutes: float  # capture time written so far
    rss_mb: float
    peak_mb: float


def _proc_status_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process, in MB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(value.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def _wait_idle(pid: int, quiet: float = 0.3) -> None:
    """Until the process used no CPU for ``quiet`` seconds: it has read all it was given."""
    last = _cpu_seconds(pid)
    while True:
        time.sleep(quiet)
        now = _cpu_seconds(pid)
        if now == last:
            return
        last = now


def memory_run(args: argparse.Namespace) -> int:
    from test_live_memory import long_capture

    with tempfile.TemporaryDirectory(prefix="bench-live-memory-") as tmp:
        capture = long_capture(Path(tmp) / "long.pcap", minutes=args.minutes,
                               short_per_second=args.short_flows)
        data = capture.path.read_bytes()
    record = (len(data) - 24) // capture.packets
    env = dict(os.environ)
    if args.pythonpath:
        env["PYTHONPATH"] = str(args.pythonpath)
    command = [sys.executable, "-m", "appsight", args.command, "-", "--json"]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=tempfile.gettempdir())
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    counted = [0, 0]  # flows, packets

    def count(stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            row = json.loads(line)
            counted[0] += 1
            counted[1] += row["packets_fwd"] + row["packets_bwd"]

    reader = threading.Thread(target=count, args=(proc.stdout,), daemon=True)
    reader.start()
    samples: list[MemorySample] = []
    started = time.monotonic()
    proc.stdin.write(data[:24])
    for k in range(args.slices):
        a = capture.packets * k // args.slices
        b = capture.packets * (k + 1) // args.slices
        proc.stdin.write(data[24 + a * record: 24 + b * record])
        proc.stdin.flush()
        _wait_idle(proc.pid)
        rss, peak = _proc_status_mb(proc.pid)
        samples.append(MemorySample(args.minutes * (k + 1) / args.slices, rss, peak))
        print(f"bench_live: {samples[-1].minutes:5.1f} min  RSS {rss:7.1f} MB  peak "
              f"{peak:7.1f} MB", file=sys.stderr)
    # Silence: the arrival clock ends the burst (its last flows are built and printed) while
    # the process still runs, so that its peak can be read. (ru_maxrss at exit is no use:
    # it can include the parent's pages from before the child's exec.)
    time.sleep(1.5)
    _wait_idle(proc.pid)
    rss, peak = _proc_status_mb(proc.pid)
    proc.stdin.close()
    status = proc.wait()
    took = time.monotonic() - started
    reader.join(timeout=60)
    errors = proc.stderr.read().decode().strip()
    line = " ".join(a for a in (sys.argv[1:]))
    print(f"## Memory of one long live run\n\n"
          f"* command: `.venv/bin/python benchmarks/bench_live.py {line}`\n"
          f"* appsight: {args.pythonpath or 'this checkout'}; `{' '.join(command[3:])}`\n"
          f"* capture: {args.minutes:g} min, {capture.packets:,} packets "
          f"({len(data) / 1e6:.0f} MB), {capture.short_flows:,} short flows beside "
          f"{capture.long_flows} that never pause: one burst\n"
          f"* reported: {counted[0]:,} flows holding {counted[1]:,} packets; exit status "
          f"{status}; {took:.0f} s\n"
          f"* peak RSS of the whole run, after the burst clock ended the burst: "
          f"{peak:.0f} MB (RSS then {rss:.0f} MB)\n")
    if errors:
        print("standard error:\n\n```\n" + errors + "\n```\n")
    print("| capture written (min) | RSS (MB) | peak RSS so far (MB) |\n| ---: | ---: | ---: |")
    for sample in samples:
        print(f"| {sample.minutes:.1f} | {sample.rss_mb:.0f} | {sample.peak_mb:.0f} |")
    return 0


# ------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tools", default=",".join(TOOLS), help=f"of {', '.join(TOOLS)}")
    p.add_argument("--rates", default=DEFAULT_RATES,
                   help=f"packets/s to try, in order ('max': as fast as possible; default "
                   f"{DEFAULT_RATES})")
    p.add_argument("--seconds", type=float, default=5.0, help="length of each run (default 5)")
    p.add_argument("--repeat", type=int, default=2,
                   help="runs at each rate; a rate counts if all are loss-free (default 2)")
    p.add_argument("--gap", type=float, default=0.5, help="--burst-gap for flows/live")
    p.add_argument("--tool-cpu", type=int, default=1)
    p.add_argument("--sender-cpu", type=int, default=0)
    p.add_argument("--data", type=Path,
                   default=Path(os.environ.get("APPSIGHT_DATA", REPO.parent / "shared" / "data")))
    p.add_argument("--json", type=Path, help="also write the raw results here")
    p.add_argument("--sniff-worker", metavar="IFACE", help=argparse.SUPPRESS)
    memory = p.add_argument_group("memory of one long run (--memory; no root needed)")
    memory.add_argument("--memory", action="store_true",
                        help="measure RSS over a long capture on standard input instead")
    memory.add_argument("--minutes", type=float, default=30.0,
                        help="capture time (default 30)")
    memory.add_argument("--short-flows", type=int, default=1000, metavar="N",
                        help="new two-packet flows per second (default 1000)")
    memory.add_argument("--slices", type=int, default=10,
                        help="parts written one after another, RSS read after each (default 10)")
    memory.add_argument("--command", choices=("flows", "live"), default="flows",
                        help="appsight command run on '-' (default flows)")
    memory.add_argument("--pythonpath", type=Path,
                        help="run the appsight package found here (another version)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.sniff_worker:
        return sniff_worker(args.sniff_worker)
    if args.memory:
        return memory_run(args)
    reason = netns_unavailable()
    if reason:
        print(f"bench_live: {reason}", file=sys.stderr)
        return 2
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    rates = [None if r.strip() == "max" else float(r) for r in args.rates.split(",")]
    os.sched_setaffinity(0, {args.sender_cpu})
    info = machine()
    frames, used = load_frames(args.data)
    mean = sum(map(len, frames)) / len(frames)
    print(f"bench_live: {len(frames)} frames from {used}, mean {mean:.0f} bytes", file=sys.stderr)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp, \
            veth_pair(f"b{os.getpid()}") as pair:
        workdir = Path(tmp)
        model = train_model(workdir) if "live" in tools else workdir / "none"
        for tool in tools:
            for rate in rates:
                runs = []
                for _ in range(args.repeat):
                    result = run_once(pair, tool, frames, rate, args.seconds, args, model,
                                      workdir)
                    runs.append(result)
                    print(f"bench_live: {tool} asked {_rate(rate)} achieved {result.rate:,.0f} "
                          f"sent {result.sent} counted {result.counted} dropped "
                          f"{result.dropped} cpu {result.cpu_seconds:.1f}s "
                          f"{'ok' if result.lossless else 'LOSS'}", file=sys.stderr)
                results.extend(runs)
                if not all(r.lossless for r in runs):  # the tool's limit is below this rate
                    break
            if results[-1].requested is not None:  # and its capacity: one run flat out
                results.append(run_once(pair, tool, frames, None, args.seconds, args, model,
                                        workdir))
                print(f"bench_live: {tool} flat out: handled "
                      f"{results[-1].processed_rate:,.0f} pkt/s", file=sys.stderr)
    info["load_end"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    command = "sudo .venv/bin/python benchmarks/bench_live.py " + " ".join(
        a for a in (argv if argv is not None else sys.argv[1:]))
    print(f"## Live throughput\n\n* command: `{command.strip()}`")
    for key, value in info.items():
        print(f"* {key}: {value}")
    print(f"* frames: {len(frames):,} IP frames of {used} (mean {mean:.0f} bytes), sent "
          f"cyclically; {args.seconds:g} s per run; tools on CPU {args.tool_cpu}, sender on "
          f"CPU {args.sender_cpu}\n")
    print(summary_table(results, tools) + "\n")
    print(runs_table(results))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "frames": len(frames),
                                         "mean_frame_bytes": mean, "captures": used,
                                         "results": [asdict(r) | {"rate": r.rate}
                                                     for r in results]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
