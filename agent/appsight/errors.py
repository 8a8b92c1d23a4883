"""Errors that the command line turns into one-line messages and exit codes.

Every error a user can cause with bad input derives from :class:`AppsightError`, so the
command line can catch exactly these and never show a traceback for them, while genuine
bugs still surface loudly.
"""

from __future__ import annotations


class AppsightError(Exception):
    """A problem with the user's input or environment: printed as one line, exit status 2."""

    exit_status = 2


class CaptureFormatError(AppsightError):
    """A file or stream that is not a readable pcap or pcapng capture."""


class UsageError(AppsightError):
    """A bad option value or combination of options."""
