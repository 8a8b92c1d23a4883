"""The lab's synthetic apps (lab/apps): real TLS and UDP traffic on loopback, plans, errors.

``upstream_servers.py`` runs on 127.0.0.1 with free high ports and certificates made by its
own ``--make-certs`` in a temporary folder; every profile of ``profiles.yml`` plays against
it for a few seconds, all at once, so the whole file takes well under 30 s.
"""

from __future__ import annotations

import importlib.util
import json
import os
import select
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
APPS = REPO / "lab" / "apps"
PROFILES = APPS / "profiles.yml"
PHONE = APPS / "phone_apps.py"
UPSTREAM = APPS / "upstream_servers.py"
RUN_SECONDS = 4.0


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"appsight_lab_{name}", APPS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


phone_apps = _load("phone_apps")
PROFILE_NAMES = list(phone_apps.load_profiles(PROFILES))


def _make_certs(directory: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(UPSTREAM), "--make-certs", str(directory), *extra],
        capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    done = _make_certs(directory, "--address", "127.0.0.1", "--name", "*.appsight.test")
    assert done.returncode == 0, done.stderr
    return directory


@pytest.fixture(scope="module")
def server(certs: Path, tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("server") / "upstream.log"
    proc = subprocess.Popen(
        [sys.executable, str(UPSTREAM), "--cert", str(certs / "server.pem"),
         "--key", str(certs / "server.key"), "--listen", "127.0.0.1", "--tls-port", "0",
         "--udp-port", "0", "--http-port", "0", "--log", str(log)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        assert ready, "upstream_servers.py did not report its ports"
        line = proc.stdout.readline().split()
        assert line[0] == "listening", line
        ports = {k: int(v.rsplit(":", 1)[1]) for k, v in (w.split("=") for w in line[1:])}
        yield {**ports, "log": log, "proc": proc}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
            proc.stderr.close()


def _phone_cmd(server: dict, certs: Path, app: str, *extra: str) -> list[str]:
    return [sys.executable, str(PHONE), "--profiles", str(PROFILES), "--app", app,
            "--server", "127.0.0.1", "--tls-port", str(server["tls"]),
            "--udp-port", str(server["udp"]), "--cafile", str(certs / "ca.pem"), "--json",
            *extra]


# ------------------------------------------------------------------------------------------
# Real traffic


def test_every_profile_makes_real_verified_traffic(server: dict, certs: Path) -> None:
    procs = {
        app: subprocess.Popen(
            _phone_cmd(server, certs, app, "--duration", str(RUN_SECONDS), "--seed", "7"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for app in PROFILE_NAMES}
    results = {}
    for app, proc in procs.items():
        out, err = proc.communicate(timeout=RUN_SECONDS + 20)
        assert proc.returncode == 0, f"{app}: {err}"
        assert err == ""
        lines = out.splitlines()
        assert len(lines) == 1, out
        results[app] = json.loads(lines[0])
    for app, r in results.items():
        assert r["app"] == app
        assert r["ended_by"] == "duration"
        assert abs(r["seconds"] - RUN_SECONDS) < 0.5
        assert r["errors"] == 0
        assert r["connections"] >= 1, r
        assert r["tls_verified"] == r["connections"], r
        assert r["tls_versions"] and all(v.startswith("TLSv1.") for v in r["tls_versions"])
        assert r["requests"] >= 1
        assert r["tcp_bytes_sent"] > 100 * r["requests"]   # at least the request heads
        assert r["tcp_bytes_received"] > 0
    # What each app is about shows in its numbers.
    assert results["video"]["tcp_bytes_received"] > 3 * 300_000        # the start-up buffer
    assert results["video"]["connections"] == 1                       # one long connection
    assert results["browser"]["connections"] >= 6                      # parallel connections
    game = results["game"]
    assert game["udp_flows"] >= 1
    assert game["udp_datagrams_sent"] >= 40                            # ~20 Hz
    assert game["udp_datagrams_received"] >= 0.9 * game["udp_datagrams_sent"]
    assert game["udp_bytes_received"] > 0
    # The server saw the apps' server names (SNI), one log line per connection.
    log = server["log"].read_text()
    assert "sni=video.appsight.test" in log
    assert "sni=cdn.appsight.test" in log
    assert "internal error" not in log


def test_a_wrong_ca_fails_the_handshake(server: dict, certs: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    assert _make_certs(other, "--address", "127.0.0.1").returncode == 0
    cmd = _phone_cmd(server, certs, "weather", "--duration", "1.5")
    cmd[cmd.index("--cafile") + 1] = str(other / "ca.pem")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
    assert done.returncode == 1
    r = json.loads(done.stdout)
    assert r["tls_verified"] == 0 and r["requests"] == 0 and r["errors"] >= 1
    assert "CERTIFICATE_VERIFY_FAILED" in done.stderr
    assert "Traceback" not in done.stderr


def test_sigterm_ends_a_run_cleanly(server: dict, certs: Path) -> None:
    proc = subprocess.Popen(_phone_cmd(server, certs, "video", "--duration", "0"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)  # --duration 0 would run forever without it
    assert proc.returncode == 0, err
    r = json.loads(out)
    assert r["ended_by"] == "SIGTERM"
    assert r["requests"] >= 1 and r["errors"] == 0


def test_the_server_survives_bad_clients(server: dict, certs: Path) -> None:
    port = server["tls"]
    # Connect and vanish; half a ClientHello; plain text on the TLS port.
    socket.create_connection(("127.0.0.1", port)).close()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"\x16\x03\x01\x02\x00\x01\x00")
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET / HTTP/1.1\r\n\r\n")
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    # A client that leaves in the middle of a 50 MB response.
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)),
                         server_hostname="127.0.0.1") as s:
        s.sendall(b"GET /bytes/50000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        s.recv(1000)
    # Garbage on plain HTTP gets a 400.
    with socket.create_connection(("127.0.0.1", server["http"]), timeout=5) as s:
        s.sendall(b"NONSENSE\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400 ")
    # And a proper client is still served, with keep-alive, byte-exact.
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5),
                         server_hostname="news-api.appsight.test") as s:
        for path, size in (("/bytes/100000", 100_000), ("/json/2000", 2000)):
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            data = b""
            while b"\r\n\r\n" not in data:
                data += s.recv(65536)
            head, body = data.split(b"\r\n\r\n", 1)
            assert head.startswith(b"HTTP/1.1 200 OK")
            assert f"Content-Length: {size}".encode() in head
            while len(body) < size:
                body += s.recv(65536)
            assert len(body) == size
        json.loads(body)
    assert server["proc"].poll() is None


def test_udp_game_server_answers_with_the_requested_size(server: dict) -> None:
    header = struct.Struct("!4sIHBB")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.connect(("127.0.0.1", server["udp"]))
        s.send(b"not a game packet")
        s.send(header.pack(b"ASG1", 42, 500, 2, 0) + b"x" * 50)
        replies = [s.recv(4096), s.recv(4096)]
        assert [len(r) for r in replies] == [500, 500]
        assert all(header.unpack_from(r)[:2] == (b"ASG1", 42) for r in replies)
        s.send(header.pack(b"ASG1", 43, 60000, 1, 0))
        assert len(s.recv(65536)) == 1400          # capped
        s.settimeout(0.3)
        with pytest.raises(TimeoutError):          # the garbage got no answer
            s.recv(4096)


def test_make_certs_keeps_existing_files(certs: Path) -> None:
    before = (certs / "server.pem").read_bytes()
    done = _make_certs(certs)
    assert done.returncode == 0 and "exist" in done.stdout
    assert (certs / "server.pem").read_bytes() == before
    assert oct((certs / "server.key").stat().st_mode & 0o777) == "0o600"


# ------------------------------------------------------------------------------------------
# Plans


@pytest.mark.parametrize("app", PROFILE_NAMES)
def test_the_same_seed_plans_the_same_schedule(app: str) -> None:
    profile = phone_apps.load_profiles(PROFILES)[app]
    first = phone_apps.plan(profile, 7, 60)
    assert first == phone_apps.plan(phone_apps.load_profiles(PROFILES)[app], 7, 60)
    assert first != phone_apps.plan(profile, 8, 60)
    assert all(step.at < 60 for step in first)


def test_plans_differ_between_profiles_and_survive_hash_randomisation() -> None:
    def cli_plan(app: str, hashseed: str) -> str:
        return subprocess.run(
            [sys.executable, str(PHONE), "--profiles", str(PROFILES), "--app", app, "--plan",
             "--duration", "30", "--seed", "7"],
            capture_output=True, text=True, check=True, timeout=20,
            env={**os.environ, "PYTHONHASHSEED": hashseed}).stdout

    video = cli_plan("video", "1")
    assert video == cli_plan("video", "2")
    assert video != cli_plan("browser", "1")
    steps = [json.loads(line) for line in video.splitlines()]
    assert steps[0]["type"] == "fetch" and steps[0]["where"] == "setup[0]"


@pytest.mark.parametrize("app", PROFILE_NAMES)
def test_a_minute_shows_several_bursts(app: str) -> None:
    """Traffic, then more than 1 s of silence, several times a minute (the burst gap is 1 s)."""
    steps = phone_apps.plan(phone_apps.load_profiles(PROFILES)[app], 7, 60)
    bursts, active = 0, False
    for step in steps:
        if step.type == "think" and step.seconds > 1.2:
            bursts += active
            active = False
        elif step.type != "think":
            active = True
    assert bursts >= 4


def test_video_segments_keep_to_their_bounds() -> None:
    steps = phone_apps.plan(phone_apps.load_profiles(PROFILES)["video"], 3, 600)
    segments = [r.size for s in steps if s.type == "fetch" and s.host == "video.appsight.test"
                and s.kind == "bytes" for r in s.requests]
    assert len(segments) > 200
    assert min(segments) >= 300_000 and max(segments) <= 600_000
    assert len(set(segments)) > 100


def test_a_json_profiles_file_works_without_pyyaml(tmp_path: Path) -> None:
    import yaml

    as_json = tmp_path / "profiles.json"
    as_json.write_text(json.dumps(yaml.safe_load(PROFILES.read_text())))
    code = ("import runpy, sys; sys.modules['yaml'] = None; "
            "sys.argv = ['phone_apps.py', *sys.argv[1:]]; "
            f"runpy.run_path({str(PHONE)!r}, run_name='__main__')")

    def run(path: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", code, "--profiles", str(path), "--app", "news", "--plan",
             "--duration", "20"], capture_output=True, text=True, timeout=20, check=False)

    from_json = run(as_json)
    assert from_json.returncode == 0, from_json.stderr
    assert from_json.stdout == subprocess.run(
        [sys.executable, str(PHONE), "--profiles", str(PROFILES), "--app", "news", "--plan",
         "--duration", "20"], capture_output=True, text=True, check=True, timeout=20).stdout
    no_yaml = run(PROFILES)
    assert no_yaml.returncode == 2
    assert "PyYAML is not installed" in no_yaml.stderr


# ------------------------------------------------------------------------------------------
# Bad input: one line, exit status 2

BAD_PROFILES = {
    "not yaml": "version: 1\nprofiles: [\n",
    "not a mapping": "- 1\n- 2\n",
    "no profiles": "version: 1\n",
    "unknown version": "version: 2\nprofiles: {a: {loop: [{think: 1}]}}\n",
    "unknown dist": "profiles: {a: {loop: [{think: {dist: gaussian, mean: 1}}]}}\n",
    "misspelt key": "profiles: {a: {loop: [{fetch: {size: 10, parralel: 2}}, {think: 1}]}}\n",
    "no size": "profiles: {a: {loop: [{fetch: {count: 3}}, {think: 1}]}}\n",
    "negative size": "profiles: {a: {loop: [{fetch: {size: -5}}, {think: 1}]}}\n",
    "never pauses": "profiles: {a: {loop: [{fetch: {size: 10}}]}}\n",
    "bad reuse": "profiles: {a: {loop: [{udp: {count: 1, interval: 1, reuse: none}}, "
                 "{think: 1}]}}\n",
    "bad port": "profiles: {a: {tls_port: 70000, loop: [{think: 1}]}}\n",
    "two actions in one": "profiles: {a: {loop: [{think: 1, fetch: {size: 1}}]}}\n",
    "probability above 1": "profiles: {a: {loop: [{think: {seconds: 1, probability: 2}}]}}\n",
}


@pytest.mark.parametrize("name", list(BAD_PROFILES))
def test_a_bad_profiles_file_gives_one_line_and_exit_2(name: str, tmp_path: Path) -> None:
    path = tmp_path / "profiles.yml"
    path.write_text(BAD_PROFILES[name])
    done = subprocess.run([sys.executable, str(PHONE), "--profiles", str(path), "--app", "a",
                           "--server", "127.0.0.1"],
                          capture_output=True, text=True, timeout=20, check=False)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"phone_apps.py: error: {path}")


@pytest.mark.parametrize("args", [
    ["--profiles", "/nonexistent/profiles.yml", "--app", "video"],
    ["--profiles", str(PROFILES), "--app", "no-such-app", "--server", "127.0.0.1"],
    ["--profiles", str(PROFILES), "--app", "video"],                        # no --server
    ["--profiles", str(PROFILES), "--app", "video", "--server", "127.0.0.1",
     "--cafile", "/nonexistent/ca.pem"],
    ["--profiles", str(PROFILES), "--app", "video", "--duration", "soon"],
])
def test_bad_usage_gives_one_line_and_exit_2(args: list[str]) -> None:
    done = subprocess.run([sys.executable, str(PHONE), *args], capture_output=True, text=True,
                          timeout=20, check=False)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("phone_apps.py: error: ")


def test_server_bad_usage_gives_one_line_and_exit_2(certs: Path) -> None:
    for args in (["--cert", "/nonexistent.pem", "--key", "/nonexistent.key"],
                 ["--tls-port", "0"],
                 ["--make-certs", str(certs / "x"), "--address", "not-an-ip"]):
        done = subprocess.run([sys.executable, str(UPSTREAM), *args], capture_output=True,
                              text=True, timeout=20, check=False)
        assert done.returncode == 2, args
        assert len(done.stderr.splitlines()) == 1, done.stderr
        assert done.stderr.startswith("upstream_servers.py: error: ")
