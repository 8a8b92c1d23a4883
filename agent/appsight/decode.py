"""Decoding stage: from raw frames to the per-packet fields that flows are built from.

Every layer is parsed for a whole batch at once with numpy: each packet carries a cursor (the
offset of the header being parsed) and a "what is there" code, and each pass advances the
packets that still have work to do. Link layers, VLAN/QinQ tags, MPLS labels, PPPoE, IPv6
extension headers and tunnels are all such passes, so a rare layout costs a few extra passes
over a few packets, never a Python loop over all of them. Every read is bounds-checked against
the captured length, so a truncated or fuzzed frame yields "malformed", never an exception.

Decisions worth knowing (see ``docs/pipeline.md``):

* Packet lengths used by features are IP-layer lengths (the IP total length of the innermost
  IP header), so models do not depend on the link type; byte counters are captured frame
  bytes, as Wireshark, nDPI and nfstream count them.
* Each packet also carries its transport payload length: what follows the TCP header (with
  its options) or the UDP header, or everything after the IP headers for other protocols and
  for later fragments. It does not change with the IP version, IPv6 extension headers or TCP
  options, which differ between networks and operating systems, so features built on it
  carry from one capture to another better than IP lengths do.
* Tunnels (IP-in-IP, 6in4, 4in6, GRE, GTP-U, VXLAN, CAPWAP data, TZSP) are decapsulated so the
  inner flow is the flow; ``decapsulate=False`` keeps the outer flow.
* IP fragments: the first fragment carries the ports; later fragments of the same datagram
  (same addresses, protocol and IP identification) join its flow. A later fragment whose first
  fragment was not seen goes to the port-0 flow of its address pair and protocol.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from .reader import RecordBatch

# Link types (https://www.tcpdump.org/linktypes.html)
DLT_NULL, DLT_EN10MB, DLT_PPP, DLT_RAW_BSD1, DLT_RAW_BSD2 = 0, 1, 9, 12, 14
DLT_PPP_HDLC, DLT_RAW, DLT_C_HDLC, DLT_LOOP, DLT_LINUX_SLL = 50, 101, 104, 108, 113
DLT_PPI, DLT_IPV4, DLT_IPV6, DLT_LINUX_SLL2 = 192, 228, 229, 276

ETH_IPV4, ETH_IPV6, ETH_VLAN, ETH_QINQ, ETH_VLAN_OLD = 0x0800, 0x86DD, 0x8100, 0x88A8, 0x9100
ETH_MPLS, ETH_MPLS_MC, ETH_PPPOE = 0x8847, 0x8848, 0x8864
ETH_TEB = 0x6558  # transparent Ethernet bridging (GRE)
PPP_IPV4, PPP_IPV6 = 0x0021, 0x0057

# Internal "what is at the cursor" codes besides real ethertypes.
AT_IP_BY_VERSION = -2  # an IP header whose version nibble decides
AT_ETHERNET = -3  # an Ethernet header
AT_CAPWAP = -4  # a CAPWAP data header (802.11 or 802.3 payload)
AT_NONE = -1  # not IP: drop

PROTO_ICMP, PROTO_IPIP, PROTO_TCP, PROTO_UDP, PROTO_IPV6 = 1, 4, 6, 17, 41
PROTO_GRE = 47
# hop-by-hop, routing, destination options, mobility, HIP, shim6
IPV6_EXTENSIONS = (0, 43, 60, 135, 139, 140)
IPV6_FRAGMENT, IPV6_AH = 44, 51
PORT_GTP_U, PORT_VXLAN, PORT_CAPWAP_DATA, PORT_TZSP = 2152, 4789, 5247, 37008
MAX_LAYERS = 12  # nesting limit: fuzzed frames can claim tunnels inside tunnels forever
FRAGMENT_MEMORY = 65_536  # datagrams whose first fragment is remembered at most
FRAGMENT_SECONDS = 30  # how long a datagram's later fragments may trail its first

V4_MAPPED = np.uint64(0x0000FFFF00000000)


@dataclass
class PacketBatch:
    """Decoded IP packets, one entry per packet, in capture order.

    Addresses are 128-bit values split into two unsigned 64-bit halves; IPv4 addresses are
    stored IPv4-mapped (``::ffff:a.b.c.d``) so both families share one key layout.
    """

    ts_ns: np.ndarray
    frame_len: np.ndarray
    ip_len: np.ndarray
    proto: np.ndarray
    src_hi: np.ndarray
    src_lo: np.ndarray
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    payload_len: np.ndarray

    def __len__(self) -> int:
        return len(self.ts_ns)

    COLUMNS = (
        "ts_ns", "frame_len", "ip_len", "proto", "src_hi", "src_lo",
        "dst_hi", "dst_lo", "sport", "dport", "payload_len",
    )
    #: Column types other than int64: addresses are unsigned, and a payload length fits in
    #: 32 bits, which keeps a held packet at 84 bytes.
    DTYPES: ClassVar[dict[str, type]] = {
        "src_hi": np.uint64, "src_lo": np.uint64, "dst_hi": np.uint64, "dst_lo": np.uint64,
        "payload_len": np.int32,
    }

    def take(self, index: np.ndarray | slice) -> PacketBatch:
        """The packets selected by ``index``, as a new batch."""
        return PacketBatch(*(getattr(self, c)[index] for c in self.COLUMNS))

    @classmethod
    def concat(cls, batches: list[PacketBatch]) -> PacketBatch:
        if len(batches) == 1:
            return batches[0]
        return cls(*(np.concatenate([getattr(b, c) for b in batches]) for c in cls.COLUMNS))

    @classmethod
    def empty(cls) -> PacketBatch:
        return cls(*(np.zeros(0, dtype=cls.DTYPES.get(c, np.int64)) for c in cls.COLUMNS))


@dataclass
class DecodeStats:
    """Frames that did not become IP packets, by reason, plus tunnel and fragment counts."""

    non_ip: int = 0
    malformed: int = 0
    unsupported_linktypes: dict[int, int] = field(default_factory=dict)
    decapsulated: int = 0
    fragments: int = 0
    orphan_fragments: int = 0


class _Frames:
    """Bounds-checked big-endian reads at per-packet offsets of one record batch."""

    def __init__(self, batch: RecordBatch) -> None:
        self.data = batch.data
        self.start = batch.offset
        self.caplen = batch.caplen

    def read(
        self, idx: np.ndarray, rel: np.ndarray, width: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Big-endian unsigned integers of ``width`` bytes at ``rel`` in each packet ``idx``.

        Returns (values, ok); where the bytes are not all captured, ok is False and the value 0.
        """
        ok = (rel >= 0) & (rel + width <= self.caplen[idx])
        pos = self.start[idx] + rel
        pos[~ok] = 0
        data = self.data
        if len(data) < width:
            return np.zeros(len(idx), dtype=np.int64), np.zeros(len(idx), dtype=bool)
        value = data[pos].astype(np.int64)
        for k in range(1, width):  # ok packets end inside the data; the others read byte k
            value <<= 8
            value |= data[pos + k]
        value[~ok] = 0
        return value, ok

    def u8(self, idx: np.ndarray, rel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.read(idx, rel, 1)

    def u16(self, idx: np.ndarray, rel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.read(idx, rel, 2)

    def u32(self, idx: np.ndarray, rel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.read(idx, rel, 4)

    def u64_pair(self, idx: np.ndarray, rel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """16 bytes at ``rel`` as two big-endian uint64 halves (callers checked the bounds)."""
        index = (self.start[idx] + rel)[:, None] + np.arange(16, dtype=np.int64)
        np.minimum(index, len(self.data) - 1, out=index)
        words = np.ascontiguousarray(self.data[index]).view(">u8").reshape(len(idx), 2)
        return words[:, 0].astype(np.uint64), words[:, 1].astype(np.uint64)


def _ppp_to_ethertype(ppp: np.ndarray) -> np.ndarray:
    return np.select([ppp == PPP_IPV4, ppp == PPP_IPV6], [ETH_IPV4, ETH_IPV6], AT_NONE)


class Decoder:
    """Turns record batches into :class:`PacketBatch` objects.

    The decoder keeps state across batches only for IP fragments (the ports of datagrams whose
    first fragment has been seen), so one decoder should read one capture or stream.
    """

    def __init__(self, decapsulate: bool = True) -> None:
        self.decapsulate = decapsulate
        self.stats = DecodeStats()
        self._fragment_ports: OrderedDict[tuple[int, ...], tuple[int, int, int]] = OrderedDict()

    # ------------------------------------------------------------------ link
    def _link_layer(
        self, frames: _Frames, linktype: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per packet: (cursor after the link header, ethertype-like code of what follows)."""
        n = len(linktype)
        cursor = np.zeros(n, dtype=np.int64)
        what = np.full(n, AT_NONE, dtype=np.int64)
        for lt in np.unique(linktype):
            idx = np.flatnonzero(linktype == lt)
            lt = int(lt)
            if lt == DLT_EN10MB:
                cursor[idx], what[idx] = 0, AT_ETHERNET
            elif lt == DLT_LINUX_SLL:
                what[idx] = frames.u16(idx, np.full(len(idx), 14))[0]
                cursor[idx] = 16
            elif lt == DLT_LINUX_SLL2:
                what[idx] = frames.u16(idx, np.zeros(len(idx), dtype=np.int64))[0]
                cursor[idx] = 20
            elif lt in (DLT_RAW, DLT_RAW_BSD1, DLT_RAW_BSD2):
                what[idx] = AT_IP_BY_VERSION
            elif lt == DLT_IPV4:
                what[idx] = ETH_IPV4
            elif lt == DLT_IPV6:
                what[idx] = ETH_IPV6
            elif lt in (DLT_NULL, DLT_LOOP):
                family, _ = frames.u32(idx, np.zeros(len(idx), dtype=np.int64))
                if lt == DLT_NULL:  # host byte order of the capturing machine
                    swapped = (
                        ((family & 0xFF) << 24) | ((family & 0xFF00) << 8)
                        | ((family >> 8) & 0xFF00) | (family >> 24)
                    )
                    family = np.where(family > 0xFFFF, swapped, family)
                what[idx] = np.select(
                    [family == 2, np.isin(family, (24, 28, 30))], [ETH_IPV4, ETH_IPV6], AT_NONE
                )
                cursor[idx] = 4
            elif lt in (DLT_PPP, DLT_PPP_HDLC):
                zeros = np.zeros(len(idx), dtype=np.int64)
                address, _ = frames.u16(idx, zeros)
                framed = address == 0xFF03
                cursor[idx] = np.where(framed, 2, 0)
                ppp, _ = frames.u16(idx, cursor[idx])
                what[idx] = _ppp_to_ethertype(ppp)
                cursor[idx] += 2
                # Cisco HDLC frames turn up in PPP captures too: address 0x0F or 0x8F, then
                # an ethertype (as Wireshark, nDPI and nfstream also read them).
                first = address >> 8
                hdlc = (first == 0x0F) | (first == 0x8F)
                if hdlc.any():
                    what[idx[hdlc]] = frames.u16(idx[hdlc], zeros[hdlc] + 2)[0]
                    cursor[idx[hdlc]] = 4
            elif lt == DLT_PPI:  # per-packet information header, then the frame it wraps
                zeros = np.zeros(len(idx), dtype=np.int64)
                lo, _ = frames.u8(idx, zeros + 2)
                hi, _ = frames.u8(idx, zeros + 3)
                inner_dlt, _ = frames.u8(idx, zeros + 4)
                cursor[idx] = lo | (hi << 8)  # header length, little endian
                what[idx] = np.where(inner_dlt == DLT_EN10MB, AT_ETHERNET, AT_NONE)
            elif lt == DLT_C_HDLC:
                what[idx] = frames.u16(idx, np.full(len(idx), 2))[0]
                cursor[idx] = 4
            else:
                self.stats.unsupported_linktypes[lt] = (
                    self.stats.unsupported_linktypes.get(lt, 0) + len(idx)
                )
        return cursor, what

    # ------------------------------------------------------- below IP: loop
    def _resolve_to_ip(
        self, frames: _Frames, idx: np.ndarray, cursor: np.ndarray, what: np.ndarray
    ) -> None:
        """Peel Ethernet, VLAN, MPLS and PPPoE headers until ``what`` is IPv4, IPv6 or none.

        Works in place on ``cursor`` and ``what`` (indexed by packet number).
        """
        for _ in range(MAX_LAYERS):
            w = what[idx]
            todo = idx[(w != ETH_IPV4) & (w != ETH_IPV6) & (w != AT_NONE)]
            if len(todo) == 0:
                return
            w = what[todo]
            c = cursor[todo]
            new_w = np.full(len(todo), AT_NONE, dtype=np.int64)
            new_c = c.copy()

            eth = w == AT_ETHERNET
            if eth.any():
                new_w[eth] = frames.u16(todo[eth], c[eth] + 12)[0]
                new_c[eth] = c[eth] + 14
            vlan = (w == ETH_VLAN) | (w == ETH_QINQ) | (w == ETH_VLAN_OLD)
            if vlan.any():
                new_w[vlan] = frames.u16(todo[vlan], c[vlan] + 2)[0]
                new_c[vlan] = c[vlan] + 4
            mpls = (w == ETH_MPLS) | (w == ETH_MPLS_MC)
            if mpls.any():
                bottom = (frames.u8(todo[mpls], c[mpls] + 2)[0] & 1) == 1
                new_w[mpls] = np.where(bottom, AT_IP_BY_VERSION, ETH_MPLS)
                new_c[mpls] = c[mpls] + 4
            pppoe = w == ETH_PPPOE
            if pppoe.any():
                new_w[pppoe] = _ppp_to_ethertype(frames.u16(todo[pppoe], c[pppoe] + 6)[0])
                new_c[pppoe] = c[pppoe] + 8
            by_version = w == AT_IP_BY_VERSION
            if by_version.any():
                version = frames.u8(todo[by_version], c[by_version])[0] >> 4
                new_w[by_version] = np.select(
                    [version == 4, version == 6], [ETH_IPV4, ETH_IPV6], AT_NONE
                )
            capwap = w == AT_CAPWAP
            if capwap.any():
                new_c[capwap], new_w[capwap] = self._capwap(frames, todo[capwap], c[capwap])
            what[todo] = new_w
            cursor[todo] = new_c
        what[idx[(what[idx] != ETH_IPV4) & (what[idx] != ETH_IPV6)]] = AT_NONE

    @staticmethod
    def _capwap(
        frames: _Frames, idx: np.ndarray, c: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """CAPWAP data (RFC 5415): skip its header, then an 802.3 or 802.11 frame with LLC/SNAP."""
        b1, _ = frames.u8(idx, c + 1)
        b2, _ = frames.u8(idx, c + 2)
        hlen = (b1 >> 3) * 4  # HLEN: the top five bits, in 4-byte words
        native_80211 = (b2 & 0x01) == 1  # T flag: the payload is in its native frame format
        wbid = (b2 >> 1) & 0x1F  # wireless binding: 1 is IEEE 802.11
        inner = c + hlen
        what = np.full(len(idx), AT_ETHERNET, dtype=np.int64)
        # IEEE 802.11 data frame: 24-byte header (+2 for QoS data), then LLC/SNAP (8 bytes).
        wifi = native_80211 & (wbid == 1)
        if wifi.any():
            fc, _ = frames.u8(idx[wifi], inner[wifi])
            qos = (fc & 0x80) != 0
            llc_at = inner[wifi] + 24 + np.where(qos, 2, 0)
            what[wifi] = frames.u16(idx[wifi], llc_at + 6)[0]
            inner = inner.copy()
            inner[wifi] = llc_at + 8
        return inner, what

    # ---------------------------------------------------------------- decode
    def decode(self, batch: RecordBatch) -> PacketBatch:
        """Decode one record batch; non-IP and malformed frames are counted and dropped."""
        n = len(batch)
        if n == 0:
            return PacketBatch.empty()
        frames = _Frames(batch)
        cursor, what = self._link_layer(frames, batch.linktype)
        all_idx = np.arange(n, dtype=np.int64)
        self._resolve_to_ip(frames, all_idx, cursor, what)

        proto = np.zeros(n, dtype=np.int64)
        ip_len = np.zeros(n, dtype=np.int64)
        l4 = np.zeros(n, dtype=np.int64)
        src_hi = np.zeros(n, dtype=np.uint64)
        src_lo = np.zeros(n, dtype=np.uint64)
        dst_hi = np.zeros(n, dtype=np.uint64)
        dst_lo = np.zeros(n, dtype=np.uint64)
        sport = np.zeros(n, dtype=np.int64)
        dport = np.zeros(n, dtype=np.int64)
        frag_id = np.zeros(n, dtype=np.int64)
        # 0 not a fragment, 1 first fragment, 2 later fragment, 3 last fragment
        frag_state = np.zeros(n, dtype=np.int8)
        malformed = np.zeros(n, dtype=bool)

        is_ip = what != AT_NONE
        todo = all_idx[is_ip]
        self.stats.non_ip += n - len(todo)
        for _ in range(MAX_LAYERS):
            if len(todo) == 0:
                break
            self._parse_ip(frames, todo, cursor, what, proto, ip_len, l4, malformed,
                           (src_hi, src_lo, dst_hi, dst_lo), frag_id, frag_state)
            todo = todo[~malformed[todo]]
            if not self.decapsulate:
                break
            todo = self._tunnels(frames, todo, cursor, what, proto, l4, frag_state)
        keep = is_ip & ~malformed
        self.stats.malformed += int((malformed & is_ip).sum())

        # Ports only from a whole TCP/UDP header inside the IP datagram (as nDPI): a datagram
        # too short for one is a port-0 flow, and Ethernet padding is never read as ports.
        header_len = np.where(proto == PROTO_TCP, 20, 8)
        ported = (
            keep & ((proto == PROTO_TCP) | (proto == PROTO_UDP)) & (frag_state < 2)
            & (l4 + header_len <= cursor + ip_len)
        )
        pidx = np.flatnonzero(ported)
        if len(pidx):
            sport[pidx], ok_s = frames.u16(pidx, l4[pidx])
            dport[pidx], ok_d = frames.u16(pidx, l4[pidx] + 2)
            short = ~(ok_s & ok_d)
            sport[pidx[short]] = 0
            dport[pidx[short]] = 0
        payload_len = self._payload_lengths(frames, keep, ported, cursor, ip_len, l4, proto)
        if frag_state.any():
            self._attribute_fragments(
                np.flatnonzero(keep & (frag_state != 0)), frag_state, frag_id, proto,
                (src_hi, src_lo, dst_hi, dst_lo), sport, dport, batch.ts_ns,
            )

        sel = np.flatnonzero(keep)
        return PacketBatch(
            ts_ns=batch.ts_ns[sel],
            frame_len=batch.caplen[sel],
            ip_len=ip_len[sel],
            proto=proto[sel],
            src_hi=src_hi[sel],
            src_lo=src_lo[sel],
            dst_hi=dst_hi[sel],
            dst_lo=dst_lo[sel],
            sport=sport[sel],
            dport=dport[sel],
            payload_len=payload_len[sel],
        )

    @staticmethod
    def _payload_lengths(frames, keep, ported, cursor, ip_len, l4, proto) -> np.ndarray:
        """Transport payload bytes: the IP data less the whole TCP (with options) or UDP
        header where there is one; a data offset that cannot be read counts as 20 bytes."""
        ip_data = np.maximum(cursor + ip_len - l4, 0)
        header = np.zeros(len(ip_data), dtype=np.int64)
        header[ported & (proto == PROTO_UDP)] = 8
        tcp = np.flatnonzero(ported & (proto == PROTO_TCP))
        if len(tcp):
            offset_byte, ok = frames.u8(tcp, l4[tcp] + 12)
            header[tcp] = np.where(ok & (offset_byte >= 0x50), (offset_byte >> 4) * 4, 20)
        return np.where(keep, np.maximum(ip_data - header, 0), 0).astype(np.int32)

    def _parse_ip(self, frames, idx, cursor, what, proto, ip_len, l4, malformed, addrs,
                  frag_id, frag_state) -> None:
        """Parse the IPv4 or IPv6 header at each packet's cursor (innermost one wins)."""
        src_hi, src_lo, dst_hi, dst_lo = addrs
        c = cursor[idx]
        v4 = what[idx] == ETH_IPV4
        i4, c4 = idx[v4], c[v4]
        if len(i4):
            b0, ok = frames.u8(i4, c4)
            ihl = (b0 & 0x0F) * 4
            total, _ = frames.u16(i4, c4 + 2)
            _, ok_hdr = frames.u8(i4, c4 + np.maximum(ihl, 20) - 1)
            bad = ~ok | ~ok_hdr | ((b0 >> 4) != 4) | (ihl < 20)
            malformed[i4[bad]] = True
            flags, _ = frames.u16(i4, c4 + 6)
            ident, _ = frames.u16(i4, c4 + 4)
            proto[i4] = frames.u8(i4, c4 + 9)[0]
            src, _ = frames.u32(i4, c4 + 12)
            dst, _ = frames.u32(i4, c4 + 16)
            src_hi[i4], src_lo[i4] = 0, V4_MAPPED | src.astype(np.uint64)
            dst_hi[i4], dst_lo[i4] = 0, V4_MAPPED | dst.astype(np.uint64)
            captured_ip = frames.caplen[i4] - c4
            ip_len[i4] = np.where(total >= ihl, total, captured_ip)  # 0 under TSO offload
            l4[i4] = c4 + ihl
            offset = flags & 0x1FFF
            more = (flags & 0x2000) != 0
            frag_state[i4] = np.select([(offset > 0) & more, offset > 0, more], [2, 3, 1], 0)
            frag_id[i4] = ident
        v6 = what[idx] == ETH_IPV6
        i6, c6 = idx[v6], c[v6]
        if len(i6):
            b0, _ = frames.u8(i6, c6)
            _, ok_hdr = frames.u8(i6, c6 + 39)
            bad = ~ok_hdr | ((b0 >> 4) != 6)
            malformed[i6[bad]] = True
            payload, _ = frames.u16(i6, c6 + 4)
            ip_len[i6] = np.where(payload > 0, payload + 40, frames.caplen[i6] - c6)  # jumbo: 0
            src_hi[i6], src_lo[i6] = frames.u64_pair(i6, c6 + 8)
            dst_hi[i6], dst_lo[i6] = frames.u64_pair(i6, c6 + 24)
            nxt, _ = frames.u8(i6, c6 + 6)
            pos = c6 + 40
            frag_state[i6] = 0
            walking = np.ones(len(i6), dtype=bool)
            for _ in range(MAX_LAYERS):
                ext = walking & (
                    np.isin(nxt, IPV6_EXTENSIONS) | (nxt == IPV6_FRAGMENT) | (nxt == IPV6_AH)
                )
                if not ext.any():
                    break
                e = np.flatnonzero(ext)
                ei, at = i6[e], pos[e]
                hdr_next, ok = frames.u8(ei, at)
                hdr_len, ok_len = frames.u8(ei, at + 1)
                malformed[ei[~(ok & ok_len)]] = True
                is_frag = nxt[e] == IPV6_FRAGMENT
                is_ah = nxt[e] == IPV6_AH
                if is_frag.any():
                    fi = ei[is_frag]
                    off_flags, _ = frames.u16(fi, at[is_frag] + 2)
                    ident, _ = frames.u32(fi, at[is_frag] + 4)
                    frag_off = off_flags >> 3
                    more = (off_flags & 1) == 1
                    frag_state[fi] = np.select(
                        [(frag_off > 0) & more, frag_off > 0, more], [2, 3, 1], 0
                    )
                    frag_id[fi] = ident
                    # A later fragment's payload holds no headers: stop walking it.
                    walking[e[is_frag][frag_off > 0]] = False
                length = np.select([is_frag, is_ah], [8, (hdr_len + 2) * 4], (hdr_len + 1) * 8)
                nxt[e] = hdr_next
                pos[e] = at + length
            proto[i6] = nxt
            l4[i6] = pos

    def _tunnels(self, frames, idx, cursor, what, proto, l4, frag_state) -> np.ndarray:
        """Move the cursor of tunnelled packets to the inner header; return those packets."""
        p = proto[idx]
        whole = frag_state[idx] == 0  # fragments of a tunnel packet stay outer flows
        inner_what = np.full(len(idx), AT_NONE, dtype=np.int64)
        inner_at = l4[idx].copy()

        ipip = whole & ((p == PROTO_IPIP) | (p == PROTO_IPV6))
        inner_what[ipip] = np.where(p[ipip] == PROTO_IPIP, ETH_IPV4, ETH_IPV6)

        gre = whole & (p == PROTO_GRE)
        if gre.any():
            gi, at = idx[gre], l4[idx][gre]
            flags, ok = frames.u16(gi, at)
            ptype, ok2 = frames.u16(gi, at + 2)
            version = flags & 0x7
            hlen = (
                4 + np.where(flags & 0x8000, 4, 0) + np.where(flags & 0x2000, 4, 0)
                + np.where(flags & 0x1000, 4, 0)
                + np.where((version == 1) & ((flags & 0x0080) != 0), 4, 0)
            )
            w = np.select(
                [ptype == ETH_IPV4, ptype == ETH_IPV6, ptype == ETH_TEB, ptype == 0x880B],
                [ETH_IPV4, ETH_IPV6, AT_ETHERNET, -5], AT_NONE,
            )
            ppp = w == -5  # PPTP: PPP inside enhanced GRE, maybe with address/control bytes
            if ppp.any():
                first, _ = frames.u16(gi[ppp], at[ppp] + hlen[ppp])
                framed = first == 0xFF03
                hlen[ppp] += np.where(framed, 2, 0)
                code, _ = frames.u16(gi[ppp], at[ppp] + hlen[ppp])
                w[ppp] = _ppp_to_ethertype(code)
                hlen[ppp] += 2
            w[~(ok & ok2) | (version > 1) | ((flags & 0x4000) != 0)] = AT_NONE  # no routing
            inner_what[gre] = w
            inner_at[gre] = at + hlen

        udp = whole & (p == PROTO_UDP)
        if udp.any():
            ui, at = idx[udp], l4[idx][udp]
            sp, _ = frames.u16(ui, at)
            dp, _ = frames.u16(ui, at + 2)
            w = np.full(len(ui), AT_NONE, dtype=np.int64)
            inner = at + 8
            gtp = (sp == PORT_GTP_U) | (dp == PORT_GTP_U)
            if gtp.any():
                w[gtp], inner[gtp] = self._gtp(frames, ui[gtp], at[gtp] + 8)
            vxlan = (dp == PORT_VXLAN) & ~gtp
            if vxlan.any():
                flag, _ = frames.u8(ui[vxlan], at[vxlan] + 8)
                w[vxlan] = np.where((flag & 0x08) != 0, AT_ETHERNET, AT_NONE)
                inner[vxlan] = at[vxlan] + 16
            capwap = ((sp == PORT_CAPWAP_DATA) | (dp == PORT_CAPWAP_DATA)) & ~gtp & ~vxlan
            if capwap.any():
                preamble, _ = frames.u8(ui[capwap], at[capwap] + 8)
                w[capwap] = np.where(preamble == 0, AT_CAPWAP, AT_NONE)
            tzsp = (dp == PORT_TZSP) & ~gtp & ~vxlan & ~capwap
            if tzsp.any():
                w[tzsp], inner[tzsp] = self._tzsp(frames, ui[tzsp], at[tzsp] + 8)
            inner_what[udp] = w
            inner_at[udp] = inner

        moving = inner_what != AT_NONE
        nxt = idx[moving]
        if len(nxt) == 0:
            return nxt
        self.stats.decapsulated += len(nxt)
        cursor[nxt] = inner_at[moving]
        what[nxt] = inner_what[moving]
        self._resolve_to_ip(frames, nxt, cursor, what)
        # A tunnel whose payload is not IP keeps the outer header's fields: it stays that flow.
        return nxt[what[nxt] != AT_NONE]

    @staticmethod
    def _gtp(frames: _Frames, idx: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """GTP-U (3GPP TS 29.281) G-PDU: skip its header and extension headers."""
        flags, _ = frames.u8(idx, at)
        msg, _ = frames.u8(idx, at + 1)
        ok = ((flags >> 5) == 1) & (msg == 0xFF)
        has_optional = (flags & 0x07) != 0
        pos = at + 8 + np.where(has_optional, 4, 0)
        nxt = np.where((flags & 0x04) != 0, frames.u8(idx, at + 11)[0], 0)
        for _ in range(MAX_LAYERS):
            more = nxt != 0
            if not more.any():
                break
            length, lok = frames.u8(idx[more], pos[more])
            ok[np.flatnonzero(more)[~lok | (length == 0)]] = False
            length = np.maximum(length, 1) * 4
            nxt[more] = frames.u8(idx[more], pos[more] + length - 1)[0]
            pos[more] = pos[more] + length
            nxt[~ok] = 0
        return np.where(ok, AT_IP_BY_VERSION, AT_NONE), pos

    @staticmethod
    def _tzsp(frames: _Frames, idx: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """TZSP (TaZmen Sniffer Protocol): version 1, received packet, Ethernet payload."""
        version, _ = frames.u8(idx, at)
        encap, _ = frames.u16(idx, at + 2)
        ok = (version == 1) & (encap == 1)
        pos = at + 4
        for _ in range(64):  # tagged fields until END (1); PADDING (0) has no length
            tag, tok = frames.u8(idx, pos)
            walking = ok & tok & (tag != 1)
            if not walking.any():
                break
            length, _ = frames.u8(idx, pos + 1)
            pos = np.where(walking, pos + np.where(tag == 0, 1, 2 + length), pos)
            ok &= tok
        pos = pos + 1
        return np.where(ok, AT_ETHERNET, AT_NONE), pos

    # ------------------------------------------------------------ fragments
    def _attribute_fragments(
        self, idx, frag_state, frag_id, proto, addrs, sport, dport, ts_ns
    ) -> None:
        """Give later fragments the ports of their datagram's first fragment (capture order).

        A datagram is forgotten when its last fragment arrives, or FRAGMENT_SECONDS after its
        first (as the Linux kernel gives up reassembly after 30 s), or when FRAGMENT_MEMORY
        datagrams are waiting: memory stays bounded by the fragments in flight.
        """
        src_hi, src_lo, dst_hi, dst_lo = addrs
        memory = self._fragment_ports
        self.stats.fragments += len(idx)
        for i in idx.tolist():
            key = (int(src_hi[i]), int(src_lo[i]), int(dst_hi[i]), int(dst_lo[i]),
                   int(proto[i]), int(frag_id[i]))
            now = int(ts_ns[i])
            while memory:
                oldest = next(iter(memory.values()))
                if now - oldest[2] <= FRAGMENT_SECONDS * 1_000_000_000:
                    break
                memory.popitem(last=False)
            if frag_state[i] == 1:
                memory[key] = (int(sport[i]), int(dport[i]), now)
                memory.move_to_end(key)
                if len(memory) > FRAGMENT_MEMORY:
                    memory.popitem(last=False)
            else:
                entry = memory.pop(key, None) if frag_state[i] == 3 else memory.get(key)
                if entry is None:
                    self.stats.orphan_fragments += 1
                else:
                    sport[i], dport[i] = entry[0], entry[1]
