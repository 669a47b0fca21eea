"""The switch model: the fields it extracts from frames, OVS's conjunctive match, and
connection tracking in the pipeline (ct's fork, zones, ct_clear)."""

from __future__ import annotations

import functools
import ipaddress
import operator
import struct

import pytest

from liveport.model import packets
from liveport.model.addr import Mac
from liveport.model.errors import InvalidInput
from liveport.model.flows import (
    ETH_IPV4,
    VLAN_PRESENT,
    Conjunction,
    Ct,
    CtClear,
    CtState,
    Flow,
    FlowError,
    FlowSet,
    Load,
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


# ----- connection tracking ------------------------------------------------------------------

TRK, NEW, EST, RPL = CtState.TRK, CtState.NEW, CtState.EST, CtState.RPL
IP = {"eth_type": ETH_IPV4}


def state(*bits: CtState) -> tuple[int, int]:
    """A ct_state match on exactly these bits being set among trk, new, est, rpl."""
    value = functools.reduce(operator.or_, bits, CtState(0))
    return int(value), int(TRK | NEW | EST | RPL)


def udp_to(back: bool = False) -> dict[str, int]:
    if back:
        return packet_fields(packets.udp_datagram(B, A, IP4[1], IP4[0], 53, 5000), in_port=2)
    return packet_fields(packets.udp_datagram(A, B, *IP4, 5000, 53), in_port=1)


def firewall(*extra: Flow) -> Switch:
    """Zone 1; new connections are committed with ct_mark bit 0 and go to port 10,
    established ones to 11, replies to 12; anything else to 13."""
    return Switch(
        FlowSet.of(
            [
                Flow(
                    0, 10, match(**IP), (Load("reg12", 1, 0, 16), Ct(zone_field="reg12", table=1))
                ),
                Flow(
                    1,
                    10,
                    match(**IP, ct_state=state(TRK, NEW)),
                    (Ct(commit=True, zone=1, exec=(Load("ct_mark", 1, 0, 1),)), Output(10)),
                ),
                Flow(1, 10, match(ct_state=state(TRK, EST), ct_mark=(1, 1)), (Output(11),)),
                Flow(1, 10, match(ct_state=state(TRK, EST, RPL), ct_mark=(1, 1)), (Output(12),)),
                Flow(1, 0, match(), (Output(13),)),
                *extra,
            ]
        )
    )


def test_ct_tracks_connections_across_packets() -> None:
    sw = firewall()
    first, sw = sw.process(udp_to())
    second, sw = sw.process(udp_to(back=True))
    third, sw = sw.process(udp_to())
    assert (first.outputs, second.outputs, third.outputs) == ((10,), (12,), (11,))
    (conn,) = sw.conntrack.zone(1)
    assert (conn.orig.src_port, conn.orig.dst_port, conn.mark, conn.answered) == (5000, 53, 1, True)


def test_the_switch_a_packet_leaves_holds_the_connections_and_the_old_one_does_not() -> None:
    before = firewall()
    _, after = before.process(udp_to())
    assert len(before.conntrack) == 0 and len(after.conntrack) == 1
    assert after.flows == before.flows
    # Nothing stored or learned: the same switch.
    sw = Switch(FlowSet.of([Flow(0, 1, match(**IP), (Ct(zone=3), Output(4)))]))
    assert sw.process(udp_to())[1] is sw


def test_a_fork_runs_first_with_ct_state_and_registers_then_the_original_goes_on() -> None:
    sw = Switch(
        FlowSet.of(
            [
                Flow(0, 10, match(**IP), (Load("reg1", 5), Ct(zone=1, table=1), Output(20))),
                Flow(1, 10, match(reg1=5, ct_state=state(TRK, NEW)), (Output(10),)),
                Flow(1, 0, match(), (Output(11),)),
            ]
        )
    )
    result, _ = sw.process(udp_to())
    assert result.outputs == (10, 20)


def test_the_original_is_untracked_after_ct_with_or_without_table() -> None:
    # ofproto-dpif-xlate clears the original's ct fields (flow_clear_conntrack): a packet
    # tracked in table 1 reads -trk after ct(zone=2), as ovs-vswitchd 3.1 shows.
    extra = [
        Flow(0, 10, match(**IP), (Ct(zone=1, table=1), Resubmit(2))),
        Flow(1, 10, match(**IP, ct_state=state(TRK, NEW)), (Ct(zone=2), Resubmit(2))),
        Flow(2, 10, match(ct_state=(TRK, TRK)), (Output(21),)),
        Flow(2, 5, match(), (Output(22),)),
    ]
    sw = Switch(FlowSet.of(extra))
    assert sw.process(udp_to())[0].outputs == (22, 22)
    # A packet that came in tracked (fields set by the caller) leaves ct untracked too.
    tracked = {**udp_to(), "ct_state": TRK | EST, "ct_mark": 1}
    assert sw.process(tracked)[0].outputs == (22, 22)


def test_a_fork_sees_the_mark_its_own_commit_set_and_ct_clear_forgets_it() -> None:
    sw = Switch(
        FlowSet.of(
            [
                Flow(
                    0,
                    10,
                    match(**IP),
                    (Ct(commit=True, zone=1, table=3, exec=(Load("ct_mark", 5),)),),
                ),
                Flow(3, 10, match(ct_mark=5), (Output(11), CtClear(), Resubmit(2))),
                Flow(3, 5, match(), (Output(12),)),
                Flow(2, 10, match(ct_state=(TRK, TRK)), (Output(21),)),
                Flow(2, 8, match(ct_mark=5), (Output(20),)),
                Flow(2, 5, match(), (Output(22),)),
            ]
        )
    )
    result, after = sw.process(udp_to())
    assert result.outputs == (11, 22)
    assert after.conntrack.zone(1)[0].mark == 5


def test_the_zone_is_the_low_16_bits_of_the_register() -> None:
    sw = Switch(FlowSet.of([Flow(0, 10, match(**IP), (Load("reg3", 0x50007), Ct(True, "reg3")))]))
    _, after = sw.process(udp_to())
    assert [zone for zone, _ in after.conntrack] == [7]


def test_each_ct_of_a_packet_forks_in_turn() -> None:
    sw = Switch(
        FlowSet.of(
            [
                Flow(0, 10, match(**IP), (Ct(zone=1, table=1), Ct(zone=2, table=2), Output(30))),
                Flow(1, 10, match(), (Output(10),)),
                Flow(2, 10, match(), (Output(20),)),
            ]
        )
    )
    assert sw.process(udp_to())[0].outputs == (10, 20, 30)


@pytest.mark.parametrize(
    "flow",
    [
        Flow(0, 1, match(), (Ct(),)),
        Flow(0, 1, match(eth_type=0x806), (Ct(),)),
        Flow(0, 1, match(**IP, ct_state=(0x30, 0x30)), (Ct(commit=True),)),
        Flow(0, 1, match(**IP), (Ct(exec=(Load("ct_mark", 1),)),)),
        Flow(0, 1, match(**IP), (Ct(zone=1 << 16),)),
        Flow(0, 1, match(**IP), (Ct(zone_field="metadata"),)),
    ],
    ids=str,
)
def test_a_switch_with_a_ct_flow_ovs_refuses_raises(flow: Flow) -> None:
    with pytest.raises(FlowError):
        Switch(FlowSet.of([flow])).process(udp_to())
