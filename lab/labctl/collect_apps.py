"""``labctl collect``: labelled recordings of apps, one session per app, interruptions kept.

Each app is recorded alone (``capture.yml`` on the gateway, the phone's socket tables sampled
meanwhile) and its connections labelled from the phone's own socket owners. A session that fails
(adb lost, the phone rebooted, a playbook error) does not lose the others: what it fetched is
kept, and a file ``INCOMPLETE-<app>.txt`` beside it says what happened.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from appsight.pipeline import PipelineOptions

from labctl.ansible_runner import AnsibleRunner
from labctl.errors import LabError
from labctl.phone import Phone
from labctl.recording import Collector, SessionResult


def collect_apps(phone: Phone, inventory: Path, repo: Path, apps: Sequence[str],
                 seconds: float, seed: int, options: PipelineOptions,
                 results: Path | None = None) -> tuple[Path, list[SessionResult], list[str]]:
    """Record every app in turn; the results folder, the sessions done and the apps failed."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    results = results or repo / "results" / f"collect-{stamp}"
    results.mkdir(parents=True, exist_ok=True)
    print(f"collect: results folder: {results}", flush=True)
    runner = AnsibleRunner(repo, inventory, results / "logs" / "ansible.log")
    collector = Collector(runner, phone, results, options)
    done: list[SessionResult] = []
    failed: list[str] = []
    for index, app in enumerate(apps):
        print(f"collect: {app}: recording {seconds:g} s", flush=True)
        try:
            session = collector.record(app, [app], seconds, seed + 10 * index)
        except LabError as exc:
            failed.append(app)
            (results / f"INCOMPLETE-{app}.txt").write_text(
                f"the session of {app} did not complete: {exc}\n"
                "what was fetched before the failure is kept beside this file\n")
            print(f"collect: {app}: INCOMPLETE: {exc}", file=sys.stderr, flush=True)
            continue
        done.append(session)
        print(f"collect: {app}: {session.labelled} of {session.connections} connections labelled "
              f"({', '.join(f'{a} {n}' for a, n in sorted(session.per_app.items()))})",
              flush=True)
    return results, done, failed


def merge_labels(sessions: Sequence[SessionResult], out: Path) -> Path:
    """One labels file for all sessions (each session's file has the same header)."""
    lines: list[str] = []
    for index, session in enumerate(sessions):
        rows = session.labels.read_text().splitlines()
        lines += rows if index == 0 else rows[1:]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n" if lines else "")
    return out
