"""The ``labctl`` command: the appsight lab emulated on one Linux host, for hosts without VMs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from labctl.collect_apps import collect_apps, merge_labels
from labctl.config import HOST_NAMES, find_config, load_config
from labctl.demo import Demo, DemoOptions
from labctl.errors import LabError
from labctl.lab import Lab
from labctl.phone import AndroidPhone, EmulatedPhone, Phone
from labctl.rootfs import purge_cache
from labctl.sshfiles import ssh_config_text

_DESCRIPTION = """\
The appsight lab emulated with network namespaces, for Linux hosts without virtualisation.
It builds the topology of lab/lab.yml: 'gateway' (internal and uplink interfaces), 'phone'
(a DHCP client standing in for the Android VM) and 'upstream' (standing in for the
Internet), each with its own root filesystem (Tiny Core's for the gateway, unless lab.yml
says debian; Debian's for the others) and sshd. The same Ansible playbooks and
testinfra suite as for the Vagrant lab then run against it. Needs root."""

_EPILOG = """\
typical session:
  sudo labctl up                      # seconds (minutes the first time: root filesystems)
  cd ansible && ansible-playbook -i ../.lab/inventory.ini site.yml
  ssh -F .lab/ssh_config gateway      # look around
  sudo labctl reboot gateway          # state must come back from its persisted files
  sudo labctl down                    # leaves nothing behind

files: .lab/ssh_config and .lab/inventory.ini (next to lab/), logs in .lab/logs/;
the root filesystem is cached in emulated.cache_dir of lab.yml."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="labctl", description=_DESCRIPTION, epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, metavar="LAB_YML",
                        help="the lab's parameter file (default: lab/lab.yml of this "
                             "repository, or $APPSIGHT_LAB_CONFIG)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = commands.add_parser("up", help="build and boot the lab (idempotent when it is up)")
    up.set_defaults(run=_up)
    down = commands.add_parser("down", help="stop every host and remove all the lab made")
    down.add_argument("--purge", action="store_true",
                      help="also delete the cached root filesystems (emulated.cache_dir)")
    down.set_defaults(run=_down)
    status = commands.add_parser("status", help="each host's state; exit 0 only when all run")
    status.set_defaults(run=_status)
    ssh_config = commands.add_parser("ssh-config",
                                     help="print the ssh_config that reaches the hosts")
    ssh_config.set_defaults(run=_ssh_config)
    box = commands.add_parser(
        "box", help="build the Tiny Core gateway's Vagrant box (libvirt) for `vagrant up`",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Builds the Vagrant gateway: Tiny Core's root filesystem (the mirror, "
                    "else tinycore.local_dir or $APPSIGHT_TINYCORE), Debian's kernel with "
                    "the modules a gateway needs, and the extensions of the emulated "
                    "gateway, into the box file of lab.yml (machines.gateway.box_file), "
                    "with a catalog that the Vagrantfile adds it from (checked by SHA-256) "
                    "and a log of every input and its checksum. Built again only when an "
                    "input changes. Needs root (file owners inside the image).",
        epilog="then: vagrant up   (docs/vagrant.md)")
    box.add_argument("--force", action="store_true", help="build even if up to date")
    box.set_defaults(run=_box)
    reboot = commands.add_parser(
        "reboot", help="power-cycle a host: runtime state lost, its disk kept")
    reboot.add_argument("host", choices=HOST_NAMES)
    reboot.set_defaults(run=_reboot)
    demo = commands.add_parser(
        "demo", help="the main job end to end: lab, provisioning, tests, labelled captures, "
                     "retraining, live reports, evaluation",
        description="Builds the lab afresh, provisions it, runs the testinfra suite, records "
                    "every synthetic app in turn (labelled from the phone's own socket "
                    "tables), retrains the gateway's model, runs all apps at once while "
                    "appsight live reports on the gateway, then compares live with offline "
                    "predictions and evaluates them against the ground truth. Prints the "
                    "results folder first; a failure names the stage and its log.")
    demo.add_argument("--seconds-per-app", type=_seconds, default=DemoOptions.seconds_per_app,
                      metavar="S", help="recording of each app alone (default %(default)g)")
    demo.add_argument("--mixed-seconds", type=_seconds, default=DemoOptions.mixed_seconds,
                      metavar="S", help="the session of all apps at once (default %(default)g)")
    demo.add_argument("--seed", type=int, default=DemoOptions.seed,
                      help="seed of the apps' traffic (default %(default)s)")
    demo.add_argument("--keep-lab", action="store_true",
                      help="reuse a lab that is up instead of building it afresh")
    demo.set_defaults(run=_demo)
    collect = commands.add_parser(
        "collect", help="labelled recordings of apps, one session each, ground truth from the "
                        "phone's socket tables",
        description="Record each app alone for a while: a capture on the gateway "
                    "(capture.yml), the phone's socket tables sampled meanwhile, every flow "
                    "labelled with the app that owned its socket. On the emulated lab the apps "
                    "are the synthetic ones (needs site.yml and apps.yml run); with --adb they "
                    "are Android packages driven by monkey. A failed session is reported and "
                    "its partial data kept, marked INCOMPLETE; the others go on.",
        epilog="examples:\n"
               "  labctl collect --apps video,news --seconds 60\n"
               "  labctl collect --adb 127.0.0.1:5555 --inventory vagrant-inventory.ini \\\n"
               "      --apps com.google.android.youtube,org.mozilla.firefox --seconds 120",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    collect.add_argument("--apps", required=True, type=_names, metavar="A,B,...",
                         help="apps (synthetic profile names, or Android package names)")
    collect.add_argument("--seconds", type=_seconds, default=60.0, metavar="S",
                         help="recording of each app (default %(default)g)")
    collect.add_argument("--seed", type=int, default=1, help="seed of the apps' traffic")
    collect.add_argument("--adb", metavar="SERIAL",
                         help="an Android phone reached with adb (e.g. 127.0.0.1:5555 through "
                              "an SSH tunnel to the gateway) instead of the emulated phone")
    collect.add_argument("--inventory", type=Path, metavar="FILE",
                         help="Ansible inventory of the gateway (default: the emulated lab's)")
    collect.set_defaults(run=_collect)
    return parser


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names or any(not all(c.isalnum() or c in "._-" for c in n) for n in names):
        raise argparse.ArgumentTypeError("give names separated by commas (letters, digits, "
                                         "'.', '_', '-')")
    return names


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 5 <= value <= 3600:
        raise argparse.ArgumentTypeError("give between 5 and 3600 seconds")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config_path = args.config.resolve() if args.config else find_config()
        config = load_config(config_path)
        lab = Lab(config, state_dir=config_path.parent.parent / ".lab")
        return int(args.run(args, lab))
    except LabError as exc:
        print(f"labctl: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("labctl: interrupted", file=sys.stderr)
        return 130


def _collect(args: argparse.Namespace, lab: Lab) -> int:
    from appsight.addresses import NetworkMatcher
    from appsight.pipeline import PipelineOptions

    phone: Phone
    if args.adb:
        phone = AndroidPhone(args.adb)
    else:
        if not lab.is_up():
            raise LabError("the emulated lab is not up: labctl up, then site.yml and apps.yml")
        phone = EmulatedPhone(lab.state_dir / "ssh_config", str(lab.config.upstream_address))
    repo = lab.config.source.parent.parent
    options = PipelineOptions(device=NetworkMatcher.parse([str(lab.config.subnet)]))
    results, sessions, failed = collect_apps(
        phone, args.inventory or lab.state_dir / "inventory.ini", repo, args.apps,
        args.seconds, args.seed, options)
    labels = merge_labels(sessions, results / "labels" / "all.csv")
    print(f"collect: labels of {len(sessions)} sessions: {labels}"
          + (f"; INCOMPLETE: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


def _up(args: argparse.Namespace, lab: Lab) -> int:
    lab.up()
    return 0


def _down(args: argparse.Namespace, lab: Lab) -> int:
    lab.down()
    if args.purge:
        purge_cache(lab.config)
    left = lab.leftovers()
    if left:
        raise LabError(f"down left {', '.join(left)}")
    return 0


def _reboot(args: argparse.Namespace, lab: Lab) -> int:
    lab.reboot(args.host)
    return 0


def _status(args: argparse.Namespace, lab: Lab) -> int:
    rows = lab.status()
    for name, state, address in rows:
        print(f"{name:<10} {address:<15} {state}")
    return 0 if all(state == "running" for _, state, _ in rows) else 1


def _demo(args: argparse.Namespace, lab: Lab) -> int:
    options = DemoOptions(seconds_per_app=args.seconds_per_app,
                          mixed_seconds=args.mixed_seconds, seed=args.seed,
                          fresh=not args.keep_lab)
    Demo(lab, lab.config.source.parent.parent, options).run()
    return 0


def _box(args: argparse.Namespace, lab: Lab) -> int:
    from labctl.tinycore.box import build_box

    built = build_box(lab.config, force=args.force)
    print(f"box {lab.config.gateway_box} {built.version}: {built.box}\n"
          f"catalog (the Vagrantfile adds the box from it): {built.catalog}")
    return 0


def _ssh_config(args: argparse.Namespace, lab: Lab) -> int:
    print(ssh_config_text(lab.state_dir, lab.config), end="")
    return 0
