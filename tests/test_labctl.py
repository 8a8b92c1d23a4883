"""labctl: lab.yml is checked up front, and a real emulated lab comes up, reboots and goes.

The lifecycle tests build a second, private lab (its own namespace prefix, management subnet
and state folder, the shared root filesystem cache) so they never touch a lab a user has up.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from lab_yml import lab_yml_copy
from labctl.cli import main
from labctl.config import find_config, load_config
from labctl.errors import LabError
from labctl.lab import Lab
from netns import netns_unavailable

REPO = Path(__file__).resolve().parent.parent


def test_project_lab_yml_is_valid() -> None:
    config = load_config(find_config(REPO))
    assert config.gateway_address in config.subnet
    assert config.dhcp_range[0] < config.dhcp_range[1]
    # The agent's settings, as the demo runs and compares the live agent.
    assert config.agent.burst_gap > 0 and config.agent.json_log_path.endswith(".jsonl")


@pytest.mark.parametrize(("changes", "message"), [
    ({"network__subnet": "192.168.56.0/33"}, "network.subnet"),
    ({"network__gateway_address": "10.0.0.1"}, "is not in"),
    ({"network__dhcp_range": ["192.168.56.200", "192.168.56.100"]}, "dhcp_range"),
    ({"network__dhcp_range": ["192.168.56.1", "192.168.56.9"]}, "leave out"),
    ({"network__gateway_lan_mac": "52:54:00:zz:00:01"}, "MAC"),
    ({"network__lease_seconds": "an hour"}, "lease_seconds"),
    ({"emulated__management_subnet": "192.168.56.0/24"}, "overlaps"),
    ({"emulated__management_subnet": "10.199.0.0/30"}, "too small"),
    ({"emulated__upstream_address": "198.51.100.1"}, "upstream_address"),
    ({"agent__burst_gap": 0}, "agent.burst_gap"),
    ({"agent__threshold": 1.5}, "agent.threshold"),
    ({"agent__threshold": "high"}, "agent.threshold"),
])
def test_bad_lab_yml_is_a_one_line_error(
        tmp_path: Path, changes: dict[str, object], message: str) -> None:
    with pytest.raises(LabError, match=message) as caught:
        load_config(lab_yml_copy(tmp_path, **changes))
    assert "\n" not in str(caught.value)


def test_missing_key_names_the_key(tmp_path: Path) -> None:
    path = lab_yml_copy(tmp_path)
    data = yaml.safe_load(path.read_text())
    del data["emulated"]["suite"]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(LabError, match=r"emulated\.suite is missing"):
        load_config(path)


def test_cli_reports_bad_config_without_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "lab.yml"
    path.write_text("network: [unclosed\n")
    assert main(["--config", str(path), "status"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("labctl: error:") and "Traceback" not in err


# -- a real lab -------------------------------------------------------------------------


@pytest.fixture
def private_lab(tmp_path: Path) -> Lab:
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    # The gateway boots Tiny Core: its files come from the project's local folder (an
    # absolute path, as the copy of lab.yml lives elsewhere) or the mirror.
    tinycore = load_config(find_config(REPO)).tinycore
    if not (tinycore.local() / tinycore.local_rootfs).is_file():
        pytest.skip(f"no Tiny Core root filesystem in {tinycore.local()} (set "
                    "APPSIGHT_TINYCORE to a folder with it; see lab/README.md)")
    path = lab_yml_copy(tmp_path, emulated__namespace_prefix="astest-",
                    emulated__management_subnet="10.198.0.0/24",
                    tinycore__local_dir=str(tinycore.local()))
    lab = Lab(load_config(path), state_dir=tmp_path / ".lab")
    yield lab
    lab.down()


def _ssh(lab: Lab, host: str, command: str) -> str:
    done = subprocess.run(["ssh", "-F", str(lab.state_dir / "ssh_config"), host, command],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, f"{host}: {command}: {done.stderr.strip()}"
    return done.stdout


@pytest.mark.slow
def test_lab_comes_up_reboots_and_leaves_nothing(private_lab: Lab) -> None:
    lab = private_lab
    lab.up()
    assert [state for _, state, _ in lab.status()] == ["running"] * 3
    for host in ("gateway", "phone", "upstream"):
        assert _ssh(lab, host, "hostname").strip() == host
    # The gateway (Tiny Core: busybox, no ip command before the roles load iproute2): its
    # internal NIC carries lab.yml's MAC, the uplink its address and default route.
    assert "NAME=TinyCore" in _ssh(lab, "gateway", "cat /etc/os-release")
    macs = _ssh(lab, "gateway", "cat /sys/class/net/*/address").split()
    assert lab.config.gateway_lan_mac.lower() in macs
    routes = _ssh(lab, "gateway", "route -n").splitlines()
    assert any(line.split()[:2] == ["0.0.0.0", str(lab.config.upstream_address)]
               for line in routes), routes
    # Packets cross the links MTU-sized, as on a real network, not as 64 kB TSO segments.
    offloads = subprocess.run(["ip", "netns", "exec", lab.config.namespace("phone"), "ethtool",
                               "-k", "lan0"], capture_output=True, text=True, check=True).stdout
    assert "tcp-segmentation-offload: off" in offloads
    assert "generic-segmentation-offload: off" in offloads
    # What the gateway writes to its persistent /opt survives a reboot; what lives in its
    # RAM root does not, nor does a kernel setting.
    _ssh(lab, "gateway", "echo kept > /opt/mark; echo lost > /tmp/mark; "
                         "sudo sysctl -w net.ipv4.ip_forward=1")
    lab.reboot("gateway")
    assert _ssh(lab, "gateway", "cat /opt/mark").strip() == "kept"
    assert _ssh(lab, "gateway", "test -e /tmp/mark || echo gone").strip() == "gone"
    assert _ssh(lab, "gateway", "sysctl -n net.ipv4.ip_forward").strip() == "0"
    lab.down()
    assert lab.leftovers() == []


@pytest.mark.slow
def test_failed_up_tears_down_what_it_built(
        private_lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    def phone_never_boots(name: str) -> None:
        if name == "phone":
            raise LabError("phone did not boot")

    monkeypatch.setattr(private_lab, "_wait_ready", phone_never_boots)
    with pytest.raises(LabError, match="phone did not boot"):
        private_lab.up()
    assert private_lab.leftovers() == []
