"""The gateway's state is written down so that it comes back after a reboot.

One start-up script applies the whole gateway state; each OS runs it at boot its own way:
``/opt/bootlocal.sh`` plus ``/opt/.filetool.lst`` on TinyCore (whose root filesystem lives
in RAM), a systemd unit where systemd runs, ``/etc/rc.local`` elsewhere. ``make test-lab``
also reboots the emulated gateway and runs the whole suite again, which proves it.
"""

from __future__ import annotations

import re

import testinfra

UP_SCRIPT = "/usr/local/sbin/appsight-gateway-up"
LIVE_SCRIPT = "/usr/local/sbin/appsight-live"


def test_start_up_script_is_installed(gateway: testinfra.host.Host) -> None:
    script = gateway.file(UP_SCRIPT)
    assert script.is_file and script.mode & 0o111
    assert "iptables-restore" in script.content_string
    assert "udhcpd" in script.content_string


def test_start_up_script_runs_at_boot(gateway: testinfra.host.Host) -> None:
    if gateway.file("/opt/bootlocal.sh").exists:  # TinyCore
        assert UP_SCRIPT in gateway.file("/opt/bootlocal.sh").content_string
        kept = gateway.file("/opt/.filetool.lst").content_string
        assert UP_SCRIPT.lstrip("/") in kept or UP_SCRIPT in kept
    elif gateway.file("/run/systemd/system").is_directory:
        # lab_base's boot_hook: one oneshot unit per hook, named after it.
        assert gateway.service("appsight-gateway").is_enabled
        assert gateway.service("appsight-live").is_enabled
        # The gateway comes up before the agent that captures on it.
        live_unit = gateway.file("/etc/systemd/system/appsight-live.service").content_string
        assert re.search(r"^After=.*\bappsight-gateway\.service\b", live_unit, re.M), live_unit
    else:
        rc_local = gateway.file("/etc/rc.local")
        assert rc_local.mode & 0o111
        lines = rc_local.content_string.splitlines()
        assert UP_SCRIPT in lines
        # The gateway comes up before the agent that captures on it.
        assert lines.index(UP_SCRIPT) < lines.index(f"{LIVE_SCRIPT} start")


def test_firewall_and_dhcp_configuration_are_on_disk(gateway: testinfra.host.Host) -> None:
    rules = gateway.file("/etc/appsight/gateway.rules").content_string
    assert "MASQUERADE" in rules and ":FORWARD DROP" in rules
    assert gateway.file("/etc/appsight/udhcpd.conf").exists
