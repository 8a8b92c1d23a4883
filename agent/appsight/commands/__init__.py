"""The subcommands of ``appsight``, one module each.

Every module has ``add_parser(subparsers)``, which declares the command's options and sets
``run``, the function that does the job. The order of :data:`COMMANDS` is the order of
``appsight --help``.
"""

from __future__ import annotations

from . import capture, classify, evaluate, features, flows, labels, live, train

COMMANDS = (flows, features, labels, train, classify, capture, live, evaluate)
