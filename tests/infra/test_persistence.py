"""The gateway's state is written down so that it comes back after a reboot.

One start-up script applies the whole gateway state; each OS runs it at boot its own way:
``/opt/bootlocal.sh`` plus ``/opt/.filetool.lst`` on Tiny Core (whose root filesystem lives
in RAM: only the backup list's paths come back, from ``mydata.tgz``), a systemd unit where
systemd runs, ``/etc/rc.local`` elsewhere. ``make test-lab`` and ``make test-vagrant`` also
reboot the gateway and run the whole suite again, which proves it.
"""

from __future__ import annotations

import re

import pytest
import testinfra

from .hostinfo import LIVE_SCRIPT

UP_SCRIPT = "/usr/local/sbin/appsight-gateway-up"


def _executable(host: testinfra.host.Host, path: str) -> bool:
    # test -x rather than testinfra's mode: Tiny Core has no stat command.
    return host.run(f"test -f {path} && test -x {path}").rc == 0


def test_start_up_script_is_installed(gateway: testinfra.host.Host) -> None:
    script = gateway.file(UP_SCRIPT)
    assert _executable(gateway, UP_SCRIPT)
    assert "iptables-restore" in script.content_string
    assert "udhcpd" in script.content_string


def test_start_up_script_runs_at_boot(gateway: testinfra.host.Host) -> None:
    if gateway.file("/opt/bootlocal.sh").exists:  # Tiny Core
        lines = gateway.file("/opt/bootlocal.sh").content_string.splitlines()
        # The gateway comes up before the agent that captures on it.
        assert lines.index(UP_SCRIPT) < lines.index(f"{LIVE_SCRIPT} start"), lines
        kept = gateway.file("/opt/.filetool.lst").content_string.splitlines()
        for path in (UP_SCRIPT, LIVE_SCRIPT, "/etc/appsight"):
            assert path.lstrip("/") in kept, kept
    elif gateway.file("/run/systemd/system").is_directory:
        # lab_base's boot_hook: one oneshot unit per hook, named after it.
        assert gateway.service("appsight-gateway").is_enabled
        assert gateway.service("appsight-live").is_enabled
        # The gateway comes up before the agent that captures on it.
        live_unit = gateway.file("/etc/systemd/system/appsight-live.service").content_string
        assert re.search(r"^After=.*\bappsight-gateway\.service\b", live_unit, re.M), live_unit
    else:
        rc_local = gateway.file("/etc/rc.local")
        assert _executable(gateway, "/etc/rc.local")
        lines = rc_local.content_string.splitlines()
        assert UP_SCRIPT in lines
        # The gateway comes up before the agent that captures on it.
        assert lines.index(UP_SCRIPT) < lines.index(f"{LIVE_SCRIPT} start")


def test_firewall_and_dhcp_configuration_are_on_disk(gateway: testinfra.host.Host) -> None:
    rules = gateway.file("/etc/appsight/gateway.rules").content_string
    assert "MASQUERADE" in rules and ":FORWARD DROP" in rules
    assert gateway.file("/etc/appsight/udhcpd.conf").exists


def test_tiny_core_keeps_its_state_on_the_persistent_partition(
        gateway: testinfra.host.Host, lab_yml: dict) -> None:
    if not gateway.file("/usr/bin/tce-load").exists:
        pytest.skip("not a Tiny Core gateway")
    tce = gateway.check_output("readlink /etc/sysconfig/tcedir")
    assert tce.startswith("/mnt/"), f"the tce folder {tce} is in RAM, not on a disk"
    # /opt (the agent, its model, logs and captures) is the partition's, not RAM's.
    mounts = gateway.check_output("cat /proc/mounts").splitlines()
    assert any(line.split()[1] == "/opt" for line in mounts), mounts
    assert lab_yml["agent"]["install_dir"].startswith("/opt/")
    assert gateway.file(f"{tce}/mydata.tgz").exists
