#!/usr/bin/env python3
"""The lab's stand-in Internet services for the synthetic phone apps (phone_apps.py).

Runs on ``upstream`` (as root for port 443)::

    python3 upstream_servers.py --cert server.pem --key server.key [--listen 0.0.0.0]
        [--tls-port 443] [--udp-port 9000] [--http-port 0] [--log FILE]

* TLS (HTTP/1.1, keep-alive), one thread per connection, the handshake in that thread:
  ``GET /bytes/N`` answers N bytes of random-looking data, ``GET /json/N`` a JSON document of
  exactly N bytes, ``GET /`` a short text; any request may carry a body (``Content-Length``),
  which is read and discarded, so ``POST /bytes/N`` uploads. N is at most 64 MiB.
* UDP game server: a datagram starting with the 12-byte header ``!4sIHBB`` (``ASG1``,
  sequence, reply size, reply count, flags) is answered by ``reply count`` (1..4) datagrams
  of ``reply size`` (12..1400) bytes echoing the sequence number; anything else is dropped.
* Plain HTTP, the same as the TLS server, on ``--http-port`` when it is not 0 (the default).

Port 0 picks a free port; the line ``listening tls=ADDR:PORT udp=ADDR:PORT http=...`` on
standard output tells which, once every socket is bound. A client that misbehaves or
disappears only ends its own connection; the log gets one line per TCP connection (when it
ends) and one per UDP peer (after 30 s of silence, or at exit). SIGTERM or SIGINT ends it.

``--make-certs DIR`` instead creates, with the ``openssl`` command line, a lab CA
(``ca.pem``, ``ca.key``) and a server certificate (``server.pem``, ``server.key``) for the
given ``--address`` and ``--name`` values; existing files are kept unless ``--force``.
Standard library only. Exit status 2 on bad usage, unreadable certificates or busy ports.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import secrets
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, TextIO

PROG = "upstream_servers.py"
MAX_BODY = 64 * 1024 * 1024      # largest response
MAX_UPLOAD = 256 * 1024 * 1024   # largest request body accepted
MAX_HEAD = 16 * 1024
MAX_CONNECTIONS = 512
MAX_REQUESTS = 100_000           # per connection
HANDSHAKE_TIMEOUT = 10.0
IDLE_TIMEOUT = 120.0             # keep-alive: longer than any think time of the profiles
CHUNK = 64 * 1024
UDP_HEADER = struct.Struct("!4sIHBB")
UDP_MAGIC = b"ASG1"
UDP_MIN_REPLY, UDP_MAX_REPLY, UDP_MAX_COUNT = UDP_HEADER.size, 1400, 4
UDP_PEER_IDLE = 30.0
UDP_MAX_PEERS = 4096
DEFAULT_ADDRESSES = ("203.0.113.1", "127.0.0.1")
DEFAULT_NAMES = ("appsight.test", "*.appsight.test")

# Random-looking content, generated once: a response is a window into it at a random offset.
_RANDOM = os.urandom(1 << 20)
_RANDOM_WRAP = _RANDOM + _RANDOM[:CHUNK]
_TEXT = secrets.token_urlsafe(3 << 18).encode()[: 1 << 20]   # JSON-safe characters
_TEXT_WRAP = _TEXT + _TEXT[:CHUNK]


class Log:
    """One line per event, with a UTC timestamp, to a file or stderr; thread-safe."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.lock = threading.Lock()

    def __call__(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with self.lock, contextlib.suppress(OSError, ValueError):
            self.stream.write(f"{stamp} {text}\n")
            self.stream.flush()


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB"):
        if n < 1000:
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}GB"


def _peer(addr: Any) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# ------------------------------------------------------------------------------------------
# HTTP over TLS or TCP


class ClientGone(Exception):
    """The client closed, stalled or broke the protocol: end its connection."""


class Connection:
    """Serves one client connection; counts what went in and out for the log line."""

    def __init__(self, server: Servers, sock: socket.socket, peer: Any, tls: bool) -> None:
        self.server = server
        self.sock = sock
        self.peer = peer
        self.tls = tls
        self.received = 0
        self.sent = 0
        self.requests = 0
        self.sni = ""
        self.buf = bytearray()
        self.scratch = bytearray(CHUNK)

    def serve(self) -> None:
        start = time.monotonic()
        reason = "closed by client"
        try:
            self.sock.settimeout(HANDSHAKE_TIMEOUT)
            time.sleep(self.server.latency)
            if self.tls:
                self.sock = self.server.ctx.wrap_socket(self.sock, server_side=True)
                self.sni = getattr(self.sock, "appsight_sni", "")
            self.sock.settimeout(IDLE_TIMEOUT)
            while self.requests < MAX_REQUESTS and not self.server.stop.is_set():
                if not self._one_request():
                    break
            else:
                reason = "server stopping" if self.server.stop.is_set() else "request limit"
        except ClientGone as exc:
            reason = str(exc)
        except TimeoutError:
            reason = "handshake timeout" if self.tls and not self.requests else "idle timeout"
        except ssl.SSLError as exc:
            reason = f"TLS: {exc.reason or exc}"
        except (OSError, ValueError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        finally:
            with contextlib.suppress(OSError):
                self.sock.close()
            sni = f" sni={self.sni}" if self.sni else ""
            kind = "tls" if self.tls else "http"
            self.server.log(
                f"{kind} {_peer(self.peer)}{sni} requests={self.requests} "
                f"in={_human(self.received)} out={_human(self.sent)} "
                f"{time.monotonic() - start:.1f}s {reason}")

    def _recv(self) -> int:
        n = self.sock.recv_into(self.scratch)
        self.received += n
        return n

    def _send(self, data: bytes | memoryview) -> None:
        self.sock.sendall(data)
        self.sent += len(data)

    def _one_request(self) -> bool:
        """Read one request and answer it; False when the client closed between requests."""
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            if len(self.buf) > MAX_HEAD:
                self._respond(431, b"request head too long\n", "text/plain", close=True)
                raise ClientGone("request head too long")
            n = self._recv()
            if n == 0:
                if self.buf:
                    raise ClientGone("closed inside a request")
                return False
            self.buf += self.scratch[:n]
        head = self.buf[:end].decode("latin-1").split("\r\n")
        del self.buf[:end + 4]
        parts = head[0].split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self._respond(400, b"bad request\n", "text/plain", close=True)
            raise ClientGone(f"not HTTP: {head[0][:40]!r}")
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in head[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        connection = headers.get("connection", "").lower()
        close = connection == "close" or (version == "HTTP/1.0" and connection != "keep-alive")
        if "transfer-encoding" in headers:
            self._respond(501, b"chunked bodies are not supported\n", "text/plain", close=True)
            raise ClientGone("chunked request body")
        length_text = headers.get("content-length", "0")
        if not length_text.isdigit() or int(length_text) > MAX_UPLOAD:
            self._respond(413, b"bad or too large Content-Length\n", "text/plain", close=True)
            raise ClientGone("bad Content-Length")
        self._discard(int(length_text))
        self.requests += 1
        self._answer(method, target.split("?", 1)[0], close)
        return not close

    def _discard(self, length: int) -> None:
        take = min(length, len(self.buf))
        del self.buf[:take]
        length -= take
        while length > 0:
            n = self.sock.recv_into(self.scratch, min(length, CHUNK))
            if n == 0:
                raise ClientGone("closed inside a request body")
            self.received += n
            length -= n

    def _answer(self, method: str, path: str, close: bool) -> None:
        time.sleep(self.server.latency)
        if method not in ("GET", "POST", "PUT", "HEAD"):
            self._respond(405, b"method not allowed\n", "text/plain", close)
            return
        if path in ("/", "/index.html"):
            self._respond(200, b"appsight upstream: GET /bytes/N, /json/N\n", "text/plain",
                          close, head_only=method == "HEAD")
            return
        kind, _, number = path.strip("/").partition("/")
        if kind not in ("bytes", "json") or not number.isdigit() or int(number) > MAX_BODY:
            self._respond(404, b"not found (try /bytes/N or /json/N, N <= 64 MiB)\n",
                          "text/plain", close)
            return
        size = int(number)
        ctype = "application/octet-stream" if kind == "bytes" else "application/json"
        self._respond(200, None, ctype, close, size=size, json_body=kind == "json",
                      head_only=method == "HEAD")

    def _respond(self, status: int, body: bytes | None, ctype: str, close: bool, *,
                 size: int = 0, json_body: bool = False, head_only: bool = False) -> None:
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                  413: "Content Too Large", 431: "Request Header Fields Too Large",
                  501: "Not Implemented"}[status]
        length = len(body) if body is not None else size
        head = (f"HTTP/1.1 {status} {reason}\r\nServer: appsight-upstream\r\n"
                f"Content-Type: {ctype}\r\nContent-Length: {length}\r\n"
                f"Cache-Control: no-store\r\n"
                f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n").encode()
        if head_only:
            self._send(head)
        elif body is not None:
            self._send(head + body)
        else:
            self._send_generated(head, size, json_body)

    def _send_generated(self, head: bytes, size: int, json_body: bool) -> None:
        """``size`` bytes of random-looking data (or a JSON document of exactly that size)."""
        source = _TEXT_WRAP if json_body else _RANDOM_WRAP
        view = memoryview(source)
        offset = secrets.randbelow(1 << 20)
        prefix, suffix = b"", b""
        if json_body:   # {"d":"...."} padded to size; tiny sizes get a bare number
            if size >= 8:
                prefix, suffix = b'{"d":"', b'"}'
            elif size:
                prefix = b"1" * size
        left = size - len(prefix) - len(suffix)
        first = min(left, CHUNK)
        self._send(head + prefix + view[offset:offset + first]
                   + (suffix if first == left else b""))
        left -= first
        while left > 0:
            offset = (offset + CHUNK) % (1 << 20)
            chunk = min(left, CHUNK)
            last = chunk == left
            self._send(bytes(view[offset:offset + chunk]) + suffix if last
                       else view[offset:offset + chunk])
            left -= chunk


# ------------------------------------------------------------------------------------------
# The servers


class Servers:
    def __init__(self, log: Log, ctx: ssl.SSLContext | None, latency: float = 0.0) -> None:
        self.log = log
        self.ctx = ctx
        # Seconds waited before a handshake and before each answer: the round trip of the
        # Internet, which the lab's links (veth pairs, microseconds) do not have.
        self.latency = latency
        self.stop = threading.Event()
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.threads: list[threading.Thread] = []

    def start_tcp(self, listener: socket.socket, tls: bool) -> None:
        t = threading.Thread(target=self._accept_loop, args=(listener, tls), daemon=True,
                             name=f"accept-{'tls' if tls else 'http'}")
        t.start()
        self.threads.append(t)

    def start_udp(self, sock: socket.socket) -> None:
        t = threading.Thread(target=self._udp_loop, args=(sock,), daemon=True, name="udp")
        t.start()
        self.threads.append(t)

    def _accept_loop(self, listener: socket.socket, tls: bool) -> None:
        listener.settimeout(0.5)
        while not self.stop.is_set():
            try:
                conn, peer = listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:   # EMFILE and friends: breathe, then go on
                if self.stop.is_set():
                    return
                self.log(f"accept: {exc}")
                time.sleep(0.2)
                continue
            if not self.slots.acquire(blocking=False):
                self.log(f"{'tls' if tls else 'http'} {_peer(peer)} refused: "
                         f"{MAX_CONNECTIONS} connections open")
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn, peer, tls), daemon=True).start()

    def _serve(self, conn: socket.socket, peer: Any, tls: bool) -> None:
        try:
            Connection(self, conn, peer, tls).serve()
        except Exception as exc:   # never let one client take anything else down
            self.log(f"{_peer(peer)} internal error: {type(exc).__name__}: {exc}")
        finally:
            self.slots.release()

    def _udp_loop(self, sock: socket.socket) -> None:
        peers: dict[Any, list[float]] = {}   # peer -> [first, last, in, in bytes, out, out bytes]
        filler = _RANDOM_WRAP[:UDP_MAX_REPLY]
        last_sweep = time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic()
            if now - last_sweep > 5:
                last_sweep = now
                for peer in [p for p, v in peers.items() if now - v[1] > UDP_PEER_IDLE]:
                    self._udp_log(peer, peers.pop(peer), "idle")
            try:
                ready, _, _ = select.select([sock], [], [], 0.5)
                if not ready:
                    continue
                data, peer = sock.recvfrom(65535)
            except OSError:   # e.g. an ICMP error of an earlier answer: nothing to do
                continue
            stats = peers.get(peer)
            if stats is None:
                if len(peers) >= UDP_MAX_PEERS:
                    oldest = min(peers, key=lambda p: peers[p][1])
                    self._udp_log(oldest, peers.pop(oldest), "evicted")
                stats = peers[peer] = [now, now, 0, 0, 0, 0]
            stats[1] = now
            stats[2] += 1
            stats[3] += len(data)
            if len(data) < UDP_HEADER.size:
                continue
            magic, seq, size, count, _flags = UDP_HEADER.unpack_from(data)
            if magic != UDP_MAGIC:
                continue
            size = min(max(size, UDP_MIN_REPLY), UDP_MAX_REPLY)
            for index in range(min(max(count, 1), UDP_MAX_COUNT)):
                reply = UDP_HEADER.pack(UDP_MAGIC, seq, size, index, 0x80)
                reply += filler[len(reply):size]
                try:
                    sock.sendto(reply, peer)
                except OSError:
                    break
                stats[4] += 1
                stats[5] += len(reply)
        for peer, stats in peers.items():
            self._udp_log(peer, stats, "server stopping")

    def _udp_log(self, peer: Any, s: list[float], reason: str) -> None:
        self.log(f"udp {_peer(peer)} in={int(s[2])}/{_human(s[3])} out={int(s[4])}/"
                 f"{_human(s[5])} {s[1] - s[0]:.1f}s {reason}")


def _tcp_listener(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def _udp_socket(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    return sock


def _server_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])

    def remember_sni(sslobj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        # the callback gets the SSLSocket; keep the name for the connection's log line
        with contextlib.suppress(AttributeError):
            sslobj.appsight_sni = name or ""  # type: ignore[union-attr]

    ctx.sni_callback = remember_sni
    return ctx


# ------------------------------------------------------------------------------------------
# Certificates

_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = appsight lab CA
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
subjectAltName = @alt
[alt]
"""


def make_certs(directory: Path, addresses: list[str], names: list[str], days: int,
               force: bool) -> str:
    """Create ca.pem/ca.key and server.pem/server.key in ``directory`` with openssl."""
    files = [directory / f for f in ("ca.pem", "ca.key", "server.pem", "server.key")]
    if not force and all(f.exists() for f in files):
        return f"{directory}: certificates exist (--force to recreate)"
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl command is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    alt = [f"IP.{i} = {a}" for i, a in enumerate(addresses, 1)]
    alt += [f"DNS.{i} = {n}" for i, n in enumerate(names, 1)]
    key_args = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    old_umask = os.umask(0o077)   # the keys are only for root
    try:
        with tempfile.TemporaryDirectory(dir=directory) as tmp:
            cnf, csr = Path(tmp) / "openssl.cnf", Path(tmp) / "server.csr"
            cnf.write_text(_OPENSSL_CONFIG + "\n".join(alt) + "\n")
            ca_pem, ca_key, srv_pem, srv_key = (Path(tmp) / f.name for f in files)
            commands = [
                [openssl, "req", "-x509", "-config", cnf, "-extensions", "v3_ca", *key_args,
                 "-days", str(max(days, 3650)), "-keyout", ca_key, "-out", ca_pem],
                [openssl, "req", "-new", "-config", cnf, *key_args,
                 "-subj", f"/CN={(addresses or names)[0]}", "-keyout", srv_key, "-out", csr],
                [openssl, "x509", "-req", "-in", csr, "-CA", ca_pem, "-CAkey", ca_key,
                 "-set_serial", f"0x{secrets.token_hex(16)}", "-days", str(days),
                 "-extfile", cnf, "-extensions", "v3_server", "-out", srv_pem],
            ]
            for cmd in commands:
                done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                                      check=False)
                if done.returncode:
                    lines = done.stderr.strip().splitlines() or ["(no message)"]
                    raise RuntimeError(f"openssl {cmd[1]} failed: {lines[-1]}")
            for src, dst in zip((ca_pem, ca_key, srv_pem, srv_key), files, strict=True):
                os.replace(src, dst)
    finally:
        os.umask(old_umask)
    for f in files:
        f.chmod(0o644 if f.suffix == ".pem" else 0o600)
    sans = ", ".join([*addresses, *names])
    return f"{directory}: created ca.pem, ca.key, server.pem, server.key for {sans}"


# ------------------------------------------------------------------------------------------
# Command line


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:   # one line, exit status 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _ArgumentParser(
        prog=PROG,
        description="TLS (HTTP/1.1), UDP game and optional plain-HTTP servers for the lab's "
                    "synthetic apps; or, with --make-certs, the lab CA and server certificate.")
    p.add_argument("--cert", help="server certificate (PEM, may include the chain)")
    p.add_argument("--key", help="server private key (PEM)")
    p.add_argument("--listen", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--tls-port", type=int, default=443, help="TLS port; 0 = any (default 443)")
    p.add_argument("--udp-port", type=int, default=9000,
                   help="UDP game port; 0 = any, -1 = off (default 9000)")
    p.add_argument("--http-port", type=int, default=-1,
                   help="plain-HTTP port; 0 = any, -1 = off (default off)")
    p.add_argument("--log", help="append the log here instead of standard error")
    p.add_argument("--latency", type=float, default=0.0, metavar="MS",
                   help="milliseconds to wait before each TLS handshake and each answer, "
                        "standing in for the Internet's round trip (default 0)")
    certs = p.add_argument_group("certificates")
    certs.add_argument("--make-certs", metavar="DIR",
                       help="create ca.pem, ca.key, server.pem and server.key in DIR and exit")
    certs.add_argument("--address", action="append", default=[],
                       help="IP address the server certificate covers (repeatable; default "
                            f"{' and '.join(DEFAULT_ADDRESSES)})")
    certs.add_argument("--name", action="append", default=[],
                       help="DNS name the server certificate covers (repeatable; default "
                            f"{' and '.join(DEFAULT_NAMES)})")
    certs.add_argument("--days", type=int, default=825,
                       help="validity of the server certificate (default 825; the CA: 10 years)")
    certs.add_argument("--force", action="store_true", help="recreate existing certificates")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def fail(message: str) -> int:
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2

    if args.make_certs:
        addresses = args.address or ([] if args.name else list(DEFAULT_ADDRESSES))
        names = args.name or ([] if args.address else list(DEFAULT_NAMES))
        for a in addresses:
            try:
                ipaddress.ip_address(a)
            except ValueError:
                return fail(f"--address {a!r} is not an IP address (use --name for names)")
        if args.days < 1:
            return fail("--days must be positive")
        try:
            print(make_certs(Path(args.make_certs), addresses, names, args.days, args.force))
        except (OSError, RuntimeError) as exc:
            return fail(f"--make-certs: {exc}")
        return 0

    for opt, low in (("tls_port", 0), ("udp_port", -1), ("http_port", -1)):
        if not low <= getattr(args, opt) <= 65535:
            return fail(f"--{opt.replace('_', '-')} must be {low}..65535")
    if not 0 <= args.latency <= 5000:
        return fail("--latency must be 0..5000 ms")
    if not args.cert or not args.key:
        return fail("--cert and --key are required (or --make-certs DIR)")
    try:
        ctx = _server_context(args.cert, args.key)
    except (OSError, ssl.SSLError) as exc:
        return fail(f"cannot load --cert/--key: {getattr(exc, 'strerror', None) or exc}")
    try:
        stream = open(args.log, "a", encoding="utf-8") if args.log else sys.stderr  # noqa: SIM115
    except OSError as exc:
        return fail(f"cannot open --log {args.log}: {exc.strerror}")
    log = Log(stream)
    servers = Servers(log, ctx, latency=args.latency / 1000)
    opened: list[socket.socket] = []
    where: dict[str, str] = {}
    try:
        tls = _tcp_listener(args.listen, args.tls_port)
        opened.append(tls)
        where["tls"] = _peer(tls.getsockname())
        if args.udp_port >= 0:
            udp = _udp_socket(args.listen, args.udp_port)
            opened.append(udp)
            where["udp"] = _peer(udp.getsockname())
        if args.http_port >= 0:
            http = _tcp_listener(args.listen, args.http_port)
            opened.append(http)
            where["http"] = _peer(http.getsockname())
    except OSError as exc:
        for sock in opened:
            sock.close()
        return fail(f"cannot listen on {args.listen}: {exc.strerror or exc}")
    servers.start_tcp(tls, tls=True)
    if "udp" in where:
        servers.start_udp(udp)
    if "http" in where:
        servers.start_tcp(http, tls=False)

    signalled: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        signalled.append(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    line = "listening " + " ".join(
        f"{k}={where.get(k, 'off')}" for k in ("tls", "udp", "http"))
    log(line)
    print(line, flush=True)
    while not signalled:
        time.sleep(0.2)
    log(f"stopping ({signal.Signals(signalled[0]).name})")
    servers.stop.set()
    for t in servers.threads:
        t.join(2.0)
    for sock in opened:
        sock.close()
    if stream is not sys.stderr:
        stream.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
