"""The ``appsight`` command: one entry point, a subcommand per job (:mod:`appsight.commands`).

Bad input ends in a one-line ``appsight: error: ...`` and exit status 2, never a traceback;
with several captures, a bad one is reported and the others are still processed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading

from .commands import COMMANDS
from .errors import AppsightError
from .version import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="appsight",
        description="Tell which app a network flow came from, although its payload is "
        "encrypted: packets are cut into bursts (1 s of silence) and flows, flows into "
        "features (packet sizes and timing), and a random forest names the app.",
        epilog="Run 'appsight COMMAND --help' for a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"appsight {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def _terminate(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM ends a run as Ctrl-C does: files closed, counts printed


def main(argv: list[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.run(args))
    except AppsightError as exc:
        print(f"appsight: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("appsight: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (e.g. '| head'): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as exc:
        # Writing the output failed (a full disk, a quota, an I/O error): one line, not a
        # traceback. Output already written stays; stdout is not flushed again.
        where = exc.filename or "the output"
        print(f"appsight: error: cannot write {where}: {exc.strerror or exc}", file=sys.stderr)
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 2


if __name__ == "__main__":
    sys.exit(main())
