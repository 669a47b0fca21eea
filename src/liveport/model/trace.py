"""`liveport trace`, its pure parts: a packet described in the match language, the frame it
is, and what a packet's way through a chassis' flows means.

A packet is described as a conjunction of `field == value` terms of the ACL match language
(model.expr: the same symbols, the same literals), e.g.

    inport == "vm1" && eth.dst == 00:00:00:00:00:02 && ip4.dst == 10.0.0.2 && udp.dst == 53

or, shorter, as comma-separated `field=value` items and bare protocol names:

    eth.dst=00:00:00:00:00:02, ip4.dst=10.0.0.2, udp, udp.dst=53

`parse_packet` reads either form; `build_frame` turns the description into the Ethernet
frame it stands for (what is not said is zero, or the usual value: TTL 64, a TCP SYN, an
ICMP echo request, an ARP request, ports 49152 -> 9, as conntrack cannot key port 0), so
the flows are judged on the fields OVS itself extracts from that frame
(model.flowsim.packet_fields).

`explain` reads the events of a traced packet (model.flowsim.Switch.trace) with the names
the databases give to cookies, ports and ACLs, and says what happened: each step (table,
priority, match, actions, whose flow it is) and the verdict -- delivered to a VIF, sent
through a tunnel to a chassis or to the physical network, handed to the agent, or dropped,
and why (the blocking flows of a port pending here, an ACL by name, port security, ...).
"""

from __future__ import annotations

import ipaddress
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from liveport.model import acl as acls
from liveport.model import cookies, packets
from liveport.model.addr import Mac
from liveport.model.cookies import Kind
from liveport.model.errors import InvalidInput
from liveport.model.expr import MatchSyntaxError, parse_match
from liveport.model.expr.tree import And, Compare, IntValue, StrValue
from liveport.model.flows import (
    ETH_ARP,
    ETH_IPV4,
    ETH_IPV6,
    ETH_RARP,
    Controller,
    Ct,
    Flow,
    Output,
    OutputReg,
    Resubmit,
)
from liveport.model.flowsim import Event
from liveport.model.pipeline import Table, parse_activation_userdata
from liveport.model.untrusted import escape

IPPROTO = {"icmp4": 1, "tcp": 6, "udp": 17, "icmp6": 58, "sctp": 132}
# Protocol names a description may use bare ("udp"), and what each says of the packet.
PROTOCOLS: Mapping[str, tuple[str | None, str | None]] = {
    "ip4": ("ip4", None),
    "ip6": ("ip6", None),
    "ip": (None, None),
    "arp": ("arp", None),
    "rarp": ("rarp", None),
    "tcp": (None, "tcp"),
    "udp": (None, "udp"),
    "sctp": (None, "sctp"),
    "icmp4": ("ip4", "icmp4"),
    "icmp6": ("ip6", "icmp6"),
    "icmp": (None, "icmp"),
    "nd_ns": ("ip6", "icmp6"),
    "nd_na": ("ip6", "icmp6"),
}
# Fields a description may give, with the layer 3 and layer 4 protocol each implies.
FIELDS: Mapping[str, tuple[str | None, str | None]] = {
    "eth.src": (None, None),
    "eth.dst": (None, None),
    "eth.type": (None, None),
    "ip.proto": (None, None),
    "ip.ttl": (None, None),
    "ip.dscp": (None, None),
    "ip.ecn": (None, None),
    "ip4.src": ("ip4", None),
    "ip4.dst": ("ip4", None),
    "ip6.src": ("ip6", None),
    "ip6.dst": ("ip6", None),
    "ip6.label": ("ip6", None),
    "icmp4.type": ("ip4", "icmp4"),
    "icmp4.code": ("ip4", "icmp4"),
    "icmp6.type": ("ip6", "icmp6"),
    "icmp6.code": ("ip6", "icmp6"),
    "nd.target": ("ip6", "icmp6"),
    "nd.sll": ("ip6", "icmp6"),
    "nd.tll": ("ip6", "icmp6"),
    "arp.op": ("arp", None),
    "arp.sha": ("arp", None),
    "arp.spa": ("arp", None),
    "arp.tha": ("arp", None),
    "arp.tpa": ("arp", None),
    "rarp.op": ("rarp", None),
    "rarp.sha": ("rarp", None),
    "rarp.spa": ("rarp", None),
    "rarp.tha": ("rarp", None),
    "rarp.tpa": ("rarp", None),
    "tcp.src": (None, "tcp"),
    "tcp.dst": (None, "tcp"),
    "tcp.flags": (None, "tcp"),
    "udp.src": (None, "udp"),
    "udp.dst": (None, "udp"),
    "sctp.src": (None, "sctp"),
    "sctp.dst": (None, "sctp"),
}
ETH_TYPES = {"ip4": ETH_IPV4, "ip6": ETH_IPV6, "arp": ETH_ARP, "rarp": ETH_RARP}
TCP_SYN = 0x002
DEFAULT_SOURCE_PORT, DEFAULT_DESTINATION_PORT = 49152, 9  # an ephemeral port; discard
ICMP4_ECHO, ICMP6_ECHO, ND_NS, ND_NA = 8, 128, 135, 136
ALL_NODES = ipaddress.IPv6Address("ff02::1")


@dataclass(frozen=True)
class Packet:
    """A described packet: the fields given (by match-language name), the layer 3 and 4
    protocols they imply, and the logical inport if the description names one."""

    values: Mapping[str, int]
    l3: str | None = None  # ip4, ip6, arp, rarp
    l4: str | None = None  # tcp, udp, sctp, icmp4, icmp6
    inport: str | None = None
    nd: int | None = None  # 135 or 136 when the description says nd_ns / nd_na

    def get(self, name: str, default: int = 0) -> int:
        return self.values.get(name, default)

    def describe(self) -> str:
        """The packet in the comma form (what parse_packet reads back)."""
        items = [f'inport="{self.inport}"'] if self.inport is not None else []
        if self.nd is not None:
            items.append("nd_ns" if self.nd == ND_NS else "nd_na")
        elif self.l4 is not None:
            items.append(self.l4)
        elif self.l3 is not None:
            items.append(self.l3)
        for name, value in self.values.items():
            items.append(f"{name}={_format(name, value)}")
        return ", ".join(items)

    def to_json(self) -> dict[str, Any]:
        return {
            "inport": self.inport,
            "l3": self.l3,
            "l4": self.l4,
            "fields": {name: _format(name, value) for name, value in self.values.items()},
        }


def _format(name: str, value: int) -> str:
    if name in ("eth.src", "eth.dst", "nd.sll", "nd.tll") or name.endswith((".sha", ".tha")):
        return str(Mac(value))
    if name in ("ip4.src", "ip4.dst") or name.endswith((".spa", ".tpa")):
        return str(ipaddress.IPv4Address(value))
    if name in ("ip6.src", "ip6.dst", "nd.target"):
        return str(ipaddress.IPv6Address(value))
    if name in ("eth.type", "tcp.flags"):
        return f"{value:#x}"
    return str(value)


_MATCH_OPERATORS = re.compile(r"==|!=|<|>|&&|\|\||!")


def _as_match(text: str) -> str:
    """The comma form rewritten in the match language (the match language as it is)."""
    if _MATCH_OPERATORS.search(text):
        return text
    terms = []
    for written in text.split(","):
        item = written.strip()
        if not item:
            raise InvalidInput(f"packet description {text!r}: an empty item between commas")
        name, sep, value = item.partition("=")
        terms.append(f"{name.strip()} == {value.strip()}" if sep else item)
    return " && ".join(terms)


@dataclass
class _Reading:
    """What the terms of a description said so far."""

    values: dict[str, int] = field(default_factory=dict)
    l3: set[str] = field(default_factory=set)
    l4: set[str] = field(default_factory=set)
    inport: str | None = None
    nd: int | None = None

    def implies(self, protocols: tuple[str | None, str | None]) -> None:
        proto3, proto4 = protocols
        self.l3 |= {proto3} if proto3 else set()
        self.l4 |= {proto4} if proto4 else set()

    def term(self, term: object) -> None:
        if not isinstance(term, Compare) or not term.field.whole:
            raise InvalidInput(
                f"packet description: {term} is not a field == value term (a packet has one "
                "value per field: no ||, !, ranges or bit slices)"
            )
        name = term.field.name
        if term.implicit:
            if name not in PROTOCOLS:
                raise InvalidInput(f"packet description: {name} is not a protocol a packet can be")
            self.implies(PROTOCOLS[name])
            if name in ("nd_ns", "nd_na"):
                self.nd = ND_NS if name == "nd_ns" else ND_NA
            return
        if term.op != "==" or len(term.values) != 1:
            raise InvalidInput(f"packet description: {term}: give one value with ==")
        value = term.values[0]
        if name == "inport":
            if not isinstance(value, StrValue):
                raise InvalidInput("packet description: inport takes a port name in quotes")
            self.inport = value.value
            return
        if name not in FIELDS:
            raise InvalidInput(f"packet description: a packet's {name} cannot be given")
        if not isinstance(value, IntValue) or value.mask is not None:
            raise InvalidInput(f"packet description: {term}: give one exact value, no mask")
        if name in self.values and self.values[name] != value.value:
            raise InvalidInput(f"packet description: {name} is given two values")
        self.values[name] = value.value
        self.implies(FIELDS[name])


def parse_packet(text: str) -> Packet:
    """A packet description (either form); InvalidInput naming the first term that is not
    `field == value` with a single exact value, or that contradicts another."""
    if not text.strip():
        raise InvalidInput("the packet description is empty")
    try:
        tree = parse_match(_as_match(text))
    except MatchSyntaxError as exc:
        raise InvalidInput(f"packet description: {exc}") from None
    reading = _Reading()
    for term in tree.operands if isinstance(tree, And) else (tree,):
        reading.term(term)
    values, l3 = reading.values, reading.l3
    l4_name = _one(reading.l4, "transport protocols")
    if l4_name == "icmp":
        l4_name = "icmp6" if "ip6" in l3 else "icmp4"
    if l4_name in ("icmp4", "icmp6"):
        l3.add("ip4" if l4_name == "icmp4" else "ip6")
    l3_name = _one(l3, "network protocols")
    if l4_name is not None and l3_name is None:
        l3_name = "ip4"  # udp alone: over IPv4
    if l3_name in ("arp", "rarp") and l4_name is not None:
        raise InvalidInput(f"packet description: {l3_name} does not carry {l4_name}")
    if l3_name is None and "ip.proto" in values:
        l3_name = "ip4"
    _check_consistent(values, l3_name, l4_name)
    return Packet(values, l3_name, l4_name, reading.inport, reading.nd)


def _one(names: set[str], what: str) -> str | None:
    if len(names) > 1:
        raise InvalidInput(
            f"packet description: a packet has one of the {what}, not {' and '.join(sorted(names))}"
        )
    return next(iter(names), None)


def _check_consistent(values: Mapping[str, int], l3: str | None, l4: str | None) -> None:
    eth_type = values.get("eth.type")
    if eth_type is not None and l3 is not None and eth_type != ETH_TYPES[l3]:
        raise InvalidInput(f"packet description: eth.type {eth_type:#x} is not {l3}'s")
    proto = values.get("ip.proto")
    if proto is not None and l4 is not None and proto != IPPROTO[l4]:
        raise InvalidInput(f"packet description: ip.proto {proto} is not {l4}'s")
    if l3 not in ("ip4", "ip6"):
        for name in ("ip.ttl", "ip.dscp", "ip.ecn", "ip.proto"):
            if name in values:
                raise InvalidInput(f"packet description: {name} needs an IP packet")
    for name, limit in (("ip.ttl", 255), ("ip.dscp", 63), ("ip.ecn", 3), ("ip.proto", 255)):
        if values.get(name, 0) > limit:
            raise InvalidInput(f"packet description: {name} is at most {limit}")


# ----- the frame ------------------------------------------------------------------------------


def build_frame(packet: Packet) -> bytes:
    """The Ethernet frame the packet stands for (at least 60 bytes, as on a wire)."""
    p = packet
    eth = Mac(p.get("eth.dst")).packed + Mac(p.get("eth.src")).packed
    if p.l3 in ("arp", "rarp"):
        prefix = p.l3
        default_op = 1 if p.l3 == "arp" else 3
        body = struct.pack("!HHBBH", 1, ETH_IPV4, 6, 4, p.get(f"{prefix}.op", default_op))
        body += Mac(p.get(f"{prefix}.sha", p.get("eth.src"))).packed
        body += struct.pack("!I", p.get(f"{prefix}.spa"))
        # A reverse request asks about its own MAC (RFC 903), as QEMU's announcement does.
        tha = p.get(f"{prefix}.tha", p.get("eth.src") if p.l3 == "rarp" else 0)
        body += Mac(tha).packed + struct.pack("!I", p.get(f"{prefix}.tpa"))
        frame = eth + struct.pack("!H", ETH_TYPES[p.l3]) + body
    elif p.l3 in ("ip4", "ip6"):
        frame = eth + struct.pack("!H", ETH_TYPES[p.l3]) + _ip(p)
    else:
        frame = eth + struct.pack("!H", p.get("eth.type", 0x88B5))  # a local experimental type
    return frame.ljust(60, b"\x00")


def _ip(p: Packet) -> bytes:
    v6 = p.l3 == "ip6"
    proto = IPPROTO[p.l4] if p.l4 is not None else p.get("ip.proto", 253)  # 253: testing
    src = p.get("ip6.src" if v6 else "ip4.src").to_bytes(16 if v6 else 4, "big")
    dst = p.get("ip6.dst" if v6 else "ip4.dst").to_bytes(16 if v6 else 4, "big")
    if p.l4 == "icmp6" and p.nd is not None and "ip6.dst" not in p.values:
        dst = ALL_NODES.packed
    ttl = p.get("ip.ttl", 255 if p.nd is not None else 64)
    tos = p.get("ip.dscp") << 2 | p.get("ip.ecn")
    segment = _segment(p, proto)
    if v6:
        pseudo = src + dst + struct.pack("!I3xB", len(segment), proto)
    else:
        pseudo = src + dst + struct.pack("!xBH", proto, len(segment))
    at = {6: 16, 17: 6, 58: 2}.get(proto)
    if at is not None and len(segment) >= at + 2:
        csum = packets.checksum(pseudo + segment) or (0xFFFF if proto == 17 else 0)
        segment = segment[:at] + struct.pack("!H", csum) + segment[at + 2 :]
    if v6:
        first = 6 << 28 | tos << 20 | p.get("ip6.label")
        return struct.pack("!IHBB", first, len(segment), proto, ttl) + src + dst + segment
    header = struct.pack("!BBHHHBBH", 0x45, tos, 20 + len(segment), 0, 0x4000, ttl, proto, 0)
    header += src + dst
    header = header[:10] + struct.pack("!H", packets.checksum(header)) + header[12:]
    return header + segment


def _segment(p: Packet, proto: int) -> bytes:
    if p.l4 in ("tcp", "udp", "sctp"):
        # Connection tracking cannot key a port 0 (OVS): unsaid ports are real ones.
        src = p.get(f"{p.l4}.src", DEFAULT_SOURCE_PORT)
        dst = p.get(f"{p.l4}.dst", DEFAULT_DESTINATION_PORT)
        if p.l4 == "tcp":
            flags = p.get("tcp.flags", TCP_SYN)
            return struct.pack("!HHIIHHHH", src, dst, 0, 0, 5 << 12 | flags, 0xFFFF, 0, 0)
        if p.l4 == "udp":
            return struct.pack("!HHHH", src, dst, 8, 0)
        return struct.pack("!HHII", src, dst, 0, 0)
    if p.l4 == "icmp4":
        message = struct.pack("!BBHI", p.get("icmp4.type", ICMP4_ECHO), p.get("icmp4.code"), 0, 0)
        return message[:2] + struct.pack("!H", packets.checksum(message)) + message[4:]
    if p.l4 == "icmp6":
        kind = p.get("icmp6.type", p.nd or (ND_NS if "nd.target" in p.values else ICMP6_ECHO))
        message = struct.pack("!BBHI", kind, p.get("icmp6.code"), 0, 0)
        if kind in (ND_NS, ND_NA):
            if kind == ND_NA:
                message = message[:4] + struct.pack("!I", 0x20000000)  # override
            message += p.get("nd.target").to_bytes(16, "big")
            option, mac = (1, "nd.sll") if kind == ND_NS else (2, "nd.tll")
            if mac in p.values or kind == ND_NA:
                message += struct.pack("!BB", option, 1) + Mac(p.get(mac, p.get("eth.src"))).packed
        return message
    return b""


# ----- names ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AclInfo:
    """An SB ACL as far as a trace names it."""

    key: int
    direction: str
    priority: int
    action: str
    match: str
    name: str = ""
    datapaths: frozenset[int] = frozenset()  # tunnel keys of the switches it applies to

    @property
    def label(self) -> str:
        """Escaped: ACL names and matches come from the NB as the cloud wrote them."""
        named = f"ACL {escape(repr(self.name), 200)}" if self.name else f"ACL key {self.key}"
        return (
            f"{named} ({self.direction} priority {self.priority} {self.action} "
            f"{escape(repr(self.match), 300)})"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name or None,
            "direction": self.direction,
            "priority": self.priority,
            "action": self.action,
            "match": self.match,
        }


@dataclass(frozen=True)
class Names:
    """What the databases call the numbers a trace meets."""

    ports: Mapping[tuple[int, int], str] = field(default_factory=dict)  # (dp key, key)
    switches: Mapping[int, str] = field(default_factory=dict)  # dp key -> logical switch
    acls: Sequence[AclInfo] = ()
    vifs: Mapping[int, str] = field(default_factory=dict)  # ofport -> iface-id
    tunnels: Mapping[int, str] = field(default_factory=dict)  # ofport -> chassis
    uplinks: Mapping[int, str] = field(default_factory=dict)  # ofport -> physical network

    def port(self, dp: int, key: int) -> str:
        return self.ports.get((dp, key), f"port key {key} of datapath key {dp}")

    def switch(self, dp: int) -> str:
        return self.switches.get(dp, f"datapath key {dp}")


@dataclass(frozen=True)
class Owner:
    """Whose flow it is, from its cookie (model.cookies)."""

    kind: str  # pipeline, datapath, port, activation, learned, acl, carried, foreign
    switch: str | None = None
    port: str | None = None
    direction: str | None = None

    def text(self) -> str:
        switch = f"switch {escape(self.switch, 100)}" if self.switch is not None else ""
        port = f"port {escape(self.port, 100)}" if self.port is not None else ""
        return {
            "pipeline": "liveport's pipeline",
            "datapath": switch,
            "port": port,
            "activation": f"{port}: blocking/activation flows of a pending migration destination",
            "learned": f"{port}: learned at its activation (the VM's announcement)",
            "acl": f"{self.direction} ACLs of {switch}",
            "carried": f"{port}: connections carried over from the migration source",
            "foreign": "not liveport's",
        }[self.kind]

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "switch": self.switch,
            "port": self.port,
            "direction": self.direction,
        }


_KIND_NAMES = {
    Kind.PIPELINE: "pipeline",
    Kind.DATAPATH: "datapath",
    Kind.PORT: "port",
    Kind.ACTIVATION: "activation",
    Kind.LEARNED: "learned",
    Kind.ACL: "acl",
    Kind.CARRIED: "carried",
}
_ACL_DIRECTIONS = {
    v: str(k) for k, v in {acls.Direction.FROM_LPORT: 1, acls.Direction.TO_LPORT: 2}.items()
}


def decode_cookie(value: int, names: Names) -> Owner:
    found = cookies.decode(value)
    if found is None:
        return Owner("foreign")
    kind = _KIND_NAMES[found.kind]
    if found.kind is Kind.PIPELINE:
        return Owner(kind)
    switch = names.switch(found.dp_key)
    if found.kind is Kind.DATAPATH:
        return Owner(kind, switch)
    if found.kind is Kind.ACL:
        direction = _ACL_DIRECTIONS.get(found.port_key, f"stage {found.port_key}")
        return Owner(kind, switch, direction=direction)
    return Owner(kind, switch, names.port(found.dp_key, found.port_key))


def deciding_acls(flow: Flow, fields: Mapping[str, int], names: Names) -> list[AclInfo]:
    """The ACLs an ACL stage's flow may come from: the one its conjunction id names, else
    those of its switch, direction and priority (several if they share it)."""
    found = cookies.decode(flow.cookie)
    if found is None or found.kind is not Kind.ACL:
        return []
    direction = _ACL_DIRECTIONS.get(found.port_key)
    conj_id = fields.get("conj_id")
    if conj_id:
        return [a for a in names.acls if a.key == conj_id >> 8]
    priority = flow.priority - acls.PRIORITY_OFFSET
    return [
        a
        for a in names.acls
        if a.direction == direction
        and a.priority == priority
        and (not a.datapaths or found.dp_key in a.datapaths)
    ]


# ----- steps and the verdict ------------------------------------------------------------------


def table_name(table: int) -> str:
    try:
        return Table(table).name
    except ValueError:
        return f"table {table}"


@dataclass(frozen=True)
class Step:
    depth: int
    table: int
    flow: Flow | None
    owner: Owner | None
    fields: Mapping[str, int]
    inport: str | None = None
    outport: str | None = None
    acl: tuple[AclInfo, ...] = ()

    def to_json(self) -> dict[str, Any]:
        f = self.flow
        return {
            "depth": self.depth,
            "table": self.table,
            "table_name": table_name(self.table),
            "priority": f.priority if f else None,
            "match": str(f.match) if f else None,
            "actions": _actions(f) if f else None,
            "cookie": f"{f.cookie:#x}" if f else None,
            "owner": self.owner.to_json() if self.owner else None,
            "inport": self.inport,
            "outport": self.outport,
            "acls": [a.to_json() for a in self.acl],
            "registers": dict(self.fields),
        }


def _actions(flow: Flow) -> str:
    return str(flow).rpartition(",actions=")[2]


@dataclass(frozen=True)
class Destination:
    kind: str  # vif, tunnel, uplink, ofport
    ofport: int
    name: str | None = None  # the port, the chassis or the network
    tunnel_id: int = 0

    def text(self, names: Names) -> str:
        name = escape(self.name, 100) if self.name is not None else ""
        if self.kind == "vif":
            return f"output to port {name} (its VIF, ofport {self.ofport})"
        if self.kind == "tunnel":
            switch = escape(names.switch(self.tunnel_id), 100)
            return f"tunnel to chassis {name} (ofport {self.ofport}, switch {switch})"
        if self.kind == "uplink":
            return f"uplink to physical network {name} (ofport {self.ofport})"
        return f"output to ofport {self.ofport}"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "ofport": self.ofport,
            "name": self.name,
            "tunnel_id": self.tunnel_id,
        }


@dataclass(frozen=True)
class Verdict:
    """What became of the packet: `kind` output (outputs), controller (to the agent only) or
    drop; `reason` a stable word, `text` the sentence for people (escaped)."""

    kind: str
    reason: str
    text: str
    outputs: tuple[Destination, ...] = ()
    port: str | None = None
    acl: tuple[AclInfo, ...] = ()
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "reason": self.reason,
            "text": self.text,
            "outputs": [d.to_json() for d in self.outputs],
            "port": self.port,
            "acls": [a.to_json() for a in self.acl],
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Explanation:
    steps: tuple[Step, ...]
    verdict: Verdict
    events: tuple[Event, ...] = ()


@dataclass(frozen=True)
class _Drop:
    reason: str
    text: str
    port: str | None = None
    acl: tuple[AclInfo, ...] = ()


def _continues(flow: Flow) -> bool:
    """Whether the flow sends the packet anywhere (else its path ends there)."""
    return any(
        isinstance(a, Output | OutputReg | Resubmit) or (isinstance(a, Ct) and a.table is not None)
        for a in flow.actions
    )


def explain(events: Iterable[Event], names: Names) -> Explanation:
    """The steps of a traced packet and its verdict."""
    events = tuple(events)
    steps: list[Step] = []
    drops: list[_Drop] = []
    outputs: list[Destination] = []
    to_agent: list[str] = []
    classified: Flow | None = None  # the table-0 flow the packet went through last
    for event in events:
        if event.kind == "lookup":
            assert event.table is not None
            step = _step(event, names)
            steps.append(step)
            if event.table == Table.CLASSIFY and event.flow is not None:
                classified = event.flow
            if event.flow is None or not _continues(event.flow):
                drop = _why(step, classified, names)
                if drop is not None:
                    drops.append(drop)
        elif event.kind == "output":
            assert event.port is not None
            outputs.append(_destination(event, names))
        elif event.kind == "in_port":
            drops.append(_Drop("in-port", "an output to the port it came in on is skipped (OVS)"))
        elif event.kind == "controller":
            to_agent.append(_controller(event.userdata, names))
    notes = tuple(dict.fromkeys(d.text for d in drops))
    if outputs:
        text = "; ".join(d.text(names) for d in outputs)
        extra = tuple(dict.fromkeys(to_agent)) + tuple(f"a copy: {n}" for n in notes)
        verdict = Verdict("output", "forwarded", text, tuple(outputs), notes=extra)
    elif drops and drops[-1].reason == "acl-reject":
        last = drops[-1]
        verdict = Verdict("drop", last.reason, last.text, port=last.port, acl=last.acl)
    elif to_agent:
        verdict = Verdict("controller", "agent", "; ".join(dict.fromkeys(to_agent)), notes=notes)
    elif drops:
        last = drops[-1]
        verdict = Verdict(
            "drop", last.reason, last.text, port=last.port, acl=last.acl, notes=notes[:-1]
        )
    else:
        verdict = Verdict("drop", "no-action", "dropped: no flow sent it anywhere")
    return Explanation(tuple(steps), verdict, events)


def _step(event: Event, names: Names) -> Step:
    f = event.fields
    dp = f.get("metadata", 0)
    flow = event.flow
    return Step(
        event.depth,
        event.table or 0,
        flow,
        decode_cookie(flow.cookie, names) if flow is not None else None,
        f,
        names.port(dp, f["reg14"]) if dp and f.get("reg14") else None,
        names.port(dp, f["reg15"]) if dp and f.get("reg15") else None,
        tuple(deciding_acls(flow, f, names)) if flow is not None else (),
    )


def _destination(event: Event, names: Names) -> Destination:
    port = event.port or 0
    tunnel_id = event.fields.get("tunnel_id", 0)
    if port in names.vifs:
        return Destination("vif", port, names.vifs[port])
    if port in names.tunnels:
        return Destination("tunnel", port, names.tunnels[port], tunnel_id)
    if port in names.uplinks:
        return Destination("uplink", port, names.uplinks[port])
    return Destination("ofport", port)


def _controller(userdata: bytes, names: Names) -> str:
    activation = parse_activation_userdata(userdata)
    if activation is not None:
        port = escape(names.port(activation.dp_key, activation.port_key), 100)
        return (
            f"to the agent as port {port}'s {activation.strategy} announcement (it activates "
            "the port here)"
        )
    if acls.parse_reject_userdata(userdata) is not None:
        return "to the agent, which answers the rejected packet"
    return "to the agent (a DHCP request it answers)"


def _why(step: Step, classified: Flow | None, names: Names) -> _Drop | None:
    """Why a packet's path ended at this lookup (None: it ended there fine, e.g. at a flow
    that only hands it to the agent)."""
    flow, table = step.flow, step.table
    port = step.outport if table in (Table.OUTPUT, Table.DELIVER) else step.inport
    shown = escape(port, 100) if port else "?"
    pending_in = classified is not None and _kind(classified) is Kind.ACTIVATION
    if flow is None:
        if table == Table.PORT_SEC and pending_in:
            return _Drop(
                "migration-blocked",
                f"dropped by the migration blocking flows: port {shown} is pending here (the "
                "destination of a migration that has not seen the VM's announcement), so "
                "nothing from its VIF passes",
                port,
            )
        if table == Table.PORT_SEC:
            return _Drop(
                "port-security",
                f"dropped by port security: port {shown} may not send with this source "
                "(MAC, or IP where the port lists its addresses)",
                port,
            )
        if table == Table.CLASSIFY:
            return _Drop(
                "no-port",
                "dropped: nothing here knows this in_port (no logical port's VIF, or a "
                "tunnel for a switch with no port on this chassis)",
            )
        return _Drop("no-flow", f"dropped: no flow of table {table} ({table_name(table)}) matched")
    kind = _kind(flow)
    if any(isinstance(a, Controller) for a in flow.actions):
        rejected = [
            a
            for a in flow.actions
            if isinstance(a, Controller) and acls.parse_reject_userdata(a.userdata) is not None
        ]
        if rejected:
            return _acl_drop(step, "acl-reject", "rejected", port)
        return None
    if kind is Kind.ACTIVATION and table == Table.DELIVER:
        return _Drop(
            "migration-blocked",
            f"dropped by the migration blocking flow: port {shown} is pending here (the "
            "destination of a migration, waiting for the VM's announcement), so nothing is "
            "delivered to its VIF yet",
            port,
        )
    if table in (Table.ACL_IN, Table.ACL_OUT) and flow.priority >= acls.P_CARRIED:
        ct_state = flow.match.get("ct_state")
        if ct_state is not None and ct_state.value & acls.INV:
            return _Drop("ct-invalid", "dropped: connection tracking found the packet invalid")
        return _Drop(
            "ct-blocked", "dropped: a reply of a connection that a drop ACL has since blocked"
        )
    if table in (Table.ACL_IN, Table.ACL_OUT, Table.ACL_IN_PRE, Table.ACL_OUT_PRE):
        return _acl_drop(step, "acl", "dropped", port)
    if table == Table.CLASSIFY:
        return _Drop(
            "not-here",
            "dropped: the VIF is not its port's on this chassis (another chassis owns the "
            "port: standby), or the port is disabled",
            step.owner.port if step.owner else None,
        )
    if table == Table.OUTPUT and flow.priority >= 110:
        return _Drop(
            "hairpin",
            f"dropped: port {shown}'s own frame is never delivered back to it (hairpin)",
            port,
        )
    if table == Table.OUTPUT:
        return _Drop("disabled", f"dropped: port {shown} is disabled (enabled=false)", port)
    owner = step.owner.text() if step.owner else "?"
    return _Drop("drop-flow", f"dropped by a drop flow of table {table} ({owner})", port)


def _acl_drop(step: Step, reason: str, verb: str, port: str | None) -> _Drop:
    direction = step.owner.direction if step.owner else "?"
    if not step.acl:
        text = f"{verb} by an ACL ({direction}; none of the SB's ACLs has this priority)"
    elif len(step.acl) == 1:
        text = f"{verb} by {step.acl[0].label}"
    else:
        text = f"{verb} by one of {', '.join(a.label for a in step.acl)}"
    return _Drop(reason, text, port, step.acl)


def _kind(flow: Flow) -> Kind | None:
    return cookies.kind_of(flow.cookie)


def render(explanation: Explanation) -> list[str]:
    """The steps and the verdict as lines for people; every name is escaped."""
    lines = []
    for step in explanation.steps:
        indent = "  " * step.depth
        head = f"{indent}{step.table:>2} {table_name(step.table)}"
        flow = step.flow
        if flow is None:
            lines.append(f"{head}: no flow matched")
            continue
        owner = step.owner.text() if step.owner else ""
        lines.append(
            f"{head}: priority {flow.priority}, {flow.match or 'any'} -> {_actions(flow)}"
            f"   [{owner}]"
        )
        if step.acl:
            lines.append(f"{indent}     ACL: {'; '.join(a.label for a in step.acl)}")
    return lines


__all__ = [
    "AclInfo",
    "Destination",
    "Explanation",
    "Names",
    "Owner",
    "Packet",
    "Step",
    "Verdict",
    "build_frame",
    "deciding_acls",
    "decode_cookie",
    "explain",
    "parse_packet",
    "render",
]
