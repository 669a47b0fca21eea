"""Connections carried across a live migration: what the source's tracker holds for the
port, as text for the SB, and the flows that admit them on the destination.

The source agent reads its port's conntrack zone (`ovs-appctl dpctl/dump-conntrack
zone=N`, parsed by `parse_dump`) and publishes the connections in the SB
(Port_Connections, one row per port and publishing chassis, at most MAX_CONNECTIONS).
The destination reads them back with `parse_carried` -- untrusted input: every field is
checked, and a connection none of whose ends is an address of the port is refused -- and
installs, per connection and direction, a flow that commits the connection's first packet
to reach its tracker with the CARRIED mark (see model.acl) and lets it pass.

ICMP "connections" (echo and its kin) are matched by type and addresses: OpenFlow cannot
match the ICMP identifier.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from liveport.model.acl import CARRIED, EST, NEW, P_CARRIED, TRK, Direction, Stage, commit
from liveport.model.flows import ETH_IPV4, ETH_IPV6, Flow, match

MAX_CONNECTIONS = 4096  # per port: what Port_Connections.connections holds
MAX_TEXT = 160  # characters per connection (the schema's bound)

PROTOCOLS = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1, "icmpv6": 58}
_PROTOCOL_NAMES = {v: k for k, v in PROTOCOLS.items()}
_PORT_FIELDS = {6: "tcp", 17: "udp", 132: "sctp"}
# ICMP requests and their replies (what conntrack tracks as a connection).
ICMP_REPLY = {8: 0, 13: 14, 15: 16, 17: 18}
ICMPV6_REPLY = {128: 129}

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, order=True)
class Connection:
    """A tracked connection in its original direction. For ICMP, sport and dport hold the
    request's type and code."""

    proto: int
    src: IpAddress
    sport: int
    dst: IpAddress
    dport: int

    @property
    def text(self) -> str:
        return f"{_PROTOCOL_NAMES[self.proto]} {self.src} {self.sport} {self.dst} {self.dport}"

    @property
    def icmp(self) -> bool:
        return self.proto in (1, 58)


def parse_carried(text: str) -> Connection:
    """A connection as Connection.text wrote it. Raises ValueError with a one-line reason."""
    if len(text) > MAX_TEXT or not text.isprintable():
        raise ValueError("not a connection (too long or not printable)")
    words = text.split()
    if len(words) != 5:
        raise ValueError(f"expected 'proto src sport dst dport', found {len(words)} words")
    name, src, sport, dst, dport = words
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}")
    return _connection(PROTOCOLS[name], src, sport, dst, dport)


def _connection(proto: int, src: str, sport: str, dst: str, dport: str) -> Connection:
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if a.version != b.version:
        raise ValueError("addresses of two IP versions")
    if (proto == 1 and a.version != 4) or (proto == 58 and a.version != 6):
        raise ValueError("ICMP of the wrong IP version")
    limit = 0xFF if proto in (1, 58) else 0xFFFF
    low, high = _number(sport, limit), _number(dport, limit)
    if proto in (1, 58) and low not in (ICMP_REPLY if proto == 1 else ICMPV6_REPLY):
        raise ValueError(f"ICMP type {low} is not a request conntrack tracks")
    return Connection(proto, a, low, b, high)


def _number(text: str, limit: int) -> int:
    if not text.isdigit() or int(text) > limit:
        raise ValueError(f"{text!r} is not a number from 0 to {limit}")
    return int(text)


_ENTRY = re.compile(
    r"^(?P<proto>\w+),orig=\((?P<orig>[^)]*)\),reply=\([^)]*\)(?P<rest>.*)$",
)


@dataclass(frozen=True)
class Tracked:
    connection: Connection
    zone: int
    mark: int


def parse_dump(text: str) -> list[Tracked]:
    """The connections of `ovs-appctl dpctl/dump-conntrack` output (lines it cannot use,
    e.g. other protocols, are skipped)."""
    out: list[Tracked] = []
    for line in text.splitlines():
        found = _ENTRY.match(line.strip())
        if found is None or found["proto"] not in PROTOCOLS:
            continue
        fields = dict(part.split("=", 1) for part in found["orig"].split(",") if "=" in part)
        rest = dict(part.split("=", 1) for part in found["rest"].split(",") if "=" in part)
        proto = PROTOCOLS[found["proto"]]
        try:
            if proto in (1, 58):
                conn = _connection(
                    proto, fields["src"], fields["type"], fields["dst"], fields["code"]
                )
            else:
                conn = _connection(
                    proto, fields["src"], fields["sport"], fields["dst"], fields["dport"]
                )
            zone = int(rest.get("zone", "0"))
            mark = int(rest.get("mark", "0"))
        except (KeyError, ValueError):
            continue
        out.append(Tracked(conn, zone, mark))
    return out


def carried_flows(
    stage: Stage,
    dp: int,
    port_field: str,
    port_key: int,
    addresses: Iterable[IpAddress],
    connections: Sequence[Connection],
    cookie_value: int,
) -> list[Flow]:
    """The flows that admit a port's carried connections in one direction's ACL stage:
    packets the port sends (from-lport) or receives (to-lport) that belong to one of them
    and that the tracker sees as new are committed with the CARRIED mark and pass.
    Connections none of whose ends is one of the port's addresses are left out."""
    mine = frozenset(addresses)
    out: list[Flow] = []
    sends = stage.direction is Direction.FROM_LPORT
    keep = (commit(stage.zone_field, CARRIED, 2), *stage.accept)
    for conn in sorted(set(connections)):
        if conn.src in mine:
            orig = sends  # the port opened it: what it sends is in the original direction
        elif conn.dst in mine:
            orig = not sends
        else:
            continue
        fields = _packet_fields(conn, orig)
        out.append(
            Flow(
                stage.table,
                P_CARRIED,
                match(
                    metadata=dp,
                    **{port_field: port_key},
                    ct_state=(NEW | TRK, NEW | EST | TRK),
                    **fields,
                ),
                keep,
                cookie_value,
            )
        )
    return out


def _packet_fields(conn: Connection, orig: bool) -> dict[str, int]:
    v4 = conn.src.version == 4
    src, dst = (conn.src, conn.dst) if orig else (conn.dst, conn.src)
    fields = {
        "eth_type": ETH_IPV4 if v4 else ETH_IPV6,
        "ip_proto": conn.proto,
        ("ipv4_src" if v4 else "ipv6_src"): int(src),
        ("ipv4_dst" if v4 else "ipv6_dst"): int(dst),
    }
    if conn.icmp:
        kind = "icmpv4" if conn.proto == 1 else "icmpv6"
        replies = ICMP_REPLY if conn.proto == 1 else ICMPV6_REPLY
        fields[f"{kind}_type"] = conn.sport if orig else replies[conn.sport]
        fields[f"{kind}_code"] = conn.dport
    else:
        name = _PORT_FIELDS[conn.proto]
        sport, dport = (conn.sport, conn.dport) if orig else (conn.dport, conn.sport)
        fields[f"{name}_src"], fields[f"{name}_dst"] = sport, dport
    return fields
