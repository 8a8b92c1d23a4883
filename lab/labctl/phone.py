"""Reaching the phone to record its ground truth: over SSH (emulated) or adb (Android-x86).

Both phones are asked the same things in the same POSIX shell (Android's mksh understands
it too): sample the kernel's socket tables while traffic runs, and list the apps with their
UIDs (``pm list packages -U``, or the emulated phone's file in that format). Only the
transport and the way apps are driven differ, so the labeller downstream cannot tell the
two phones apart.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from labctl.errors import LabError
from labctl.remote import RemoteHost, SshHost

#: Samples the socket tables every 0.05 s (one process per sample, so it stays cheap), in
#: the format appsight's socket labeller reads. A socket that opens and closes between two
#: samples is missed; its flow stays unlabelled (the demo reports how many were labelled).
SOCKET_SAMPLER = ("while :; do cat /proc/net/tcp /proc/net/tcp6 /proc/net/udp /proc/net/udp6; "
                  "sleep 0.05; done")

#: Where the phone keeps its samples while a session runs.
PHONE_WORK_DIR = "/data/local/tmp/appsight"

#: Where the synthetic apps live on the emulated phone (role synthetic_apps).
APPS_DIR = "/opt/appsight-apps"


class Phone(RemoteHost):
    """What a recording session asks of a phone; subclasses say how to reach and drive it."""

    name = "phone"

    def play(self, apps: Sequence[str], seconds: float, seed: int) -> list[dict]:
        """Drive the apps, all at once, for about ``seconds``; one summary per app."""
        raise NotImplementedError

    def packages_path(self) -> str:
        """A file on the phone listing the apps as ``pm list packages -U`` does."""
        raise NotImplementedError

    def start_sampler(self, name: str) -> str:
        """Start sampling the socket tables into a file on the phone; its path."""
        path = f"{PHONE_WORK_DIR}/{name}.sockets"
        pid = self.shell(f"mkdir -p {PHONE_WORK_DIR}; "
                         f"nohup sh -c {shlex.quote(SOCKET_SAMPLER)} > {path} 2>/dev/null "
                         f"< /dev/null & echo $!").strip()
        self.shell(f"echo {pid} > {path}.pid")
        return path

    def stop_sampler(self, path: str) -> None:
        self.shell(f"kill $(cat {path}.pid) 2>/dev/null; rm -f {path}.pid")

    def _run_all(self, scripts: dict[str, str], seconds: float) -> dict[str, str]:
        """Run one script per app at once; their outputs, or a LabError naming the app."""
        players = {app: subprocess.Popen(self.command(script), stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True)
                   for app, script in scripts.items()}
        outputs = {}
        deadline = time.monotonic() + seconds + 120
        try:
            for app, player in players.items():
                out, err = player.communicate(timeout=max(1.0, deadline - time.monotonic()))
                if player.returncode != 0:
                    raise LabError(f"app {app} failed on the {self.name}: "
                                   f"{(err.strip().splitlines() or ['no message'])[-1]}")
                outputs[app] = out
        except subprocess.TimeoutExpired as exc:
            raise LabError("the apps did not finish in time") from exc
        finally:
            for player in players.values():
                if player.poll() is None:
                    player.kill()
                    player.wait()
        return outputs


class EmulatedPhone(SshHost, Phone):
    """The emulated lab's phone; its apps are the synthetic ones, each under its own user."""

    def __init__(self, ssh_config: Path, server: str) -> None:
        super().__init__(ssh_config, "phone")
        self.server = server

    def packages_path(self) -> str:
        return f"{APPS_DIR}/packages.txt"

    def play(self, apps: Sequence[str], seconds: float, seed: int) -> list[dict]:
        scripts = {
            app: (f"runuser -u app-{app} -- python3 {APPS_DIR}/phone_apps.py "
                  f"--profiles {APPS_DIR}/profiles.yml --app {app} --server {self.server} "
                  f"--duration {seconds:g} --seed {seed + index} "
                  f"--cafile {APPS_DIR}/ca.pem --json")
            for index, app in enumerate(apps)
        }
        outputs = self._run_all(scripts, seconds)
        return [json.loads(outputs[app].strip().splitlines()[-1]) for app in apps]


class AndroidPhone(Phone):
    """An Android(-x86) phone over adb; its apps are installed packages, driven by monkey.

    Other apps are force-stopped first, so that what runs is what the session meant to run;
    whatever still talks (system services, Google Play services) is labelled as what it is
    by the socket tables anyway.
    """

    name = "Android phone"

    def __init__(self, serial: str, throttle_ms: int = 300) -> None:
        self.serial = serial
        self.throttle_ms = throttle_ms

    def command(self, script: str) -> list[str]:
        return ["adb", "-s", self.serial, "shell", script]

    def packages_path(self) -> str:
        path = f"{PHONE_WORK_DIR}/packages.txt"
        self.shell(f"mkdir -p {PHONE_WORK_DIR}; pm list packages -U > {path}")
        return path

    def play(self, apps: Sequence[str], seconds: float, seed: int) -> list[dict]:
        running = self.shell("pm list packages -3").split()
        for package in (line.removeprefix("package:") for line in running):
            if package not in apps:
                self.shell(f"am force-stop {shlex.quote(package)}")
        # monkey counts events, not seconds: enough events for the session at the throttle.
        events = max(1, int(seconds * 1000 / self.throttle_ms))
        scripts = {
            app: (f"monkey -p {shlex.quote(app)} -s {seed + index} --throttle "
                  f"{self.throttle_ms} --pct-syskeys 0 {events}")
            for index, app in enumerate(apps)
        }
        self._run_all(scripts, seconds)
        return [{"app": app, "events": events} for app in apps]
