"""`live IFACE --user U`: the model file is read as U, after the interface is open and root is
dropped, never as root (a model is untrusted input to skops).

The proof is a model that root can read and the user cannot: refused after "running as".
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "examples" / "sample.pcap"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")


def test_live_reads_the_model_only_after_dropping_root(tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("capture,proto,src,sport,dst,dport,label\n"
                      "sample.pcap,tcp,10.77.0.2,38228,10.77.0.1,443,web\n"
                      "sample.pcap,udp,10.77.0.2,47604,10.77.0.1,5000,udp-app\n")
    model = tmp_path / "root-only.skops"
    trained = subprocess.run([sys.executable, "-m", "appsight", "train", "--labels", str(labels),
                              str(SAMPLE), "-o", str(model), "--trees", "5"],
                             capture_output=True, text=True, timeout=120, check=False, cwd=REPO)
    assert trained.returncode == 0, trained.stderr
    model.chmod(0o600)  # root's, unreadable to nobody
    tmp_path.chmod(0o755)
    done = subprocess.run([sys.executable, "-m", "appsight", "live", "lo", "-m", str(model),
                           "--user", "nobody"], capture_output=True, text=True, timeout=60,
                          check=False, cwd=REPO)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert "running as nobody" in done.stderr, done.stderr
    refused = [i for i, line in enumerate(lines) if str(model) in line and "error" in line]
    assert refused and refused[0] > lines.index(next(x for x in lines if "running as" in x))
    assert "Traceback" not in done.stderr


def _capture(folder: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appsight", "capture", "lo", "-o", str(folder),
                           "--user", "nobody", *extra], capture_output=True, text=True,
                          timeout=60, check=False, cwd=REPO)


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder that nobody can traverse to (pytest's own temporary folders are 0700)."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="appsight-privileges-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_an_existing_folder_is_never_handed_to_the_user(open_folder: Path) -> None:
    """`capture -o LINK --user nobody` where LINK points at a root folder: refused, and the
    target keeps its owner (chown used to follow the link)."""
    system = open_folder / "system"
    system.mkdir(mode=0o755)
    link = open_folder / "captures"
    link.symlink_to(system)
    done = _capture(link, "--count", "1")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "nobody cannot write there" in done.stderr
    assert system.stat().st_uid == 0 and list(system.iterdir()) == []


def test_a_new_folder_is_the_users(open_folder: Path) -> None:
    new = open_folder / "new" / "captures"
    done = _capture(new, "--duration", "0.5")
    assert done.returncode == 0, done.stderr
    import pwd

    assert new.stat().st_uid == pwd.getpwnam("nobody").pw_uid
    assert new.parent.stat().st_uid == 0  # only the folder the files go in changes hands
