"""`--trusted-models`: the operator's list of model SHA-256s is the only thing the agent loads.

The model header's SHA-256 proves a file whole, not who made it: anyone who may write the
model can train another one and save it with a matching header. These tests play that
attacker with a real second model (a different forest saved by appsight's own writer) and
check that a list written by the real ``sha256sum`` lets the operator's model through and
refuses the other one, with one line and exit 2, for ``classify`` and ``live``; and that a
list the attacker could edit (group- or world-writable, a symlink) is refused too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from appsight.model import AppModel, load_model
from appsight.model_trust import TrustError, read_trusted_models
from test_model import train_sample

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "examples" / "sample.pcap"
APPSIGHT = [sys.executable, "-m", "appsight"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The operator's model and an attacker's, both valid appsight model files."""
    folder = tmp_path_factory.mktemp("trust")
    ours, theirs = folder / "model.skops", folder / "other.skops"
    train_sample(trees=10).save(ours)
    forged: AppModel = train_sample(trees=11)
    forged.save(theirs)
    return ours, theirs


def sha256sum(*paths: Path, out: Path) -> Path:
    """A list made as the docs say: ``sha256sum MODEL > LIST`` (mode 0644)."""
    listing = subprocess.run(["sha256sum", *map(str, paths)], capture_output=True, text=True,
                             check=True).stdout
    out.write_text(listing)
    out.chmod(0o644)
    return out


def run(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*APPSIGHT, *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=REPO, check=False)


def one_error_line(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("appsight: error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_listed_model_classifies_as_without_a_list(models: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    ours, _ = models
    trusted = sha256sum(ours, out=tmp_path / "trusted.sha256")
    plain = run("classify", SAMPLE, "-m", ours, "--json")
    pinned = run("classify", SAMPLE, "-m", ours, "--json", "--trusted-models", trusted)
    assert plain.returncode == pinned.returncode == 0, pinned.stderr
    assert pinned.stdout == plain.stdout and pinned.stdout


def test_a_valid_model_put_in_its_place_is_refused(models: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    """The attack: the model file replaced by another well-formed model."""
    ours, theirs = models
    trusted = sha256sum(ours, out=tmp_path / "trusted.sha256")
    assert load_model(theirs).classes == load_model(ours).classes  # a model appsight accepts
    result = run("classify", SAMPLE, "-m", theirs, "--trusted-models", trusted)
    one_error_line(result, str(theirs), "is not in", str(trusted))
    assert result.stdout == ""


def test_live_refuses_an_unlisted_model(models: tuple[Path, Path], tmp_path: Path) -> None:
    ours, theirs = models
    trusted = sha256sum(ours, out=tmp_path / "trusted.sha256")
    result = subprocess.run([*APPSIGHT, "live", "-", "-m", str(theirs), "--trusted-models",
                             str(trusted)], input=SAMPLE.read_bytes(), capture_output=True,
                            timeout=120, cwd=REPO, check=False)
    assert result.returncode == 2, result.stderr
    assert b"is not in" in result.stderr and result.stdout == b""
    allowed = subprocess.run([*APPSIGHT, "live", "-", "-m", str(ours), "--trusted-models",
                              str(trusted)], input=SAMPLE.read_bytes(), capture_output=True,
                             timeout=120, cwd=REPO, check=False)
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout


def test_trusted_models_needs_a_model(tmp_path: Path, models: tuple[Path, Path]) -> None:
    trusted = sha256sum(models[0], out=tmp_path / "trusted.sha256")
    result = subprocess.run([*APPSIGHT, "live", "-", "--trusted-models", str(trusted)],
                            input=b"", capture_output=True, text=False, timeout=60, cwd=REPO,
                            check=False)
    assert result.returncode == 2
    assert b"--trusted-models needs a model" in result.stderr


def test_sha256sum_formats_and_comments_are_read(models: tuple[Path, Path],
                                                 tmp_path: Path) -> None:
    ours, theirs = models
    listing = sha256sum(ours, theirs, out=tmp_path / "both.sha256").read_text().splitlines()
    digest_ours, digest_theirs = (line.split()[0] for line in listing)
    mixed = tmp_path / "mixed.sha256"
    mixed.write_text(f"# the lab's models\n\n{digest_ours.upper()} *{ours}\n{digest_theirs}\n")
    mixed.chmod(0o600)
    assert read_trusted_models(mixed).digests == {digest_ours, digest_theirs}


@pytest.mark.parametrize(("content", "fragment"), [
    ("", "names no model"),
    ("# only a comment\n", "names no model"),
    ("abc123  model.skops\n", ":1: not a SHA-256 line"),
    ("0" * 64 + "  a\n" + "z" * 64 + "  b\n", ":2: not a SHA-256 line"),
])
def test_malformed_lists_are_refused(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "list.sha256"
    path.write_text(content)
    path.chmod(0o644)
    with pytest.raises(TrustError, match=fragment):
        read_trusted_models(path)


def test_a_list_others_may_edit_is_refused(models: tuple[Path, Path], tmp_path: Path) -> None:
    ours, _ = models
    trusted = sha256sum(ours, out=tmp_path / "trusted.sha256")
    for mode in (0o664, 0o646):
        trusted.chmod(mode)
        one_error_line(run("classify", SAMPLE, "-m", ours, "--trusted-models", trusted),
                       "may be written by others", "chmod go-w")


def test_a_symlinked_list_is_refused(models: tuple[Path, Path], tmp_path: Path) -> None:
    ours, _ = models
    trusted = sha256sum(ours, out=tmp_path / "trusted.sha256")
    link = tmp_path / "link.sha256"
    os.symlink(trusted, link)
    one_error_line(run("classify", SAMPLE, "-m", ours, "--trusted-models", link), "symlink")


def test_missing_binary_and_oversized_lists_are_one_line(tmp_path: Path,
                                                         models: tuple[Path, Path]) -> None:
    ours, _ = models
    one_error_line(run("classify", SAMPLE, "-m", ours, "--trusted-models", tmp_path / "nope"),
                   "no such trusted-models list")
    binary = tmp_path / "binary.sha256"
    binary.write_bytes(b"\xff\xfe" * 40)
    binary.chmod(0o644)
    one_error_line(run("classify", SAMPLE, "-m", ours, "--trusted-models", binary), "UTF-8")
    big = tmp_path / "big.sha256"
    big.write_text(("0" * 64 + "  m\n") * 20_000)
    big.chmod(0o644)
    one_error_line(run("classify", SAMPLE, "-m", ours, "--trusted-models", big), "over 1 MB")
    one_error_line(run("classify", SAMPLE, "-m", ours, "--trusted-models", tmp_path),
                   "not a regular file")
