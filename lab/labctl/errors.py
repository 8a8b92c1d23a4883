"""The one error type labctl turns into a one-line message and exit status 2."""

from __future__ import annotations


class LabError(Exception):
    """A problem with the lab's configuration or with the host: printed as one line."""

    exit_status = 2
