"""Facts read off a lab host that several tests need."""

from __future__ import annotations

import re

import pytest
import testinfra

#: The agent role's supervisor of appsight live (agent_live_script).
LIVE_SCRIPT = "/usr/local/sbin/appsight-live"


def default_route(host: testinfra.host.Host) -> tuple[str, str]:
    """(next hop, interface) of a host's default IPv4 route."""
    route = host.check_output("ip -4 route show default")
    found = re.search(r"default via (\S+) dev (\S+)", route)
    if not found:
        pytest.fail(f"{host.backend.hostname} has no default route: {route!r}")
    return found.group(1), found.group(2)
