"""model.carried: what a source's tracker dump says, the SB text of a carried connection
(untrusted: every refusal), and the flows a destination installs for it."""

from __future__ import annotations

import ipaddress

import pytest

from liveport.model.acl import Direction, Stage
from liveport.model.carried import Connection, carried_flows, parse_carried, parse_dump
from liveport.model.flows import Resubmit

DUMP = """\
tcp,orig=(src=10.0.0.1,dst=10.0.0.9,sport=40000,dport=22),reply=(src=10.0.0.9,dst=10.0.0.1,sport=22,dport=40000),zone=5,mark=2,protoinfo=(state=ESTABLISHED)
icmp,orig=(src=10.0.0.1,dst=10.0.0.9,id=7,type=8,code=0),reply=(src=10.0.0.9,dst=10.0.0.1,id=7,type=0,code=0),zone=5
udp,orig=(src=fd00::1,dst=fd00::9,sport=5353,dport=53),reply=(src=fd00::9,dst=fd00::1,sport=53,dport=5353)
gre,orig=(src=10.0.0.1,dst=10.0.0.9),reply=(src=10.0.0.9,dst=10.0.0.1),zone=5
garbage
"""


def test_a_dump_is_read() -> None:
    found = parse_dump(DUMP)
    assert [(t.connection.text, t.zone, t.mark) for t in found] == [
        ("tcp 10.0.0.1 40000 10.0.0.9 22", 5, 2),
        ("icmp 10.0.0.1 8 10.0.0.9 0", 5, 0),
        ("udp fd00::1 5353 fd00::9 53", 0, 0),
    ]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("tcp 10.0.0.1 1 10.0.0.9", "expected"),
        ("gre 10.0.0.1 1 10.0.0.9 2", "unknown protocol"),
        ("tcp 10.0.0.1 1 fd00::9 2", "two IP versions"),
        ("tcp 10.0.0.1 70000 10.0.0.9 2", "not a number"),
        ("tcp 10.0.0.1 -1 10.0.0.9 2", "not a number"),
        ("icmp fd00::1 8 fd00::9 0", "wrong IP version"),
        ("icmp 10.0.0.1 3 10.0.0.9 0", "not a request"),
        ("tcp 10.0.0.1 1 10.0.0.999 2", "does not appear to be"),
        ("tcp\x1b[31m 10.0.0.1 1 10.0.0.9 2", "not printable"),
        ("tcp " + "1" * 200, "too long"),
    ],
)
def test_what_a_chassis_publishes_is_checked(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_carried(text)


def test_round_trip() -> None:
    for tracked in parse_dump(DUMP):
        assert parse_carried(tracked.connection.text) == tracked.connection


STAGE_IN = Stage(Direction.FROM_LPORT, 15, 16, "reg12", (Resubmit(30),))
STAGE_OUT = Stage(Direction.TO_LPORT, 46, 47, "reg12", (Resubmit(50),))
MINE = [ipaddress.IPv4Address("10.0.0.1")]


def test_flows_admit_the_ports_own_connections_in_each_direction() -> None:
    opened = Connection(6, MINE[0], 40000, ipaddress.IPv4Address("10.0.0.9"), 22)
    accepted = Connection(6, ipaddress.IPv4Address("10.0.0.9"), 50000, MINE[0], 80)
    stranger = Connection(
        6, ipaddress.IPv4Address("10.0.0.7"), 1, ipaddress.IPv4Address("10.0.0.9"), 2
    )
    conns = [opened, accepted, stranger]
    out = carried_flows(STAGE_OUT, 1, "reg15", 3, MINE, conns, 0)
    into = carried_flows(STAGE_IN, 1, "reg14", 3, MINE, conns, 0)
    assert len(out) == len(into) == 2  # the stranger's connection is refused
    received = {(f.match.value("tcp_src"), f.match.value("tcp_dst")) for f in out}
    sent = {(f.match.value("tcp_src"), f.match.value("tcp_dst")) for f in into}
    assert received == {(22, 40000), (50000, 80)}  # what the port receives
    assert sent == {(40000, 22), (80, 50000)}  # what it sends
    assert all(f.match.value("reg15") == 3 for f in out)
