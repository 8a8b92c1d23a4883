"""A bounded fuzz run in every `make test`: seeded mutants of captures, model files, labels
files, ndpiReader listings and command lines (``benchmarks/fuzz.py``), each run as a user
runs the command. Any crash (a traceback, a signal), hang, or output lost by a failed command
fails the test and names the case; docs/robustness.md has the counts of a larger run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PER_KIND = 60
SEED = 7  # fixed: the same mutants on every run, so a failure can be replayed


def test_mutants_are_accepted_or_refused_never_crash_hang_or_lose(tmp_path: Path) -> None:
    out, keep = tmp_path / "fuzz.json", tmp_path / "failed"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "fuzz.py"), "--per-kind",
                           str(PER_KIND), "--seed", str(SEED), "--json", str(out), "--keep",
                           str(keep)], capture_output=True, text=True, timeout=1800, cwd=REPO,
                          check=False)
    assert out.exists(), done.stderr
    result = json.loads(out.read_text())
    assert result["failures"] == [], json.dumps(result["failures"], indent=1)
    assert done.returncode == 0, done.stderr
    # the seeds themselves are valid input: the mutants start from something accepted
    assert set(result["controls"].values()) == {"accepted"}, result["controls"]
    counts = result["counts"]
    assert all(sum(c.values()) == PER_KIND for c in counts.values()), counts
    # and the mutants reach the refusals, not only inputs that still work
    for kind in ("model", "labels", "command line"):
        assert counts[kind]["refused"] > 0, counts
