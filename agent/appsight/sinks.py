"""What becomes of each finished flow block: the per-burst report or JSON Lines on standard
output, with the predicted app and confidence when there is a model, and optionally a JSON
log beside it. Every block is flushed at once, so that a burst is reported as soon as it is
complete, also into a pipe."""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Callable, Sequence
from typing import IO

from .addresses import NetworkMatcher
from .errors import UsageError
from .model import AppModel
from .pipeline import FlowBlock
from .report import write_json_lines, write_report
from .verdicts import (
    DEFAULT_MIN_SHARE,
    CaptureWindows,
    RecentFlows,
    flow_answers,
    write_verdicts,
)

Sink = Callable[[FlowBlock], None]


def flow_reporter(as_json: bool, json_log: JsonLog | None = None) -> Sink:
    """The sink of ``flows`` (and of ``live`` without a model): no app column."""
    out = sys.stdout
    writer = write_json_lines if as_json else write_report

    def handle(block: FlowBlock) -> None:
        writer(block, out)
        out.flush()
        if json_log is not None:
            json_log.write(block)

    return handle


def classifying_reporter(
    model: AppModel, threshold: float, as_json: bool, json_log: JsonLog | None = None,
    recent: RecentFlows | None = None, devices: NetworkMatcher | None = None,
    show_flows: bool = True,
) -> Sink:
    """The sink of ``classify`` and ``live -m``: each flow with its app and confidence.

    With ``recent`` (live), each device seen in the block then gets the verdict of its last
    window (:mod:`appsight.verdicts`); ``show_flows`` False leaves only those verdicts.
    """
    out = sys.stdout
    writer = write_json_lines if as_json else write_report

    def handle(block: FlowBlock) -> None:
        apps, confidence = model.predict(model.feature_set(block.flows), threshold)
        extra = {"app": apps, "confidence": [round(float(c), 4) for c in confidence]}
        if show_flows:
            writer(block, out, extra)
        if recent is not None and len(block.flows):
            seen = recent.add(flow_answers(block, apps, confidence, devices))
            now = float(block.flows.last_ts.max()) / 1e9
            write_verdicts(recent.verdicts(block.capture, now, seen), out, as_json)
        out.flush()
        if json_log is not None:
            json_log.write(block, extra)

    return handle


class JsonLog:
    """The --json-log file: one line per flow, flushed with every report.

    A log that cannot be written any more (a full /var/log) stops with one warning; the
    agent goes on classifying and reporting, since a crash-looping agent reports nothing.
    """

    def __init__(self, handle: IO[str], path: str) -> None:
        self.handle: IO[str] | None = handle
        self.path = path

    def write(self, block: FlowBlock, extra: dict[str, Sequence[object]] | None = None) -> None:
        if self.handle is None:
            return
        try:
            write_json_lines(block, self.handle, extra)
            self.handle.flush()
        except OSError as exc:
            print(f"appsight: warning: {self.path}: the JSON log stopped ({exc.strerror}); "
                  "classifying goes on", file=sys.stderr, flush=True)
            self.close()

    def close(self) -> None:
        handle, self.handle = self.handle, None
        if handle is not None:
            with contextlib.suppress(OSError):
                handle.close()


def open_json_log(path: str) -> JsonLog:
    """The --json-log file, appended to.

    The agent may run as root: a symbolic link at ``path`` is refused rather than followed
    (it could point at any file of the system).
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        reason = "is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
        raise UsageError(f"{path}: cannot write the JSON log: {reason}") from None
    return JsonLog(os.fdopen(fd, "a", encoding="utf-8"), path)


class VerdictReporter:
    """The sink of ``classify --sessions``: each flow answered by the model, then, when a
    capture ends, the active apps of every device and window (:mod:`appsight.verdicts`).

    Call :meth:`finish` when a capture ends: its windows are written then.
    """

    def __init__(self, model: AppModel, threshold: float, as_json: bool,
                 devices: NetworkMatcher | None, window: float | None,
                 min_share: float = DEFAULT_MIN_SHARE) -> None:
        self.model, self.threshold, self.as_json = model, threshold, as_json
        self.devices, self.window, self.min_share = devices, window, min_share
        self.current: CaptureWindows | None = None

    def __call__(self, block: FlowBlock) -> None:
        if self.current is None:
            self.current = CaptureWindows(block.capture, self.window, self.min_share)
        apps, confidence = self.model.predict(self.model.feature_set(block.flows), self.threshold)
        self.current.add(flow_answers(block, apps, confidence, self.devices))

    def finish(self) -> None:
        if self.current is not None:
            write_verdicts(self.current.verdicts(), sys.stdout, self.as_json)
            sys.stdout.flush()
            self.current = None
