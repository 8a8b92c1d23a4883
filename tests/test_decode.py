"""The decoding stage: from frames of every supported link layer and tunnel to 5-tuples.

Frames are built with scapy (or byte by byte where scapy has no layer), written into a pcap
with the right link type, read back with the real reader and decoded with the real decoder.
Each test states the inner 5-tuple a flow must get, because a wrong port or address silently
splits or merges flows, which no later stage can detect.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from appsight.decode import Decoder
from capture_builder import (
    DLT_C_HDLC,
    DLT_EN10MB,
    DLT_IPV4,
    DLT_IPV6,
    DLT_LINUX_SLL,
    DLT_LINUX_SLL2,
    DLT_LOOP,
    DLT_NULL,
    DLT_PPI,
    DLT_PPP,
    DLT_RAW,
    DLT_RAW_BSD,
    Decoded,
    Packet,
    decode_capture,
    decode_frames,
    decoded_rows,
    record_batch,
    write_pcap,
)
from scapy.contrib.gtp import GTP_U_Header, GTPPDUSessionContainer
from scapy.contrib.mpls import MPLS
from scapy.contrib.tzsp import TZSP, TZSPTagEnd, TZSPTagPadding, TZSPTagRXChannel
from scapy.layers.dot11 import Dot11, Dot11QoS
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, IPOption_RR, fragment
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    fragment6,
)
from scapy.layers.l2 import (
    ARP,
    GRE,
    LLC,
    SNAP,
    CookedLinux,
    CookedLinuxV2,
    Dot1AD,
    Dot1Q,
    Ether,
)
from scapy.layers.ppp import PPP, PPPoE
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet as ScapyPacket

MAC = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
C4, S4 = "192.0.2.10", "198.51.100.20"  # inner client and server
O4A, O4B = "203.0.113.1", "203.0.113.2"  # outer tunnel endpoints
C6, S6 = "2001:db8::10", "2001:db8:1::20"
O6A, O6B = "2001:db8:ffff::1", "2001:db8:ffff::2"
PAYLOAD = b"p" * 37


def eth() -> Ether:
    return Ether(**MAC)


def inner_tcp() -> ScapyPacket:
    """The flow every tunnel test hides: 192.0.2.10:40000 -> 198.51.100.20:443 over TCP."""
    return IP(src=C4, dst=S4) / TCP(sport=40000, dport=443, flags="PA") / PAYLOAD


INNER_TCP_LEN = 20 + 20 + len(PAYLOAD)
INNER = (6, C4, 40000, S4, 443)


def inner_udp6() -> ScapyPacket:
    return IPv6(src=C6, dst=S6) / UDP(sport=5353, dport=53) / PAYLOAD


INNER6_LEN = 40 + 8 + len(PAYLOAD)
INNER6 = (17, C6, 5353, S6, 53)


def one(tmp_path: Path, frame: bytes | ScapyPacket, linktype: int = DLT_EN10MB,
        decapsulate: bool = True) -> Decoded:
    """Decode a single frame that must give exactly one IP packet."""
    data = bytes(frame)
    rows, stats = decode_frames(tmp_path, [data], linktype, decapsulate=decapsulate)
    assert len(rows) == 1, stats
    assert rows[0].frame_len == len(data)
    return rows[0]


# ---------------------------------------------------------------- link layers
LINK_CASES = {
    "ethernet": (DLT_EN10MB, lambda p: eth() / p),
    "vlan": (DLT_EN10MB, lambda p: eth() / Dot1Q(vlan=42) / p),
    "qinq-8021ad": (DLT_EN10MB, lambda p: eth() / Dot1AD(vlan=100) / Dot1Q(vlan=200) / p),
    "qinq-9100": (
        DLT_EN10MB,
        lambda p: bytes(eth())[:12] + b"\x91\x00\x00\x64\x81\x00" + bytes(Dot1Q(vlan=7) / p),
    ),
    "mpls-one-label": (DLT_EN10MB, lambda p: eth() / MPLS(label=16, s=1) / p),
    "mpls-two-labels": (DLT_EN10MB, lambda p: eth() / MPLS(label=16, s=0) / MPLS(label=17) / p),
    "vlan-mpls": (DLT_EN10MB, lambda p: eth() / Dot1Q(vlan=3) / MPLS(label=99) / p),
    "pppoe": (DLT_EN10MB, lambda p: eth() / PPPoE(sessionid=7) / PPP() / p),
    "sll": (DLT_LINUX_SLL, lambda p: CookedLinux(pkttype=0) / p),
    "sll2": (DLT_LINUX_SLL2, lambda p: CookedLinuxV2(pkttype=4) / p),
    "raw": (DLT_RAW, lambda p: p),
    "raw-bsd-12": (DLT_RAW_BSD, lambda p: p),
    "null-little-endian": (DLT_NULL, lambda p: struct.pack("<I", _family(p)) + bytes(p)),
    "null-big-endian": (DLT_NULL, lambda p: struct.pack(">I", _family(p)) + bytes(p)),
    "loop": (DLT_LOOP, lambda p: struct.pack(">I", _family(p)) + bytes(p)),
    "ppp": (DLT_PPP, lambda p: PPP() / p),
    "ppp-hdlc-framed": (DLT_PPP, lambda p: b"\xff\x03" + bytes(PPP() / p)),
    "cisco-hdlc": (DLT_C_HDLC, lambda p: b"\x0f\x00" + struct.pack(">H", _ethertype(p)) + bytes(p)),
    "ppi-ethernet": (
        DLT_PPI, lambda p: struct.pack("<BBHI", 0, 0, 8, DLT_EN10MB) + bytes(eth() / p)
    ),
}


def _family(p: ScapyPacket) -> int:
    """BSD address family of the loopback header: AF_INET 2, AF_INET6 30 (macOS)."""
    return 2 if isinstance(p, IP) else 30


def _ethertype(p: ScapyPacket) -> int:
    return 0x0800 if isinstance(p, IP) else 0x86DD


@pytest.mark.parametrize("case", list(LINK_CASES))
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_link_layers_give_the_five_tuple(tmp_path: Path, case: str, family: str) -> None:
    """Every link layer leads to the same IP packet: same 5-tuple, same IP length; the
    frame length is the captured length, link header included."""
    linktype, wrap = LINK_CASES[case]
    packet = inner_tcp() if family == "ipv4" else inner_udp6()
    row = one(tmp_path, wrap(packet), linktype)
    if family == "ipv4":
        assert row.five_tuple == INNER and row.ip_len == INNER_TCP_LEN
    else:
        assert row.five_tuple == INNER6 and row.ip_len == INNER6_LEN


@pytest.mark.parametrize("linktype,packet,expected,ip_len", [
    (DLT_IPV4, inner_tcp(), INNER, INNER_TCP_LEN),
    (DLT_IPV6, inner_udp6(), INNER6, INNER6_LEN),
])
def test_ipv4_and_ipv6_link_types(tmp_path: Path, linktype: int, packet: ScapyPacket,
                                  expected: tuple, ip_len: int) -> None:
    row = one(tmp_path, packet, linktype)
    assert row.five_tuple == expected and row.ip_len == ip_len


@pytest.mark.parametrize("family", [24, 28, 30])
def test_null_ipv6_families(tmp_path: Path, family: int) -> None:
    """BSDs disagree on AF_INET6 (24 NetBSD/OpenBSD, 28 FreeBSD, 30 macOS): all mean IPv6."""
    frame = struct.pack("<I", family) + bytes(inner_udp6())
    assert one(tmp_path, frame, DLT_NULL).five_tuple == INNER6


def test_ethernet_padding_is_frame_bytes_not_ip_bytes(tmp_path: Path) -> None:
    """A minimum-size Ethernet frame is padded to 60 bytes: the features' length must be
    the IP total length (40), the byte counters' the frame (60)."""
    frame = bytes(eth() / IP(src=C4, dst=S4) / TCP(sport=1, dport=2, flags="S"))
    frame += b"\0" * (60 - len(frame))
    row = one(tmp_path, frame)
    assert (row.ip_len, row.frame_len) == (40, 60)


def test_snapped_frame_keeps_ip_total_length(tmp_path: Path) -> None:
    """With a small snapshot length the captured frame is short but the IP header still
    tells the packet's real size; that is what features must see."""
    full = bytes(eth() / IP(src=C4, dst=S4) / UDP(sport=1000, dport=2000) / (b"x" * 1400))
    snapped = full[:64]
    path = write_pcap(tmp_path / "snap.pcap", [Packet(10**18, snapped, len(full))])
    rows, stats = decode_capture(path)
    assert [(r.five_tuple, r.ip_len, r.frame_len) for r in rows] == [
        ((17, C4, 1000, S4, 2000), 1428, 64)
    ]
    assert stats.malformed == 0


def test_ports_cut_off_by_snapshot_are_zero(tmp_path: Path) -> None:
    """If the capture ends inside the transport header, the ports are unknown (0), not
    whatever bytes follow in the buffer."""
    full = bytes(eth() / IP(src=C4, dst=S4) / TCP(sport=40000, dport=443))
    rows, _ = decode_frames(tmp_path, [full[:14 + 20 + 3], full])
    assert [(r.sport, r.dport) for r in rows] == [(0, 0), (40000, 443)]


def test_icmp_has_no_ports(tmp_path: Path) -> None:
    row = one(tmp_path, eth() / IP(src=C4, dst=S4) / ICMP(type=8) / b"ping")
    assert row.five_tuple == (1, C4, 0, S4, 0)
    assert row.ip_len == 20 + 8 + 4


# ------------------------------------------------------------- payload lengths
@pytest.mark.parametrize("case", [
    "tcp", "tcp-options", "tcp-ack-only", "tcp-ipv6-extensions", "udp", "icmp", "ipv4-options",
])
def test_payload_length_is_what_follows_the_transport_header(tmp_path: Path, case: str) -> None:
    """The payload length ignores IP version, IP and IPv6 extension headers and TCP options:
    the same 37 bytes of data are 37 however they travel (an ACK carries 0)."""
    packet, payload = {
        "tcp": (IP(src=C4, dst=S4) / TCP(sport=40000, dport=443) / PAYLOAD, 37),
        "tcp-options": (IP(src=C4, dst=S4) / TCP(
            sport=40000, dport=443, options=[("MSS", 1460), ("Timestamp", (1, 2)), ("NOP", None),
                                             ("WScale", 7)]) / PAYLOAD, 37),
        "tcp-ack-only": (IP(src=C4, dst=S4) / TCP(
            sport=40000, dport=443, flags="A", options=[("Timestamp", (1, 2))]), 0),
        "tcp-ipv6-extensions": (IPv6(src=C6, dst=S6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
                                / TCP(sport=40000, dport=443) / PAYLOAD, 37),
        "udp": (IPv6(src=C6, dst=S6) / UDP(sport=5353, dport=53) / PAYLOAD, 37),
        "icmp": (IP(src=C4, dst=S4) / ICMP(type=8) / PAYLOAD, 8 + 37),
        "ipv4-options": (IP(src=C4, dst=S4, options=[IPOption_RR(routers=["1.2.3.4"]),
                                                      IPOption_NOP()])
                         / UDP(sport=1, dport=2) / PAYLOAD, 37),
    }[case]
    assert one(tmp_path, eth() / packet).payload_len == payload


def test_payload_length_of_snapped_and_padded_frames(tmp_path: Path) -> None:
    """The payload length comes from the IP header, so a snapshot length that cuts the data
    off does not shorten it, and Ethernet padding does not lengthen it."""
    full = bytes(eth() / IP(src=C4, dst=S4) / TCP(sport=1, dport=2) / (b"x" * 1400))
    path = write_pcap(tmp_path / "snap.pcap", [Packet(10**18, full[:80], len(full))])
    assert [r.payload_len for r in decode_capture(path)[0]] == [1400]
    padded = bytes(eth() / IP(src=C4, dst=S4) / TCP(sport=1, dport=2, flags="A"))
    padded += b"\0" * (60 - len(padded))
    assert one(tmp_path, padded).payload_len == 0


def test_payload_length_of_fragments_and_tunnels(tmp_path: Path) -> None:
    """A first fragment's payload follows the UDP header, a later fragment's is all its data;
    a tunnelled packet's payload is the inner packet's."""
    datagram = IP(src=C4, dst=S4, id=7) / UDP(sport=5000, dport=6000) / (b"f" * 2000)
    parts = fragment(datagram, fragsize=1000)
    rows, _ = decode_frames(tmp_path, [bytes(eth() / p) for p in parts])
    assert [r.payload_len for r in rows] == [1000 - 8, 1000, 8]
    assert sum(r.payload_len for r in rows) == 2000
    frame, _, _ = TUNNELS["gre"]
    row = one(tmp_path, frame)
    assert row.payload_len == len(PAYLOAD)


# ------------------------------------------------------------- IPv6 extensions
@pytest.mark.parametrize("chain", [
    "hop-by-hop", "routing", "destination", "hbh+routing+dest", "atomic-fragment",
    "first-fragment",
])
def test_ipv6_extension_headers_are_walked(tmp_path: Path, chain: str) -> None:
    """The transport header can sit behind any chain of extension headers."""
    exts = {
        "hop-by-hop": IPv6ExtHdrHopByHop(),
        "routing": IPv6ExtHdrRouting(addresses=["2001:db8::99", "2001:db8::98"]),
        "destination": IPv6ExtHdrDestOpt(),
        "hbh+routing+dest": IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrRouting(addresses=["2001:db8::99"]) / IPv6ExtHdrDestOpt(),
        "atomic-fragment": IPv6ExtHdrFragment(offset=0, m=0, id=5),
        "first-fragment": IPv6ExtHdrFragment(offset=0, m=1, id=6),
    }[chain]
    packet = IPv6(src=C6, dst=S6) / exts / UDP(sport=5353, dport=53) / PAYLOAD
    row = one(tmp_path, eth() / packet)
    assert row.five_tuple == INNER6
    assert row.ip_len == len(bytes(packet))


def test_ipv6_truncated_extension_header_is_malformed(tmp_path: Path) -> None:
    """An extension chain that runs past the captured bytes cannot be trusted."""
    packet = bytes(IPv6(src=C6, dst=S6, nh=0, plen=8))  # says a hop-by-hop header follows
    rows, stats = decode_frames(tmp_path, [bytes(Ether(type=0x86DD, **MAC)) + packet])
    assert rows == [] and stats.malformed == 1


# ------------------------------------------------------------------- tunnels
def capwap_header(hlen_words: int, wbid: int, native: bool) -> bytes:
    """A CAPWAP data header (RFC 5415 section 4.3): preamble 0, HLEN, RID 0, WBID, T."""
    byte1 = hlen_words << 3
    byte2 = (wbid << 1) | int(native)
    return bytes([0, byte1, byte2, 0]) + b"\0" * (hlen_words * 4 - 4)


def wifi_frame(qos: bool) -> bytes:
    """An IEEE 802.11 data frame (QoS or not) carrying the inner packet behind LLC/SNAP."""
    header = Dot11(type=2, subtype=8 if qos else 0, FCfield=0x01,
                   addr1="02:00:00:00:00:0a", addr2="02:00:00:00:00:0b",
                   addr3="02:00:00:00:00:0c")
    if qos:
        header = header / Dot11QoS()
    return bytes(header / LLC() / SNAP(code=0x0800) / inner_tcp())


TUNNELS: dict[str, tuple[ScapyPacket | bytes, tuple, bool]] = {
    # name: (frame, outer 5-tuple with decapsulate=False, whether the inner packet is IPv6)
    "ip-in-ip": (eth() / IP(src=O4A, dst=O4B) / inner_tcp(), (4, O4A, 0, O4B, 0), False),
    "6in4": (eth() / IP(src=O4A, dst=O4B) / inner_udp6(), (41, O4A, 0, O4B, 0), True),
    "4in6": (eth() / IPv6(src=O6A, dst=O6B) / inner_tcp(), (4, O6A, 0, O6B, 0), False),
    "6in6": (eth() / IPv6(src=O6A, dst=O6B) / inner_udp6(), (41, O6A, 0, O6B, 0), True),
    "gre": (eth() / IP(src=O4A, dst=O4B) / GRE() / inner_tcp(), (47, O4A, 0, O4B, 0), False),
    "gre-key-seq": (
        eth() / IP(src=O4A, dst=O4B)
        / GRE(key_present=1, key=0xABCD, seqnum_present=1, sequence_number=9) / inner_tcp(),
        (47, O4A, 0, O4B, 0), False,
    ),
    "gre-checksum": (
        eth() / IP(src=O4A, dst=O4B) / GRE(chksum_present=1) / inner_tcp(),
        (47, O4A, 0, O4B, 0), False,
    ),
    "gre-ipv6-payload": (
        eth() / IPv6(src=O6A, dst=O6B) / GRE() / inner_udp6(), (47, O6A, 0, O6B, 0), True,
    ),
    "gre-ethernet-bridging": (
        eth() / IP(src=O4A, dst=O4B) / GRE(proto=0x6558) / eth() / inner_tcp(),
        (47, O4A, 0, O4B, 0), False,
    ),
    "gtp-u": (
        eth() / IP(src=O4A, dst=O4B) / UDP(sport=2152, dport=2152)
        / GTP_U_Header(teid=0x1234) / inner_tcp(),
        (17, O4A, 2152, O4B, 2152), False,
    ),
    "gtp-u-extension": (
        eth() / IP(src=O4A, dst=O4B) / UDP(sport=2152, dport=2152)
        / GTP_U_Header(teid=0x1234) / GTPPDUSessionContainer(QFI=9) / inner_tcp(),
        (17, O4A, 2152, O4B, 2152), False,
    ),
    "gtp-u-ipv6-inner": (
        eth() / IPv6(src=O6A, dst=O6B) / UDP(sport=2152, dport=2152)
        / GTP_U_Header(teid=7) / inner_udp6(),
        (17, O6A, 2152, O6B, 2152), True,
    ),
    "vxlan": (
        eth() / IP(src=O4A, dst=O4B) / UDP(sport=51000, dport=4789) / VXLAN(vni=77)
        / eth() / inner_tcp(),
        (17, O4A, 51000, O4B, 4789), False,
    ),
    "vxlan-vlan": (
        eth() / IP(src=O4A, dst=O4B) / UDP(sport=51000, dport=4789) / VXLAN(vni=77)
        / eth() / Dot1Q(vlan=5) / inner_tcp(),
        (17, O4A, 51000, O4B, 4789), False,
    ),
    "capwap-8023": (
        eth() / IP(src=O4A, dst=O4B) / UDP(sport=12222, dport=5247)
        / (capwap_header(2, 1, native=False) + bytes(eth() / inner_tcp())),
        (17, O4A, 12222, O4B, 5247), False,
    ),
    "capwap-80211": (
        eth() / IP(src=O4A, dst=O4B) / UDP(sport=5247, dport=12222)
        / (capwap_header(4, 1, native=True) + wifi_frame(qos=False)),
        (17, O4A, 5247, O4B, 12222), False,
    ),
    "capwap-80211-qos": (
        eth() / IP(src=O4A, dst=O4B) / UDP(sport=5247, dport=12222)
        / (capwap_header(2, 1, native=True) + wifi_frame(qos=True)),
        (17, O4A, 5247, O4B, 12222), False,
    ),
    "tzsp": (
        eth() / IP(src=O4A, dst=O4B) / UDP(sport=40001, dport=37008)
        / TZSP() / TZSPTagEnd() / eth() / inner_tcp(),
        (17, O4A, 40001, O4B, 37008), False,
    ),
    "tzsp-tags": (
        eth() / IP(src=O4A, dst=O4B) / UDP(sport=40001, dport=37008)
        / TZSP() / TZSPTagPadding() / TZSPTagRXChannel(rx_channel=6) / TZSPTagEnd()
        / eth() / inner_tcp(),
        (17, O4A, 40001, O4B, 37008), False,
    ),
    "gre-in-vxlan-in-vlan": (
        eth() / Dot1Q(vlan=9) / IP(src=O4A, dst=O4B) / UDP(sport=1, dport=4789) / VXLAN()
        / eth() / IP(src="10.9.9.1", dst="10.9.9.2") / GRE() / inner_tcp(),
        (17, O4A, 1, O4B, 4789), False,
    ),
}


@pytest.mark.parametrize("name", list(TUNNELS))
def test_tunnels_are_decapsulated_to_the_inner_flow(tmp_path: Path, name: str) -> None:
    """The flow of a tunnelled packet is the inner one, and its length the inner IP length."""
    frame, _, inner_is_v6 = TUNNELS[name]
    rows, stats = decode_frames(tmp_path, [bytes(frame)])
    assert len(rows) == 1
    row = rows[0]
    expected, ip_len = (INNER6, INNER6_LEN) if inner_is_v6 else (INNER, INNER_TCP_LEN)
    assert row.five_tuple == expected
    assert row.ip_len == ip_len
    assert row.frame_len == len(bytes(frame))
    assert stats.decapsulated >= 1


@pytest.mark.parametrize("name", list(TUNNELS))
def test_no_decapsulation_keeps_the_outer_flow(tmp_path: Path, name: str) -> None:
    """With ``decapsulate=False`` the outer header is the flow (what --no-decap promises)."""
    frame, outer, _ = TUNNELS[name]
    data = bytes(frame)
    row = one(tmp_path, data, decapsulate=False)
    assert row.five_tuple == outer
    outer_ip = data[14 + (4 if name == "gre-in-vxlan-in-vlan" else 0):]
    if outer_ip[0] >> 4 == 4:
        assert row.ip_len == struct.unpack(">H", outer_ip[2:4])[0]
    else:
        assert row.ip_len == struct.unpack(">H", outer_ip[4:6])[0] + 40


def test_udp_on_tunnel_ports_without_a_tunnel_stays_the_udp_flow(tmp_path: Path) -> None:
    """Traffic that merely uses a tunnel port (a GTP echo, a VXLAN frame without the I flag,
    random bytes to the CAPWAP port) is not a tunnel: it keeps its own 5-tuple."""
    frames = [
        eth() / IP(src=O4A, dst=O4B) / UDP(sport=2152, dport=2152) / GTP_U_Header(gtp_type=1),
        eth() / IP(src=O4A, dst=O4B) / UDP(sport=9, dport=4789) / (b"\x00" * 8)
        / bytes(eth() / inner_tcp()),
        eth() / IP(src=O4A, dst=O4B) / UDP(sport=9, dport=5247) / (b"\x10" * 40),
        eth() / IP(src=O4A, dst=O4B) / UDP(sport=9, dport=37008) / (b"\x02\x01\x00\x01" * 5),
    ]
    rows, stats = decode_frames(tmp_path, [bytes(f) for f in frames])
    assert [r.five_tuple for r in rows] == [
        (17, O4A, 2152, O4B, 2152), (17, O4A, 9, O4B, 4789),
        (17, O4A, 9, O4B, 5247), (17, O4A, 9, O4B, 37008),
    ]
    assert stats.malformed == 0


def test_gtp_with_sequence_number_flag(tmp_path: Path) -> None:
    """The S flag alone also adds the 4 optional bytes (sequence, N-PDU, next type)."""
    frame = (eth() / IP(src=O4A, dst=O4B) / UDP(sport=2152, dport=2152)
             / GTP_U_Header(teid=1, S=1, seq=77) / inner_tcp())
    assert one(tmp_path, frame).five_tuple == INNER


def test_nested_tunnels_beyond_the_limit_do_not_loop(tmp_path: Path) -> None:
    """A fuzzed frame can nest tunnels without end; decoding must stop, not hang or crash."""
    packet: ScapyPacket = inner_tcp()
    for _ in range(30):
        packet = IP(src=O4A, dst=O4B) / packet
    rows, stats = decode_frames(tmp_path, [bytes(eth() / packet)])
    assert len(rows) + stats.malformed + stats.non_ip == 1


# ------------------------------------------------------- not IP and malformed
def test_non_ip_frames_are_counted(tmp_path: Path) -> None:
    frames = [
        bytes(eth() / ARP(psrc=C4, pdst=S4)),
        bytes(eth() / inner_tcp()),
        bytes(Ether(type=0x88CC, **MAC) / (b"\0" * 40)),  # LLDP
        bytes(Ether(type=0x0026, **MAC) / LLC() / (b"\0" * 40)),  # 802.3 length + LLC
    ]
    rows, stats = decode_frames(tmp_path, frames)
    assert [r.five_tuple for r in rows] == [INNER]
    assert stats.non_ip == 3 and stats.malformed == 0


@pytest.mark.parametrize("damage", ["ihl<5", "truncated header", "version 5",
                                    "ipv6 truncated"])
def test_malformed_ip_is_counted_and_dropped(tmp_path: Path, damage: str) -> None:
    good = bytes(eth() / inner_tcp())
    ip = bytearray(good[14:])
    if damage == "ihl<5":
        ip[0] = 0x43
        bad = good[:14] + bytes(ip)
    elif damage == "truncated header":
        bad = good[:14 + 15]
    elif damage == "version 5":
        ip[0] = 0x55
        bad = bytes(Ether(type=0x0800, **MAC)) + bytes(ip)
    else:
        bad = bytes(Ether(type=0x86DD, **MAC)) + bytes(inner_udp6())[:30]
    rows, stats = decode_frames(tmp_path, [good, bad, good])
    assert [r.five_tuple for r in rows] == [INNER, INNER]
    assert stats.malformed == 1 and stats.non_ip == 0


def test_unsupported_link_type_is_counted(tmp_path: Path) -> None:
    rows, stats = decode_frames(tmp_path, [bytes(inner_tcp())] * 3, linktype=147)
    assert rows == []
    assert stats.unsupported_linktypes == {147: 3}


# ------------------------------------------------------------------ fragments
def test_ipv4_fragments_join_the_first_fragments_ports(tmp_path: Path) -> None:
    """Later fragments carry no ports: they belong to the flow of their datagram's first
    fragment, matched by addresses, protocol and identification."""
    datagram = IP(src=C4, dst=S4, id=4242) / UDP(sport=5000, dport=6000) / (b"f" * 3000)
    parts = fragment(datagram, fragsize=1000)
    assert len(parts) == 4
    other = IP(src=C4, dst=S4, id=4243) / UDP(sport=7000, dport=8000) / (b"g" * 1500)
    other_parts = fragment(other, fragsize=1000)
    order = [parts[0], other_parts[0], parts[1], other_parts[1], parts[2], parts[3]]
    rows, stats = decode_frames(tmp_path, [bytes(eth() / p) for p in order])
    assert [(r.sport, r.dport) for r in rows] == [
        (5000, 6000), (7000, 8000), (5000, 6000), (7000, 8000), (5000, 6000), (5000, 6000)
    ]
    assert [r.ip_len for r in rows] == [len(bytes(p)) for p in order]
    assert stats.fragments == 6 and stats.orphan_fragments == 0


def test_orphan_ipv4_fragments_get_port_zero(tmp_path: Path) -> None:
    """A later fragment whose first fragment was never seen goes to the port-0 flow."""
    parts = fragment(IP(src=C4, dst=S4, id=9) / UDP(sport=5000, dport=6000) / (b"f" * 2500),
                     fragsize=1000)
    rows, stats = decode_frames(tmp_path, [bytes(eth() / p) for p in parts[1:]])
    assert [r.five_tuple for r in rows] == [(17, C4, 0, S4, 0)] * (len(parts) - 1)
    assert stats.orphan_fragments == len(parts) - 1


def test_fragment_memory_spans_batches(tmp_path: Path) -> None:
    """The first fragment may be in an earlier read batch than the rest (long captures)."""
    parts = fragment(IP(src=C4, dst=S4, id=77) / UDP(sport=1111, dport=2222) / (b"x" * 4000),
                     fragsize=1400)
    packets = [Packet(10**18 + i * 1000, bytes(eth() / p)) for i, p in enumerate(parts)]
    path = write_pcap(tmp_path / "frag.pcap", packets)
    rows, stats = decode_capture(path, chunk_bytes=200)
    assert [(r.sport, r.dport) for r in rows] == [(1111, 2222)] * len(parts)
    assert stats.orphan_fragments == 0


def test_ipv6_fragments_join_the_first_fragments_ports(tmp_path: Path) -> None:
    datagram = (IPv6(src=C6, dst=S6) / IPv6ExtHdrFragment(id=0xBEEF)
                / UDP(sport=5353, dport=53) / (b"v" * 3000))
    parts = fragment6(datagram, 1280)
    assert len(parts) >= 3
    rows, stats = decode_frames(tmp_path, [bytes(eth() / p) for p in parts])
    assert [r.five_tuple for r in rows] == [INNER6] * len(parts)
    assert [r.ip_len for r in rows] == [len(bytes(p)) for p in parts]
    assert stats.orphan_fragments == 0

    orphans, orphan_stats = decode_frames(tmp_path, [bytes(eth() / p) for p in parts[1:]],
                                          name="orphans.pcap")
    assert [r.five_tuple for r in orphans] == [(17, C6, 0, S6, 0)] * (len(parts) - 1)
    assert orphan_stats.orphan_fragments == len(parts) - 1


def test_fragments_of_different_addresses_do_not_mix(tmp_path: Path) -> None:
    """Two datagrams with the same IP identification but other addresses are separate."""
    a = fragment(IP(src=C4, dst=S4, id=1) / UDP(sport=1, dport=2) / (b"a" * 2000), 1000)
    b = fragment(IP(src=C4, dst=O4A, id=1) / UDP(sport=3, dport=4) / (b"b" * 2000), 1000)
    rows, _ = decode_frames(tmp_path, [bytes(eth() / p) for p in (a[0], b[0], a[1], b[1])])
    assert [(r.dst, r.sport) for r in rows] == [(S4, 1), (O4A, 3), (S4, 1), (O4A, 3)]


# ---------------------------------------------------------------- mixed batches
def test_mixed_link_types_in_one_batch() -> None:
    """A pcapng batch can mix interfaces; every packet uses its own link type."""
    frames = [
        bytes(eth() / inner_tcp()),
        bytes(inner_udp6()),
        bytes(CookedLinux() / inner_tcp()),
        struct.pack("<I", 2) + bytes(inner_tcp()),
        bytes(eth() / ARP()),
    ]
    batch = record_batch(frames, [DLT_EN10MB, DLT_RAW, DLT_LINUX_SLL, DLT_NULL, DLT_EN10MB])
    decoder = Decoder()
    rows = decoded_rows(decoder.decode(batch))
    assert [r.five_tuple for r in rows] == [INNER, INNER6, INNER, INNER]
    assert decoder.stats.non_ip == 1


# ------------------------------------------------------------- header details
def test_ipv4_options_move_the_transport_header(tmp_path: Path) -> None:
    """Ports are read after the IHL-sized header, not at a fixed 20 bytes."""

    packet = IP(src=C4, dst=S4, options=[IPOption_RR(routers=["1.2.3.4"]), IPOption_NOP()]) \
        / TCP(sport=40000, dport=443, flags="PA") / PAYLOAD
    assert bytes(packet)[0] & 0x0F > 5
    row = one(tmp_path, eth() / packet)
    assert row.five_tuple == INNER
    assert row.ip_len == len(bytes(packet))


def test_ipv6_authentication_header_is_walked(tmp_path: Path) -> None:
    """AH counts its length in 4-byte words (unlike other extension headers)."""
    from scapy.layers.ipsec import AH

    ah = AH(spi=1, seq=1, icv=b"\0" * 12, nh=17, payloadlen=4)  # (12 + 12) / 4 - 2
    packet = IPv6(src=C6, dst=S6) / IPv6ExtHdrHopByHop() / ah / UDP(sport=5353, dport=53) \
        / PAYLOAD
    row = one(tmp_path, eth() / packet)
    assert row.five_tuple == INNER6


def test_ipv4_total_length_zero_uses_captured_length(tmp_path: Path) -> None:
    """Segmentation offload writes total length 0: fall back to the captured IP bytes."""
    ip = bytearray(bytes(inner_tcp()))
    ip[2:4] = b"\0\0"
    row = one(tmp_path, bytes(Ether(type=0x0800, **MAC)) + bytes(ip))
    assert row.five_tuple == INNER
    assert row.ip_len == len(ip)


def test_pptp_enhanced_gre_with_ppp_is_decapsulated(tmp_path: Path) -> None:
    """PPTP: GRE version 1 with key (and sequence) fields, PPP inside, with or without the
    address and control bytes."""
    for framed in (True, False):
        ppp = (b"\xff\x03" if framed else b"") + b"\x00\x21" + bytes(inner_tcp())
        gre = struct.pack(">HHHHI", 0x3001, 0x880B, len(ppp), 7, 1) + ppp
        frame = eth() / IP(src=O4A, dst=O4B, proto=47) / gre
        row = one(tmp_path, frame)
        assert row.five_tuple == INNER, f"framed={framed}"
        assert row.ip_len == INNER_TCP_LEN


def test_fragments_inside_a_tunnel_join_the_inner_flow(tmp_path: Path) -> None:
    """An inner datagram fragmented before encapsulation: each fragment travels in its own
    tunnel packet, and the later ones still join the inner flow's ports."""
    parts = fragment(IP(src=C4, dst=S4, id=31) / UDP(sport=4000, dport=5000) / (b"t" * 2500),
                     fragsize=1000)
    frames = [bytes(eth() / IP(src=O4A, dst=O4B) / GRE() / p) for p in parts]
    rows, stats = decode_frames(tmp_path, frames)
    assert [r.five_tuple for r in rows] == [(17, C4, 4000, S4, 5000)] * len(parts)
    assert [r.ip_len for r in rows] == [len(bytes(p)) for p in parts]
    assert stats.orphan_fragments == 0
