"""The Vagrant tier's pytest plugin skips exactly the tests whose hosts the lab lacks."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lab_hosts
import pytest

SSH_CONFIG = """\
Host gateway
  HostName 192.168.121.10
  User vagrant

Host phone
  HostName 192.168.121.11
"""


def test_host_names_come_from_the_host_lines(tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(SSH_CONFIG + "host  upstream other\n")
    assert lab_hosts.lab_hosts(config) == {"gateway", "phone", "upstream", "other"}


class _Item:
    def __init__(self, *fixturenames: str) -> None:
        self.fixturenames = fixturenames
        self.markers: list[pytest.MarkDecorator] = []

    def add_marker(self, marker: pytest.MarkDecorator) -> None:
        self.markers.append(marker)


def test_only_tests_needing_a_missing_host_are_skipped(tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(SSH_CONFIG)
    options = {"--lab": str(config)}
    pytest_config = SimpleNamespace(getoption=lambda name, default=None: options.get(name))
    gateway_only = _Item("gateway", "lan", "lab")
    with_phone = _Item("phone", "phone_address", "lab")
    with_upstream = _Item("phone", "upstream", "phone_address")
    lab_hosts.pytest_collection_modifyitems(pytest_config, [gateway_only, with_phone,
                                                            with_upstream])
    assert not gateway_only.markers and not with_phone.markers
    [marker] = with_upstream.markers
    assert marker.name == "skip" and "no upstream host" in marker.kwargs["reason"]


def test_nothing_is_skipped_without_a_lab(tmp_path: Path) -> None:
    pytest_config = SimpleNamespace(getoption=lambda name, default=None: None)
    item = _Item("upstream")
    lab_hosts.pytest_collection_modifyitems(pytest_config, [item])
    assert not item.markers
