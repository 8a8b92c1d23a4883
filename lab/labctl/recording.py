"""A recording session: apps run on the phone while the gateway captures, labelled per socket.

The capture is taken on the gateway (``capture.yml``), where the agent will see traffic.
Meanwhile the phone's socket tables are sampled, and afterwards every flow of the capture is
labelled with the app whose UID owned its socket on the phone. Several apps can therefore
run at once and still be told apart: the labels come from the phone, not from the schedule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from appsight.pipeline import PipelineOptions
from appsight.sockets import write_socket_labels

from labctl.ansible_runner import AnsibleRunner
from labctl.errors import LabError
from labctl.phone import Phone


@dataclass
class SessionResult:
    """What a session left on the controller, and how much of it is labelled."""

    label: str
    captures: list[Path]
    labels: Path
    connections: int = 0  # 5-tuples over the session's captures (sockets)
    labelled: int = 0
    per_app: dict[str, int] = field(default_factory=dict)
    app_summaries: list[dict] = field(default_factory=list)


class Collector:
    """Records sessions on the emulated lab into ``results``."""

    def __init__(self, runner: AnsibleRunner, phone: Phone, results: Path,
                 options: PipelineOptions) -> None:
        self.runner = runner
        self.phone = phone
        self.results = results
        self.options = options

    @property
    def lab_results(self) -> Path:
        """Where capture.yml and retrain.yml put captures and models."""
        return self.results / "lab"

    def record(self, label: str, apps: Sequence[str], seconds: float,
               seed: int) -> SessionResult:
        """Capture ``seconds`` of the apps running at once, then fetch and label it all."""
        extra = {"agent_results_dir": self.lab_results}
        self.runner.run("capture.yml", {**extra, "label": label, "capture": "start"})
        sampler = None
        try:
            sampler = self.phone.start_sampler(label)
            summaries = self.phone.play(apps, seconds, seed)
        finally:
            # Stopped whatever happened, so that the next session can start.
            if sampler is not None:
                self.phone.stop_sampler(sampler)
            self.runner.run("capture.yml", {**extra, "capture": "stop"})
        sockets = self.phone.fetch(sampler, self.results / "sockets" / f"{label}.sockets")
        packages = self.phone.fetch(self.phone.packages_path(),
                                    self.results / "sockets" / "packages.txt")
        result = self._label(label, sockets, packages)
        result.app_summaries = summaries
        return result

    def _label(self, label: str, sockets: Path, packages: Path) -> SessionResult:
        captures = sorted((self.lab_results / "captures" / label).glob("*.pcap"))
        if not captures:
            raise LabError(f"no capture of session {label!r} was fetched from the gateway")
        out = self.results / "labels" / f"{label}.csv"
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", newline="") as handle:
            done = write_socket_labels(captures, sockets, packages, self.options, handle)
        return SessionResult(label, captures, out, connections=done.connections,
                             labelled=done.labelled, per_app=done.per_app)
