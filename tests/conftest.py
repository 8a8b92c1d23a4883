"""Shared test fixtures: the third-party capture corpus and small capture builders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """Where the third-party captures live: ``APPSIGHT_DATA`` or ``../shared/data``."""
    return Path(os.environ.get("APPSIGHT_DATA", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The corpus folder; tests that need it are skipped, with the reason, when it is absent."""
    path = shared_data_dir()
    if not (path / "ndpi").is_dir():
        pytest.skip(f"third-party captures not found at {path} (set APPSIGHT_DATA)")
    return path


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--lab", metavar="SSH_CONFIG", default=None,
        help="run the lab's testinfra suite (tests/infra) against the hosts of this ssh_config "
             "(for the emulated lab: .lab/ssh_config; for Vagrant: vagrant ssh-config > FILE)",
    )
