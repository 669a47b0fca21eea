"""OVS's userspace connection tracker (lib/conntrack.c of OVS 3.1, the dummy datapath's) as
a pure value, for the flow simulator (`liveport.model.flowsim`) -- what liveport uses of it.

A `Conntrack` holds connections per zone, each under its original-direction tuple (the
direction of the packet that committed it), with its ct_mark and ct_label. A tuple is the
IP version, the addresses, the IP protocol and:
- TCP and UDP: the ports;
- ICMP echo, timestamp and information requests and replies (ICMPv6: echo): the identifier
  and the type of the message in that direction (the other direction's type is its
  answer: 8 <-> 0, 13 <-> 14, 15 <-> 16; ICMPv6 128 <-> 129). OpenFlow cannot match the
  identifier, so packet_fields hands it over in a private field (ICMP_ID); fields without
  it count as identifier 0;
- anything else, SCTP included (OVS 3.1 tracks SCTP as a protocol without ports; SCTP
  ports came with 3.2): nothing more.

`Conntrack.track` is one pass of a packet through conntrack in a zone, and what it yields
(`Verdict`: ct_state, and the connection's ct_mark and ct_label) is what OVS 3.1 yields:
- trk+inv for a packet conntrack cannot key: not IPv4/IPv6 (OVS refuses ct on a flow that
  does not match IP, so only a hand-made Switch gets here), a truncated header, an IP
  fragment (OVS's reassembly, lib/ipf.c, is not modelled), TCP or UDP port 0, TCP flags
  conntrack rejects (tcp_invalid_flags: SYN with RST or FIN; neither SYN, ACK nor RST; FIN,
  PSH or URG without ACK), an ICMP type other than the echo-like ones and the errors, an
  echo with a non-zero code, an ICMP error whose embedded packet was not sent by the
  error's destination. The mark and label of a connection it belongs to are not looked up.
- an ICMP error (ICMPv4 destination unreachable, source quench, redirect, time exceeded,
  parameter problem; ICMPv6 destination unreachable, packet too big, time exceeded,
  parameter problem) whose embedded packet belongs to a connection: trk+rel, and +rpl when
  the embedded packet went in the connection's original direction (the error comes back
  in the reply direction). Without a connection: trk+inv.
- a packet of a connection in the reply direction: trk+est+rpl; the connection is then
  answered. In the original direction: trk+est once the connection is answered, trk+new
  before (OVS's FIRST/MULTIPLE states of UDP, ICMP and other protocols). TCP follows
  each side's state instead: a SYN without ACK from a side the other has not acknowledged
  yet (a retransmitted SYN) is trk+new; any other segment is trk+est (+rpl), and a
  segment with bad flags is trk+inv (with the connection's mark and label).
- no connection: trk+new, except TCP SYN+ACK or bad flags, ICMP replies and errors:
  trk+inv (tcp_valid_new, icmp_valid_new). A mid-stream TCP segment starts a connection
  (OVS picks connections up).
- `commit` stores the connection of a trk+new packet, in the packet's direction as the
  original one; `exec` loads apply to the connection's mark and label (a stored one, or
  one committed now) and the verdict carries the result. Without commit nothing is stored,
  but a packet of a stored connection still updates it (answered, TCP states).

TCP side states are OVS's CLOSED, SYN_SENT (the side sent a segment) and ESTABLISHED (the
other side acknowledged it), as `dpctl/dump-conntrack` shows them. Not modelled: sequence
and window checks (a segment OVS finds out of window is trk+est here), FIN and RST (the
closing states, and a SYN reopening a closed connection), timeouts and expiry, NAT, ALG
helpers (FTP, TFTP), force, zone limits, checksums (frames are assumed to carry valid
ones), OVS's per-packet cache of its connection (a second ct in the same zone looks the
packet up again, which yields the same here).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from enum import IntEnum

from liveport.model.flows import (
    ETH_IPV4,
    ETH_IPV6,
    FIELD_BITS,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    CtState,
    FlowError,
    Load,
)
from liveport.model.frozen import EMPTY, FrozenMap

# Private fields packet_fields adds for conntrack: what OpenFlow does not match but
# conntrack keys on. They start with "_" and are no FIELD_BITS field.
ICMP_ID = "_ct_icmp_id"  # the identifier of an echo-like ICMP message
UNPARSABLE = "_ct_unparsable"  # set: conntrack cannot key the packet (a short header)
INNER_SRC = "_ct_inner_src"  # an ICMP error's embedded packet, when conntrack can key it
INNER_DST = "_ct_inner_dst"
INNER_PROTO = "_ct_inner_proto"
INNER_SRC_PORT = "_ct_inner_src_port"
INNER_DST_PORT = "_ct_inner_dst_port"
INNER_ICMP_ID = "_ct_inner_icmp_id"
INNER_ICMP_TYPE = "_ct_inner_icmp_type"

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK, TCP_URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
FRAG_ANY = 1  # ip_frag: the packet is a fragment
ICMP_HEADER = 8  # bytes of an ICMP header; also what conntrack needs after the type
# Echo-like ICMP messages and their answers (reverse_icmp_type, reverse_icmp6_type).
_ICMP4_ANSWER = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15}
_ICMP6_ANSWER = {128: 129, 129: 128}
_ICMP4_REQUESTS = frozenset({8, 13, 15})  # may start a connection (icmp4_valid_new)
_ICMP6_REQUESTS = frozenset({128})
_ICMP4_ERRORS = frozenset({3, 4, 5, 11, 12})
_ICMP6_ERRORS = frozenset({1, 2, 3, 4})
_TCP_HEADER = 20
_UDP_HEADER = 8
_IPV4_HEADER = 20
_IPV6_HEADER = 40


class TcpState(IntEnum):
    """A TCP side's state, numbered as OVS's CT_DPIF_TCPS_* (the names dump-conntrack shows)."""

    CLOSED = 0
    SYN_SENT = 2
    ESTABLISHED = 4


@dataclass(frozen=True, order=True)
class ConnTuple:
    """A connection's key in one direction; ports and ICMP fields are 0 where unused."""

    eth_type: int
    src: int
    dst: int
    proto: int
    src_port: int = 0
    dst_port: int = 0
    icmp_id: int = 0
    icmp_type: int = 0  # the type of this direction's message (echo-like ICMP only)

    def reversed(self) -> ConnTuple:
        """The same connection seen from the other direction."""
        answer = _answers(self.eth_type, self.proto)
        return ConnTuple(
            self.eth_type,
            self.dst,
            self.src,
            self.proto,
            self.dst_port,
            self.src_port,
            self.icmp_id,
            answer.get(self.icmp_type, 0) if answer else 0,
        )


@dataclass(frozen=True)
class Connection:
    orig: ConnTuple  # the original direction
    mark: int = 0
    label: int = 0
    answered: bool = False  # a packet went in the reply direction
    tcp_orig: TcpState | None = None  # TCP: each side's state
    tcp_reply: TcpState | None = None


@dataclass(frozen=True)
class Verdict:
    """What a packet leaves ct with: its ct_state, ct_mark and ct_label."""

    state: CtState
    mark: int = 0
    label: int = 0


INVALID = Verdict(CtState.TRK | CtState.INV)


@dataclass(frozen=True)
class Conntrack:
    """Connections by (zone, original tuple)."""

    connections: FrozenMap[tuple[int, ConnTuple], Connection] = EMPTY

    def __iter__(self) -> Iterator[tuple[int, Connection]]:
        """(zone, connection) in zone and tuple order."""
        return iter(sorted(((z, c) for (z, _), c in self.connections.items()), key=_order))

    def __len__(self) -> int:
        return len(self.connections)

    def get(self, zone: int, orig: ConnTuple) -> Connection | None:
        return self.connections.get((zone, orig))

    def zone(self, zone: int) -> list[Connection]:
        return [c for z, c in self if z == zone]

    def lookup(self, zone: int, key: ConnTuple) -> tuple[Connection, bool] | None:
        """The connection key belongs to in zone, and whether key is its reply direction."""
        conn = self.connections.get((zone, key))
        if conn is not None:
            return conn, False
        conn = self.connections.get((zone, key.reversed()))
        return None if conn is None else (conn, True)

    def track(
        self,
        fields: Mapping[str, int],
        zone: int,
        *,
        commit: bool = False,
        loads: Iterable[Load] = (),
    ) -> tuple[Verdict, Conntrack]:
        """One pass of the packet with fields through conntrack in zone (see the module);
        loads are ct's exec."""
        loads = tuple(loads)
        if loads and not commit:
            raise FlowError("ct exec needs commit (OVS refuses it)")
        keyed = packet_key(fields)
        if keyed is None:
            return INVALID, self
        key, related = keyed
        found = self.lookup(zone, key)
        conn: Connection | None
        if found is not None:
            before, reply = found
            if related:
                state, conn = CtState.REL | (CtState.RPL if reply else CtState(0)), before
            else:
                state, conn = _update(before, reply, fields)
        elif related or not _valid_new(key, fields):
            return INVALID, self
        else:
            before, state = None, CtState.NEW
            conn = _new(key) if commit else None
        if conn is None:
            return Verdict(CtState.TRK | state), self
        conn = _apply(conn, loads)
        verdict = Verdict(CtState.TRK | state, conn.mark, conn.label)
        if conn == before:
            return verdict, self
        return verdict, Conntrack(self.connections.set((zone, conn.orig), conn))


def _order(entry: tuple[int, Connection]) -> tuple[int, ConnTuple]:
    return entry[0], entry[1].orig


def _answers(eth_type: int, proto: int) -> Mapping[int, int] | None:
    if eth_type == ETH_IPV4 and proto == IPPROTO_ICMP:
        return _ICMP4_ANSWER
    if eth_type == ETH_IPV6 and proto == IPPROTO_ICMPV6:
        return _ICMP6_ANSWER
    return None


def _errors(eth_type: int) -> frozenset[int]:
    return _ICMP4_ERRORS if eth_type == ETH_IPV4 else _ICMP6_ERRORS


# ----- keys ---------------------------------------------------------------------------------


def packet_key(fields: Mapping[str, int]) -> tuple[ConnTuple, bool] | None:
    """The tuple conntrack looks the packet up by, and whether it is an ICMP error's
    (related: the reversed tuple of the embedded packet); None if conntrack cannot key it."""
    eth_type = fields.get("eth_type", 0)
    family = {ETH_IPV4: "ipv4", ETH_IPV6: "ipv6"}.get(eth_type)
    if family is None or UNPARSABLE in fields:
        return None
    src, dst, proto = (
        fields.get(f"{family}_src"),
        fields.get(f"{family}_dst"),
        fields.get("ip_proto"),
    )
    if src is None or dst is None or proto is None or fields.get("ip_frag", 0) & FRAG_ANY:
        return None
    if proto in (IPPROTO_TCP, IPPROTO_UDP):
        name = "tcp" if proto == IPPROTO_TCP else "udp"
        sport, dport = fields.get(f"{name}_src", 0), fields.get(f"{name}_dst", 0)
        if not sport or not dport or (proto == IPPROTO_TCP and "tcp_flags" not in fields):
            return None
        return ConnTuple(eth_type, src, dst, proto, sport, dport), False
    answers = _answers(eth_type, proto)
    if answers is None:
        return ConnTuple(eth_type, src, dst, proto), False
    icmp = "icmpv4" if eth_type == ETH_IPV4 else "icmpv6"
    icmp_type, code = fields.get(f"{icmp}_type", -1), fields.get(f"{icmp}_code", -1)
    if icmp_type in answers and code == 0:
        return ConnTuple(eth_type, src, dst, proto, 0, 0, fields.get(ICMP_ID, 0), icmp_type), False
    if icmp_type in _errors(eth_type) and INNER_PROTO in fields and fields[INNER_SRC] == dst:
        inner = ConnTuple(
            eth_type,
            fields[INNER_SRC],
            fields[INNER_DST],
            fields[INNER_PROTO],
            fields.get(INNER_SRC_PORT, 0),
            fields.get(INNER_DST_PORT, 0),
            fields.get(INNER_ICMP_ID, 0),
            fields.get(INNER_ICMP_TYPE, 0),
        )
        return inner.reversed(), True
    return None


def icmp_fields(message: bytes, *, ipv6: bool) -> dict[str, int]:
    """The private fields conntrack needs from an ICMP (ICMPv6) message: an echo-like
    message's identifier, an error's embedded packet, or UNPARSABLE."""
    if len(message) < ICMP_HEADER:
        return {UNPARSABLE: 1}
    icmp_type = message[0]
    if icmp_type in (_ICMP6_ANSWER if ipv6 else _ICMP4_ANSWER):
        return {ICMP_ID: int.from_bytes(message[4:6], "big")}
    if icmp_type in (_ICMP6_ERRORS if ipv6 else _ICMP4_ERRORS):
        return _embedded(message[ICMP_HEADER:], ipv6=ipv6) or {UNPARSABLE: 1}
    return {}


def _embedded(packet: bytes, *, ipv6: bool) -> dict[str, int] | None:
    """An ICMP error's embedded packet as conntrack keys it (extract_l3_*, then extract_l4
    without checksums or nesting), or None."""
    if ipv6:
        if len(packet) < _IPV6_HEADER:
            return None
        # Extension headers are not followed (a fragment header makes it unkeyable in OVS).
        proto, src, dst = packet[6], packet[8:24], packet[24:40]
        l4 = packet[_IPV6_HEADER:]
    else:
        ihl = (packet[0] & 0x0F) * 4 if packet else 0
        if len(packet) < _IPV4_HEADER or ihl < _IPV4_HEADER or len(packet) < ihl:
            return None
        if struct.unpack("!H", packet[6:8])[0] & 0x3FFF:  # more fragments, or an offset
            return None
        proto, src, dst = packet[9], packet[12:16], packet[16:20]
        l4 = packet[ihl:]
    out = {
        INNER_SRC: int.from_bytes(src, "big"),
        INNER_DST: int.from_bytes(dst, "big"),
        INNER_PROTO: proto,
    }
    inner = _embedded_l4(proto, l4, ipv6=ipv6)
    return None if inner is None else {**out, **inner}


def _embedded_l4(proto: int, l4: bytes, *, ipv6: bool) -> dict[str, int] | None:
    if proto in (IPPROTO_TCP, IPPROTO_UDP):
        # OVS wants 8 bytes of an IPv4 error's TCP header, all 20 of an IPv6 one's.
        need = _TCP_HEADER if proto == IPPROTO_TCP and ipv6 else _UDP_HEADER
        if len(l4) < need:
            return None
        sport, dport = struct.unpack("!HH", l4[:4])
        return {INNER_SRC_PORT: sport, INNER_DST_PORT: dport} if sport and dport else None
    answers = _answers(ETH_IPV6 if ipv6 else ETH_IPV4, proto)
    if answers is None:
        return {}
    if len(l4) < ICMP_HEADER or l4[0] not in answers or l4[1] != 0:
        return None  # an error inside an error, or no echo-like message
    return {INNER_ICMP_ID: int.from_bytes(l4[4:6], "big"), INNER_ICMP_TYPE: l4[0]}


# ----- connections --------------------------------------------------------------------------


def _tcp_flags_invalid(flags: int) -> bool:
    """lib/conntrack-tcp.c's tcp_invalid_flags."""
    if flags & TCP_SYN:
        if flags & (TCP_RST | TCP_FIN):
            return True
    elif not flags & (TCP_ACK | TCP_RST):
        return True
    return not flags & TCP_ACK and bool(flags & (TCP_FIN | TCP_PSH | TCP_URG))


def _valid_new(key: ConnTuple, fields: Mapping[str, int]) -> bool:
    """Whether a packet may start a connection (the protocols' valid_new)."""
    if key.proto == IPPROTO_TCP:
        flags = fields["tcp_flags"]
        return not _tcp_flags_invalid(flags) and flags & (TCP_SYN | TCP_ACK) != (TCP_SYN | TCP_ACK)
    answers = _answers(key.eth_type, key.proto)
    if answers is None:
        return True
    requests = _ICMP4_REQUESTS if key.eth_type == ETH_IPV4 else _ICMP6_REQUESTS
    return key.icmp_type in requests


def _new(key: ConnTuple) -> Connection:
    if key.proto == IPPROTO_TCP:
        return Connection(key, tcp_orig=TcpState.SYN_SENT, tcp_reply=TcpState.CLOSED)
    return Connection(key)


def _update(conn: Connection, reply: bool, fields: Mapping[str, int]) -> tuple[CtState, Connection]:
    """A packet of conn (the protocols' conn_update, without sequence numbers)."""
    answered = conn.answered or reply
    established = CtState.EST | (CtState.RPL if reply else CtState(0))
    if conn.tcp_orig is None or conn.tcp_reply is None:
        return (established if answered else CtState.NEW), replace(conn, answered=answered)
    flags = fields["tcp_flags"]
    if _tcp_flags_invalid(flags):
        return CtState.INV, conn
    sender, receiver = (conn.tcp_reply, conn.tcp_orig) if reply else (conn.tcp_orig, conn.tcp_reply)
    if flags & (TCP_SYN | TCP_ACK) == TCP_SYN and sender <= TcpState.SYN_SENT:
        state = CtState.NEW
        sender = TcpState.SYN_SENT
    else:
        state = established
        sender = max(sender, TcpState.SYN_SENT)
        if flags & TCP_ACK and receiver == TcpState.SYN_SENT:
            receiver = TcpState.ESTABLISHED
    orig, rpl = (receiver, sender) if reply else (sender, receiver)
    return state, replace(conn, answered=answered, tcp_orig=orig, tcp_reply=rpl)


def _apply(conn: Connection, loads: Iterable[Load]) -> Connection:
    """ct's exec: each load sets its bits of the connection's mark or label, in order."""
    mark, label = conn.mark, conn.label
    for load in loads:
        width = FIELD_BITS.get(load.field, 0)
        nbits = load.nbits or width - load.start
        mask = ((1 << nbits) - 1) << load.start
        bits = (load.value << load.start) & mask
        if load.field == "ct_mark":
            mark = mark & ~mask | bits
        elif load.field == "ct_label":
            label = label & ~mask | bits
        else:
            raise FlowError(f"ct exec may load only ct_mark or ct_label, not {load.field}")
    return replace(conn, mark=mark, label=label)
