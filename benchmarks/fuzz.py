"""Seeded mutants of every file appsight reads, and of its command lines, run as users run them.

Each case is a command line (``flows``, ``features -o``, ``classify -m``, ``train --labels``,
``labels from-ndpi -o``, ...) over one mutated input: a capture (pcap, pcapng, gzip), a
model file, a labels CSV, an ndpiReader listing, or random options. The seeds are built
from the embedded sample capture, so no shared data is needed. Each case runs in a child
forked from a process that has imported appsight once (so thousands of cases take minutes),
with its own folder, standard input closed, a 6 GiB address-space limit and a timeout.
An outcome is one of

* ``accepted``: exit 0, no traceback (a mutant that is still a valid input);
* ``refused``: exit 2 with an ``error:`` line and no traceback;
* ``crash``: any other exit (a signal, a traceback, another status);
* ``hang``: still running at the timeout;
* ``lost``: the command failed and an output file that existed before it changed.

Cases that are not accepted or refused keep their folder under ``--keep`` for replay.

    .venv/bin/python benchmarks/fuzz.py                      # 300 cases per kind
    .venv/bin/python benchmarks/fuzz.py --write-docs         # and docs/robustness.md
    .venv/bin/python benchmarks/fuzz.py --per-kind 20 --json out.json   # what make test runs
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "agent"))
SAMPLE = REPO / "examples" / "sample.pcap"
DOCS = REPO / "docs" / "robustness.md"
TIMEOUT_S = 60.0
MEMORY_LIMIT = 6 << 30
PROTECTED = b"the output of an earlier run\n"
OUTCOMES = ("accepted", "refused", "crash", "hang", "lost")

Mutator = Callable[[bytes, random.Random], bytes]


# ------------------------------------------------------------------------ mutators
def flip_bytes(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 16)):
        out[rng.randrange(len(out))] ^= rng.randint(1, 255)
    return bytes(out)


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data))]


def insert_junk(data: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(data) + 1)
    return data[:at] + rng.randbytes(rng.choice([1, 4, 16, 300, 5000])) + data[at:]


def duplicate_slice(data: bytes, rng: random.Random) -> bytes:
    start = rng.randrange(len(data))
    piece = data[start : start + rng.randint(1, 4096)]
    at = rng.randrange(len(data) + 1)
    return data[:at] + piece + data[at:]


EXTREMES = (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFF, 0x10000)


def extreme_words(data: bytes, rng: random.Random) -> bytes:
    """Lengths, counts and offsets are 16- and 32-bit words: set a few to edge values."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(0, max(len(out) - 4, 1)) & ~3
        width = rng.choice([2, 4])
        value = rng.choice(EXTREMES) & ((1 << (8 * width)) - 1)
        out[at : at + width] = value.to_bytes(width, rng.choice(["little", "big"]))
    return bytes(out)


def early_words(data: bytes, rng: random.Random) -> bytes:
    """The same in the first 64 bytes: file and block headers."""
    head = extreme_words(data[:64], rng)
    return head + data[64:]


BINARY_MUTATORS: tuple[Mutator, ...] = (flip_bytes, truncate, insert_junk, duplicate_slice,
                                        extreme_words, early_words)

TEXT_VALUES = ("", "-1", "0", "65536", "99999999999999999999", "nan", "inf", "1e309",
               "[::]", "::::::::", "999.1.1.1", "10.0.0.0/33", "x" * 200_000, "\u00e9\u4e2d",
               '"', ",,,,", "\t", "TCP", "-")


def text_lines(data: bytes, rng: random.Random) -> bytes:
    """Line-level edits of a text file: drop, repeat, swap, or set a field to an edge value."""
    lines = data.split(b"\n")
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(lines))
        action = rng.randrange(5)
        if action == 0:
            del lines[i]
            if not lines:
                lines = [b""]
        elif action == 1:
            lines.insert(i, lines[i] * rng.choice([1, 2, 100]))
        elif action == 2:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        else:
            sep = b"," if b"," in lines[i] else b" "
            fields = lines[i].split(sep)
            fields[rng.randrange(len(fields))] = rng.choice(TEXT_VALUES).encode()
            lines[i] = sep.join(fields)
    return b"\n".join(lines)


def non_utf8(data: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(data) + 1)
    return data[:at] + b"\xff\xfe\xc3" + data[at:]


TEXT_MUTATORS: tuple[Mutator, ...] = (text_lines, text_lines, text_lines, non_utf8, flip_bytes,
                                      truncate)


# ---------------------------------------------------------------------- model mutants
def _split_model(data: bytes) -> tuple[dict, bytes]:
    from appsight.model import MAGIC

    end = data.index(b"\n", len(MAGIC))
    return json.loads(data[len(MAGIC) : end]), data[end + 1 :]


def _forge(header: dict, payload: bytes) -> bytes:
    """What a forger writes: the header's size and SHA-256 made to match the payload."""
    from appsight.model import MAGIC, header_digest

    header = dict(header, payload_bytes=len(payload))
    header["sha256"] = header_digest(header, payload)
    return MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload


def forged_payload(data: bytes, rng: random.Random) -> bytes:
    """The zip payload mutated as bytes, the header re-hashed."""
    header, payload = _split_model(data)
    return _forge(header, rng.choice(BINARY_MUTATORS)(payload, rng))


def forged_arrays(data: bytes, rng: random.Random) -> bytes:
    """One array of the forest (a tree's nodes or values, a class list) mutated in its data
    bytes, re-zipped, the header re-hashed: a file every check before the tree walk passes."""
    header, payload = _split_model(data)
    with zipfile.ZipFile(io.BytesIO(payload)) as source:
        entries = source.infolist()
        arrays = [e for e in entries if e.filename.endswith(".npy")]
        target = rng.choice(arrays).filename
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as sink:
            for entry in entries:
                content = source.read(entry)
                if entry.filename == target:
                    body = bytearray(content)
                    start = min(128, len(body) - 1)  # past the .npy header
                    for _ in range(rng.randint(1, 8)):
                        at = rng.randrange(start, len(body))
                        body[at] = rng.choice([0x00, 0xFF, 0x7F, 0x80, rng.randint(0, 255)])
                    content = bytes(body)
                sink.writestr(entry.filename, content)
    return _forge(header, out.getvalue())


def forged_schema(data: bytes, rng: random.Random) -> bytes:
    """skops' schema.json edited as text (types, attribute values), the header re-hashed."""
    header, payload = _split_model(data)
    with zipfile.ZipFile(io.BytesIO(payload)) as source:
        entries = source.infolist()
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as sink:
            for entry in entries:
                content = source.read(entry)
                if entry.filename == "schema.json":
                    content = text_lines(content, rng)
                sink.writestr(entry.filename, content)
    return _forge(header, out.getvalue())


def forged_header(data: bytes, rng: random.Random) -> bytes:
    """A header value replaced by another type or an edge value, the header re-hashed."""
    header, payload = _split_model(data)
    key = rng.choice(sorted(header))
    header[key] = rng.choice([None, -1, 2.5, 1e308, "x", [], {}, [1, 2], True, "payload38"])
    return _forge(header, payload)


MODEL_MUTATORS: tuple[Mutator, ...] = (flip_bytes, truncate, forged_payload, forged_arrays,
                                       forged_arrays, forged_schema, forged_header)


# --------------------------------------------------------------------------- seeds
@dataclass
class Seeds:
    """Valid inputs built from the embedded sample, in one folder."""

    folder: Path
    files: dict[str, bytes] = field(default_factory=dict)

    def path(self, name: str) -> Path:
        return self.folder / name


def _flows(capture: Path) -> list[dict]:
    done = subprocess.run([sys.executable, "-m", "appsight", "flows", str(capture), "--json"],
                          capture_output=True, text=True, check=True, cwd=REPO)
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def build_seeds(folder: Path) -> Seeds:
    """The sample as pcap, pcapng and gzip; a model trained on it; its labels; a listing."""
    import scapy.layers.l2  # noqa: F401 - names Ethernet frames, which pcapng's block needs
    from scapy.utils import PcapNgWriter, rdpcap

    seeds = Seeds(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pcap = SAMPLE.read_bytes()
    seeds.files["sample.pcap"] = pcap
    seeds.files["sample.pcap.gz"] = gzip.compress(pcap)
    ng = folder / "sample.pcapng"
    with PcapNgWriter(str(ng)) as writer:
        for packet in rdpcap(str(SAMPLE)):
            writer.write(packet)
    seeds.files["sample.pcapng"] = ng.read_bytes()
    training = folder / "training"
    for app in ("web", "chat"):
        (training / app).mkdir(parents=True)
        shutil.copy(SAMPLE, training / app / "sample.pcap")
    model = folder / "model.skops"
    subprocess.run([sys.executable, "-m", "appsight", "train", str(training), "-o", str(model),
                    "--trees", "5"], capture_output=True, check=True, cwd=REPO)
    seeds.files["model.skops"] = model.read_bytes()
    rows = _flows(SAMPLE)
    lines = ["capture,proto,src,sport,dst,dport,label"]
    lines += [f"sample.pcap,{r['proto']},{r['src']},{r['sport']},{r['dst']},{r['dport']},"
              f"{'web' if r['proto'] == 'tcp' else 'chat'}" for r in rows]
    seeds.files["labels.csv"] = ("\n".join(lines) + "\n").encode()
    listing = ["Detected protocols:", "", ""]
    for i, r in enumerate(rows, 1):
        proto = "91/TLS.Google" if r["proto"] == "tcp" else "30/DNS"
        listing.append(
            f"\t{i}\t{r['proto'].upper()} {r['src']}:{r['sport']} <-> {r['dst']}:{r['dport']} "
            f"[proto: {proto}][Confidence: DPI][{r['packets_fwd']} pkts/{r['bytes_fwd']} bytes "
            f"<-> {r['packets_bwd']} pkts/{r['bytes_bwd']} bytes][Hostname/SNI: example.org]")
    seeds.files["sample.pcap.out"] = ("\n".join(listing) + "\n").encode()
    for name, data in seeds.files.items():
        seeds.path(name).write_bytes(data)
    return seeds


# --------------------------------------------------------------------------- cases
@dataclass
class Case:
    kind: str
    detail: str
    argv: list[str]
    files: dict[str, bytes]
    protected: str | None = None  # an output that existed before and must survive a failure


def capture_case(rng: random.Random, seeds: Seeds) -> Case:
    name = rng.choice(["sample.pcap", "sample.pcapng", "sample.pcap.gz"])
    mutator = rng.choice(BINARY_MUTATORS)
    data = mutator(seeds.files[name], rng)
    if name.endswith(".gz") and rng.random() < 0.5:  # a damaged stream, or a damaged capture
        data = gzip.compress(mutator(seeds.files["sample.pcap"], rng))
    command = rng.choice(["flows", "features", "classify"])
    argv = {"flows": ["flows", name, "--json"],
            "features": ["features", name, "-o", "features.csv"],
            "classify": ["classify", name, "-m", str(seeds.path("model.skops")), "--json"]}
    return Case("capture", f"{command} {name} {mutator.__name__}", argv[command], {name: data},
                "features.csv" if command == "features" else None)


def model_case(rng: random.Random, seeds: Seeds) -> Case:
    mutator = rng.choice(MODEL_MUTATORS)
    return Case("model", mutator.__name__,
                ["classify", str(seeds.path("sample.pcap")), "-m", "model.skops"],
                {"model.skops": mutator(seeds.files["model.skops"], rng)})


def labels_case(rng: random.Random, seeds: Seeds) -> Case:
    mutator = rng.choice(TEXT_MUTATORS)
    return Case("labels", mutator.__name__,
                ["train", str(seeds.path("sample.pcap")), "--labels", "labels.csv", "-o",
                 "model.out", "--trees", "3"],
                {"labels.csv": mutator(seeds.files["labels.csv"], rng)}, "model.out")


def listing_case(rng: random.Random, seeds: Seeds) -> Case:
    mutator = rng.choice(TEXT_MUTATORS)
    return Case("ndpi listing", mutator.__name__,
                ["labels", "from-ndpi", "sample.pcap.out", "-o", "labels.csv"],
                {"sample.pcap.out": mutator(seeds.files["sample.pcap.out"], rng)}, "labels.csv")


ARG_VALUES = ("-1", "0", "1", "0.5", "2", "nan", "inf", "-inf", "1e309", "none", "", "x",
              "99999999999999999999", "10.0.0.0/33", "300.1.1.1", "::1", "10.0.0.0/8",
              "/nonexistent/file", "-", ".", "sample.pcap", "model.skops", "x" * 5000)
COMMANDS = {  # a valid, quick command line of each, and the options to add to it
    "flows": (["flows", "sample.pcap"], ["--json", "--burst-gap", "--device", "--no-decap",
                                          "--parquet", "-o"]),
    "features": (["features", "sample.pcap", "-o", "out.csv"],
                 ["--features", "--burst-gap", "--device", "--min-packets", "-o"]),
    "classify": (["classify", "sample.pcap", "-m", "model.skops"],
                 ["--threshold", "--sessions", "--window", "--min-share", "--device", "--json",
                  "--burst-gap", "--trusted-models", "-m"]),
    "train": (["train", "sample.pcap", "--labels", "labels.csv", "-o", "out.model"],
              ["--trees", "--max-leaves", "--threshold", "--seed", "--features",
               "--min-packets", "--class-weight", "--device", "--groups-file"]),
    "live": (["live", "-"], ["-m", "--json", "--max-flows", "--max-packets", "--device",
                             "--sessions", "--window", "--write-pcap", "--json-log"]),
    "labels": (["labels", "from-ndpi", "sample.pcap.out"], ["-o", "--label", "--guesses"]),
}


def argv_case(rng: random.Random, seeds: Seeds) -> Case:
    command = rng.choice(sorted(COMMANDS))
    base, options = COMMANDS[command]
    argv = list(base)
    for _ in range(rng.randint(1, 4)):
        argv.append(rng.choice(options))
        if rng.random() < 0.8:
            argv.append(rng.choice(ARG_VALUES))
    if command == "train":
        argv += ["--trees", "3"] if "--trees" not in argv else []
    files = {name: seeds.files[name] for name in ("sample.pcap", "model.skops", "labels.csv",
                                                    "sample.pcap.out")}
    return Case("command line", command, argv, files)


KINDS: dict[str, Callable[[random.Random, Seeds], Case]] = {
    "capture": capture_case, "model": model_case, "labels": labels_case,
    "ndpi listing": listing_case, "command line": argv_case,
}


# ---------------------------------------------------------------------------- runner
@dataclass
class Outcome:
    case: Case
    outcome: str
    status: int | None
    seconds: float
    last_line: str


def _child(argv: list[str]) -> None:
    """In the forked child: run the command as ``appsight`` would, then leave at once."""
    from appsight import cli

    status = 99
    try:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        status = cli.main(argv)
    except SystemExit as exc:  # argparse
        status = exc.code if isinstance(exc.code, int) else 2
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(status)


def run_case(case: Case, folder: Path, timeout: float = TIMEOUT_S) -> Outcome:
    folder.mkdir(parents=True)
    for name, data in case.files.items():
        (folder / name).write_bytes(data)
    if case.protected:
        (folder / case.protected).write_bytes(PROTECTED)
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.chdir(folder)
        for fd, name, flags in ((0, os.devnull, os.O_RDONLY),
                                (1, "stdout", os.O_WRONLY | os.O_CREAT),
                                (2, "stderr", os.O_WRONLY | os.O_CREAT)):
            os.dup2(os.open(name, flags, 0o644), fd)
        _child(case.argv)
    status: int | None = None
    while True:
        done, raw = os.waitpid(pid, os.WNOHANG)
        if done:
            status = os.waitstatus_to_exitcode(raw)
            break
        if time.monotonic() - start > timeout:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            break
        time.sleep(0.005)
    seconds = time.monotonic() - start
    err = (folder / "stderr").read_text(errors="replace")
    lines = err.strip().splitlines()
    last = lines[-1] if lines else ""
    if status is None:
        outcome = "hang"
    elif "Traceback" in err or status not in (0, 2) or (status == 2 and "error: " not in err):
        outcome = "crash"
    elif status != 0 and case.protected and (folder / case.protected).read_bytes() != PROTECTED:
        outcome = "lost"
    else:
        outcome = "accepted" if status == 0 else "refused"
    return Outcome(case, outcome, status, seconds, last[:300])


def preload() -> None:
    """Import what the commands import, once, so that each forked case starts at once."""
    import sklearn.ensemble  # noqa: F401
    import skops.io  # noqa: F401
    from appsight import cli  # noqa: F401
    from appsight.commands import options  # noqa: F401


def fuzz(per_kind: int, seed: int, work: Path, keep: Path | None,
         kinds: list[str] | None = None) -> dict:
    """Run ``per_kind`` cases of each kind (plus each kind's unmutated seed as a control)."""
    seeds = build_seeds(work / "seeds")
    preload()
    rng = random.Random(seed)
    results: dict[str, Counter] = {}
    failures: list[dict] = []
    controls: dict[str, str] = {}
    started = time.monotonic()
    for kind in kinds or list(KINDS):
        make = KINDS[kind]
        counts: Counter = Counter()
        if kind != "command line":
            controls[kind] = run_case(_unmutated(kind, seeds), work / kind / "control").outcome
        for number in range(per_kind):
            case = make(rng, seeds)
            result = run_case(case, work / kind / str(number))
            counts[result.outcome] += 1
            if result.outcome not in ("accepted", "refused"):
                failures.append({"kind": kind, "detail": case.detail, "argv": case.argv,
                                 "outcome": result.outcome, "status": result.status,
                                 "last_line": result.last_line, "case": number})
                if keep is not None:
                    shutil.copytree(work / kind / str(number), keep / kind / str(number),
                                    dirs_exist_ok=True)
            shutil.rmtree(work / kind / str(number), ignore_errors=True)
        results[kind] = counts
        print(f"fuzz: {kind}: {dict(counts)}", file=sys.stderr)
    return {"per_kind": per_kind, "seed": seed, "seconds": round(time.monotonic() - started, 1),
            "counts": {k: {o: v.get(o, 0) for o in OUTCOMES} for k, v in results.items()},
            "controls": controls, "failures": failures}


def _unmutated(kind: str, seeds: Seeds) -> Case:
    """The kind's command on its seed, unchanged: it must be accepted."""
    identity = random.Random(0)
    if kind == "capture":
        names = ("sample.pcap", "sample.pcapng", "sample.pcap.gz")
        return Case(kind, "seed", ["flows", *names, "--json"],
                    {name: seeds.files[name] for name in names})
    case = KINDS[kind](identity, seeds)
    name = next(iter(case.files))
    case.files = {name: seeds.files[name]}
    return case


# ----------------------------------------------------------------------------- docs
#: Problems this harness found, with the test that now holds each fixed.
FOUND = (
    "a model whose zip directory asks for zip version 25.5 raised NotImplementedError from "
    "zipfile, a traceback (`test_zip_of_an_unknown_version_is_a_damaged_payload`)",
    "`features X -o FILE` on captures none of which could be read kept FILE as it was but "
    "said `wrote 0 flows ... to FILE` (`test_features_that_read_nothing_leave_the_old_table`)",
)


def write_docs(result: dict, command: str) -> str:
    counts = result["counts"]
    total = Counter()
    rows = []
    for kind, c in counts.items():
        total.update(c)
        rows.append(f"| {kind} | {sum(c.values())} | {c['accepted']} | {c['refused']} | "
                    f"{c['crash']} | {c['hang']} | {c['lost']} |")
    rows.append(f"| **all** | **{sum(total.values())}** | {total['accepted']} | "
                f"{total['refused']} | **{total['crash']}** | **{total['hang']}** | "
                f"**{total['lost']}** |")
    found = "\n".join(f"- {line}" for line in FOUND)
    failures = "\n".join(f"- {f['kind']}, {f['detail']}: {f['outcome']} ({f['last_line']})"
                         for f in result["failures"]) or "None."
    return f"""# Robustness: what bad input does to appsight

Every file appsight reads and every command line it takes was mutated at random, from valid
seeds built from the embedded sample capture, and run the way a user runs it
(`benchmarks/fuzz.py`; its docstring describes the mutants and outcomes). An input is
*accepted* when the command still succeeds (a flipped payload byte is still a capture),
*refused* when it gives `error:` lines (one per bad input) and exit status 2, and anything
else counts against appsight: a *crash* (a traceback, a signal, another exit status), a
*hang* (still running after {TIMEOUT_S:.0f} s), or a *lost* output (a failed command changed
a file that existed before it ran).

{result['per_kind']} cases per kind, seed {result['seed']}, {result['seconds']:.0f} s on
{os.cpu_count()} cores:

| input | tried | accepted | refused | crashes | hangs | outputs lost |
|---|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

What the kinds are:

- **capture**: the sample as pcap, pcapng and gzip, with bytes flipped, cut, inserted or
  repeated, and header words set to edge values; run through `flows --json`, `features -o`
  (an existing output must survive a refusal) and `classify -m`.
- **model**: the model file with bytes flipped or cut (the SHA-256 refuses them), and forged
  files whose header is re-hashed after the payload's zip bytes, a tree array's numbers, skops'
  schema or a header value was changed; run through `classify -m`.
- **labels**: the labels CSV with lines dropped, repeated or swapped, fields set to edge values
  (200 000 characters, ports past 65535, bad addresses) and bytes that are not UTF-8; run
  through `train --labels -o` (an existing model must survive).
- **ndpi listing**: an ndpiReader listing mutated the same way; run through
  `labels from-ndpi -o`.
- **command line**: each command's valid arguments plus up to four options with values such
  as `-1`, `nan`, `1e309`, `10.0.0.0/33`, a missing file or 5 000 characters.

Cases that were not accepted or refused:

{failures}

What earlier runs found, each fixed and now a test of its own:

{found}

Reproduce (the counts above are from this command; `make test` runs a smaller one in
`tests/test_fuzz.py`, which fails on any crash, hang or lost output):

    {command}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-kind", type=int, default=300, help="cases per kind (300)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kind", action="append", choices=sorted(KINDS),
                        help="only these kinds (repeatable)")
    parser.add_argument("--json", type=Path, help="write the counts and failures here")
    parser.add_argument("--keep", type=Path, help="copy each failing case's folder here")
    parser.add_argument("--write-docs", action="store_true", help="rewrite docs/robustness.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="appsight-fuzz-") as work:
        result = fuzz(args.per_kind, args.seed, Path(work), args.keep, args.kind)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.write_docs:
        command = f".venv/bin/python benchmarks/fuzz.py --per-kind {args.per_kind} " \
                  f"--seed {args.seed} --write-docs"
        DOCS.write_text(write_docs(result, command))
    bad = sum(c["crash"] + c["hang"] + c["lost"] for c in result["counts"].values())
    print(json.dumps(result["counts"]), file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
