"""The options that several commands share, and the one place they become settings.

A command module adds its own options; what two or more commands take (the pipeline settings,
the forest, the model, the live caps) is declared here once, so that its spelling, default and
help read the same everywhere, and :func:`pipeline_options` is the only constructor of
:class:`~appsight.pipeline.PipelineOptions` from the command line.
"""

from __future__ import annotations

import argparse
import math

from .. import api
from ..bursts import DEFAULT_BURST_GAP
from ..features import DEFAULT_FEATURE_SET, FEATURE_SETS
from ..limits import DEFAULT_MAX_FLOWS, DEFAULT_MAX_PACKETS
from ..live_jobs import LiveSettings
from ..model import AppModel, load_model
from ..model_trust import read_trusted_models
from ..pipeline import PipelineOptions
from ..verdicts import DEFAULT_MIN_SHARE

AMBIGUITY_HELP = (
    "AppScanner's second stage: also train a forest that predicts when the first is wrong, "
    "learnt from a cross-validation by capture inside the training data (every app needs 2 or "
    "more independent captures; training takes about 3 times as long). A flow's confidence "
    "is then that forest's probability that the answer is right (threshold 0.5 unless "
    "given); docs/accuracy-protocols.md measures the gain"
)


def add_pipeline_options(parser: argparse.ArgumentParser) -> None:
    """The inputs and how they are cut into bursts and flows."""
    parser.add_argument(
        "captures", nargs="*", metavar="CAPTURE",
        help="pcap or pcapng files (optionally .gz), folders of them, or - for standard input",
    )
    parser.add_argument(
        "--burst-gap", default=str(DEFAULT_BURST_GAP), metavar="SECONDS",
        help="silence that ends a burst, over all traffic of the capture "
        f"(default {DEFAULT_BURST_GAP}); 'none' makes the whole capture one burst",
    )
    parser.add_argument(
        "--device", action="append", metavar="ADDRESS_OR_CIDR",
        help="the phone's address or network: a flow's forward direction is then 'sent by the "
        "device' (repeatable); by default it is the direction of the flow's first packet. "
        "A model keeps the devices it was trained with and refuses others",
    )
    parser.add_argument(
        "--no-decap", action="store_true",
        help="do not decapsulate tunnels (IP-in-IP, GRE, GTP-U, VXLAN, CAPWAP, TZSP): "
        "count the outer flows instead of the inner ones",
    )


def pipeline_options(args: argparse.Namespace, model: AppModel | None = None) -> PipelineOptions:
    """The pipeline settings a command runs with: the flags given, else the model's, else the
    defaults (:func:`appsight.api.pipeline_options`, the library's rule too)."""
    return api.pipeline_options(args.burst_gap, args.device, not args.no_decap, model)


def probability(text: str) -> float:
    """An argparse type: a number between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def seed(text: str) -> int:
    """An argparse type: a random seed, as scikit-learn takes it (0 to 2**32 - 1)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 4294967295")
    return value


def seconds(text: str) -> float:
    """An argparse type: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def share(text: str) -> float:
    """An argparse type: a share of the votes, above 0 and at most 1."""
    value = probability(text)
    if value == 0.0:
        raise argparse.ArgumentTypeError("0 would name every app that got a vote")
    return value


def add_verdict_options(parser: argparse.ArgumentParser, window_default: float | None) -> None:
    """classify's and live's --sessions: the apps per device and window
    (:mod:`appsight.verdicts`). Offline the window defaults to the whole capture; live to
    the last ``window_default`` seconds, reported after every burst."""
    if window_default is None:
        where = ("Without --device, all traffic of a capture is one device. With --json, one\n"
                 "object per device and window.")
        window_help = ("cut each device's traffic into windows of this length "
                       "(default: the whole capture)")
    else:
        where = ("Live: after every report (each burst as it ends; several at once from a\n"
                 "fast stream), for each device seen in it, over its last --window seconds.\n"
                 "Without --sessions, the text report adds that line when -m and --device\n"
                 "are given.")
        window_help = f"how far back a device's verdict looks (default {window_default:g})"
    group = parser.add_argument_group(
        "which apps are running (--sessions)",
        "Instead of a line per flow, the apps each device was running: the answered flows\n"
        "vote with their confidence, and an app is named when its votes add up to at least\n"
        "--min-share of the window's flows, answered or not (none named: unknown).\n"
        f"{where}")
    group.add_argument("--sessions", action="store_true",
                       help="report the active apps per device and window, not per flow")
    group.add_argument("--window", type=seconds, default=window_default, metavar="SECONDS",
                       help=window_help)
    group.add_argument("--min-share", type=share, default=DEFAULT_MIN_SHARE, metavar="P",
                       help=f"the part of a window's flows an app's votes must reach "
                       f"(default {DEFAULT_MIN_SHARE})")


def add_forest_options(parser: argparse.ArgumentParser) -> None:
    """What train and evaluate share: the feature set, which flows count, the forest's size."""
    parser.add_argument("--features", default=DEFAULT_FEATURE_SET, metavar="SET",
                        help=f"feature set: {', '.join(FEATURE_SETS)} "
                        f"(default {DEFAULT_FEATURE_SET})")
    parser.add_argument("--drop-background", action="store_true",
                        help="leave out DNS, DHCP, NTP, NetBIOS, SSDP, mDNS and LLMNR flows")
    parser.add_argument("--min-packets", type=int, default=1, metavar="N",
                        help="leave out flows with fewer packets (default 1)")
    parser.add_argument("--trees", type=int, default=150, metavar="N",
                        help="trees in each forest (default 150)")
    parser.add_argument("--max-leaves", type=int, default=2048, metavar="N",
                        help="leaves per tree at most, bounds the model size (default 2048; "
                        "0: unbounded)")


def add_model_options(parser: argparse.ArgumentParser, model_required: bool = True) -> None:
    """The options of the commands that classify: pipeline settings (the model's by default),
    the model, JSON output and the threshold."""
    add_pipeline_options(parser)
    parser.set_defaults(burst_gap=None)
    if model_required:
        parser.add_argument("-m", "--model", required=True, metavar="MODEL", help="model file")
        json_help = "JSON Lines: the objects of 'flows --json' plus app, confidence"
    else:
        parser.add_argument("-m", "--model", metavar="MODEL",
                            help="model file; without one, the flows are reported as 'flows' "
                            f"reports them, with no app (burst gap {DEFAULT_BURST_GAP} s "
                            "unless given)")
        json_help = "JSON Lines: the objects of 'flows --json' (plus app, confidence with -m)"
    parser.add_argument("--json", action="store_true", help=json_help)
    parser.add_argument("--threshold", type=probability, metavar="P",
                        help="override the model's confidence threshold")
    parser.add_argument(
        "--trusted-models", metavar="FILE",
        help="load the model only if its SHA-256 is listed in FILE (sha256sum's format, not "
        "writable by group or others): on a gateway, what may run as root is what the "
        "operator listed, not whatever is in the model's place",
    )


def open_model(args: argparse.Namespace) -> AppModel:
    """The model of ``-m``, checked against ``--trusted-models`` when given."""
    trusted = read_trusted_models(args.trusted_models) if args.trusted_models else None
    return load_model(args.model, trusted=trusted)


def add_live_limits(parser: argparse.ArgumentParser) -> None:
    """Caps on the open burst of an interface or stream (see appsight.limits)."""
    parser.add_argument(
        "--max-flows", type=int, default=DEFAULT_MAX_FLOWS, metavar="N",
        help="for an interface or -: flows an open burst may hold (default "
        f"{DEFAULT_MAX_FLOWS}); beyond, the flows silent longest are reported before the burst "
        "ends (a burst lasts as long as traffic never pauses for the burst gap)",
    )
    parser.add_argument(
        "--max-packets", type=int, default=DEFAULT_MAX_PACKETS, metavar="N",
        help="for an interface or -: packets an open burst may hold, about 84 bytes each "
        f"(default {DEFAULT_MAX_PACKETS}); beyond, as with --max-flows",
    )


def live_settings(args: argparse.Namespace) -> LiveSettings:
    """The live loop's settings from the options of ``flows`` or ``live`` (flows has no
    --write-pcap)."""
    return LiveSettings(
        max_flows=args.max_flows, max_packets=args.max_packets,
        bpf=getattr(args, "bpf", None), user=getattr(args, "user", None),
        write_pcap=getattr(args, "write_pcap", None),
        rotate_mb=getattr(args, "rotate_mb", None),
        rotate_seconds=getattr(args, "rotate_seconds", None),
    )
