"""``appsight capture``: an interface recorded into rotating pcap files."""

from __future__ import annotations

import argparse

from ..live_jobs import CaptureSettings, record_interface


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "capture", help="record an interface to rotating pcap files",
        description="Record the packets of a network interface into classic pcap files "
        "(nanosecond timestamps; readable by tcpdump, Wireshark and appsight), rotated by size "
        "and/or time. Ctrl-C or SIGTERM closes the current file cleanly; SIGUSR1 prints the "
        "kernel's drop counters. Needs root or CAP_NET_RAW.",
        epilog="examples:\n  appsight capture eth1 -o captures/youtube --label youtube "
        "--rotate-mb 100\n  appsight capture eth1 -o /tmp/cap --bpf 'host 192.168.56.101' "
        "--duration 600",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("interface", metavar="IFACE", help="network interface")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--label", help="app label put into the file names (for training)")
    parser.add_argument("--bpf", metavar="FILTER", help="capture filter (tcpdump syntax)")
    parser.add_argument("--rotate-mb", type=float, metavar="MB",
                        help="start a new file after this many megabytes")
    parser.add_argument("--rotate-seconds", type=float, metavar="S",
                        help="start a new file after this many seconds")
    parser.add_argument("--count", type=int, metavar="N", help="stop after N packets")
    parser.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    parser.add_argument("--user", help="user to switch to once the socket is open "
                        "(default: the sudo caller, if any)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return record_interface(CaptureSettings(
        interface=args.interface, output=args.output, label=args.label, bpf=args.bpf,
        rotate_mb=args.rotate_mb, rotate_seconds=args.rotate_seconds, count=args.count,
        duration=args.duration, user=args.user,
    ))
