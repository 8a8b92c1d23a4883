"""Which apps a device is running: the answers of its flows combined over a time window.

One flow is a weak witness (on real app traffic a quarter of the flows stay ``unknown`` and
some answered ones are wrong), but a phone running an app makes many flows, and their answers
agree: on FG-Net's sessions a vote over a session's flows names the app of about 98 % of the
sessions (docs/accuracy.md). The rule:

* Only answered flows vote (a flow below the model's threshold says nothing), each with its
  confidence as weight. An app's *share* is its weight over the number of the window's flows,
  answered or not: the part of the traffic that is confidently that app's.
* The apps whose share reaches ``min_share`` are the window's active apps, highest first. A
  window where none does names no app: ``unknown``.

Dividing by all flows rather than by the votes is what lets an app the model never saw come out
``unknown``: most of its flows stay below the threshold, and the few that are answered as the
nearest known app are too small a part of the window (docs/accuracy.md measures the trade-off).

Windows are per device: the flow's forward address when ``--device`` says which addresses are
phones (a flow's forward direction is then "sent by the device"), else one window for all
traffic of the capture. Offline, a window is the whole capture or consecutive ``window``-second
slices from the device's first flow; live, it is the last ``window`` seconds, reported after
every report of bursts.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from .addresses import NetworkMatcher, pairs_to_addresses
from .classifier import UNKNOWN
from .pipeline import FlowBlock
from .report import clock

#: Apps below this share of a window's flows are not named (background noise, wrong answers,
#: the nearest known app for an app never seen). Chosen on FG-Net's sessions, time split: with
#: 10 apps left out of training, about 9 in 10 of their sessions come out unknown while about
#: 96 % of the known apps' sessions are named right (docs/accuracy.md has the trade-off).
DEFAULT_MIN_SHARE = 0.12
#: The device name of a window over all of a capture's traffic (no ``--device`` given).
ALL_TRAFFIC = "all"


@dataclass(frozen=True)
class FlowAnswer:
    """What the model said about one flow, with when and for which device."""

    device: str
    first_ts: float
    last_ts: float
    app: str
    confidence: float


@dataclass(frozen=True)
class ActiveApp:
    """An app named in a window: its share of the votes, its flows, their mean confidence."""

    app: str
    share: float
    flows: int
    confidence: float


@dataclass(frozen=True)
class Verdict:
    """The active apps of one device in one window of time."""

    capture: str
    device: str
    start: float
    end: float
    flows: int
    answered: int
    apps: tuple[ActiveApp, ...]

    @property
    def top(self) -> str:
        """The app with the highest share, or ``unknown``."""
        return self.apps[0].app if self.apps else UNKNOWN

    def report_line(self) -> str:
        """The line of ``classify --sessions`` and of the live report (UTC times)."""
        when = (f"{clock(round(self.start * 1e9))} .. {clock(round(self.end * 1e9))} UTC "
                f"({self.end - self.start:.1f} s)")
        apps = ", ".join(
            f"{a.app} {100 * a.share:.0f} % ({a.flows} flow{'s' if a.flows != 1 else ''}, "
            f"confidence {a.confidence:.2f})" for a in self.apps) or UNKNOWN
        return (f"== {self.capture}  device {self.device}  {when}  {self.flows} flows, "
                f"{self.answered} answered: {apps}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "capture": self.capture, "device": self.device,
            "start": round(self.start, 6), "end": round(self.end, 6),
            "flows": self.flows, "answered": self.answered,
            "apps": [{"app": a.app, "share": round(a.share, 4), "flows": a.flows,
                      "confidence": round(a.confidence, 4)} for a in self.apps],
        }


def flow_answers(block: FlowBlock, apps: Sequence[str], confidence: Sequence[float],
                 devices: NetworkMatcher | None) -> list[FlowAnswer]:
    """The answers of a block's flows, each for its device: the end inside ``devices`` (flows
    with no end inside are about no device and left out), or :data:`ALL_TRAFFIC`."""
    f = block.flows
    if devices is None:
        owner = [ALL_TRAFFIC] * len(f)
    else:
        src = pairs_to_addresses(f.src_hi, f.src_lo)
        dst = pairs_to_addresses(f.dst_hi, f.dst_lo)
        src_in = devices.contains(f.src_hi, f.src_lo)
        dst_in = devices.contains(f.dst_hi, f.dst_lo)
        owner = [s if a else d if b else "" for s, d, a, b in zip(
            src, dst, src_in.tolist(), dst_in.tolist(), strict=True)]
    first = (np.asarray(f.first_ts) / 1e9).tolist()
    last = (np.asarray(f.last_ts) / 1e9).tolist()
    return [FlowAnswer(o, t0, t1, str(a), float(c)) for o, t0, t1, a, c in zip(
        owner, first, last, apps, confidence, strict=True) if o]


def check_min_share(value: float) -> float:
    if not 0.0 < value <= 1.0 or math.isnan(value):
        raise ValueError(f"the minimum share must be in (0, 1], not {value}")
    return value


def combine(capture: str, device: str, answers: Sequence[FlowAnswer],
            min_share: float = DEFAULT_MIN_SHARE) -> Verdict:
    """The verdict of one window from its flows' answers (the rule in the module's docstring)."""
    weight: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for answer in answers:
        if answer.app != UNKNOWN:
            weight[answer.app] += answer.confidence
            count[answer.app] += 1
    total = len(answers)
    apps = sorted(
        (ActiveApp(app, w / total, count[app], w / count[app])
         for app, w in weight.items() if w / total >= min_share),
        key=lambda a: (-a.share, a.app),
    )
    return Verdict(
        capture, device,
        min((a.first_ts for a in answers), default=math.nan),
        max((a.last_ts for a in answers), default=math.nan),
        len(answers), sum(count.values()), tuple(apps),
    )


@dataclass
class CaptureWindows:
    """Offline: every flow answer of one capture, cut into windows per device at the end.

    ``window`` None is one window per device over the whole capture; otherwise consecutive
    slices of ``window`` seconds from the device's first flow, a flow in the slice its first
    packet falls in.
    """

    capture: str
    window: float | None = None
    min_share: float = DEFAULT_MIN_SHARE
    answers: dict[str, list[FlowAnswer]] = field(default_factory=lambda: defaultdict(list))

    def add(self, answers: Iterable[FlowAnswer]) -> None:
        for answer in answers:
            self.answers[answer.device].append(answer)

    def verdicts(self) -> list[Verdict]:
        """The windows of every device, devices in order of address, windows in time order."""
        out: list[Verdict] = []
        for device in sorted(self.answers):
            flows = sorted(self.answers[device], key=lambda a: a.first_ts)
            if self.window is None:
                out.append(combine(self.capture, device, flows, self.min_share))
                continue
            origin = flows[0].first_ts
            slices: dict[int, list[FlowAnswer]] = defaultdict(list)
            for answer in flows:
                slices[int((answer.first_ts - origin) // self.window)].append(answer)
            out.extend(combine(self.capture, device, slices[k], self.min_share)
                       for k in sorted(slices))
        return out


@dataclass
class RecentFlows:
    """Live: the answers of the last ``window`` seconds per device, for a verdict after every
    burst. Memory is bounded by the flows of one window."""

    window: float
    min_share: float = DEFAULT_MIN_SHARE
    answers: dict[str, deque[FlowAnswer]] = field(default_factory=dict)

    def add(self, answers: Iterable[FlowAnswer]) -> set[str]:
        """Keep the answers; the devices they are about."""
        seen = set()
        for answer in answers:
            self.answers.setdefault(answer.device, deque()).append(answer)
            seen.add(answer.device)
        return seen

    def verdicts(self, capture: str, now: float, devices: Iterable[str]) -> list[Verdict]:
        """The verdict of each of ``devices`` over the flows that ended in the last window."""
        out = []
        for device in sorted(devices):
            recent = self.answers.get(device)
            if recent is None:
                continue
            recent = deque(a for a in recent if a.last_ts >= now - self.window)
            self.answers[device] = recent
            if recent:
                out.append(combine(capture, device, list(recent), self.min_share))
            else:
                del self.answers[device]
        return out


def write_verdicts(verdicts: Sequence[Verdict], out: IO[str], as_json: bool) -> None:
    """The active apps per device and window: a report line each, or one JSON object each."""
    if as_json:
        out.write("".join(json.dumps(v.as_dict(), separators=(", ", ": ")) + "\n"
                          for v in verdicts))
    else:
        out.write("".join(v.report_line() + "\n" for v in verdicts))
