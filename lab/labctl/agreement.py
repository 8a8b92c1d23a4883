"""Do live predictions on the gateway agree with offline ``appsight classify``?

Both write the same JSON Lines objects (those of ``appsight flows --json`` plus ``app`` and
``confidence``). A flow of a burst is identified by its 5-tuple and its first packet's time
(to the microsecond), which both paths read from the same packets. The live agent ran
longer than the session's capture, so only flows of the capture are compared.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from labctl.errors import LabError

FlowId = tuple[str, str, int, str, int, int]


def _flows(path: Path) -> Iterator[tuple[FlowId, str]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise LabError(f"cannot read {path}: {exc.strerror}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            flow = json.loads(line)
            key = (flow["proto"], flow["src"], int(flow["sport"]), flow["dst"],
                   int(flow["dport"]), round(float(flow["first_ts"]) * 1e6))
            yield key, str(flow["app"])
        except (ValueError, KeyError, TypeError) as exc:
            raise LabError(f"{path}, line {number}: not a prediction ({exc})") from exc


def compare_predictions(live: Path, offline: Path) -> dict[str, object]:
    """Counts of flows found by both, and of those given the same app."""
    live_apps = dict(_flows(live))
    offline_apps = dict(_flows(offline))
    matched = [key for key in offline_apps if key in live_apps]
    same = sum(1 for key in matched if live_apps[key] == offline_apps[key])
    return {
        "offline_flows": len(offline_apps),
        "matched": len(matched),
        "same_app": same,
        "agreement": same / len(matched) if matched else 0.0,
        "coverage": len(matched) / len(offline_apps) if offline_apps else 0.0,
    }
