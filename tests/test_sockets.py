"""Per-socket ground truth: the kernel's socket tables and pm's package list, read right."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from appsight.cli import main
from appsight.errors import UsageError
from appsight.labels import LabelTable
from appsight.pipeline import PipelineOptions
from appsight.sockets import (
    SYSTEM_LABEL,
    SocketOwners,
    app_name,
    parse_packages,
    parse_socket_tables,
    rows_from_sockets,
)
from capture_builder import Packet, write_pcap
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

# Lines as 'pm list packages -U' prints them (Android 8 and later), with a shared UID.
PM_OUTPUT = """\
package:com.android.chrome uid:10057
package:com.google.android.youtube uid:10083
package:com.android.providers.telephony uid:1001
package:com.android.phone uid:1001
package:com.example.shared.a uid:10090
package:com.example.shared.b uid:10090
"""


def _snapshot() -> str:
    """This machine's socket tables now, as the phone's sampler writes them."""
    return "".join(Path(f"/proc/net/{table}").read_text()
                   for table in ("tcp", "tcp6", "udp", "udp6"))


def test_reads_the_kernels_own_tables() -> None:
    with socket.socket() as server, socket.socket() as client, \
            socket.socket(socket.AF_INET6) as server6, socket.socket(socket.AF_INET6) as c6, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client.connect(server.getsockname())
        server6.bind(("::1", 0))
        server6.listen()
        c6.connect(server6.getsockname()[:2])
        udp.connect(("127.0.0.2", 5353))
        text = _snapshot()
        entries = parse_socket_tables(text.splitlines())
        mine = os.getuid()
        local, remote = client.getsockname(), server.getsockname()
        assert any(e.proto == "tcp" and e.local == local and e.remote == remote
                   and e.uid == mine for e in entries)
        local6 = c6.getsockname()[:2]
        assert any(e.proto == "tcp" and e.local == local6 and e.remote[0] == "::1"
                   for e in entries)
        assert any(e.proto == "udp" and e.local == udp.getsockname()
                   and e.remote == ("127.0.0.2", 5353) for e in entries)


def test_v4_connections_on_v6_sockets_are_plain_v4() -> None:
    with socket.socket() as server, socket.socket(socket.AF_INET6) as client:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client.connect(("::ffff:127.0.0.1", server.getsockname()[1]))
        entries = parse_socket_tables(_snapshot().splitlines())
        port = client.getsockname()[1]
        assert any(e.local == ("127.0.0.1", port) and e.remote == server.getsockname()
                   for e in entries)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to open a socket as another user")
def test_owner_is_the_uid_that_opened_the_socket() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        program = ("import socket,sys,time; s=socket.create_connection(('127.0.0.1',"
                   f"{port})); print(s.getsockname()[1], flush=True); time.sleep(5)")
        child = subprocess.Popen(
            ["setpriv", "--reuid", "10123", "--regid", "10123", "--clear-groups",
             sys.executable, "-c", program], stdout=subprocess.PIPE, text=True)
        try:
            their_port = int(child.stdout.readline())  # type: ignore[union-attr]
            entries = parse_socket_tables(_snapshot().splitlines())
            # (On one host the server's end is listed too, owned by us: only the phone's
            # end is in the phone's tables in the lab.)
            theirs = [e for e in entries if e.local == ("127.0.0.1", their_port)]
            assert [e.uid for e in theirs] == [10123]
            assert theirs[0].remote == ("127.0.0.1", port)
        finally:
            child.kill()
            child.wait()


def test_packages_map_uids_to_names() -> None:
    packages = parse_packages(PM_OUTPUT.splitlines())
    assert packages[10057] == "com.android.chrome"
    assert packages[10090] == "com.example.shared.a+com.example.shared.b"
    assert app_name(10083, packages) == "com.google.android.youtube"
    assert app_name(1001, packages) == SYSTEM_LABEL
    assert app_name(0, packages) == SYSTEM_LABEL
    assert app_name(10999, packages) == "uid10999"


def test_files_without_content_are_one_line_errors() -> None:
    with pytest.raises(UsageError, match="no socket table rows"):
        parse_socket_tables(["garbage", "# tcp", "  sl  local_address rem_address"])
    with pytest.raises(UsageError, match="pm list packages"):
        parse_packages(["Error: unknown command"])


def _hex4(address: str, port: int) -> str:
    return socket.inet_aton(address)[::-1].hex().upper() + f":{port:04X}"


def _tcp_row(local: tuple[str, int], remote: tuple[str, int], uid: int) -> str:
    return (f"   0: {_hex4(*local)} {_hex4(*remote)} 01 00000000:00000000 00:00000000 "
            f"00000000 {uid:5d}        0 12345 1 0000000000000000 20 4 30 10 -1")


PHONE, SERVER = "192.168.56.120", "203.0.113.1"


def _capture(path: Path) -> Path:
    """Three flows from the phone: two TCP (two apps), one UDP from an unconnected socket."""
    frames = []
    t = 1_000_000_000
    for sport, dport, layer in ((40001, 443, TCP), (40002, 443, TCP), (50000, 9000, UDP)):
        for _ in range(3):
            frame = Ether() / IP(src=PHONE, dst=SERVER) / layer(sport=sport, dport=dport)
            frames.append(Packet(t, bytes(frame)))
            reply = Ether() / IP(src=SERVER, dst=PHONE) / layer(sport=dport, dport=sport)
            frames.append(Packet(t + 10_000_000, bytes(reply)))
            t += 100_000_000
    write_pcap(path, frames)
    return path


def _sockets_file(path: Path) -> Path:
    lines = ["# tcp", "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when "
             "retrnsmt   uid  timeout inode",
             _tcp_row((PHONE, 40001), (SERVER, 443), 10057),
             _tcp_row((PHONE, 40002), (SERVER, 443), 10083),
             "# udp", "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when "
             "retrnsmt   uid  timeout inode ref pointer drops",
             _tcp_row(("0.0.0.0", 50000), ("0.0.0.0", 0), 10083).replace(" 01 ", " 07 ")]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_rows_label_each_flow_with_its_socket_owner(tmp_path: Path) -> None:
    capture = _capture(tmp_path / "session.pcap")
    owners = SocketOwners(parse_socket_tables(_sockets_file(tmp_path / "s.txt")
                                              .read_text().splitlines()))
    packages = parse_packages(PM_OUTPUT.splitlines())
    rows = list(rows_from_sockets([capture], owners, packages, PipelineOptions()))
    assert len(rows) == 3 and all(row[-1] is not None for row in rows)
    # Flows are direction-free: the phone's port sits on whichever side the flow put it.
    labelled = sorted((min(int(r[3]), int(r[5])), r[6]) for r in rows)
    assert labelled == [(443, "com.android.chrome"), (443, "com.google.android.youtube"),
                        (9000, "com.google.android.youtube")]


def test_closed_connections_in_time_wait_do_not_count() -> None:
    # The kernel lists a TIME_WAIT connection with UID 0: it must not hide the app's UID
    # sampled while the connection was open.
    entries = parse_socket_tables([
        "# tcp",
        _tcp_row((PHONE, 40001), (SERVER, 443), 10057),
        _tcp_row((PHONE, 40001), (SERVER, 443), 0).replace(" 01 ", " 06 "),
    ])
    assert SocketOwners(entries).owner("tcp", (PHONE, 40001), (SERVER, 443)) == 10057


def test_a_port_reused_by_two_apps_is_left_unlabelled() -> None:
    entries = parse_socket_tables([
        "# tcp",
        _tcp_row((PHONE, 40001), (SERVER, 443), 10057),
        _tcp_row((PHONE, 40001), (SERVER, 443), 10083),
    ])
    owners = SocketOwners(entries)
    assert owners.owner("tcp", (SERVER, 443), (PHONE, 40001)) is None
    assert owners.ambiguous == 1


def test_cli_writes_a_labels_file_the_trainer_reads(tmp_path: Path) -> None:
    capture = _capture(tmp_path / "session.pcap")
    packages = tmp_path / "packages.txt"
    packages.write_text(PM_OUTPUT)
    out = tmp_path / "labels.csv"
    status = main(["labels", "from-sockets", "--sockets", str(_sockets_file(tmp_path / "s")),
                   "--packages", str(packages), str(capture), "-o", str(out)])
    assert status == 0
    table = LabelTable.read_csv(out)
    assert sorted(table.labels.values()) == [
        "com.android.chrome", "com.google.android.youtube", "com.google.android.youtube"]
    assert table.captures() == {"session.pcap"}


def test_cli_bad_sockets_file_is_exit_2(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "s.txt"
    bad.write_text("nothing here\n")
    packages = tmp_path / "p.txt"
    packages.write_text(PM_OUTPUT)
    capture = _capture(tmp_path / "c.pcap")
    assert main(["labels", "from-sockets", "--sockets", str(bad), "--packages", str(packages),
                 str(capture)]) == 2
    err = capsys.readouterr().err
    assert "no socket table rows" in err and "Traceback" not in err
