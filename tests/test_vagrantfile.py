"""The Vagrantfile: it validates, and its values come from lab/lab.yml or the documented
environment variables.

Each test runs the real ``vagrant`` (about a second) with a throwaway VAGRANT_HOME and
``.vagrant/`` folder, on the repository's Vagrantfile or on a copy of it beside an edited
lab.yml. Nothing is booted: ``validate``, ``status`` and ``reload`` of machines that do not
exist only read the configuration.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VAGRANT = shutil.which("vagrant")

pytestmark = pytest.mark.skipif(
    VAGRANT is None,
    reason="vagrant is not on PATH (Debian: apt-get install vagrant vagrant-libvirt)",
)


@pytest.fixture(scope="session")
def vagrant_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VAGRANT_HOME of our own: the user's boxes and settings are neither used nor touched."""
    home = tmp_path_factory.mktemp("vagrant-home")
    listing = subprocess.run(
        [VAGRANT, "plugin", "list"], env=_environment(home), capture_output=True, text=True,
        timeout=120, check=False,
    )
    if "vagrant-libvirt" not in listing.stdout:
        pytest.skip("vagrant-libvirt is not installed (Debian: apt-get install vagrant-libvirt)")
    return home


def _environment(home: Path, **extra: str | None) -> dict[str, str]:
    env = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("APPSIGHT_", "VAGRANT_", "LIBVIRT_"))
    }
    env.update(VAGRANT_HOME=str(home), VAGRANT_CHECKPOINT_DISABLE="1")
    env.update({key: value for key, value in extra.items() if value is not None})
    return env


@pytest.fixture
def vagrant(vagrant_home: Path, tmp_path: Path):
    """Run ``vagrant ARGS`` on the Vagrantfile in ``where`` with the libvirt provider."""

    def run(*args: str, where: Path = REPO, provider: str | None = "libvirt", **env: str):
        return subprocess.run(
            [VAGRANT, *args],
            env=_environment(
                vagrant_home, VAGRANT_CWD=str(where),
                VAGRANT_DOTFILE_PATH=str(tmp_path / "dot-vagrant"),
                VAGRANT_DEFAULT_PROVIDER=provider, **env,
            ),
            capture_output=True, text=True, timeout=120, check=False,
        )

    return run


def lab_copy(directory: Path, **values: object) -> Path:
    """The Vagrantfile in ``directory`` beside lab/lab.yml with some keys' values replaced.

    Each key must appear exactly once in lab.yml, as ``key: value`` on its own line."""
    text = (REPO / "lab" / "lab.yml").read_text()
    for key, value in values.items():
        text, count = re.subn(
            rf"^(\s*{key}:)[ \t].*$", lambda m, v=value: f"{m.group(1)} {json.dumps(v)}", text,
            flags=re.MULTILINE,
        )
        assert count == 1, f"{key!r} is on {count} lines of lab/lab.yml, expected 1"
    (directory / "lab").mkdir(parents=True)
    (directory / "lab" / "lab.yml").write_text(text)
    shutil.copy(REPO / "Vagrantfile", directory / "Vagrantfile")
    return directory


@pytest.fixture
def iso(tmp_path: Path) -> tuple[Path, str]:
    """A stand-in for the Android-x86 ISO and its SHA-256."""
    path = tmp_path / "phone.iso"
    path.write_bytes(bytes(range(256)) * 4096)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def machines(status: subprocess.CompletedProcess) -> list[str]:
    """Machine names listed by ``vagrant status``."""
    return re.findall(r"^(\w+)\s+not created", status.stdout, flags=re.MULTILINE)


def test_validates_for_libvirt(vagrant):
    dotfolder_before = (REPO / ".vagrant").exists()
    result = vagrant("validate")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validated successfully" in result.stdout
    assert (REPO / ".vagrant").exists() == dotfolder_before


def test_validates_without_a_provider(vagrant):
    result = vagrant("validate", "--ignore-provider", provider=None)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validated successfully" in result.stdout


def test_without_an_iso_there_is_only_the_gateway(vagrant, tmp_path):
    where = lab_copy(tmp_path / "lab", iso=None, iso_sha256=None)
    result = vagrant("status", where=where)
    assert result.returncode == 0, result.stderr
    assert machines(result) == ["gateway"]
    assert "no phone machine: machines.phone.iso is null" in result.stderr


def test_with_a_matching_iso_the_phone_comes_before_the_gateway(vagrant, tmp_path, iso):
    path, sha256 = iso
    where = lab_copy(tmp_path / "lab", iso=str(path), iso_sha256=sha256.upper())
    result = vagrant("validate", where=where)
    assert result.returncode == 0, result.stdout + result.stderr
    assert machines(vagrant("status", where=where)) == ["phone", "gateway"]


def test_a_relative_iso_path_is_relative_to_the_repository(vagrant, tmp_path, iso):
    path, sha256 = iso
    where = lab_copy(tmp_path / "lab", iso="phone.iso", iso_sha256=sha256)
    shutil.move(path, where / "phone.iso")
    assert vagrant("validate", where=where).returncode == 0


def test_a_wrong_checksum_is_refused_with_both_checksums(vagrant, tmp_path, iso):
    path, sha256 = iso
    wrong = sha256[::-1]
    where = lab_copy(tmp_path / "lab", iso=str(path), iso_sha256=wrong)
    result = vagrant("validate", where=where)
    assert result.returncode != 0
    assert "SHA-256 mismatch" in result.stderr
    assert wrong in result.stderr and sha256 in result.stderr
    assert "Traceback" not in result.stderr and ".rb:" not in result.stderr


def test_only_commands_that_boot_the_phone_check_its_iso(vagrant, tmp_path, iso):
    path, sha256 = iso
    where = lab_copy(tmp_path / "lab", iso=str(path), iso_sha256=sha256[::-1])
    # status, and a reload aimed at the gateway alone (which does not exist: nothing boots)
    assert machines(vagrant("status", where=where)) == ["phone", "gateway"]
    reload_gateway = vagrant("reload", "gateway", where=where)
    assert reload_gateway.returncode == 0, reload_gateway.stderr
    reload_phone = vagrant("reload", "phone", where=where)
    assert reload_phone.returncode != 0
    assert "SHA-256 mismatch" in reload_phone.stderr


def test_an_iso_without_checksum_is_refused(vagrant, tmp_path, iso):
    path, _ = iso
    result = vagrant("validate", where=lab_copy(tmp_path / "lab", iso=str(path), iso_sha256=None))
    assert result.returncode != 0
    assert "machines.phone.iso_sha256 is null" in result.stderr


def test_a_missing_iso_is_refused(vagrant, tmp_path):
    where = lab_copy(tmp_path / "lab", iso=str(tmp_path / "absent.iso"), iso_sha256="0" * 64)
    result = vagrant("validate", where=where)
    assert result.returncode != 0
    assert "absent.iso" in result.stderr and "does not exist" in result.stderr


def test_the_gateway_box_comes_from_lab_yml_unless_overridden(vagrant, tmp_path):
    where = lab_copy(tmp_path / "lab", box="")
    empty = vagrant("validate", where=where)
    assert empty.returncode != 0
    assert "Box value for guest 'gateway' is an empty string" in empty.stdout + empty.stderr
    overridden = vagrant("validate", where=where, APPSIGHT_GATEWAY_BOX="example/gateway")
    assert overridden.returncode == 0, overridden.stdout + overridden.stderr


def test_the_gateway_lan_mac_comes_from_lab_yml(vagrant, tmp_path):
    where = lab_copy(tmp_path / "lab", gateway_lan_mac="52:54:00:56:00:zz")
    result = vagrant("validate", where=where)
    assert result.returncode != 0
    assert "Configured NIC MAC '5254005600zz'" in result.stdout + result.stderr


def test_software_emulation_can_be_chosen(vagrant):
    result = vagrant("validate", APPSIGHT_LIBVIRT_DRIVER="qemu")
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_unknown_libvirt_driver_is_refused(vagrant):
    result = vagrant("validate", APPSIGHT_LIBVIRT_DRIVER="xen")
    assert result.returncode != 0
    assert 'APPSIGHT_LIBVIRT_DRIVER is "xen": use kvm or qemu.' in result.stderr
