"""Many captures through the pipeline, one after another: a capture that cannot be read is
reported and the others are still processed (the contract of every offline command)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from .errors import AppsightError
from .pipeline import FlowBlock, PipelineOptions, iter_flow_blocks
from .progress import Progress


def run_captures(
    captures: list[str],
    options: PipelineOptions,
    handle: Callable[[FlowBlock], None],
    capture_done: Callable[[], None] | None = None,
) -> int:
    """Feed every capture's flow blocks to ``handle``; report per-capture problems.

    ``capture_done`` is called after each capture, read whole or not (for sinks that report
    per capture).

    Returns the exit status: 0, or 2 if any capture could not be read at all.
    """
    status = 0
    progress = Progress(len(captures))

    try:
        for capture in captures:
            try:
                for block in iter_flow_blocks(
                    capture, options, progress.capture_finished, progress.update
                ):
                    handle(block)
            except AppsightError as exc:
                progress.clear()
                print(f"appsight: error: {exc}", file=sys.stderr)
                status = exc.exit_status
            if capture_done is not None:
                progress.clear()
                capture_done()
    finally:
        progress.clear()
    return status
