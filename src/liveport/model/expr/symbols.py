"""OVN's symbol table for what ACLs match on (lib/logical-fields.c), and the OpenFlow field
each symbol lives in.

A symbol is one of:
- a field: an integer of `width` bits held in an OpenFlow field (or, for inport/outport, a
  string: a logical port name, held as its key in a register);
- a subfield: bits [ofs, ofs + width) of a field (ct.est is bit 1 of ct_state);
- a predicate: a name for an expression (ip4 is "eth.type == 0x800"), used like a 1-bit
  field.

A symbol may have prerequisites, an expression that its every use implies (tcp.dst implies
"tcp", which is "ip.proto == 6", whose own prerequisite "ip" is "ip4 || ip6"). Fields are
ordinal (any bits may be tested, so <, <= etc. work) when OpenFlow can mask them, and
nominal otherwise (only == and, under a '!', != ). A predicate is nominal when its
expansion tests a nominal symbol, and otherwise Boolean.

Fields whose alternatives must be multiplied out into separate flows rather than become a
dimension of a conjunctive match ("crossproduct") are those other fields' prerequisites
depend on (eth.type, ip.proto, icmp6.type and code), as in OVN, and the VLAN fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum


class Level(Enum):
    NOMINAL = "nominal"
    ORDINAL = "ordinal"
    BOOLEAN = "Boolean"


class Kind(Enum):
    """What values a field holds, which says which constants may be compared with it."""

    INTEGER = "an integer field"
    MAC = "a MAC address field"
    IPV4 = "an IPv4 address field"
    IPV6 = "an IPv6 address field"
    STRING = "a string field"


@dataclass(frozen=True)
class Symbol:
    name: str
    width: int  # bits; 0 for a string field; 1 for a predicate
    level: Level | None  # None for a predicate: see level()
    kind: Kind = Kind.INTEGER
    prereqs: str | None = None
    openflow: str | None = None  # the OpenFlow field of a field symbol
    parent: str | None = None  # a subfield's field
    ofs: int = 0  # a subfield's lowest bit within its field
    predicate: str | None = None  # a predicate's expansion

    @property
    def is_string(self) -> bool:
        return self.kind is Kind.STRING


# vlan.tci is OVN's 16-bit TCI; OpenFlow 1.3 (and OVS's dumps) split it into vlan_vid
# (present bit and VID) and vlan_pcp, so the compiler splits it too.
VLAN_TCI = "vlan_tci"


def _field(
    name: str,
    openflow: str,
    width: int,
    *,
    kind: Kind = Kind.INTEGER,
    nominal: bool = False,
    prereqs: str | None = None,
) -> Symbol:
    level = Level.NOMINAL if nominal else Level.ORDINAL
    return Symbol(name, width, level, kind, prereqs, openflow)


def _subfield(name: str, parent: str, low: int, high: int, prereqs: str | None = None) -> Symbol:
    return Symbol(name, high - low + 1, Level.ORDINAL, prereqs=prereqs, parent=parent, ofs=low)


def _predicate(name: str, expansion: str) -> Symbol:
    return Symbol(name, 1, None, predicate=expansion)


_ND = "icmp6.code == 0 && ip.ttl == 255"
_MAC, _IPV4, _IPV6 = Kind.MAC, Kind.IPV4, Kind.IPV6

_SYMBOLS: tuple[Symbol, ...] = (
    Symbol("inport", 0, Level.NOMINAL, Kind.STRING),
    Symbol("outport", 0, Level.NOMINAL, Kind.STRING),
    # Ethernet.
    _field("eth.src", "eth_src", 48, kind=_MAC),
    _field("eth.dst", "eth_dst", 48, kind=_MAC),
    _field("eth.type", "eth_type", 16, nominal=True),
    _predicate("eth.bcast", "eth.dst == ff:ff:ff:ff:ff:ff"),
    _subfield("eth.mcast", "eth.dst", 40, 40),
    _predicate("eth.mcastv6", "eth.dst[32..47] == 0x3333"),
    # VLAN.
    _field("vlan.tci", VLAN_TCI, 16),
    _predicate("vlan.present", "vlan.tci[12]"),
    _subfield("vlan.pcp", "vlan.tci", 13, 15, "vlan.present"),
    _subfield("vlan.vid", "vlan.tci", 0, 11, "vlan.present"),
    # IP.
    _predicate("ip4", "eth.type == 0x800"),
    _predicate("ip6", "eth.type == 0x86dd"),
    _predicate("ip", "ip4 || ip6"),
    _field("ip.proto", "ip_proto", 8, nominal=True, prereqs="ip"),
    _field("ip.dscp", "ip_dscp", 6, nominal=True, prereqs="ip"),
    _field("ip.ecn", "ip_ecn", 2, nominal=True, prereqs="ip"),
    _field("ip.ttl", "nw_ttl", 8, nominal=True, prereqs="ip"),
    _field("ip.frag", "ip_frag", 2, prereqs="ip"),
    _predicate("ip.is_frag", "ip.frag[0]"),
    _predicate("ip.later_frag", "ip.frag[1]"),
    _predicate("ip.first_frag", "ip.is_frag && !ip.later_frag"),
    _field("ip4.src", "ipv4_src", 32, kind=_IPV4, prereqs="ip4"),
    _field("ip4.dst", "ipv4_dst", 32, kind=_IPV4, prereqs="ip4"),
    _predicate("ip4.src_mcast", "ip4.src[28..31] == 0xe"),
    _predicate("ip4.mcast", "eth.mcast && ip4.dst[28..31] == 0xe"),
    _field("ip6.src", "ipv6_src", 128, kind=_IPV6, prereqs="ip6"),
    _field("ip6.dst", "ipv6_dst", 128, kind=_IPV6, prereqs="ip6"),
    _field("ip6.label", "ipv6_flabel", 20, prereqs="ip6"),
    _predicate("ip6.mcast", "eth.mcastv6 && ip6.dst[120..127] == 0xff"),
    # ICMP.
    _predicate("icmp4", "ip4 && ip.proto == 1"),
    _field("icmp4.type", "icmpv4_type", 8, nominal=True, prereqs="icmp4"),
    _field("icmp4.code", "icmpv4_code", 8, nominal=True, prereqs="icmp4"),
    _predicate("icmp6", "ip6 && ip.proto == 58"),
    _field("icmp6.type", "icmpv6_type", 8, nominal=True, prereqs="icmp6"),
    _field("icmp6.code", "icmpv6_code", 8, nominal=True, prereqs="icmp6"),
    _predicate("icmp", "icmp4 || icmp6"),
    # ARP and RARP share the OpenFlow fields.
    _predicate("arp", "eth.type == 0x806"),
    _field("arp.op", "arp_op", 16, nominal=True, prereqs="arp"),
    _field("arp.spa", "arp_spa", 32, kind=_IPV4, prereqs="arp"),
    _field("arp.tpa", "arp_tpa", 32, kind=_IPV4, prereqs="arp"),
    _field("arp.sha", "arp_sha", 48, kind=_MAC, prereqs="arp"),
    _field("arp.tha", "arp_tha", 48, kind=_MAC, prereqs="arp"),
    _predicate("rarp", "eth.type == 0x8035"),
    _field("rarp.op", "arp_op", 16, nominal=True, prereqs="rarp"),
    _field("rarp.spa", "arp_spa", 32, kind=_IPV4, prereqs="rarp"),
    _field("rarp.tpa", "arp_tpa", 32, kind=_IPV4, prereqs="rarp"),
    _field("rarp.sha", "arp_sha", 48, kind=_MAC, prereqs="rarp"),
    _field("rarp.tha", "arp_tha", 48, kind=_MAC, prereqs="rarp"),
    # Neighbour discovery.
    _predicate("nd", f"icmp6.type == {{135, 136}} && {_ND}"),
    _predicate("nd_ns", f"icmp6.type == 135 && {_ND}"),
    _predicate("nd_na", f"icmp6.type == 136 && {_ND}"),
    _predicate("nd_rs", f"icmp6.type == 133 && {_ND}"),
    _predicate("nd_ra", f"icmp6.type == 134 && {_ND}"),
    _field("nd.target", "ipv6_nd_target", 128, kind=_IPV6, prereqs="nd"),
    _field("nd.sll", "ipv6_nd_sll", 48, kind=_MAC, prereqs="nd_ns"),
    _field("nd.tll", "ipv6_nd_tll", 48, kind=_MAC, prereqs="nd_na"),
    # Transport.
    _predicate("tcp", "ip.proto == 6"),
    _field("tcp.src", "tcp_src", 16, prereqs="tcp"),
    _field("tcp.dst", "tcp_dst", 16, prereqs="tcp"),
    _field("tcp.flags", "tcp_flags", 12, prereqs="tcp"),
    _predicate("udp", "ip.proto == 17"),
    _field("udp.src", "udp_src", 16, prereqs="udp"),
    _field("udp.dst", "udp_dst", 16, prereqs="udp"),
    _predicate("sctp", "ip.proto == 132"),
    _field("sctp.src", "sctp_src", 16, prereqs="sctp"),
    _field("sctp.dst", "sctp_dst", 16, prereqs="sctp"),
    # Connection tracking: the state bits (OVS's CS_* order), the mark and the label.
    _field("ct_state", "ct_state", 32),
    _subfield("ct.new", "ct_state", 0, 0, "ct.trk"),
    _subfield("ct.est", "ct_state", 1, 1, "ct.trk"),
    _subfield("ct.rel", "ct_state", 2, 2, "ct.trk"),
    _subfield("ct.rpl", "ct_state", 3, 3, "ct.trk"),
    _subfield("ct.inv", "ct_state", 4, 4, "ct.trk"),
    _subfield("ct.trk", "ct_state", 5, 5),
    _subfield("ct.snat", "ct_state", 6, 6, "ct.trk"),
    _subfield("ct.dnat", "ct_state", 7, 7, "ct.trk"),
    _field("ct_mark", "ct_mark", 32),
    _field("ct_label", "ct_label", 128),
)

SYMBOLS: Mapping[str, Symbol] = {s.name: s for s in _SYMBOLS}
# OpenFlow fields (after vlan.tci is split) that are multiplied out, never conjunction
# dimensions.
CROSSPRODUCT_FIELDS = frozenset(
    {"eth_type", "ip_proto", "icmpv6_type", "icmpv6_code", "vlan_vid", "vlan_pcp"}
)


def lookup(name: str) -> Symbol | None:
    return SYMBOLS.get(name)


def base(symbol: Symbol) -> Symbol:
    """The field a subfield is part of (a field is its own)."""
    return SYMBOLS[symbol.parent] if symbol.parent is not None else symbol


def field_kind(symbol: Symbol, ofs: int, n_bits: int) -> Kind:
    """What a comparison with bits [ofs, ofs+n_bits) of symbol compares: an address only
    when all of an address field's bits are used."""
    whole = ofs == 0 and n_bits == symbol.width
    return symbol.kind if whole else Kind.INTEGER
