"""`live IFACE --user U`: the model file is read as U, after the interface is open and root is
dropped, never as root (a model is untrusted input to skops).

The proof is a model that root can read and the user cannot: refused after "running as".
"""

from __future__ import annotations

import os
import subprocess
import sys
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
