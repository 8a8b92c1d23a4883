"""The main job end to end on the emulated lab, in stages, each named and logged.

1. the lab up (fresh), 2. provisioned by the playbooks, 3. proved by the testinfra suite,
4. a labelled capture of every app in turn, 5. a model retrained on them and pushed to the
gateway, 6. a mixed session of all apps at once while ``appsight live`` on the gateway
prints its per-burst reports, 7. live predictions compared with offline ``appsight
classify`` on the capture of that session, 8. ``appsight evaluate`` of the mixed session
against its per-socket ground truth. Everything lands in one results folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

import yaml
from appsight.addresses import NetworkMatcher
from appsight.pipeline import PipelineOptions

from labctl.agreement import compare_predictions
from labctl.ansible_runner import AnsibleRunner
from labctl.collect_apps import merge_labels
from labctl.errors import LabError
from labctl.lab import Lab
from labctl.phone import EmulatedPhone
from labctl.recording import Collector, SessionResult
from labctl.remote import SshHost

#: Seconds to wait, after the mixed session, for the live agent's log to hold its flows.
AGREEMENT_WAIT = 30.0


@dataclass(frozen=True)
class DemoOptions:
    """How long the demo records: the defaults fit in a few minutes on two cores."""

    seconds_per_app: float = 30.0
    mixed_seconds: float = 60.0
    seed: int = 1
    fresh: bool = True  # rebuild the lab from scratch first


class Demo:
    """The stages of the main job, printing progress and keeping every artefact."""

    def __init__(self, lab: Lab, repo: Path, options: DemoOptions) -> None:
        self.lab = lab
        self.repo = repo
        self.options = options
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        self.results = repo / "results" / f"demo-{stamp}"
        self.logs = self.results / "logs"
        self.apps = _profile_names(repo / "lab" / "apps" / "profiles.yml")
        self.agent = lab.config.agent
        self.pipeline = PipelineOptions(burst_gap=self.agent.burst_gap,
                                        device=NetworkMatcher.parse([str(lab.config.subnet)]))
        # What a stage hands on to the stages after it.
        self.runner: AnsibleRunner
        self.collector: Collector
        self.training: list[SessionResult] = []
        self.train_labels: Path
        self.mixed: SessionResult

    # -- running -------------------------------------------------------------------------

    def run(self) -> None:
        started = time.monotonic()
        self.logs.mkdir(parents=True, exist_ok=True)
        _say(f"results folder: {self.results}")
        self.runner = AnsibleRunner(self.repo, self.lab.state_dir / "inventory.ini",
                                    self.logs / "ansible.log")
        stages = self._stages()
        for number, (title, log, work) in enumerate(stages, start=1):
            with self._stage(number, len(stages), title, log):
                work()
        _say(f"done in {time.monotonic() - started:.0f} s; everything is in {self.results}")

    def _stages(self) -> list[tuple[str, str | Path, Callable[[], None]]]:
        """(title, log to read on failure, work) of each stage, in order."""
        return [
            ("the emulated lab", self.lab.log_dir, self._lab_up),
            ("provisioning: site.yml and apps.yml", "ansible.log", self._provision),
            ("the testinfra suite", "testinfra.log", self._testinfra),
            (f"labelled captures of {len(self.apps)} apps, "
             f"{self.options.seconds_per_app:g} s each", "ansible.log", self._record_each_app),
            ("retraining on the gateway's captures (retrain.yml)", "ansible.log",
             self._retrain),
            (f"mixed session: all apps at once for {self.options.mixed_seconds:g} s, "
             "appsight live reporting on the gateway", "live-report.txt", self._mixed_session),
            ("live against offline classification", "agreement.json",
             lambda: self._agreement(self.mixed)),
            ("evaluation against the per-socket ground truth", "evaluate.log",
             lambda: self._evaluate(self.training, self.train_labels, self.mixed)),
        ]

    def _lab_up(self) -> None:
        if self.options.fresh:
            self.lab.down()
        self.lab.up()

    def _provision(self) -> None:
        self.runner.run("site.yml")
        self.runner.run("apps.yml")

    def _record_each_app(self) -> None:
        phone = EmulatedPhone(self.lab.state_dir / "ssh_config",
                              server=str(self.lab.config.upstream_address))
        self.collector = Collector(self.runner, phone, self.results, self.pipeline)
        self.training = []
        for index, app in enumerate(self.apps):
            result = self.collector.record(app, [app], self.options.seconds_per_app,
                                           self.options.seed + 10 * index)
            _say(f"  {app}: {result.labelled} of {result.connections} connections labelled "
                 f"({_per_app(result)})")
            self.training.append(result)
        self.train_labels = merge_labels(self.training, self.results / "labels" / "train.csv")

    def _retrain(self) -> None:
        self.runner.run("retrain.yml", {"agent_results_dir": self.collector.lab_results,
                                        "agent_labels_src": self.train_labels})

    def _mixed_session(self) -> None:
        with self._live_report(self.results / "live-report.txt"):
            self.mixed = self.collector.record("mixed", self.apps, self.options.mixed_seconds,
                                               self.options.seed + 1000)
            time.sleep(2 * self.agent.burst_gap + 1)  # the last burst's report
        _say(f"  mixed: {self.mixed.labelled} of {self.mixed.connections} connections labelled "
             f"({_per_app(self.mixed)})")

    # -- the stages' work ----------------------------------------------------------------

    def _testinfra(self) -> None:
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                   str(self.repo / "tests" / "infra"), "--lab",
                   str(self.lab.state_dir / "ssh_config")]
        _logged(command, self.logs / "testinfra.log", cwd=self.repo)

    @contextmanager
    def _live_report(self, out: Path) -> Iterator[None]:
        """Show the live agent's log on the gateway as it grows, and keep a copy."""
        log = self.agent.log_path
        command = ["ssh", "-F", str(self.lab.state_dir / "ssh_config"), "gateway",
                   f"tail -n 0 -F {log}"]
        with out.open("w") as copy:
            tail = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    text=True)
            shown = _Printer(copy)
            try:
                reader = threading.Thread(target=shown.follow, args=(tail.stdout,),
                                          daemon=True)
                reader.start()
                yield
            finally:
                tail.kill()
                tail.wait()
        _say(f"  live reports: {shown.bursts} bursts, {shown.flows} flows "
             f"(all in {out.name})")

    def _agreement(self, mixed: SessionResult) -> None:
        model = self.results / "lab" / "model.skops"
        live_json = self.results / "live-predictions.jsonl"
        command = [str(Path(sys.executable).parent / "appsight"), "classify", "--json",
                   "-m", str(model), "--device", str(self.lab.config.subnet),
                   "--burst-gap", str(self.agent.burst_gap), *map(str, mixed.captures)]
        if self.agent.threshold is not None:  # as the live agent is told
            command[2:2] = ["--threshold", str(self.agent.threshold)]
        offline = self.results / "offline-predictions.jsonl"
        _logged(command, self.logs / "classify.log", cwd=self.repo, stdout=offline)
        report = self._live_caught_up(live_json, offline)
        (self.results / "agreement.json").write_text(json.dumps(report, indent=2) + "\n")
        _say(f"  {report['matched']} flows in both; the same app for "
             f"{report['same_app']} ({100 * report['agreement']:.1f} %)")

    def _live_caught_up(self, live_json: Path, offline: Path) -> dict[str, object]:
        """Fetch the live agent's JSON log until it holds every flow of the offline
        classification, or AGREEMENT_WAIT seconds have passed: a loaded gateway may report
        the session's last burst later than the burst gap."""
        gateway = SshHost(self.lab.state_dir / "ssh_config", "gateway")
        deadline = time.monotonic() + AGREEMENT_WAIT
        while True:
            gateway.fetch(self.agent.json_log_path, live_json)
            report = compare_predictions(live_json, offline)
            if report["coverage"] == 1.0 or time.monotonic() > deadline:
                return report
            time.sleep(1)

    def _evaluate(self, training: list[SessionResult], train_labels: Path,
                  mixed: SessionResult) -> None:
        command = [str(Path(sys.executable).parent / "appsight"), "evaluate",
                   *[str(path) for session in training for path in session.captures],
                   "--labels", str(train_labels), "--test", *map(str, mixed.captures),
                   "--test-labels", str(mixed.labels), "--device", str(self.lab.config.subnet),
                   "--burst-gap", str(self.agent.burst_gap), "--drop-background",
                   "-o", str(self.results / "evaluation")]
        output = _logged(command, self.logs / "evaluate.log", cwd=self.repo)
        print(output, end="", flush=True)

    # -- progress ------------------------------------------------------------------------

    @contextmanager
    def _stage(self, number: int, count: int, title: str, log: str | Path) -> Iterator[None]:
        """Number and time a stage; a failure names it and the log to read (a file of the
        results' logs/, or an absolute path)."""
        _say(f"[{number}/{count}] {title}")
        started = time.monotonic()
        try:
            yield
        except LabError as exc:
            raise LabError(f"stage {number} ({title}) failed: {exc} "
                           f"(log: {self.logs / log})") from exc
        _say(f"      {time.monotonic() - started:.0f} s")


class _Printer:
    """Prints a trimmed view of the live report and copies all of it to a file.

    Every burst's header line is shown with its first few flows; the rest are counted.
    """

    FLOWS_SHOWN = 4

    def __init__(self, copy: TextIO) -> None:
        self.copy = copy
        self.bursts = 0
        self.flows = 0
        self.in_burst = 0

    def follow(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.copy.write(line)
            self.copy.flush()
            if line.startswith("== "):
                self._more()
                self.bursts += 1
                self.in_burst = 0
                print(f"  live| {line.strip()}", flush=True)
            elif line.startswith("  ") and " app " in line:
                self.flows += 1
                self.in_burst += 1
                if self.in_burst <= self.FLOWS_SHOWN:
                    print(f"  live|   {line.strip()}", flush=True)
        self._more()

    def _more(self) -> None:
        if self.in_burst > self.FLOWS_SHOWN:
            print(f"  live|   ... {self.in_burst - self.FLOWS_SHOWN} more flows", flush=True)
            self.in_burst = self.FLOWS_SHOWN


def _profile_names(path: Path) -> list[str]:
    try:
        profiles = yaml.safe_load(path.read_text())["profiles"]
    except (OSError, KeyError, TypeError, yaml.YAMLError) as exc:
        raise LabError(f"{path}: cannot read the app profiles: {exc}") from exc
    return list(profiles)


def _per_app(result: SessionResult) -> str:
    return ", ".join(f"{app} {count}" for app, count in sorted(result.per_app.items()))


def _logged(command: list[str], log: Path, cwd: Path, stdout: Path | None = None) -> str:
    """Run a command, its output into the log (or stdout into a file); fail with the log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as err:
        err.write(f"$ {' '.join(command)}\n")
        err.flush()
        if stdout is not None:
            with stdout.open("w") as out:
                done = subprocess.run(command, cwd=cwd, stdout=out, stderr=err, check=False)
            output = ""
        else:
            finished = subprocess.run(command, cwd=cwd, capture_output=True, text=True,
                                      check=False)
            err.write(finished.stdout + finished.stderr)
            done, output = finished, finished.stdout
    if done.returncode != 0:
        raise LabError(f"{Path(command[0]).name} {command[1] if len(command) > 1 else ''} "
                       f"failed (exit {done.returncode})")
    return output


def _say(text: str) -> None:
    print(f"demo: {text}" if not text.startswith(" ") else text, flush=True)

