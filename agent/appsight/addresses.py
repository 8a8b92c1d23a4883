"""IP addresses as pairs of unsigned 64-bit integers, the layout every stage shares.

Packets and flows keep addresses as two numpy ``uint64`` columns (high and low half of the
128-bit IPv6 form; IPv4 as ``::ffff:a.b.c.d``), so grouping, comparing and masking are
vectorised. Conversion to text happens only when a flow is printed.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import numpy as np

from .errors import UsageError

_V4_MAPPED_HI = 0
_V4_MAPPED_PREFIX = 0x0000FFFF00000000
_MASK64 = (1 << 64) - 1


def address_to_pair(text: str) -> tuple[int, int]:
    """``"10.0.0.1"`` or ``"2001:db8::1"`` as (high, low) 64-bit halves."""
    address = ipaddress.ip_address(text)
    value = int(address) | (_V4_MAPPED_PREFIX if address.version == 4 else 0)
    return value >> 64, value & _MASK64


def pair_to_address(hi: int, lo: int) -> str:
    """The text form of an address pair; IPv4-mapped pairs print as plain IPv4."""
    hi, lo = int(hi), int(lo)
    if hi == _V4_MAPPED_HI and (lo >> 32) == 0xFFFF:
        return str(ipaddress.IPv4Address(lo & 0xFFFFFFFF))
    return str(ipaddress.IPv6Address((hi << 64) | lo))


def pairs_to_addresses(hi: np.ndarray, lo: np.ndarray) -> list[str]:
    """Text forms of many address pairs, caching repeats (flows share endpoints)."""
    cache: dict[tuple[int, int], str] = {}
    out = []
    for key in zip(hi.tolist(), lo.tolist(), strict=True):
        text = cache.get(key)
        if text is None:
            text = cache[key] = pair_to_address(*key)
        out.append(text)
    return out


@dataclass(frozen=True)
class NetworkMatcher:
    """Tests address pairs for membership in a set of networks (``--device``)."""

    networks: tuple[tuple[int, int, int, int], ...]  # (net_hi, net_lo, mask_hi, mask_lo)
    #: The networks as text (``192.168.56.0/24``), in the order given: what a model stores.
    specs: tuple[str, ...] = ()

    @classmethod
    def parse(cls, specs: list[str]) -> NetworkMatcher:
        """Build from addresses or CIDR blocks such as ``10.0.2.15`` or ``192.168.56.0/24``."""
        networks = []
        texts: list[str] = []
        for spec in specs:
            for part in filter(None, (p.strip() for p in spec.split(","))):
                try:
                    net = ipaddress.ip_network(part, strict=False)
                except ValueError:
                    raise UsageError(
                        f"--device: {part!r} is not an IP address or network"
                    ) from None
                prefix = net.prefixlen + (96 if net.version == 4 else 0)
                mask = ((1 << 128) - 1) ^ ((1 << (128 - prefix)) - 1)
                base = int(net.network_address) | (_V4_MAPPED_PREFIX if net.version == 4 else 0)
                base &= mask
                networks.append((base >> 64, base & _MASK64, mask >> 64, mask & _MASK64))
                texts.append(str(net))
        if not networks:
            raise UsageError("--device needs at least one address or network")
        return cls(tuple(networks), tuple(texts))

    def contains(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """Boolean array: is each address inside one of the networks?"""
        inside = np.zeros(len(hi), dtype=bool)
        for net_hi, net_lo, mask_hi, mask_lo in self.networks:
            inside |= ((hi & np.uint64(mask_hi)) == np.uint64(net_hi)) & (
                (lo & np.uint64(mask_lo)) == np.uint64(net_lo)
            )
        return inside
