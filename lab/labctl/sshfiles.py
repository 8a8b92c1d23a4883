"""How Ansible, testinfra and people reach the emulated hosts: a key, ssh_config, inventory.

``.lab/ssh_config`` names the hosts ``gateway``, ``phone`` and ``upstream`` exactly as
``vagrant ssh-config`` would, so ``ssh -F .lab/ssh_config gateway`` and
``pytest --ssh-config=.lab/ssh_config`` work the same for both labs. Connections are shared
(ControlMaster), which makes a testinfra suite several times faster. Host keys are not
checked: the hosts are made anew at every ``up``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from labctl.config import HOST_NAMES, LabConfig
from labctl.errors import LabError

KEY_NAME = "id_ed25519"

#: Inventory groups, the same as the Vagrantfile's Ansible provisioner uses.
GROUPS = {"gateway": "gateways", "phone": "phones", "upstream": "upstreams"}


def ensure_key(state_dir: Path) -> str:
    """The lab's SSH public key, made on first use."""
    state_dir.mkdir(parents=True, exist_ok=True)
    key = state_dir / KEY_NAME
    if not key.exists():
        done = subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "appsight-lab", "-f", str(key)],
            capture_output=True, text=True, check=False,
        )
        if done.returncode != 0:
            raise LabError(f"ssh-keygen failed: {done.stderr.strip()}")
    return (state_dir / f"{KEY_NAME}.pub").read_text()


def login_user(config: LabConfig, host: str) -> str:
    """Who logs in: ``tc`` on a Tiny Core gateway (root through sudo, as Tiny Core has it
    and as the Vagrant box does), ``root`` on the Debian hosts."""
    return "tc" if host == "gateway" and config.gateway_os == "tinycore" else "root"


def ssh_config_text(state_dir: Path, config: LabConfig) -> str:
    """The ssh_config that reaches every lab host by name."""
    blocks = []
    for name in HOST_NAMES:
        blocks.append(
            f"Host {name}\n"
            f"  HostName {config.management(name).lab_address.ip}\n"
            f"  User {login_user(config, name)}\n"
            f"  IdentityFile {state_dir / KEY_NAME}\n"
            f"  IdentitiesOnly yes\n"
            f"  StrictHostKeyChecking no\n"
            f"  UserKnownHostsFile /dev/null\n"
            f"  LogLevel ERROR\n"
            f"  ControlMaster auto\n"
            f"  ControlPath {state_dir}/cm-%r@%h:%p\n"
            f"  ControlPersist 60s\n"
        )
    return "\n".join(blocks)


def write_ssh_config(state_dir: Path, config: LabConfig) -> Path:
    path = state_dir / "ssh_config"
    path.write_text(ssh_config_text(state_dir, config))
    return path


def write_inventory(state_dir: Path, config: LabConfig) -> Path:
    """An Ansible inventory of the lab: one group per role, SSH through ssh_config.

    A Tiny Core gateway has no Python until lab_base loads it; that role then points
    Ansible at it, so the interpreter given here only serves the Debian hosts.
    """
    lines = []
    for name in HOST_NAMES:
        lines += [f"[{GROUPS[name]}]", f"{name} ansible_user={login_user(config, name)}", ""]
    lines += [
        "[all:vars]",
        f"ansible_ssh_common_args='-F {state_dir / 'ssh_config'}'",
        "ansible_python_interpreter=/usr/bin/python3",
        "",
    ]
    path = state_dir / "inventory.ini"
    path.write_text("\n".join(lines))
    return path


def close_connections(state_dir: Path) -> None:
    """End the shared SSH connections (ControlMaster processes) to the lab's hosts."""
    config = state_dir / "ssh_config"
    if not config.exists():
        return
    for name in HOST_NAMES:
        subprocess.run(["ssh", "-F", str(config), "-O", "exit", name],
                       capture_output=True, timeout=10, check=False)
