"""Do live predictions on the gateway agree with offline ``appsight classify``?

Both write the same JSON Lines objects (those of ``appsight flows --json`` plus ``app`` and
``confidence``). A flow of a burst is identified by its 5-tuple and its first packet's time.
The live agent and the capture read the interface through sockets of their own, whose
timestamps differ by microseconds, so first packets within a millisecond are the same. The
live agent ran
longer than the session's capture, so only flows of the capture are compared; lines it
wrote while it had no model yet (no ``app``) are skipped.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from labctl.errors import LabError

FlowId = tuple[str, str, int, str, int]

#: Seconds by which the two sockets' timestamps of one packet may differ.
TOLERANCE = 0.001


def _flows(path: Path) -> Iterator[tuple[FlowId, float, str]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise LabError(f"cannot read {path}: {exc.strerror}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            flow = json.loads(line)
            if "app" not in flow:
                continue
            key = (flow["proto"], flow["src"], int(flow["sport"]), flow["dst"],
                   int(flow["dport"]))
            yield key, float(flow["first_ts"]), str(flow["app"])
        except (ValueError, KeyError, TypeError) as exc:
            raise LabError(f"{path}, line {number}: not a prediction ({exc})") from exc


def compare_predictions(live: Path, offline: Path) -> dict[str, object]:
    """Counts of offline flows the live agent reported too, and of those given the same app."""
    live_flows: dict[FlowId, list[tuple[float, str]]] = defaultdict(list)
    for key, first, app in _flows(live):
        live_flows[key].append((first, app))
    offline_flows = list(_flows(offline))
    matched = same = 0
    for key, first, app in offline_flows:
        twins = [live_app for live_first, live_app in live_flows.get(key, ())
                 if abs(live_first - first) <= TOLERANCE]
        if twins:
            matched += 1
            same += twins[0] == app
    return {
        "offline_flows": len(offline_flows),
        "matched": matched,
        "same_app": same,
        "agreement": same / matched if matched else 0.0,
        "coverage": matched / len(offline_flows) if offline_flows else 0.0,
    }
