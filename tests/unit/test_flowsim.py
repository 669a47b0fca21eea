"""The switch model: the fields it extracts from frames, and OVS's conjunctive match."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from liveport.model import packets
from liveport.model.addr import Mac
from liveport.model.errors import InvalidInput
from liveport.model.flows import (
    ETH_IPV4,
    VLAN_PRESENT,
    Conjunction,
    Flow,
    FlowError,
    FlowSet,
    Output,
    Resubmit,
    match,
)
from liveport.model.flowsim import Switch, packet_fields

A, B = Mac.parse("00:00:00:00:00:01"), Mac.parse("00:00:00:00:00:02")
IP4 = ipaddress.IPv4Address("10.0.0.1"), ipaddress.IPv4Address("10.0.0.2")
IP6 = ipaddress.IPv6Address("fd00::1"), ipaddress.IPv6Address("fd00::2")
SYN = packets.TcpFlags.SYN


def _ipv4_fragment(offset_words: int, more: bool) -> bytes:
    frame = bytearray(packets.udp_datagram(A, B, *IP4, 1000, 53))
    frame[20:22] = struct.pack("!H", (0x2000 if more else 0) | offset_words)
    return bytes(frame)


def _sctp() -> bytes:
    return packets._ip_frame(
        A, B, *IP4, 132, struct.pack("!HHII", 5000, 6000, 0, 0), ttl=64, tos=0, checksum_at=None
    )


def _neighbour_solicitation() -> bytes:
    icmp = struct.pack("!BBHI", 135, 0, 0, 0) + IP6[1].packed + struct.pack("!BB", 1, 1) + A.packed
    return packets._ip_frame(A, B, *IP6, 58, icmp, ttl=255, tos=0, checksum_at=2)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        pytest.param(
            packets.tcp_segment(A, B, *IP4, 40000, 22, SYN | packets.TcpFlags.ACK, ttl=9, tos=0xB9),
            {
                "eth_type": ETH_IPV4,
                "ip_proto": 6,
                "tcp_src": 40000,
                "tcp_dst": 22,
                "tcp_flags": 0x12,
                "nw_ttl": 9,
                "ip_dscp": 0x2E,
                "ip_ecn": 1,
                "ip_frag": 0,
            },
            id="tcp over ipv4",
        ),
        pytest.param(
            packets.udp_datagram(A, B, *IP6, 546, 547, ttl=1),
            {"ip_proto": 17, "udp_src": 546, "udp_dst": 547, "nw_ttl": 1, "ipv6_flabel": 0},
            id="udp over ipv6",
        ),
        pytest.param(_sctp(), {"ip_proto": 132, "sctp_src": 5000, "sctp_dst": 6000}, id="sctp"),
        pytest.param(
            packets.icmp4_echo(A, B, *IP4),
            {"ip_proto": 1, "icmpv4_type": 8, "icmpv4_code": 0},
            id="icmpv4 echo",
        ),
        pytest.param(
            packets.icmp6_echo(A, B, *IP6, reply=True),
            {"ip_proto": 58, "icmpv6_type": 129, "icmpv6_code": 0},
            id="icmpv6 echo reply",
        ),
        pytest.param(
            _neighbour_solicitation(),
            {"icmpv6_type": 135, "ipv6_nd_target": int(IP6[1]), "ipv6_nd_sll": A.value},
            id="neighbour solicitation",
        ),
        pytest.param(
            packets.unsolicited_na(A, IP6[0]),
            {"icmpv6_type": 136, "ipv6_nd_target": int(IP6[0]), "ipv6_nd_tll": A.value},
            id="neighbour advertisement",
        ),
        pytest.param(
            packets.vlan_tagged(packets.tcp_segment(A, B, *IP4, 1, 2), vid=100, pcp=5),
            {"vlan_vid": VLAN_PRESENT | 100, "vlan_pcp": 5, "eth_type": ETH_IPV4, "tcp_dst": 2},
            id="vlan tagged",
        ),
        pytest.param(
            _ipv4_fragment(0, more=True), {"ip_frag": 1, "udp_dst": 53}, id="first fragment"
        ),
        pytest.param(_ipv4_fragment(100, more=False), {"ip_frag": 3}, id="later fragment"),
    ],
)
def test_fields_are_extracted_as_ovs_does(frame: bytes, expected: dict[str, int]) -> None:
    fields = packet_fields(frame, in_port=1)
    assert {k: fields.get(k) for k in expected} == expected


def test_later_fragments_have_no_transport_fields() -> None:
    fields = packet_fields(_ipv4_fragment(100, more=False), in_port=1)
    assert "udp_dst" not in fields and "udp_src" not in fields


def test_untagged_frames_have_no_vlan() -> None:
    assert "vlan_vid" not in packet_fields(packets.tcp_segment(A, B, *IP4, 1, 2), in_port=1)


def test_a_short_frame_is_an_error() -> None:
    with pytest.raises(InvalidInput):
        packet_fields(b"\x00" * 10, in_port=1)


# ----- conjunctive match --------------------------------------------------------------------

HIT, MISS, OTHER = Output(10), Output(20), Output(30)


def _switch(*flows: Flow) -> Switch:
    # A catch-all below everything tells "no flow" from "the default".
    return Switch(FlowSet.of([*flows, Flow(0, 0, match(), (MISS,))]))


def _out(sw: Switch, **fields: int) -> tuple[int, ...]:
    result, _ = sw.process(fields)
    return result.outputs


def _clauses(conj_id: int, priority: int = 100) -> list[Flow]:
    """reg1 in {1, 2} and reg2 in {3, 4}, as conjunction conj_id."""
    return [
        Flow(0, priority, match(reg1=1), (Conjunction(conj_id, 1, 2),)),
        Flow(0, priority, match(reg1=2), (Conjunction(conj_id, 1, 2),)),
        Flow(0, priority, match(reg2=3), (Conjunction(conj_id, 2, 2),)),
        Flow(0, priority, match(reg2=4), (Conjunction(conj_id, 2, 2),)),
    ]


@pytest.mark.parametrize(
    ("fields", "outputs"),
    [
        ({"reg1": 1, "reg2": 3}, (10,)),
        ({"reg1": 2, "reg2": 4}, (10,)),
        ({"reg1": 1, "reg2": 5}, (20,)),
        ({"reg1": 7, "reg2": 3}, (20,)),
        ({}, (20,)),
    ],
)
def test_a_conjunction_matches_when_every_clause_does(
    fields: dict[str, int], outputs: tuple[int, ...]
) -> None:
    sw = _switch(*_clauses(5), Flow(0, 100, match(conj_id=5), (HIT,)))
    assert _out(sw, **fields) == outputs


def test_an_ordinary_flow_at_the_same_priority_wins_over_a_conjunction() -> None:
    sw = _switch(
        *_clauses(5), Flow(0, 100, match(conj_id=5), (HIT,)), Flow(0, 100, match(reg3=1), (OTHER,))
    )
    assert _out(sw, reg1=1, reg2=3, reg3=1) == (30,)
    assert _out(sw, reg1=1, reg2=3) == (10,)


def test_a_conjunction_at_a_higher_priority_wins_over_an_ordinary_flow() -> None:
    sw = _switch(
        *_clauses(5), Flow(0, 100, match(conj_id=5), (HIT,)), Flow(0, 50, match(reg3=1), (OTHER,))
    )
    assert _out(sw, reg1=1, reg2=3, reg3=1) == (10,)
    assert _out(sw, reg1=1, reg3=1) == (30,)


def test_a_conjunction_without_its_conj_id_flow_counts_as_no_match() -> None:
    flows = [*_clauses(5, priority=100), *_clauses(6, priority=90)]
    sw = Switch(FlowSet.of([*flows, Flow(0, 90, match(conj_id=6), (OTHER,))]))
    assert _out(sw, reg1=1, reg2=3) == (30,)  # 5 has no flow; 6, lower, matches


def test_the_second_lookup_takes_whatever_ordinary_flow_matches_best() -> None:
    # As OVS's classifier does: the lookup with conj_id = 5 finds the catch-all, so the
    # lower conjunction 6 is never tried.
    flows = [*_clauses(5, priority=100), *_clauses(6, priority=90)]
    sw = _switch(*flows, Flow(0, 90, match(conj_id=6), (OTHER,)))
    assert _out(sw, reg1=1, reg2=3) == (20,)


def test_clauses_at_different_priorities_do_not_combine() -> None:
    flows = _clauses(5, priority=100)
    moved = [Flow(0, 90, f.match, f.actions) if f.match.get("reg2") else f for f in flows]
    sw = _switch(*moved, Flow(0, 100, match(conj_id=5), (HIT,)))
    assert _out(sw, reg1=1, reg2=3) == (20,)


def test_a_flow_may_belong_to_several_conjunctions() -> None:
    shared = Flow(0, 100, match(reg1=1), (Conjunction(5, 1, 2), Conjunction(6, 1, 2)))
    sw = _switch(
        shared,
        Flow(0, 100, match(reg2=3), (Conjunction(5, 2, 2),)),
        Flow(0, 100, match(reg3=4), (Conjunction(6, 2, 2),)),
        Flow(0, 100, match(conj_id=5), (HIT,)),
        Flow(0, 100, match(conj_id=6), (OTHER,)),
    )
    assert _out(sw, reg1=1, reg2=3) == (10,)
    assert _out(sw, reg1=1, reg3=4) == (30,)
    assert _out(sw, reg1=2, reg3=4) == (20,)


def test_the_conj_id_flow_runs_its_actions_like_any_flow() -> None:
    sw = Switch(
        FlowSet.of(
            [
                *_clauses(5),
                Flow(0, 100, match(conj_id=5), (Resubmit(1),)),
                Flow(1, 1, match(), (HIT,)),
            ]
        )
    )
    assert _out(sw, reg1=2, reg2=4) == (10,)
    assert _out(sw, reg1=2) == ()


def test_conjunction_actions_mixed_with_others_are_refused() -> None:
    sw = _switch(Flow(0, 100, match(reg1=1), (Conjunction(5, 1, 2), HIT)))
    with pytest.raises(FlowError, match="mixed"):
        _out(sw, reg1=1)
