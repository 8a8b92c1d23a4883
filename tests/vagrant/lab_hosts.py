"""pytest plugin of the Vagrant test tier: skip the lab tests whose hosts the lab lacks.

The testinfra suite (tests/infra) is written for the emulated lab's three hosts: gateway,
phone and upstream. A Vagrant lab has no upstream (the provider's NAT network is the
Internet), and no phone with SSH unless the tier's stand-in runs. With this plugin
(``PYTHONPATH=tests/vagrant pytest -p lab_hosts tests/infra --lab FILE``) a test that needs
a host missing from the ``--lab`` ssh_config is skipped, naming the host, instead of failing
on the SSH connection.
"""

from __future__ import annotations

from pathlib import Path

import pytest

#: The suite's host fixtures; every test that uses one (directly or through another fixture,
#: e.g. phone_address) needs that host.
HOSTS = ("gateway", "phone", "upstream")


def lab_hosts(ssh_config: Path) -> set[str]:
    """The host names an ssh_config declares (its ``Host`` lines)."""
    names: set[str] = set()
    for line in ssh_config.read_text().splitlines():
        words = line.split()
        if len(words) > 1 and words[0].lower() == "host":
            names.update(words[1:])
    return names


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    option = config.getoption("--lab", default=None)
    if not option or not Path(option).is_file():
        return
    present = lab_hosts(Path(option))
    for item in items:
        missing = [host for host in HOSTS
                   if host in getattr(item, "fixturenames", ()) and host not in present]
        if missing:
            item.add_marker(pytest.mark.skip(
                reason=f"this lab has no {' or '.join(missing)} host ({option})"))
