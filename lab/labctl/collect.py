"""A recording session: apps run on the phone while the gateway captures, labelled per socket.

The capture is taken on the gateway (``capture.yml``), where the agent will see traffic.
Meanwhile the phone's socket tables are sampled, and afterwards every flow of the capture is
labelled with the app whose UID owned its socket on the phone. Several apps can therefore
run at once and still be told apart: the labels come from the phone, not from the schedule.
"""

from __future__ import annotations

import csv
import json
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from appsight.labels import LABEL_COLUMNS
from appsight.pipeline import PipelineOptions
from appsight.sockets import (
    SocketOwners,
    parse_packages,
    parse_socket_tables,
    read_text_lines,
    rows_from_sockets,
)

from labctl.ansible_runner import AnsibleRunner
from labctl.errors import LabError
from labctl.phone import SshPhone

#: Where the synthetic apps live on the emulated phone (role synthetic_apps).
APPS_DIR = "/opt/appsight-apps"


@dataclass
class SessionResult:
    """What a session left on the controller, and how much of it is labelled."""

    label: str
    captures: list[Path]
    labels: Path
    flows: int = 0
    labelled: int = 0
    per_app: dict[str, int] = field(default_factory=dict)
    app_summaries: list[dict] = field(default_factory=list)


class Collector:
    """Records sessions on the emulated lab into ``results``."""

    def __init__(self, runner: AnsibleRunner, phone: SshPhone, results: Path,
                 server: str, options: PipelineOptions) -> None:
        self.runner = runner
        self.phone = phone
        self.results = results
        self.server = server
        self.options = options

    @property
    def lab_results(self) -> Path:
        """Where capture.yml and retrain.yml put captures and models."""
        return self.results / "lab"

    def record(self, label: str, apps: Sequence[str], seconds: float, seed: int,
               on_line: callable | None = None) -> SessionResult:
        """Capture ``seconds`` of the apps running at once, then fetch and label it all."""
        extra = {"agent_results_dir": self.lab_results}
        self.runner.run("capture.yml", {**extra, "label": label, "capture": "start"})
        sampler = None
        try:
            sampler = self.phone.start_sampler(label)
            summaries = self._play(apps, seconds, seed)
        finally:
            # Stopped whatever happened, so that the next session can start.
            if sampler is not None:
                self.phone.stop_sampler(sampler)
            self.runner.run("capture.yml", {**extra, "capture": "stop"})
        sockets = self.phone.fetch(sampler, self.results / "sockets" / f"{label}.sockets")
        packages = self.phone.fetch(f"{APPS_DIR}/packages.txt",
                                    self.results / "sockets" / "packages.txt")
        result = self._label(label, sockets, packages)
        result.app_summaries = summaries
        return result

    def _play(self, apps: Sequence[str], seconds: float, seed: int) -> list[dict]:
        """Run each app under its own user on the phone, all at once; their summaries."""
        players = []
        for index, app in enumerate(apps):
            script = (f"runuser -u app-{app} -- python3 {APPS_DIR}/phone_apps.py "
                      f"--profiles {APPS_DIR}/profiles.yml --app {app} --server {self.server} "
                      f"--duration {seconds:g} --seed {seed + index} "
                      f"--cafile {APPS_DIR}/ca.pem --json")
            players.append(subprocess.Popen(self.phone.command(script), stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True))
        summaries = []
        deadline = time.monotonic() + seconds + 120
        try:
            for app, player in zip(apps, players, strict=True):
                out, err = player.communicate(timeout=max(1.0, deadline - time.monotonic()))
                if player.returncode != 0:
                    raise LabError(f"app {app} failed on the phone: "
                                   f"{(err.strip().splitlines() or ['no message'])[-1]}")
                summaries.append(json.loads(out.strip().splitlines()[-1]))
        except subprocess.TimeoutExpired as exc:
            raise LabError("the apps did not finish in time") from exc
        finally:
            for player in players:
                if player.poll() is None:
                    player.kill()
        return summaries

    def _label(self, label: str, sockets: Path, packages: Path) -> SessionResult:
        captures = sorted((self.lab_results / "captures" / label).glob("*.pcap"))
        if not captures:
            raise LabError(f"no capture of session {label!r} was fetched from the gateway")
        owners = SocketOwners(parse_socket_tables(read_text_lines(sockets, "socket samples"),
                                                  str(sockets)))
        names = parse_packages(read_text_lines(packages, "package list"), str(packages))
        out = self.results / "labels" / f"{label}.csv"
        out.parent.mkdir(parents=True, exist_ok=True)
        result = SessionResult(label, captures, out)
        with out.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(LABEL_COLUMNS)
            for row in rows_from_sockets(captures, owners, names, self.options):
                result.flows += 1
                app = row[-1]
                if app is not None:
                    writer.writerow(row)
                    result.labelled += 1
                    result.per_app[app] = result.per_app.get(app, 0) + 1
        return result

