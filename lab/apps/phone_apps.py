#!/usr/bin/env python3
"""A synthetic phone "app": replays one traffic profile against the lab's upstream servers.

These are plainly synthetic stand-ins for real apps, for the lab's end-to-end demo: each
profile of ``profiles.yml`` describes a pattern of real TLS sessions (HTTP/1.1 requests for
``/bytes/N`` or ``/json/N``) and UDP datagram streams, with sizes and think times drawn from
distributions. One run plays one profile for a duration::

    python3 phone_apps.py --profiles profiles.yml --app video --server 203.0.113.1 \\
        --duration 60 --seed 7 --cafile ca.pem

Every random draw comes from one generator seeded with ``SEED/PROFILE``, and the whole
schedule is planned by :func:`iter_plan` before and independently of the network, so the same
seed gives the same schedule (``--plan`` prints it). SIGTERM or SIGINT (or the end of the
duration) stops the run: open sockets are shut down and closed and a one-line summary is
printed. Nothing here needs root. Standard library plus PyYAML; a JSON profiles file works
without PyYAML. Exit status: 0 clean, 1 some requests failed, 2 bad usage or profiles file.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import random
import re
import select
import signal
import socket
import ssl
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PROG = "phone_apps.py"
MAX_BODY = 64 * 1024 * 1024          # the largest response or upload one request may ask for
MAX_PARALLEL = 32
CONNECT_TIMEOUT = 10.0
IO_TIMEOUT = 30.0
MAX_HEAD = 16 * 1024
UDP_MAGIC = b"ASG1"
# magic, sequence number, reply size, reply count, flags (network byte order)
UDP_HEADER = struct.Struct("!4sIHBB")
UDP_MIN_REPLY, UDP_MAX_REPLY = UDP_HEADER.size, 1400
UDP_LINGER = 0.3                     # seconds to wait for late answers after the last datagram
MAX_ERROR_LINES = 10
# Payload filler: what the bytes are does not matter (TLS encrypts them), only how many.
_FILLER = bytes(range(33, 127)) * 700   # printable, so it also fits a header; ~65 KB


class ProfileError(Exception):
    """The profiles file is unreadable or does not follow the schema."""


# ------------------------------------------------------------------------------------------
# Distributions

_DIST_PARAMS: dict[str, tuple[str, ...]] = {
    "constant": ("value",),
    "uniform": ("low", "high"),
    "normal": ("mean", "sd"),
    "lognormal": ("median", "sigma"),
    "exponential": ("mean",),
    "choice": ("values",),
}


@dataclass(frozen=True)
class Dist:
    """A distribution of non-negative numbers, with optional bounds."""

    kind: str
    params: tuple[float, ...] = ()
    values: tuple[float, ...] = ()
    weights: tuple[float, ...] = ()
    low: float | None = None
    high: float | None = None

    def sample(self, rng: random.Random) -> float:
        if self.kind == "constant":
            x = self.params[0]
        elif self.kind == "uniform":
            x = rng.uniform(*self.params)
        elif self.kind == "normal":
            x = rng.normalvariate(*self.params)
        elif self.kind == "lognormal":
            median, sigma = self.params
            x = median * math.exp(sigma * rng.normalvariate(0.0, 1.0))
        elif self.kind == "exponential":
            x = rng.expovariate(1.0 / self.params[0])
        else:  # choice
            x = rng.choices(self.values, weights=self.weights or None)[0]
        if self.low is not None:
            x = max(x, self.low)
        if self.high is not None:
            x = min(x, self.high)
        return max(x, 0.0)

    def integer(self, rng: random.Random) -> int:
        return round(self.sample(rng))


def constant(value: float) -> Dist:
    return Dist("constant", (float(value),))


ZERO, ONE, SIXTY_FOUR = constant(0), constant(1), constant(64)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: Any, where: str, *, minimum: float = 0.0) -> float:
    if not _is_number(value):
        raise ProfileError(f"{where}: expected a number, got {value!r}")
    if value < minimum:
        raise ProfileError(f"{where}: must be at least {minimum:g}, got {value!r}")
    return float(value)


def parse_dist(value: Any, where: str) -> Dist:
    """A DIST of the schema: a number, ``[low, high]`` or a ``{dist: ...}`` mapping."""
    if _is_number(value):
        return constant(_number(value, where))
    if isinstance(value, list):
        if len(value) != 2:
            raise ProfileError(f"{where}: a list means [low, high], got {len(value)} items")
        low, high = (_number(v, f"{where}[{i}]") for i, v in enumerate(value))
        if high < low:
            raise ProfileError(f"{where}: [low, high] with high < low")
        return Dist("uniform", (low, high))
    if not isinstance(value, dict):
        raise ProfileError(f"{where}: expected a number, [low, high] or a {{dist: ...}} mapping")
    kind = value.get("dist")
    if kind not in _DIST_PARAMS:
        raise ProfileError(
            f"{where}: unknown dist {kind!r} (one of: {', '.join(_DIST_PARAMS)})")
    needed = _DIST_PARAMS[kind]
    allowed = {"dist", "min", "max", *needed, *(("weights",) if kind == "choice" else ())}
    _check_keys(value, allowed, where, required=needed)
    low = _number(value["min"], f"{where}.min") if "min" in value else None
    high = _number(value["max"], f"{where}.max") if "max" in value else None
    if low is not None and high is not None and high < low:
        raise ProfileError(f"{where}: max < min")
    if kind == "choice":
        values = value["values"]
        if not isinstance(values, list) or not values:
            raise ProfileError(f"{where}.values: expected a non-empty list of numbers")
        nums = tuple(_number(v, f"{where}.values[{i}]") for i, v in enumerate(values))
        weights: tuple[float, ...] = ()
        if "weights" in value:
            w = value["weights"]
            if not isinstance(w, list) or len(w) != len(nums):
                raise ProfileError(f"{where}.weights: expected {len(nums)} numbers")
            weights = tuple(_number(x, f"{where}.weights[{i}]") for i, x in enumerate(w))
            if sum(weights) <= 0:
                raise ProfileError(f"{where}.weights: all zero")
        return Dist(kind, values=nums, weights=weights, low=low, high=high)
    params = []
    for name in needed:
        # mean and normal's mean may be anything finite; spreads must be >= 0, medians > 0
        minimum = -math.inf if (kind, name) == ("normal", "mean") else 0.0
        params.append(_number(value[name], f"{where}.{name}", minimum=minimum))
    if kind == "uniform" and params[1] < params[0]:
        raise ProfileError(f"{where}: high < low")
    if kind in ("lognormal", "exponential") and params[0] <= 0:
        raise ProfileError(f"{where}.{needed[0]}: must be positive")
    return Dist(kind, tuple(params), low=low, high=high)


def _check_keys(mapping: dict, allowed: set[str] | tuple[str, ...], where: str,
                required: tuple[str, ...] = ()) -> None:
    unknown = sorted(str(k) for k in mapping if k not in allowed)
    if unknown:
        raise ProfileError(
            f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
    for key in required:
        if key not in mapping:
            raise ProfileError(f"{where}: missing {key!r}")


# ------------------------------------------------------------------------------------------
# Profiles


@dataclass(frozen=True)
class Fetch:
    size: Dist
    count: Dist = ONE
    parallel: Dist = ONE
    kind: str = "bytes"
    upload: Dist = ZERO
    header_bytes: Dist = ZERO
    gap: Dist = ZERO
    reuse: str = "action"
    host: str | None = None
    address: str | None = None
    port: int | None = None
    tls: bool = True
    probability: float = 1.0


@dataclass(frozen=True)
class Udp:
    count: Dist
    interval: Dist
    size: Dist = SIXTY_FOUR
    reply: Dist = SIXTY_FOUR
    reuse: str = "action"
    address: str | None = None
    port: int | None = None
    probability: float = 1.0


@dataclass(frozen=True)
class Think:
    seconds: Dist
    probability: float = 1.0


Action = Fetch | Udp | Think


@dataclass(frozen=True)
class Profile:
    name: str
    loop: tuple[Action, ...]
    setup: tuple[Action, ...] = ()
    description: str = ""
    host: str | None = None
    user_agent: str = ""
    tls_port: int = 443
    udp_port: int = 9000
    http_port: int = 8080


_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_HOST = re.compile(r"^[A-Za-z0-9*._:-]{1,253}$")
_DIST_FIELDS = {
    "fetch": ("count", "parallel", "size", "upload", "header_bytes", "gap"),
    "udp": ("count", "interval", "size", "reply"),
}


def _port(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise ProfileError(f"{where}: expected a port number 1..65535, got {value!r}")
    return value


def _text(value: Any, where: str, pattern: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str) or not value or "\n" in value or "\r" in value:
        raise ProfileError(f"{where}: expected a one-line text, got {value!r}")
    if pattern is not None and not pattern.match(value):
        raise ProfileError(f"{where}: not a valid name: {value!r}")
    return value


def _probability(value: Any, where: str) -> float:
    p = _number(value, where)
    if p > 1:
        raise ProfileError(f"{where}: a probability is at most 1, got {value!r}")
    return p


def _reuse(value: Any, where: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ProfileError(f"{where}: expected one of {', '.join(allowed)}, got {value!r}")
    return value


def parse_action(item: Any, where: str) -> Action:
    if not isinstance(item, dict) or len(item) != 1:
        raise ProfileError(f"{where}: an action is a mapping with one key: fetch, udp or think")
    (kind, body), = item.items()
    where = f"{where}.{kind}"
    if kind == "think":
        if isinstance(body, dict) and "seconds" in body:
            _check_keys(body, {"seconds", "probability"}, where)
            prob = _probability(body.get("probability", 1.0), f"{where}.probability")
            return Think(parse_dist(body["seconds"], f"{where}.seconds"), prob)
        return Think(parse_dist(body, where))
    if kind not in _DIST_FIELDS:
        raise ProfileError(f"{where}: unknown action (one of: fetch, udp, think)")
    if not isinstance(body, dict):
        raise ProfileError(f"{where}: expected a mapping")
    dists = _DIST_FIELDS[kind]
    common = ("reuse", "address", "port", "probability")
    extra = ("kind", "host", "tls") if kind == "fetch" else ()
    required = ("size",) if kind == "fetch" else ("count", "interval")
    _check_keys(body, {*dists, *common, *extra}, where, required=required)
    args: dict[str, Any] = {
        name: parse_dist(body[name], f"{where}.{name}") for name in dists if name in body}
    if "probability" in body:
        args["probability"] = _probability(body["probability"], f"{where}.probability")
    if "port" in body:
        args["port"] = _port(body["port"], f"{where}.port")
    if "address" in body:
        args["address"] = _text(body["address"], f"{where}.address", _HOST)
    if kind == "udp":
        if "reuse" in body:
            args["reuse"] = _reuse(body["reuse"], f"{where}.reuse", ("session", "action"))
        return Udp(**args)
    if "reuse" in body:
        args["reuse"] = _reuse(body["reuse"], f"{where}.reuse", ("session", "action", "none"))
    if "kind" in body:
        if body["kind"] not in ("bytes", "json"):
            raise ProfileError(f"{where}.kind: expected bytes or json, got {body['kind']!r}")
        args["kind"] = body["kind"]
    if "host" in body:
        args["host"] = _text(body["host"], f"{where}.host", _HOST)
    if "tls" in body:
        if not isinstance(body["tls"], bool):
            raise ProfileError(f"{where}.tls: expected true or false")
        args["tls"] = body["tls"]
    return Fetch(**args)


def parse_profiles(data: Any) -> dict[str, Profile]:
    """Check a loaded profiles document against the schema; the profiles by name."""
    if not isinstance(data, dict):
        raise ProfileError("expected a mapping with 'version' and 'profiles'")
    _check_keys(data, {"version", "defaults", "profiles"}, "top level", required=("profiles",))
    if data.get("version", 1) != 1:
        raise ProfileError(f"version: unsupported {data.get('version')!r} (1 is known)")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ProfileError("defaults: expected a mapping")
    ports = ("tls_port", "udp_port", "http_port")
    _check_keys(defaults, set(ports), "defaults")
    base = {p: _port(defaults[p], f"defaults.{p}") for p in ports if p in defaults}
    raw = data["profiles"]
    if not isinstance(raw, dict) or not raw:
        raise ProfileError("profiles: expected a non-empty mapping of profiles")
    profiles: dict[str, Profile] = {}
    for name, body in raw.items():
        where = f"profiles.{name}"
        _text(str(name), where, _NAME)
        if not isinstance(body, dict):
            raise ProfileError(f"{where}: expected a mapping")
        _check_keys(body, {"description", "host", "user_agent", "setup", "loop", *ports},
                    where, required=("loop",))
        args: dict[str, Any] = dict(base)
        for p in ports:
            if p in body:
                args[p] = _port(body[p], f"{where}.{p}")
        if "description" in body:
            args["description"] = _text(str(body["description"]).strip(), f"{where}.description")
        if "host" in body:
            args["host"] = _text(body["host"], f"{where}.host", _HOST)
        if "user_agent" in body:
            args["user_agent"] = _text(body["user_agent"], f"{where}.user_agent")
        for phase in ("setup", "loop"):
            items = body.get(phase) or []
            if not isinstance(items, list):
                raise ProfileError(f"{where}.{phase}: expected a list of actions")
            args[phase] = tuple(
                parse_action(item, f"{where}.{phase}[{i}]") for i, item in enumerate(items))
        if not any(isinstance(a, Think) and a.probability >= 1 for a in args["loop"]):
            raise ProfileError(
                f"{where}.loop: needs a think without probability (else it never pauses)")
        profiles[str(name)] = Profile(name=str(name), **args)
    return profiles


def load_profiles(path: str | Path) -> dict[str, Profile]:
    """Read and check a profiles file (YAML, or JSON when PyYAML is not installed)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") \
            from None
    try:
        import yaml  # optional: a JSON profiles file works without PyYAML
    except ImportError:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ProfileError(
                f"{path}: PyYAML is not installed (python3-yaml) and this is not JSON: {exc}") \
                from None
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ProfileError(f"{path}: not valid YAML{at}: {problem}") from None
    try:
        return parse_profiles(data)
    except ProfileError as exc:
        raise ProfileError(f"{path}: {exc}") from None


# ------------------------------------------------------------------------------------------
# The plan: every random draw, made before and independently of the network


@dataclass(frozen=True)
class Request:
    size: int           # response body bytes
    upload: int         # request body bytes
    header_bytes: int   # extra header (cookie) bytes
    gap: float          # seconds to wait after it before the connection's next request


@dataclass(frozen=True)
class FetchStep:
    at: float           # nominal start, seconds from the run's start (transfers take no time)
    where: str
    host: str | None
    address: str | None
    port: int
    tls: bool
    kind: str
    reuse: str
    parallel: int
    requests: tuple[Request, ...]
    type: str = "fetch"


@dataclass(frozen=True)
class UdpStep:
    at: float
    where: str
    address: str | None
    port: int
    reuse: str
    packets: tuple[tuple[float, int, int], ...]   # (seconds before it, size, reply size)
    type: str = "udp"


@dataclass(frozen=True)
class ThinkStep:
    at: float
    where: str
    seconds: float
    type: str = "think"


Step = FetchStep | UdpStep | ThinkStep


def _ms(x: float) -> float:
    return round(x, 3)


def _draw(action: Action, profile: Profile, rng: random.Random, at: float,
          where: str) -> Step | None:
    if action.probability < 1 and rng.random() >= action.probability:
        return None
    if isinstance(action, Think):
        return ThinkStep(at, where, _ms(action.seconds.sample(rng)))
    if isinstance(action, Udp):
        count = action.count.integer(rng)
        packets = []
        for i in range(count):
            delay = 0.0 if i == 0 else _ms(action.interval.sample(rng))
            size = min(max(action.size.integer(rng), UDP_HEADER.size), 65000)
            reply = min(max(action.reply.integer(rng), UDP_MIN_REPLY), UDP_MAX_REPLY)
            packets.append((delay, size, reply))
        return UdpStep(at, where, action.address, action.port or profile.udp_port,
                       action.reuse, tuple(packets))
    count = action.count.integer(rng)
    parallel = min(max(action.parallel.integer(rng), 1), MAX_PARALLEL, max(count, 1))
    requests = tuple(
        Request(size=min(action.size.integer(rng), MAX_BODY),
                upload=min(action.upload.integer(rng), MAX_BODY),
                header_bytes=min(action.header_bytes.integer(rng), 8000),
                gap=_ms(action.gap.sample(rng)))
        for _ in range(count))
    port = action.port or (profile.tls_port if action.tls else profile.http_port)
    return FetchStep(at, where, action.host or profile.host, action.address, port, action.tls,
                     action.kind, action.reuse, parallel, requests)


def nominal_seconds(step: Step) -> float:
    """How long a step takes if transfers took no time: the clock of the plan."""
    if isinstance(step, ThinkStep):
        return step.seconds
    if isinstance(step, UdpStep):
        return sum(p[0] for p in step.packets)
    gaps = [r.gap for r in step.requests[:-1]]
    return sum(gaps) / step.parallel


def iter_plan(profile: Profile, seed: int) -> Iterator[Step]:
    """The endless schedule of a profile: setup once, then the loop over and over.

    Deterministic: the same profile and seed always give the same steps, whatever the
    network does (the generator is seeded with ``"SEED/NAME"``).
    """
    rng = random.Random(f"{seed}/{profile.name}")
    now = 0.0
    phases = itertools.chain(
        (("setup", 0, profile.setup),),
        (("loop", n, profile.loop) for n in itertools.count()))
    for phase, n, actions in phases:
        for i, action in enumerate(actions):
            label = f"{phase}[{i}]" if phase == "setup" else f"loop#{n}[{i}]"
            step = _draw(action, profile, rng, _ms(now), label)
            if step is not None:
                yield step
                now += nominal_seconds(step)


def plan(profile: Profile, seed: int, duration: float) -> list[Step]:
    """The steps that start within the first ``duration`` nominal seconds."""
    return list(itertools.takewhile(lambda s: s.at < duration, iter_plan(profile, seed)))


def step_dict(step: Step) -> dict[str, Any]:
    return asdict(step)


# ------------------------------------------------------------------------------------------
# Running a plan


class Stopped(Exception):
    """The run is over (deadline or signal): not an error."""


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connections = 0
        self.tls_verified = 0
        self.tls_versions: set[str] = set()
        self.requests = 0
        self.tcp_sent = 0
        self.tcp_received = 0
        self.udp_flows = 0
        self.udp_sent = 0
        self.udp_received = 0
        self.udp_bytes_sent = 0
        self.udp_bytes_received = 0
        self.errors = 0

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


class HttpConnection:
    """One TCP (TLS) connection speaking the tiny HTTP/1.1 subset of upstream_servers.py."""

    def __init__(self, runner: Runner, address: str, port: int, host: str, tls: bool) -> None:
        self.runner = runner
        self.host = host
        self.used = 0
        self.buf = bytearray(65536)
        raw = socket.create_connection((address, port), timeout=CONNECT_TIMEOUT)
        sock: socket.socket = raw
        try:
            runner.track(raw)
            if tls:
                sock = runner.ctx.wrap_socket(raw, server_hostname=host,
                                              do_handshake_on_connect=False)
                runner.untrack(raw)
                runner.track(sock)
                sock.do_handshake()
                runner.stats.add(connections=1, tls_verified=int(
                    runner.ctx.verify_mode == ssl.CERT_REQUIRED))
                with runner.stats.lock:
                    runner.stats.tls_versions.add(str(sock.version()))
            else:
                runner.stats.add(connections=1)
            sock.settimeout(IO_TIMEOUT)
        except BaseException:
            runner.untrack(sock)
            sock.close()
            raise
        self.sock = sock

    def close(self) -> None:
        self.runner.untrack(self.sock)
        with contextlib.suppress(OSError):
            self.sock.close()

    def _send(self, data: bytes | memoryview) -> None:
        self.sock.sendall(data)
        self.runner.stats.add(tcp_sent=len(data))

    def request(self, kind: str, req: Request, close: bool) -> None:
        """One request and its whole response; raises on any failure."""
        method = "POST" if req.upload else "GET"
        lines = [f"{method} /{kind}/{req.size} HTTP/1.1", f"Host: {self.host}",
                 f"User-Agent: {self.runner.user_agent}", "Accept: */*"]
        if req.header_bytes:
            lines.append("Cookie: s=" + _FILLER[:req.header_bytes].decode())
        if req.upload:
            lines += ["Content-Type: application/octet-stream", f"Content-Length: {req.upload}"]
        lines.append("Connection: close" if close else "Connection: keep-alive")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        left = req.upload
        first = min(left, len(_FILLER) - len(head)) if left else 0
        self._send(head + _FILLER[:first])   # small requests go out in one TLS record
        left -= first
        filler = memoryview(_FILLER)
        while left > 0:
            chunk = min(left, len(_FILLER))
            self._send(filler[:chunk])
            left -= chunk
        self.used += 1
        status, length, extra = self._read_head()
        remaining = length - extra
        view = memoryview(self.buf)
        while remaining > 0:
            n = self.sock.recv_into(view, min(remaining, len(self.buf)))
            if n == 0:
                raise ConnectionError(f"connection closed with {remaining} bytes of body left")
            self.runner.stats.add(tcp_received=n)
            remaining -= n
        if remaining < 0:
            raise ConnectionError("the server sent more than its Content-Length")
        if status != 200:
            raise ConnectionError(f"HTTP status {status}")
        self.runner.stats.add(requests=1)

    def _read_head(self) -> tuple[int, int, int]:
        """Status, Content-Length and how many body bytes came with the head."""
        data = bytearray()
        while True:
            n = self.sock.recv_into(self.buf)
            if n == 0:
                raise EOFError("connection closed before the response") if not data \
                    else ConnectionError("connection closed inside the response head")
            self.runner.stats.add(tcp_received=n)
            data += self.buf[:n]
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(data) > MAX_HEAD:
                raise ConnectionError("response head too long")
        head = data[:end].decode("latin-1").split("\r\n")
        parts = head[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ConnectionError(f"not an HTTP response: {head[0][:60]!r}")
        length = None
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length" and value.strip().isdigit():
                length = int(value.strip())
        if length is None:
            raise ConnectionError("response without Content-Length")
        return int(parts[1]), length, len(data) - end - 4


class Runner:
    """Plays the steps of a plan; the main thread calls :meth:`halt` to end it."""

    def __init__(self, profile: Profile, server: str, ctx: ssl.SSLContext, *,
                 tls_port: int | None = None, udp_port: int | None = None,
                 http_port: int | None = None, verbose: bool = False) -> None:
        self.profile = profile
        self.server = server
        self.ctx = ctx
        self.ports = {"tls": tls_port, "udp": udp_port, "http": http_port}
        self.verbose = verbose
        self.user_agent = profile.user_agent or f"appsight-{profile.name}/1.0"
        self.stats = Stats()
        self.stop = threading.Event()
        self.t0 = time.monotonic()
        self._socks: set[socket.socket] = set()
        self._socks_lock = threading.Lock()
        self._pool: dict[tuple, HttpConnection] = {}
        self._udp_pool: dict[tuple, socket.socket] = {}
        self._udp_seq = 0
        self._error_lines = 0

    # sockets -------------------------------------------------------------------------------
    def track(self, sock: socket.socket) -> None:
        with self._socks_lock:
            self._socks.add(sock)
        if self.stop.is_set():   # halted meanwhile: do not start anything new
            raise Stopped

    def untrack(self, sock: socket.socket) -> None:
        with self._socks_lock:
            self._socks.discard(sock)

    def halt(self) -> None:
        """Stop the run: wake every wait and break every blocked socket call."""
        self.stop.set()
        with self._socks_lock:
            socks = list(self._socks)
        for sock in socks:
            # socket.socket's own shutdown, also for an SSLSocket: it wakes a blocked recv
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def wait(self, seconds: float) -> None:
        if seconds > 0 and self.stop.wait(seconds):
            raise Stopped
        if self.stop.is_set():
            raise Stopped

    # reporting -----------------------------------------------------------------------------
    def log(self, text: str) -> None:
        if self.verbose:
            print(f"{time.monotonic() - self.t0:8.3f} {self.profile.name}: {text}",
                  file=sys.stderr, flush=True)

    def error(self, where: str, what: str, exc: BaseException) -> None:
        if self.stop.is_set() or isinstance(exc, Stopped):
            return
        self.stats.add(errors=1)
        self._error_lines += 1
        if self._error_lines <= MAX_ERROR_LINES:
            reason = str(exc) or type(exc).__name__
            print(f"{PROG}: {self.profile.name}: {where} {what}: {reason}", file=sys.stderr,
                  flush=True)
        if self._error_lines == MAX_ERROR_LINES:
            print(f"{PROG}: {self.profile.name}: further errors are only counted",
                  file=sys.stderr, flush=True)

    # the plan ------------------------------------------------------------------------------
    def run(self, steps: Iterator[Step]) -> None:
        try:
            for step in steps:
                if self.stop.is_set():
                    break
                if isinstance(step, ThinkStep):
                    self.log(f"{step.where} think {step.seconds:.3f} s")
                    self.wait(step.seconds)
                elif isinstance(step, UdpStep):
                    self.udp(step)
                else:
                    self.fetch(step)
        except Stopped:
            pass
        except Exception as exc:   # a bug, but end with a summary rather than a traceback
            self.error("run", "internal error", exc)
        finally:
            self.close_all()

    def close_all(self) -> None:
        for conn in list(self._pool.values()):
            conn.close()
        self._pool.clear()
        for sock in list(self._udp_pool.values()):
            self.untrack(sock)
            sock.close()
        self._udp_pool.clear()

    def fetch(self, step: FetchStep) -> None:
        address = step.address or self.server
        port = (self.ports["tls"] if step.tls else self.ports["http"]) or step.port
        host = step.host or address
        scheme = "https" if step.tls else "http"
        what = f"{scheme}://{host}:{port}/{step.kind}"
        self.log(f"{step.where} fetch {len(step.requests)} x {what} "
                 f"parallel {step.parallel} reuse {step.reuse} "
                 f"({sum(r.size for r in step.requests)} B down, "
                 f"{sum(r.upload for r in step.requests)} B up)")
        queue = deque(step.requests)
        lock = threading.Lock()

        def worker(slot: int) -> None:
            key = (address, port, step.tls, host, slot)
            conn = self._pool.get(key) if step.reuse == "session" else None
            try:
                while True:
                    with lock:
                        if not queue:
                            return
                        req = queue.popleft()
                        last = not queue
                    for attempt in (1, 2):
                        if conn is None:
                            conn = HttpConnection(self, address, port, host, step.tls)
                            if step.reuse == "session":
                                self._pool[key] = conn
                        reused = conn.used > 0
                        try:
                            conn.request(step.kind, req, close=step.reuse == "none")
                            break
                        except (EOFError, ConnectionResetError, BrokenPipeError,
                                ssl.SSLEOFError):
                            # the server closed an idle keep-alive connection: retry once
                            self._drop(key, conn)
                            conn = None
                            if attempt == 2 or not reused or self.stop.is_set():
                                raise
                    if step.reuse == "none":
                        conn.close()
                        conn = None
                    if not last:
                        self.wait(req.gap)
            except Stopped:
                pass
            except (OSError, EOFError, ssl.SSLError, ValueError) as exc:
                self.error(step.where, what, exc)
                if conn is not None:
                    self._drop(key, conn)
                    conn = None
            finally:
                if conn is not None and step.reuse != "session":
                    conn.close()

        if step.parallel == 1:
            worker(0)
        else:
            threads = [threading.Thread(target=worker, args=(slot,), daemon=True)
                       for slot in range(step.parallel)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        if self.stop.is_set():
            raise Stopped

    def _drop(self, key: tuple, conn: HttpConnection) -> None:
        if self._pool.get(key) is conn:
            del self._pool[key]
        conn.close()

    def udp(self, step: UdpStep) -> None:
        address = step.address or self.server
        port = self.ports["udp"] or step.port
        what = f"udp://{address}:{port}"
        self.log(f"{step.where} udp {len(step.packets)} datagrams to {what} reuse {step.reuse}")
        key = (address, port)
        sock = self._udp_pool.get(key) if step.reuse == "session" else None
        try:
            if sock is None:
                family, kind, proto, _, sockaddr = socket.getaddrinfo(
                    address, port, type=socket.SOCK_DGRAM)[0]
                sock = socket.socket(family, kind, proto)
                self.track(sock)
                sock.connect(sockaddr)
                sock.setblocking(False)
                self.stats.add(udp_flows=1)
                if step.reuse == "session":
                    self._udp_pool[key] = sock
            due = time.monotonic()
            for delay, size, reply in step.packets:
                due += delay
                self._udp_receive(sock, until=due)
                self._udp_seq = (self._udp_seq + 1) & 0xFFFFFFFF
                header = UDP_HEADER.pack(UDP_MAGIC, self._udp_seq, reply, 1, 0)
                payload = header + _FILLER[:size - len(header)]
                try:
                    sock.send(payload)
                except BlockingIOError:
                    continue   # the socket buffer is full: a lost datagram, as on a real link
                self.stats.add(udp_sent=1, udp_bytes_sent=len(payload))
            self._udp_receive(sock, until=time.monotonic() + UDP_LINGER)
        except Stopped:
            raise
        except OSError as exc:
            self.error(step.where, what, exc)
            if sock is not None and self._udp_pool.get(key) is sock:
                del self._udp_pool[key]
            if sock is not None and step.reuse == "session":
                self.untrack(sock)
                sock.close()
        finally:
            if sock is not None and step.reuse != "session":
                self.untrack(sock)
                sock.close()

    def _udp_receive(self, sock: socket.socket, until: float) -> None:
        """Count the answers that arrive until the monotonic time ``until``."""
        while True:
            if self.stop.is_set():
                raise Stopped
            left = until - time.monotonic()
            if left <= 0:
                return
            ready, _, _ = select.select([sock], [], [], min(left, 0.2))
            if not ready:
                continue
            while True:
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    break
                self.stats.add(udp_received=1, udp_bytes_received=len(data))


# ------------------------------------------------------------------------------------------
# Command line


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def summary(profile: Profile, seed: int, seconds: float, stats: Stats, reason: str,
            as_json: bool) -> str:
    s = stats
    record = {
        "app": profile.name, "seed": seed, "seconds": round(seconds, 3), "ended_by": reason,
        "connections": s.connections, "tls_verified": s.tls_verified,
        "tls_versions": sorted(s.tls_versions), "requests": s.requests,
        "tcp_bytes_sent": s.tcp_sent, "tcp_bytes_received": s.tcp_received,
        "udp_flows": s.udp_flows, "udp_datagrams_sent": s.udp_sent,
        "udp_datagrams_received": s.udp_received, "udp_bytes_sent": s.udp_bytes_sent,
        "udp_bytes_received": s.udp_bytes_received, "errors": s.errors,
    }
    if as_json:
        return json.dumps(record)
    versions = f", {'/'.join(record['tls_versions'])}" if s.tls_versions else ""
    udp = (f"; UDP {_count(s.udp_flows, 'flow')}, {_count(s.udp_sent, 'datagram')} sent "
           f"({_human(s.udp_bytes_sent)}), {s.udp_received} received "
           f"({_human(s.udp_bytes_received)})" if s.udp_flows else "")
    return (f"{profile.name}: {seconds:.1f} s (seed {seed}, {reason}): "
            f"{_count(s.connections, 'connection')} ({s.tls_verified} TLS verified{versions}), "
            f"{_count(s.requests, 'request')}, sent {_human(s.tcp_sent)}, "
            f"received {_human(s.tcp_received)}{udp}; {_count(s.errors, 'error')}")


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:   # one line, exit status 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _ArgumentParser(
        prog=PROG,
        description="Play one synthetic app profile (profiles.yml) against the lab's "
                    "upstream servers; prints a one-line summary at the end.")
    p.add_argument("--profiles", required=True, help="the profiles file (YAML, or JSON)")
    p.add_argument("--app", required=True, help="the profile to play")
    p.add_argument("--server", help="address of the upstream servers (e.g. 203.0.113.1)")
    p.add_argument("--duration", type=float, default=60.0,
                   help="seconds to run; 0 = until SIGTERM or SIGINT (default 60)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--cafile", help="CA certificate(s) to verify the server with "
                                    "(default: the system's trust store)")
    p.add_argument("--tls-port", type=int, help="override every TLS port of the profile")
    p.add_argument("--udp-port", type=int, help="override every UDP port of the profile")
    p.add_argument("--http-port", type=int, help="override every plain-HTTP port of the profile")
    p.add_argument("--json", action="store_true", help="print the summary as a JSON object")
    p.add_argument("--plan", action="store_true",
                   help="print the planned steps of --duration nominal seconds (JSON lines) "
                        "and exit, without any network traffic")
    p.add_argument("-v", "--verbose", action="store_true", help="one line per step on stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def fail(message: str) -> int:
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2

    if args.duration < 0 or not math.isfinite(args.duration):
        return fail("--duration must be 0 or more seconds")
    for opt in ("tls_port", "udp_port", "http_port"):
        value = getattr(args, opt)
        if value is not None and not 1 <= value <= 65535:
            return fail(f"--{opt.replace('_', '-')} must be a port number 1..65535")
    try:
        profiles = load_profiles(args.profiles)
    except ProfileError as exc:
        return fail(str(exc))
    profile = profiles.get(args.app)
    if profile is None:
        return fail(f"no profile {args.app!r} in {args.profiles} "
                    f"(profiles: {', '.join(profiles)})")
    if args.plan:
        if args.duration == 0:
            return fail("--plan needs a --duration")
        for step in plan(profile, args.seed, args.duration):
            print(json.dumps(step_dict(step)))
        return 0
    if not args.server:
        return fail("--server is required (except with --plan)")
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=args.cafile)
    except (OSError, ssl.SSLError) as exc:
        return fail(f"cannot load --cafile {args.cafile}: {getattr(exc, 'strerror', None) or exc}")
    ctx.set_alpn_protocols(["http/1.1"])

    runner = Runner(profile, args.server, ctx, tls_port=args.tls_port, udp_port=args.udp_port,
                    http_port=args.http_port, verbose=args.verbose)
    signalled: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        signalled.append(signum)   # only a flag: the main loop below does the rest

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    thread = threading.Thread(target=runner.run, args=(iter_plan(profile, args.seed),),
                              name="runner", daemon=True)
    start = runner.t0
    deadline = start + args.duration if args.duration > 0 else math.inf
    thread.start()
    reason = "duration"
    while thread.is_alive():
        if signalled:
            reason = signal.Signals(signalled[0]).name
            break
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    elapsed = min(time.monotonic(), deadline) - start
    runner.halt()
    thread.join(5.0)
    print(summary(profile, args.seed, elapsed, runner.stats, reason, args.json), flush=True)
    return 1 if runner.stats.errors else 0


if __name__ == "__main__":
    sys.exit(main())
