"""Running the project's playbooks from labctl, with their output kept in a log file.

The playbooks are the one way the lab is changed, for the demo as for a user at the shell:
labctl only calls ``ansible-playbook`` from the ``ansible/`` folder (so ``ansible.cfg``
applies) against the emulated lab's inventory. A failure names the playbook and the log.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from labctl.errors import LabError


class AnsibleRunner:
    """Runs playbooks of ``repo/ansible`` against ``inventory``, logging to ``log``."""

    def __init__(self, repo: Path, inventory: Path, log: Path) -> None:
        self.folder = repo / "ansible"
        self.inventory = inventory
        self.log = log
        # The Ansible installed beside labctl (the project's venv) comes first.
        bin_dir = str(Path(sys.executable).parent)
        self.env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
                    "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}

    def run(self, playbook: str, extra: Mapping[str, object] | None = None,
            timeout: float = 1800) -> str:
        """Run a playbook; its output (also appended to the log) is returned."""
        command = ["ansible-playbook", "-i", str(self.inventory), playbook]
        for key, value in (extra or {}).items():
            command += ["-e", f"{key}={value}"]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        try:
            done = subprocess.run(command, cwd=self.folder, env=self.env, capture_output=True,
                                  text=True, timeout=timeout, check=False)
        except FileNotFoundError as exc:
            raise LabError("ansible-playbook is not installed: make install (the 'lab' extra)"
                           ) from exc
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"{playbook} did not finish within {timeout:.0f} s") from exc
        with self.log.open("a") as out:
            out.write(f"$ {' '.join(command)}\n{done.stdout}{done.stderr}\n")
        if done.returncode != 0:
            raise LabError(f"{playbook} failed (exit {done.returncode}); see {self.log}")
        return done.stdout
