"""The Vagrant test tier: the lab as real VMs, with the project's own Vagrantfile and roles.

Run by ``lab/vagrant-tier/run`` (root). Steps, each timed:

1. packages   Debian packages it needs, installed when missing
2. daemons    virtlogd and libvirtd started by hand inside a network namespace of their own
              (slirp4netns gives it user-mode Internet access): libvirt's bridges, NAT
              rules and dnsmasq live there and the host's networking is left alone
3. box        the Tiny Core gateway's box, as a user builds it (``labctl box``, what
              ``make box`` runs), and the stand-in phone's Debian 12 box (debootstrap,
              cached in the cache folder)
4. up         ``vagrant up`` with the project's Vagrantfile and lab.yml, overriding only
              the libvirt driver (APPSIGHT_LIBVIRT_DRIVER=qemu): Vagrant adds the gateway's
              box from its catalog, checked by SHA-256, and its ansible provisioner runs
              site.yml through the roles' Tiny Core path. Without an Android ISO a stand-in
              phone is added through $VAGRANT_HOME/Vagrantfile (home.Vagrantfile). The
              gateway's /etc/os-release goes into the log
5. test       the testinfra suite against ``vagrant ssh-config``; tests that need a host
              the lab lacks (upstream) are skipped, with the reason
6. again      with --again: ``vagrant provision gateway`` must report changed=0
7. reboot     ``vagrant reload gateway --no-provision``, then the suite again: the state
              comes back the Tiny Core way, from the disk's mydata.tgz (filetool.sh) and
              /opt/bootlocal.sh (skipped with --quick)
8. destroy    ``vagrant destroy -f``; every domain, network, volume and pool the run
              created is removed, the daemons and the namespace are stopped: also when a
              step failed or the run was interrupted

Vagrant, Ansible and pytest run inside the namespace too (they reach the VMs' management
addresses there); libvirt's unix socket is on the shared file system.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
VENV_BIN = REPO / ".venv" / "bin"

NETNS = "vagrant-tier"
LIBVIRT_URI = "qemu:///system"
BOX_NAME = "appsight-tier/debian12"
#: Bumped when the way the box is made changes (besides the files under image/).
BOX_RECIPE = "1"
BOX_DISK_GB = 4
BOX_PACKAGES = [
    "systemd-sysv", "udev", "kmod", "dbus", "openssh-server", "sudo", "python3",
    "python3-venv", "iptables", "busybox", "iproute2", "procps", "curl", "ca-certificates",
    "openssl", "tcpdump", "linux-image-amd64", "initramfs-tools",
]
#: Timers that would wake up under software emulation and compete with the tests.
BOX_MASKED_UNITS = ["apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer",
                    "dpkg-db-backup.timer", "fstrim.timer"]
HOST_PACKAGES = [
    "vagrant", "vagrant-libvirt", "libvirt-daemon-system", "libvirt-clients",
    "qemu-system-x86", "qemu-utils", "dnsmasq-base", "debootstrap", "e2fsprogs",
    "slirp4netns", "iproute2", "iptables", "openssh-client",
]
STEPS = ["packages", "daemons", "box", "up", "test", "again", "reboot", "destroy"]


class TierError(Exception):
    """A step failed; the message says which and where its log is."""


class Interrupted(BaseException):
    """SIGTERM, SIGHUP or SIGINT: stop the current step and clean up."""


def say(message: str) -> None:
    print(f"vagrant-tier: {message}", flush=True)


# --------------------------------------------------------------------------- running commands

class Runner:
    """Runs commands with their output in per-step logs, and keeps the step timings."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.timings: list[tuple[str, float, str]] = []

    def run(self, command: Sequence[str | Path], log: str, *,
            env: dict[str, str] | None = None, netns: bool = False, stream: bool = False,
            check: bool = True, timeout: float | None = None,
            stdout: Path | None = None) -> subprocess.CompletedProcess:
        """Run ``command``, appending its output to ``log_dir/log``.

        ``netns`` runs it inside the tier's network namespace; ``stream`` also echoes each
        line, indented; ``stdout`` sends standard output to that file instead of the log.
        """
        argv = [str(word) for word in command]
        if netns:
            argv = ["ip", "netns", "exec", NETNS, *argv]
        path = self.log_dir / log
        with path.open("a") as out:
            out.write(f"\n$ {' '.join(argv)}\n")
            out.flush()
            if stdout is not None:
                with stdout.open("w") as target:
                    done = subprocess.run(argv, stdout=target, stderr=out, env=env,
                                          timeout=timeout, check=False)
            elif stream:
                done = self._stream(argv, out, env, timeout)
            else:
                done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                      timeout=timeout, check=False)
            out.write(f"[exit {done.returncode}]\n")
        if check and done.returncode != 0:
            raise TierError(f"{argv[0] if not netns else argv[4]} exited with "
                            f"{done.returncode}; see {path}")
        return done

    @staticmethod
    def _stream(argv: list[str], out, env, timeout) -> subprocess.CompletedProcess:
        deadline = None if timeout is None else time.monotonic() + timeout
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   env=env, text=True, bufsize=1)
        try:
            assert process.stdout is not None
            started = time.monotonic()
            for line in process.stdout:
                # vagrant-libvirt redraws its upload progress with carriage returns.
                line = line.split("\r")[-1].replace("\x1b[K", "").rstrip()
                if re.fullmatch(r"Progress: \d+%", line.strip()):
                    continue
                out.write(f"[{time.monotonic() - started:7.1f}s] {line}\n")
                out.flush()
                print(f"  | {line}", flush=True)
                if deadline is not None and time.monotonic() > deadline:
                    raise TierError(f"{argv[0]} took longer than {timeout:.0f} s")
            process.wait()
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        return subprocess.CompletedProcess(argv, process.returncode)

    def output(self, command: Sequence[str | Path], *, netns: bool = False,
               env: dict[str, str] | None = None, check: bool = True) -> str:
        argv = [str(word) for word in command]
        if netns:
            argv = ["ip", "netns", "exec", NETNS, *argv]
        done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        if check and done.returncode != 0:
            raise TierError(f"{' '.join(argv)} exited with {done.returncode}: "
                            f"{done.stderr.strip()}")
        return done.stdout

    @contextlib.contextmanager
    def step(self, number: int, name: str, what: str) -> Iterator[None]:
        say(f"[{number}/{len(STEPS)}] {name}: {what}")
        started = time.monotonic()
        outcome = "failed"
        try:
            yield
            outcome = "ok"
        finally:
            elapsed = time.monotonic() - started
            self.timings.append((name, elapsed, outcome))
            say(f"[{number}/{len(STEPS)}] {name}: {outcome} in {elapsed:.1f} s")


# --------------------------------------------------------------------------- 1. packages

def missing_packages(names: Sequence[str]) -> list[str]:
    done = subprocess.run(
        ["dpkg-query", "--show", "--showformat=${Package} ${db:Status-Abbrev}\n", *names],
        capture_output=True, text=True, check=False)
    installed = {line.split()[0] for line in done.stdout.splitlines()
                 if re.search(r" ii ?$", line)}
    return [name for name in names if name not in installed]


def install_packages(runner: Runner) -> None:
    missing = missing_packages(HOST_PACKAGES)
    if not missing:
        say("  all installed")
        return
    say(f"  installing {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    runner.run(["apt-get", "update", "-qq"], "packages.log", env=env)
    runner.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
               "packages.log", env=env)


# --------------------------------------------------------------------------- 2. daemons

PIDFILES = {"libvirtd": Path("/run/libvirtd.pid"), "virtlogd": Path("/run/virtlogd.pid")}


def _pid_alive(pidfile: Path, name: str) -> int | None:
    try:
        pid = int(pidfile.read_text().split()[0])
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError, IndexError):
        return None
    return pid if comm == name else None


def _netns_exists() -> bool:
    return Path(f"/run/netns/{NETNS}").exists()


def _same_netns(pid: int) -> bool:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{NETNS}").st_ino
    except OSError:
        return False


class Daemons:
    """The tier's network namespace, its slirp4netns uplink, virtlogd and libvirtd."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.slirp: subprocess.Popen | None = None
        self.started = False

    def start(self) -> None:
        for name, pidfile in PIDFILES.items():
            pid = _pid_alive(pidfile, name)
            if pid is not None and not (_netns_exists() and _same_netns(pid)):
                raise TierError(f"{name} already runs (pid {pid}) outside the tier's namespace: "
                                "stop it first; the tier runs its own, in a namespace")
        if _netns_exists():
            say(f"  namespace {NETNS} is left from an earlier run: removing it first")
            self.stop()
        self.started = True
        subprocess.run(["ip", "netns", "add", NETNS], check=True)
        subprocess.run(["ip", "-n", NETNS, "link", "set", "lo", "up"], check=True)
        # User-mode networking: the namespace reaches the Internet (the controller downloads
        # wheels there; the VMs' NAT goes through it) without a rule on the host.
        log = (self.runner.log_dir / "slirp4netns.log").open("w")
        self.slirp = subprocess.Popen(
            ["slirp4netns", "--configure", "--mtu=65520", "--disable-host-loopback",
             "--netns-type=path", f"/run/netns/{NETNS}", "tap0"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._wait("the namespace's uplink (slirp4netns)", lambda: "10.0.2.100" in
                   self.runner.output(["ip", "-n", NETNS, "-4", "addr", "show", "tap0"],
                                      check=False), 10)
        env = {**os.environ,
               "LIBVIRT_LOG_OUTPUTS": f"3:file:{self.runner.log_dir / 'libvirtd.log'}"}
        virtlogd_env = {**os.environ,
                        "LIBVIRT_LOG_OUTPUTS": f"3:file:{self.runner.log_dir / 'virtlogd.log'}"}
        self.runner.run(["virtlogd", "-d"], "daemons.log", netns=True, env=virtlogd_env)
        self.runner.run(["libvirtd", "-d"], "daemons.log", netns=True, env=env)
        self._wait("libvirtd", lambda: self.runner.run(
            ["virsh", "-c", LIBVIRT_URI, "version"], "daemons.log", check=False).returncode == 0,
            60)

    def _wait(self, what: str, ready, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not ready():
            if time.monotonic() > deadline:
                raise TierError(f"{what} not ready after {seconds:.0f} s; see "
                                f"{self.runner.log_dir}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop the daemons and everything else in the namespace, then remove it."""
        for name in ("libvirtd", "virtlogd"):
            pid = _pid_alive(PIDFILES[name], name)
            if pid is not None and _same_netns(pid):
                _terminate([pid])
                PIDFILES[name].unlink(missing_ok=True)
        if _netns_exists():
            # Whatever is left in the namespace (dnsmasq, a stray qemu) was started for it.
            pids = [int(pid) for pid in self.runner.output(
                ["ip", "netns", "pids", NETNS], check=False).split()]
            _terminate(pids)
        if self.slirp is not None:
            _terminate([self.slirp.pid])
            self.slirp.wait()
            self.slirp = None
        if _netns_exists():
            subprocess.run(["ip", "netns", "del", NETNS], check=False)


def _terminate(pids: Sequence[int], grace: float = 10) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.2)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- 3. box

def box_key(mirror: str, suite: str) -> str:
    """A digest of everything the box is made from: a change builds a new box."""
    digest = hashlib.sha256()
    digest.update("\n".join([BOX_RECIPE, mirror, suite, *BOX_PACKAGES, *BOX_MASKED_UNITS,
                             str(BOX_DISK_GB)]).encode())
    for path in [*sorted((HERE / "image").rglob("*")), HERE / "box.Vagrantfile"]:
        if path.is_file():
            digest.update(str(path.relative_to(HERE)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def build_box(runner: Runner, cache: Path, mirror: str, suite: str) -> Path:
    """The box file for the current recipe, built first if the cache has none."""
    key = box_key(mirror, suite)
    box = cache / f"debian12-{key}.box"
    if box.is_file():
        say(f"  cached: {box}")
        return box
    with _locked(cache / ".lock"):
        if box.is_file():
            return box
        staging = Path(tempfile.mkdtemp(prefix="building-", dir=cache))
        try:
            _build_box(runner, staging, box, key, mirror, suite)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        for old in cache.glob("debian12-*.box"):
            if old != box:
                old.unlink()
    return box


def _build_box(runner: Runner, staging: Path, box: Path, key: str, mirror: str,
               suite: str) -> None:
    root = staging / "rootfs"
    log = "box.log"
    started = time.monotonic()
    say(f"  debootstrap {suite} with {len(BOX_PACKAGES)} packages and a kernel "
        f"(log {runner.log_dir / log})")
    runner.run(["debootstrap", "--variant=minbase", f"--include={','.join(BOX_PACKAGES)}",
                suite, root, mirror], log)
    say(f"  debootstrap done in {time.monotonic() - started:.0f} s")
    root.chmod(0o755)

    # The tier's files: networking, the stand-in phone's DHCP client, a small initrd.
    for source in sorted((HERE / "image").rglob("*")):
        target = root / source.relative_to(HERE / "image")
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.unlink(missing_ok=True)
        shutil.copyfile(source, target)
        mode = 0o755 if source.suffix == ".script" else 0o644
        if target.parent.name == "sudoers.d":
            mode = 0o440
        target.chmod(mode)

    # The vagrant user, with Vagrant's insecure public key (the project's Vagrantfile sets
    # ssh.insert_key = false for the gateway, as its TinyCore box wants) and sudo.
    runner.run(["chroot", root, "useradd", "--create-home", "--shell", "/bin/bash",
                "vagrant"], log)
    keys = sorted(Path("/usr/share/rubygems-integration/all/gems").glob("vagrant-2*/keys/*.pub"))
    if not keys:
        raise TierError("Vagrant's insecure public key not found (is vagrant installed?)")
    ssh_dir = root / "home/vagrant/.ssh"
    ssh_dir.mkdir(mode=0o700)
    (ssh_dir / "authorized_keys").write_text("".join(k.read_text() for k in keys))
    (ssh_dir / "authorized_keys").chmod(0o600)
    vagrant_ids = runner.output(["chroot", root, "id", "-u", "vagrant"]).strip(), \
        runner.output(["chroot", root, "id", "-g", "vagrant"]).strip()
    for path in (ssh_dir, ssh_dir / "authorized_keys"):
        os.chown(path, int(vagrant_ids[0]), int(vagrant_ids[1]))

    runner.run(["chroot", root, "systemctl", "enable", "systemd-networkd.service",
                "appsight-phone-dhcp.service"], log)
    runner.run(["chroot", root, "systemctl", "mask", *BOX_MASKED_UNITS], log)
    # Each VM makes its own machine id at first boot (DHCP client ids derive from it).
    (root / "etc/machine-id").write_text("")
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    runner.run(["chroot", root, "update-initramfs", "-u", "-k", "all"], log)
    for leftover in (root / "var/cache/apt/archives").glob("*.deb"):
        leftover.unlink()
    shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True)

    out = staging / "box"
    out.mkdir()
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    initrds = sorted((root / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise TierError(f"no kernel or initrd in {root / 'boot'}; see {runner.log_dir / log}")
    shutil.copyfile(kernels[-1], out / "vmlinuz")
    shutil.copyfile(initrds[-1], out / "initrd.img")
    shutil.copyfile(HERE / "box.Vagrantfile", out / "Vagrantfile")
    (out / "metadata.json").write_text(json.dumps(
        {"provider": "libvirt", "format": "qcow2", "virtual_size": BOX_DISK_GB}) + "\n")
    (out / "appsight-tier-key").write_text(key + "\n")

    started = time.monotonic()
    raw = staging / "disk.raw"
    with raw.open("wb") as handle:
        handle.truncate(BOX_DISK_GB * 1024**3)
    runner.run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", root, raw], log)
    runner.run(["qemu-img", "convert", "-O", "qcow2", raw, out / "box.img"], log)
    raw.unlink()
    shutil.rmtree(root)
    partial = box.with_suffix(".partial")
    runner.run(["tar", "-cf", partial, "-C", out, "metadata.json", "Vagrantfile",
                "appsight-tier-key", "vmlinuz", "initrd.img", "box.img"], log)
    partial.rename(box)
    say(f"  image packed in {time.monotonic() - started:.0f} s: {box} "
        f"({box.stat().st_size / 1e6:.0f} MB)")


def build_gateway_box(runner: Runner) -> None:
    """The gateway's box as a user makes it: ``labctl box`` (rebuilt only when an input
    changed), which leaves the catalog the Vagrantfile adds it from."""
    runner.run([VENV_BIN / "labctl", "box"], "box.log", stream=True, timeout=1800)


def add_box(runner: Runner, box: Path, env: dict[str, str]) -> None:
    """``vagrant box add`` the box unless Vagrant already has this very build of it."""
    key = box.stem.rsplit("-", 1)[1]
    added = (Path(env["VAGRANT_HOME"]) / "boxes" / BOX_NAME.replace("/", "-VAGRANTSLASH-")
             / "0" / "libvirt" / "appsight-tier-key")
    if added.is_file() and added.read_text().strip() == key:
        say(f"  Vagrant has box {BOX_NAME} ({key})")
        return
    runner.run(["vagrant", "box", "add", "--force", "--name", BOX_NAME, box], "box.log", env=env)
    say(f"  added box {BOX_NAME} ({key})")


# --------------------------------------------------------------------------- 4-8. the lab

class Libvirt:
    """What exists in libvirt, so that the run removes exactly what it created."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.before: dict[str, set[str]] = {}

    def _virsh(self, *args: str, check: bool = True) -> str:
        return self.runner.output(["virsh", "-q", "-c", LIBVIRT_URI, *args], check=check)

    def inventory(self) -> dict[str, set[str]]:
        names = {
            "domains": set(self._virsh("list", "--all", "--name").split()),
            "networks": set(self._virsh("net-list", "--all", "--name").split()),
            "pools": set(self._virsh("pool-list", "--all", "--name").split()),
            "volumes": set(),
        }
        for pool in names["pools"]:
            for line in self._virsh("vol-list", pool, check=False).splitlines():
                if line.split():
                    names["volumes"].add(f"{pool}/{line.split()[0]}")
        return names

    def remember(self, leftovers: dict[str, set[str]]) -> None:
        """Take the current state as the starting point, after removing ``leftovers``."""
        self.remove(leftovers)
        self.before = self.inventory()

    def created(self) -> dict[str, set[str]]:
        now = self.inventory()
        return {kind: now[kind] - self.before.get(kind, set()) for kind in now}

    def remove(self, what: dict[str, set[str]]) -> list[str]:
        removed = []
        for domain in sorted(what.get("domains", ())):
            self._virsh("destroy", domain, check=False)
            self._virsh("undefine", domain, "--nvram", check=False)
            removed.append(f"domain {domain}")
        for volume in sorted(what.get("volumes", ())):
            pool, name = volume.split("/", 1)
            self._virsh("vol-delete", name, "--pool", pool, check=False)
            removed.append(f"volume {volume}")
        for network in sorted(what.get("networks", ())):
            self._virsh("net-destroy", network, check=False)
            self._virsh("net-undefine", network, check=False)
            removed.append(f"network {network}")
        for pool in sorted(what.get("pools", ())):
            self._virsh("pool-destroy", pool, check=False)
            self._virsh("pool-undefine", pool, check=False)
            removed.append(f"pool {pool}")
        return removed


def leftovers_of_earlier_runs(libvirt: Libvirt, lab: dict) -> dict[str, set[str]]:
    """Domains and networks an interrupted earlier run of the tier may have left."""
    now = libvirt.inventory()
    prefix = f"{REPO.name}_"
    return {
        "domains": {d for d in now["domains"] if d in {prefix + "gateway", prefix + "phone"}},
        "networks": now["networks"] & {"vagrant-libvirt", lab["network"]["name"]},
        "volumes": {v for v in now["volumes"] if v.split("/", 1)[1].startswith(prefix)},
    }


def vagrant_env(cache: Path, dotfile: Path, phone: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "PATH": f"{VENV_BIN}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
        "VAGRANT_CWD": str(REPO),
        "VAGRANT_HOME": str(cache / "vagrant.d"),
        "VAGRANT_DOTFILE_PATH": str(dotfile),
        "VAGRANT_DEFAULT_PROVIDER": "libvirt",
        "VAGRANT_CHECKPOINT_DISABLE": "1",
        "VAGRANT_BOX_UPDATE_CHECK_DISABLE": "1",
        "LIBVIRT_DEFAULT_URI": LIBVIRT_URI,
        # The documented override, and nothing else of the project's configuration: the
        # gateway's box is the Vagrantfile's default, the Tiny Core box of `labctl box`.
        "APPSIGHT_LIBVIRT_DRIVER": "qemu",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
        "PYTHONUNBUFFERED": "1",
    })
    env.pop("APPSIGHT_NO_PROVISION", None)
    env.pop("APPSIGHT_GATEWAY_BOX", None)
    if phone:
        env["APPSIGHT_TIER_PHONE_BOX"] = BOX_NAME
    else:
        env.pop("APPSIGHT_TIER_PHONE_BOX", None)
    return env


def ssh_config(runner: Runner, env: dict[str, str], hosts: Sequence[str], path: Path,
               work: Path) -> None:
    runner.run(["vagrant", "ssh-config", *hosts], "test.log", env=env, netns=True, stdout=path)
    # One SSH connection per host for the whole suite instead of one per command (the
    # sockets go to the short-lived work folder: a unix socket path has at most 107 bytes).
    text = path.read_text()
    text = text.replace("  LogLevel FATAL\n", "  LogLevel FATAL\n  ControlMaster auto\n"
                        f"  ControlPath {work}/ssh-%C\n  ControlPersist 120\n")
    path.write_text(text)


def run_suite(runner: Runner, env: dict[str, str], config: Path, log: str,
              junit: Path) -> subprocess.CompletedProcess:
    pytest_env = {**env, "PYTHONPATH": str(REPO / "tests" / "vagrant")}
    return runner.run(
        [VENV_BIN / "pytest", "-p", "lab_hosts", "-p", "no:cacheprovider", "-v", "-rs",
         "--junitxml", junit, REPO / "tests" / "infra", "--lab", config],
        log, env=pytest_env, netns=True, stream=True, check=False)


# --------------------------------------------------------------------------- main

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lab/vagrant-tier/run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path,
                        default=Path(os.environ.get("APPSIGHT_VAGRANT_CACHE",
                                                    "/var/cache/appsight-vagrant")),
                        help="boxes and Vagrant's home, kept between runs (default: %(default)s)")
    parser.add_argument("--logs", type=Path, default=None,
                        help="folder for the logs (default: results/vagrant-tier-<time>/)")
    parser.add_argument("--no-phone", action="store_true",
                        help="the gateway alone, without the stand-in phone")
    parser.add_argument("--again", action="store_true",
                        help="also provision a second time, expecting no change (step 6; "
                             "about 4 minutes under software emulation)")
    parser.add_argument("--quick", action="store_true",
                        help="skip the reboot and the second suite run (step 7)")
    parser.add_argument("--box-only", action="store_true",
                        help="install the packages and build the box, nothing else")
    args = parser.parse_args(argv)

    if os.geteuid() != 0:
        parser.error("run it as root: it installs packages and runs libvirt's daemons")
    if not (VENV_BIN / "ansible-playbook").exists() or not (VENV_BIN / "pytest").exists():
        parser.error(f"{VENV_BIN} lacks ansible-playbook or pytest: run `make install` first")

    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_dir = (args.logs or REPO / "results" / f"vagrant-tier-{stamp}").resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    cache = args.cache.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    cache.chmod(0o755)  # libvirt's QEMU user reads the box's kernel below it
    say(f"logs in {log_dir}")

    lab = yaml.safe_load((REPO / "lab" / "lab.yml").read_text())
    mirror = lab["emulated"]["mirror"]
    suite = lab["emulated"]["suite"]
    phone = not args.no_phone and lab["machines"]["phone"].get("iso") is None
    if not args.no_phone and not phone:
        say("lab.yml names an Android-x86 ISO: the Vagrantfile's own phone is used, "
            "no stand-in")

    runner = Runner(log_dir)
    daemons = Daemons(runner)
    libvirt = Libvirt(runner)
    work = Path(tempfile.mkdtemp(prefix="appsight-vagrant-tier-"))
    env = vagrant_env(cache, work / "dotvagrant", phone)
    home_vagrantfile = cache / "vagrant.d" / "Vagrantfile"
    failure: str | None = None
    results: dict[str, str] = {}
    total_started = time.monotonic()

    def interrupted(signum, _frame):
        raise Interrupted(signal.Signals(signum).name)

    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, interrupted)

    try:
        with runner.step(1, "packages", "Debian packages (vagrant, vagrant-libvirt, libvirt, "
                                        "QEMU, dnsmasq, debootstrap, slirp4netns)"):
            install_packages(runner)
        if args.box_only:
            with runner.step(3, "box", "the Tiny Core gateway's box and the phone's Debian "
                                       f"12 box, cached in {cache}"):
                build_gateway_box(runner)
                build_box(runner, cache, mirror, suite)
            return 0
        with runner.step(2, "daemons", f"virtlogd and libvirtd in network namespace {NETNS}"):
            daemons.start()
            leftovers = leftovers_of_earlier_runs(libvirt, lab)
            for line in libvirt.remove(leftovers):
                say(f"  removed a leftover of an earlier run: {line}")
            libvirt.remember({})
        with runner.step(3, "box", "the Tiny Core gateway's box (labctl box)"
                         + (f" and the phone's Debian 12 box, cached in {cache}"
                            if phone else "")):
            build_gateway_box(runner)
            if phone:
                add_box(runner, build_box(runner, cache, mirror, suite), env)
        with runner.step(4, "up", "vagrant up: " + ("stand-in phone and gateway"
                                                     if phone else "gateway")
                         + " (software emulation), then site.yml"):
            home_vagrantfile.parent.mkdir(parents=True, exist_ok=True)
            if phone:
                shutil.copyfile(HERE / "home.Vagrantfile", home_vagrantfile)
            else:
                home_vagrantfile.unlink(missing_ok=True)
            runner.run(["vagrant", "up", "--provider", "libvirt"], "up.log", env=env,
                       netns=True, stream=True, timeout=1800)
            release = log_dir / "gateway-os-release"
            runner.run(["vagrant", "ssh", "gateway", "-c", "cat /etc/os-release"], "up.log",
                       env=env, netns=True, timeout=120, stdout=release)
            say("  the gateway's /etc/os-release:")
            for line in release.read_text().splitlines():
                say(f"    {line}")
            results["up"] = " ".join(line for line in release.read_text().splitlines()
                                     if line.startswith(("NAME=", "VERSION_ID=")))
        hosts = ["gateway", "phone"] if phone else ["gateway"]
        config = log_dir / "ssh_config"
        with runner.step(5, "test", "testinfra suite (pytest tests/infra --lab ssh_config)"):
            ssh_config(runner, env, hosts, config, work)
            done = run_suite(runner, env, config, "test.log", log_dir / "junit.xml")
            results["test"] = summary_line(log_dir / "test.log")
            if done.returncode != 0:
                raise TierError(f"the testinfra suite failed: {results['test']}; see "
                                f"{log_dir / 'test.log'}")
        if args.again:
            with runner.step(6, "again", "vagrant provision gateway: no change expected"):
                runner.run(["vagrant", "provision", "gateway"], "again.log", env=env,
                           netns=True, stream=True, timeout=1800)
                recap = re.findall(r"\bgateway\s+:\s+ok=\d+\s+changed=(\d+)",
                                   (log_dir / "again.log").read_text())
                results["again"] = f"changed={recap[-1] if recap else '?'}"
                if not recap or recap[-1] != "0":
                    raise TierError(f"the second provisioning changed something "
                                    f"({results['again']}); see {log_dir / 'again.log'}")
        if not args.quick:
            with runner.step(7, "reboot", "vagrant reload gateway, then the suite again"):
                runner.run(["vagrant", "reload", "gateway", "--no-provision"], "reboot.log",
                           env=env, netns=True, stream=True, timeout=1800)
                ssh_config(runner, env, hosts, config, work)
                done = run_suite(runner, env, config, "reboot.log",
                                 log_dir / "junit-reboot.xml")
                results["reboot"] = summary_line(log_dir / "reboot.log")
                if done.returncode != 0:
                    raise TierError(f"the suite failed after the reboot: {results['reboot']}; "
                                    f"see {log_dir / 'reboot.log'}")
    except TierError as error:
        failure = str(error)
    except Interrupted as signame:
        failure = f"interrupted ({signame})"
    finally:
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(signum, signal.SIG_IGN)
        try:
            if not args.box_only:
                with runner.step(8, "destroy", "vagrant destroy -f; remove what the run "
                                               "created; stop the daemons"):
                    teardown(runner, daemons, libvirt, env, work)
        except TierError as error:
            failure = failure or f"teardown: {error}"
        finally:
            home_vagrantfile.unlink(missing_ok=True)
            shutil.rmtree(work, ignore_errors=True)
        total = time.monotonic() - total_started
        report(runner, results, total, failure, log_dir)
    return 1 if failure else 0


def teardown(runner: Runner, daemons: Daemons, libvirt: Libvirt, env: dict[str, str],
             work: Path) -> None:
    if not daemons.started:
        return
    libvirtd_up = _pid_alive(PIDFILES["libvirtd"], "libvirtd") is not None
    if libvirtd_up and (work / "dotvagrant").is_dir():
        try:
            runner.run(["vagrant", "destroy", "-f"], "destroy.log", env=env, netns=True,
                       stream=True, timeout=600, check=False)
        except TierError as error:  # a hung destroy: the sweep below still cleans up
            say(f"  {error}")
    if libvirtd_up:
        for line in libvirt.remove(libvirt.created()):
            say(f"  removed {line}")
    daemons.stop()
    if _netns_exists():
        raise TierError(f"network namespace {NETNS} could not be removed")


def summary_line(log: Path) -> str:
    """pytest's closing line, e.g. '21 passed, 6 skipped in 40.1s'."""
    lines = [re.sub(r"^\[ *[\d.]+s\] ", "", line).strip("= \n")
             for line in log.read_text().splitlines()
             if re.search(r"\d+ (passed|failed|error)", line) and " in " in line]
    return lines[-1] if lines else "no pytest summary"


def report(runner: Runner, results: dict[str, str], total: float, failure: str | None,
           log_dir: Path) -> None:
    lines = ["", "step        seconds  outcome"]
    for name, elapsed, outcome in runner.timings:
        extra = f"  {results[name]}" if name in results else ""
        lines.append(f"{name:<10} {elapsed:8.1f}  {outcome}{extra}")
    lines.append(f"{'total':<10} {total:8.1f}")
    lines.append(f"vagrant tier: {'FAILED: ' + failure if failure else 'passed'}")
    text = "\n".join(lines)
    print(text, flush=True)
    (log_dir / "timings.txt").write_text(text.lstrip() + "\n")
    (log_dir / "timings.json").write_text(json.dumps(
        {"steps": [{"step": n, "seconds": round(s, 1), "outcome": o}
                   for n, s, o in runner.timings],
         "total_seconds": round(total, 1), "results": results, "failure": failure},
        indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
