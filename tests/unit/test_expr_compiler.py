"""Compiled matches, run in the switch model: which frames they let through."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from liveport.model import packets
from liveport.model.addr import Mac
from liveport.model.expr import (
    MatchContext,
    compile_acl_match,
    describe,
    merge_flows,
)
from liveport.model.flows import (
    ETH_IPV4,
    Conjunction,
    Flow,
    FlowError,
    FlowSet,
    Output,
    match,
)
from liveport.model.flowsim import Switch, packet_fields
from liveport.openflow import encode

A, B = Mac.parse("00:00:00:00:00:01"), Mac.parse("00:00:00:00:00:02")
V4 = [ipaddress.IPv4Address(f"10.0.0.{i}") for i in range(256)]
V6 = [ipaddress.IPv6Address(f"fd00::{i:x}") for i in range(256)]
OUTSIDE = ipaddress.IPv4Address("192.168.0.1")
ALLOW, DEFAULT = Output(1), Output(2)
SYN, ACK = packets.TcpFlags.SYN, packets.TcpFlags.ACK

CTX = MatchContext(
    address_sets={
        "as1": frozenset({"10.0.0.1", "10.0.0.2"}),
        "as10": frozenset(f"10.0.0.{i}" for i in range(1, 21, 2)),  # ten odd addresses
        "empty": frozenset(),
        "net": frozenset({"10.0.0.0/24", "10.0.1.0/24"}),
        "v6": frozenset({"fd00::1", "fd00::2"}),
    },
    port_groups={"pg1": frozenset({"p1", "p2", "ghost"}), "none": frozenset()},
    ports={"p1": 1, "p2": 2, "p3": 3},
)


def tcp(dst: int, src_ip: ipaddress.IPv4Address = V4[1], **kw: object) -> bytes:
    return packets.tcp_segment(A, B, src_ip, V4[200], 40000, dst, **kw)  # type: ignore[arg-type]


def udp(dst: int, src: int = 1000, dst_ip: ipaddress.IPv4Address = V4[200]) -> bytes:
    return packets.udp_datagram(A, B, V4[1], dst_ip, src, dst)


def tcp6(dst: int) -> bytes:
    return packets.tcp_segment(A, B, V6[1], V6[2], 40000, dst)


def proto(number: int) -> bytes:
    return packets._ip_frame(
        A, B, V4[1], V4[2], number, b"\x00" * 8, ttl=64, tos=0, checksum_at=None
    )


def arp() -> bytes:
    return packets.arp_request(A, V4[1], V4[2])


def compile_switch(
    text: str,
    ctx: MatchContext = CTX,
    *,
    use_conjunction: bool = True,
    base: dict[str, int | tuple[int, int]] | None = None,
) -> Switch:
    compiled = compile_acl_match(text, ctx)
    flows = compiled.flows(
        0, 100, (ALLOW,), base_fields=base, conj_id=7, use_conjunction=use_conjunction
    )
    return Switch(FlowSet.of([*flows, Flow(0, 0, match(), (DEFAULT,))]))


def allowed(sw: Switch, frame: bytes, **fields: int) -> bool:
    packet = packet_fields(frame, in_port=9)
    packet.update(fields)
    result, _ = sw.process(packet)
    assert result.outputs in ((1,), (2,))
    return result.outputs == (1,)


# (match, [(frame, extra fields the pipeline would have set, allowed?)])
Row = tuple[bytes, dict[str, int], bool]
CASES: list[tuple[str, list[Row]]] = [
    # Neutron: ingress to port p1 from a remote group, TCP 22.
    (
        'outport == "p1" && ip4 && ip4.src == $as1 && tcp && tcp.dst == 22',
        [
            (tcp(22, V4[1]), {"reg15": 1}, True),
            (tcp(22, V4[2]), {"reg15": 1}, True),
            (tcp(22, V4[3]), {"reg15": 1}, False),
            (tcp(23, V4[1]), {"reg15": 1}, False),
            (tcp(22, V4[1]), {"reg15": 2}, False),
            (udp(22), {"reg15": 1}, False),
            (tcp6(22), {"reg15": 1}, False),
        ],
    ),
    (
        "inport == @pg1 && ip4",
        [
            (udp(53), {"reg14": 1}, True),
            (udp(53), {"reg14": 2}, True),
            (udp(53), {"reg14": 3}, False),
            (arp(), {"reg14": 1}, False),
        ],
    ),
    (
        "tcp.dst >= 1000 && tcp.dst <= 2000",
        [
            (tcp(999), {}, False),
            (tcp(1000), {}, True),
            (tcp(1500), {}, True),
            (tcp(2000), {}, True),
            (tcp(2001), {}, False),
            (tcp6(1234), {}, True),
            (udp(1500), {}, False),
        ],
    ),
    (
        "icmp4 && icmp4.type == 8 && icmp4.code == 0",
        [
            (packets.icmp4_echo(A, B, V4[1], V4[2]), {}, True),
            (packets.icmp4_echo(A, B, V4[1], V4[2], reply=True), {}, False),
            (packets.icmp6_echo(A, B, V6[1], V6[2]), {}, False),
        ],
    ),
    (
        "ip6 && icmp6.type == {128, 133, 135, 136}",
        [
            (packets.icmp6_echo(A, B, V6[1], V6[2]), {}, True),
            (packets.icmp6_echo(A, B, V6[1], V6[2], reply=True), {}, False),
            (packets.unsolicited_na(A, V6[1]), {}, True),
            (packets.icmp4_echo(A, B, V4[1], V4[2]), {}, False),
        ],
    ),
    (
        "icmp",
        [
            (packets.icmp6_echo(A, B, V6[1], V6[2]), {}, True),
            (packets.icmp4_echo(A, B, V4[1], V4[2]), {}, True),
            (udp(1), {}, False),
        ],
    ),
    (
        "ip4.dst == {255.255.255.255, 10.0.0.0/24} && udp && udp.src == 68 && udp.dst == 67",
        [
            (udp(67, 68, ipaddress.IPv4Address("255.255.255.255")), {}, True),
            (udp(67, 68, V4[77]), {}, True),
            (udp(67, 68, OUTSIDE), {}, False),
            (udp(68, 67, V4[77]), {}, False),
        ],
    ),
    (
        "ct.est && !ct.rel",
        [
            (udp(1), {"ct_state": 0x22}, True),  # +trk+est
            (udp(1), {"ct_state": 0x2A}, True),  # +trk+est+rpl
            (udp(1), {"ct_state": 0x26}, False),  # +trk+est+rel
            (udp(1), {"ct_state": 0x02}, False),  # not tracked
            (udp(1), {"ct_state": 0x21}, False),  # +trk+new
        ],
    ),
    (
        "ip.proto == 112",
        [(proto(112), {}, True), (proto(113), {}, False), (arp(), {}, False)],
    ),
    (
        "eth.src == 00:00:00:00:00:01/ff:ff:ff:00:00:00",
        [
            (arp(), {}, True),
            (packets.arp_request(Mac.parse("00:00:00:99:99:99"), V4[1], V4[2]), {}, True),
            (packets.arp_request(Mac.parse("00:00:01:00:00:01"), V4[1], V4[2]), {}, False),
        ],
    ),
    (
        "ip4.src == 0.0.0.0/0",
        [(udp(1), {}, True), (tcp6(1), {}, False), (arp(), {}, False)],
    ),
    # A negated comparison keeps its prerequisites: !(tcp.dst == 80) is TCP to another port.
    (
        "!(tcp.dst == 80)",
        [(tcp(80), {}, False), (tcp(81), {}, True), (tcp(0), {}, True), (udp(81), {}, False)],
    ),
    (
        "!(tcp.dst == 80 || tcp.dst == 443) && ip4",
        [(tcp(80), {}, False), (tcp(443), {}, False), (tcp(8080), {}, True)],
    ),
    (
        "ip4.src != {10.0.0.1, 10.0.0.2}",
        [(tcp(1, V4[1]), {}, False), (tcp(1, V4[2]), {}, False), (tcp(1, V4[3]), {}, True)],
    ),
    # Kube-OVN: allowed networks except some addresses.
    (
        "ip4.src == $net && ip4.src != $as1",
        [
            (tcp(1, V4[1]), {}, False),
            (tcp(1, V4[5]), {}, True),
            (tcp(1, ipaddress.IPv4Address("10.0.1.9")), {}, True),
            (tcp(1, OUTSIDE), {}, False),
        ],
    ),
    (
        "!(1 <= tcp.src <= 1023) && tcp.dst == 22",
        [(packets.tcp_segment(A, B, V4[1], V4[2], 1023, 22), {}, False), (tcp(22), {}, True)],
    ),
    (
        "tcp.flags == 0x2/0x12",  # SYN without ACK
        [(tcp(1, flags=SYN), {}, True), (tcp(1, flags=SYN | ACK), {}, False)],
    ),
    (
        "ip.ttl == 255 && ip.dscp == 46",
        [
            (tcp(1, ttl=255, tos=46 << 2), {}, True),
            (tcp(1, ttl=64, tos=46 << 2), {}, False),
            (tcp(1, ttl=255, tos=0), {}, False),
        ],
    ),
    # liveport keeps a negated predicate's prerequisites positive (see compiler.py).
    (
        "!ip.is_frag",
        [(udp(1), {}, True), (arp(), {}, False)],
    ),
    (
        "vlan.vid == 5",
        [
            (packets.vlan_tagged(udp(1), 5), {}, True),
            (packets.vlan_tagged(udp(1), 6), {}, False),
            (udp(1), {}, False),
        ],
    ),
    (
        "vlan.pcp == 3",
        [
            (packets.vlan_tagged(udp(1), 5, pcp=3), {}, True),
            (packets.vlan_tagged(udp(1), 5, pcp=2), {}, False),
        ],
    ),
    (
        "vlan.tci == 0",  # untagged
        [(udp(1), {}, True), (packets.vlan_tagged(udp(1), 0), {}, False)],
    ),
    (
        "!vlan.present",
        [(udp(1), {}, True), (packets.vlan_tagged(udp(1), 0), {}, False)],
    ),
    (
        "nd_na && nd.target == fd00::1",
        [
            (packets.unsolicited_na(A, V6[1]), {}, True),
            (packets.unsolicited_na(A, V6[2]), {}, False),
        ],
    ),
    (
        "eth.bcast && arp.op == 1",
        [(arp(), {}, True), (packets.arp_reply(A, V4[1], B, V4[2]), {}, False)],
    ),
    ('is_chassis_resident("p1") && ip4', [(udp(1), {}, True)]),
    ('is_chassis_resident("p2") || arp', [(udp(1), {}, False), (arp(), {}, True)]),
    ("1", [(arp(), {}, True)]),
    ("0", [(arp(), {}, False)]),
]
FLAT = [(text, f, fields, ok) for text, rows in CASES for f, fields, ok in rows]


@pytest.mark.parametrize(
    ("text", "frame", "fields", "expected"),
    FLAT,
    ids=[f"{t} #{i}" for i, (t, *_) in enumerate(FLAT)],
)
def test_a_compiled_match_lets_through_exactly_the_frames_it_describes(
    text: str, frame: bytes, fields: dict[str, int], expected: bool
) -> None:
    ctx = MatchContext(
        address_sets=CTX.address_sets,
        port_groups=CTX.port_groups,
        ports=CTX.ports,
        resident_ports=frozenset({"p1"}),
    )
    assert allowed(compile_switch(text, ctx), frame, **fields) is expected
    assert allowed(compile_switch(text, ctx, use_conjunction=False), frame, **fields) is expected


# ----- sets and ports -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "ip4.src == $empty",
        "ip4.src == $empty && tcp",
        "inport == @none",
        'outport == "nobody"',
        'outport == {"nobody", "nobody-else"} && ip4',
        "tcp.dst == 1 && tcp.dst == 2",
        "ip4 && ip6",
        "!(ip4.src == 0.0.0.0/0) && ip4",
        "0",
    ],
)
def test_a_match_that_cannot_be_true_compiles_to_no_flows(text: str) -> None:
    compiled = compile_acl_match(text, CTX)
    assert compiled.matches_nothing
    assert compiled.flows(0, 100, (ALLOW,)) == []


@pytest.mark.parametrize("text", ["ip4.src != $empty", "!(ip4.src == $empty)", "1"])
def test_not_equal_to_an_empty_set_is_true_for_every_packet_as_in_ovn(text: str) -> None:
    compiled = compile_acl_match(text, CTX)
    assert compiled.matches_everything
    assert [str(f.match) for f in compiled.flows(0, 100, (ALLOW,))] == ["*"]
    assert allowed(compile_switch(text), arp())


def test_an_empty_set_is_a_constant_even_beside_comparisons_of_its_field() -> None:
    # OVN adds ip4's prerequisite to the comparison only, not to the constant "true".
    assert compile_acl_match("ip4.src != $empty || ip4.src == 10.0.0.1", CTX).matches_everything
    compiled = compile_acl_match("ip4.src == $empty || ip4.src == 10.0.0.1", CTX)
    assert describe(compiled) == ["eth_type=0x800 & ipv4_src=0xa000001"]


def test_an_unknown_port_in_a_set_drops_only_that_port() -> None:
    sw = compile_switch('outport == {"p1", "nobody"} && ip4')
    assert allowed(sw, udp(1), reg15=1)
    assert not allowed(sw, udp(1), reg15=0)


def test_port_registers_can_be_chosen() -> None:
    ctx = MatchContext(ports={"p1": 1}, inport_field="reg6", outport_field="reg7")
    flows = compile_acl_match('inport == "p1" && outport == "p1"', ctx).flows(0, 1, ())
    assert [str(f.match) for f in flows] == ["reg6=0x1,reg7=0x1"]


# ----- conjunctive match ------------------------------------------------------------------


def test_two_large_sets_become_a_conjunctive_match() -> None:
    text = "ip4.src == $as10 && tcp.dst == {22, 80, 443, 8080, 8443}"
    compiled = compile_acl_match(text, CTX)
    assert compiled.n_conjunctions == 1
    flows = compiled.flows(0, 100, (ALLOW,), conj_id=7)
    conjunctive = [f for f in flows if isinstance(f.actions[0], Conjunction)]
    assert len(conjunctive) == 10 + 5  # instead of 50
    assert {f.actions for f in conjunctive} == {
        (Conjunction(7, 1, 2),),
        (Conjunction(7, 2, 2),),
    }
    (carrier,) = [f for f in flows if f.match.get("conj_id")]
    assert carrier.actions == (ALLOW,)
    assert str(carrier.match) == "conj_id=0x7,eth_type=0x800,ip_proto=0x6"
    multiplied = compiled.flows(0, 100, (ALLOW,), use_conjunction=False)
    assert len(multiplied) == 50


@pytest.mark.parametrize(
    ("src", "port", "expected"),
    [(V4[1], 22, True), (V4[19], 8443, True), (V4[2], 22, False), (V4[1], 23, False)],
)
def test_a_conjunctive_match_needs_every_dimension(
    src: ipaddress.IPv4Address, port: int, expected: bool
) -> None:
    sw = compile_switch("ip4.src == $as10 && tcp.dst == {22, 80, 443, 8080, 8443}")
    assert allowed(sw, tcp(port, src)) is expected


def test_small_sets_are_multiplied_out_rather_than_conjoined() -> None:
    # 2 x 2 alternatives: 4 plain flows beat 2 + 2 + 1 conjunctive ones.
    compiled = compile_acl_match("ip4.src == {10.0.0.1, 10.0.0.4} && tcp.dst == {22, 80}", CTX)
    assert compiled.n_conjunctions == 0
    assert len(compiled.flows(0, 1, (ALLOW,))) == 4


def test_each_conjunction_of_a_match_gets_its_own_id() -> None:
    text = (
        "(ip4.src == $as10 && tcp.dst == {22, 80, 443}) || "
        "(ip4.dst == $as10 && udp.dst == {53, 67, 123})"
    )
    compiled = compile_acl_match(text, CTX)
    assert compiled.n_conjunctions == 2
    flows = compiled.flows(0, 100, (ALLOW,), conj_id=40)
    assert {f.match.value("conj_id") for f in flows} - {None} == {40, 41}
    sw = Switch(FlowSet.of([*flows, Flow(0, 0, match(), (DEFAULT,))]))
    assert allowed(sw, tcp(80, V4[3]))
    assert allowed(sw, udp(53, dst_ip=V4[5]))
    assert not allowed(sw, udp(80, dst_ip=V4[5]))


def test_a_conjunctive_match_needs_conjunction_ids() -> None:
    compiled = compile_acl_match("ip4.src == $as10 && tcp.dst == {22, 80, 443}", CTX)
    with pytest.raises(ValueError, match="needs 1 conjunction ids"):
        compiled.flows(0, 100, (ALLOW,))
    with pytest.raises(ValueError, match="conjunction ids"):
        compiled.flows(0, 100, (ALLOW,), conj_id=0)


def test_three_dimensions_with_a_port_group() -> None:
    text = "outport == @pg1 && ip4.src == $as10 && tcp.dst == {22, 80, 443}"
    flows = compile_acl_match(text, CTX).flows(0, 100, (ALLOW,), conj_id=1)
    assert {a.n_clauses for f in flows for a in f.actions if isinstance(a, Conjunction)} == {3}
    sw = Switch(FlowSet.of([*flows, Flow(0, 0, match(), (DEFAULT,))]))
    assert allowed(sw, tcp(443, V4[7]), reg15=2)
    assert not allowed(sw, tcp(443, V4[7]), reg15=3)


# ----- base fields ----------------------------------------------------------------------------


def test_base_fields_are_added_to_every_flow() -> None:
    compiled = compile_acl_match("ip4.src == $as10 && tcp.dst == {22, 80, 443}", CTX)
    flows = compiled.flows(0, 100, (ALLOW,), base_fields={"metadata": 5}, conj_id=1)
    assert all(f.match.value("metadata") == 5 for f in flows)
    sw = Switch(FlowSet.of([*flows, Flow(0, 0, match(), (DEFAULT,))]))
    assert allowed(sw, tcp(22, V4[1]), metadata=5)
    assert not allowed(sw, tcp(22, V4[1]), metadata=6)


def test_base_fields_narrow_what_the_match_already_tests() -> None:
    compiled = compile_acl_match("outport == @pg1 && ip4.src == $as10 && tcp.dst == {1, 2, 3}", CTX)
    flows = compiled.flows(0, 100, (ALLOW,), base_fields={"reg15": 2}, conj_id=1)
    assert {f.match.value("reg15") for f in flows} == {2}
    assert compiled.flows(0, 100, (ALLOW,), base_fields={"reg15": 3}, conj_id=1) == []
    plain = compile_acl_match("tcp.dst == 22", CTX)
    assert plain.flows(0, 1, (), base_fields={"eth_type": ETH_IPV4}) == plain.flows(0, 1, ())[:1]


def test_base_fields_must_be_flow_fields() -> None:
    with pytest.raises(FlowError, match="unknown match field"):
        compile_acl_match("ip4", CTX).flows(0, 1, (), base_fields={"ip4.src": 1})


# ----- flows: shape, determinism, the wire ------------------------------------------------------


def test_golden_flows_of_a_neutron_rule() -> None:
    text = 'outport == "p1" && ip4 && ip4.src == 10.0.0.0/24 && tcp && tcp.dst == 22'
    flows = compile_acl_match(text, CTX).flows(44, 2002, (Output(3),), cookie=0x99)
    assert [str(f) for f in flows] == [
        "cookie=0x99,table=44,priority=2002,eth_type=0x800,ip_proto=0x6,"
        "ipv4_src=0xa000000/0xffffff00,reg15=0x1,tcp_dst=0x16,actions=output:3"
    ]


def test_golden_normal_form_of_a_range() -> None:
    assert describe(compile_acl_match("ip4 && tcp.dst >= 1000 && tcp.dst <= 2000", CTX)) == [
        "eth_type=0x800 & ip_proto=0x6 & {tcp_dst=0x400/0xfe00 | tcp_dst=0x600/0xff00 | "
        "tcp_dst=0x700/0xff80 | tcp_dst=0x780/0xffc0 | tcp_dst=0x3f0/0xfff0 | "
        "tcp_dst=0x7c0/0xfff0 | tcp_dst=0x3e8/0xfff8 | tcp_dst=0x7d0}"
    ]


def test_golden_normal_form_of_connection_tracking() -> None:
    assert describe(compile_acl_match("(ct.new && !ct.est) || ct.inv", CTX)) == [
        "{ct_state=0x21/0x23 | ct_state=0x30/0x30}",  # ct.inv implies ct.trk
    ]


def test_not_equal_gives_one_flow_per_bit_as_ovn_does() -> None:
    flows = compile_acl_match("ip4 && ip.ttl == 1 && ip4.dst != 10.0.0.1", CTX).flows(0, 1, ())
    assert len(flows) == 32


def test_the_same_match_and_context_give_identical_flows() -> None:
    text = "outport == @pg1 && ip4.src == $as10 && tcp.dst == {22, 80, 443}"
    shuffled = MatchContext(
        address_sets={"as10": frozenset(sorted(CTX.address_sets["as10"], reverse=True))},
        port_groups={"pg1": frozenset(["ghost", "p2", "p1"])},
        ports={"p2": 2, "p1": 1},
    )
    a = compile_acl_match(text, CTX).flows(0, 1, (ALLOW,), conj_id=3)
    b = compile_acl_match(text, shuffled).flows(0, 1, (ALLOW,), conj_id=3)
    assert a == b
    assert a == sorted(a, key=lambda f: f.match)


def test_compiled_matches_and_contexts_are_hashable_values() -> None:
    text = "ip4.src == $as10 && tcp.dst == {22, 80, 443}"
    assert compile_acl_match(text, CTX) == compile_acl_match(text, CTX)
    assert hash(compile_acl_match(text, CTX)) == hash(compile_acl_match(text, CTX))
    assert hash(CTX) == hash(MatchContext(CTX.address_sets, CTX.port_groups, CTX.ports))


@pytest.mark.parametrize(
    "text",
    [
        "outport == @pg1 && ip4 && ip4.src == $as10 && tcp && tcp.dst >= 1000 && tcp.dst <= 2000",
        "ip6 && ip6.src == $v6 && udp.dst == {53, 123, 546, 547}",
        "icmp4.type == 8 || icmp6.type == 128 || nd.sll == 00:00:00:00:00:01",
        "ct.est && ct_mark == 0x1/0x1 && ct_label[96..127] == 5",
        "vlan.vid == 5 && vlan.pcp == {1, 2} && ip.frag == 0x1/0x1",
        "ip6.label == 0x12345 && ip.ecn == 1 && sctp.dst == 9",
        "tcp.flags == 0x2/0x12 && tcp.src != 0",
    ],
)
def test_every_compiled_flow_survives_the_wire(text: str) -> None:
    for flow in compile_acl_match(text, CTX).flows(44, 2002, (Output(3),), 0x5, {"metadata": 1}, 9):
        mod = encode.flow_mod(flow)
        mod.serialize()
        assert encode.flow_from_mod(mod) == flow


# ----- merging the flows of several matches ------------------------------------------------------


def test_merging_unites_conjunctions_of_one_match_field() -> None:
    m = match(reg15=1)
    a = Flow(0, 5, m, (Conjunction(1, 1, 2),), cookie=9)
    b = Flow(0, 5, m, (Conjunction(2, 2, 3),), cookie=4)
    (merged,) = merge_flows([b, a])
    assert merged.actions == (Conjunction(1, 1, 2), Conjunction(2, 2, 3))
    assert merged.cookie == 4


def test_merging_lets_a_plain_flow_absorb_conjunctive_ones() -> None:
    m = match(reg15=1)
    plain = Flow(0, 5, m, (ALLOW,))
    assert merge_flows([Flow(0, 5, m, (Conjunction(1, 1, 2),)), plain]) == [plain]
    assert merge_flows([plain, Flow(0, 5, m, (Conjunction(1, 1, 2),))]) == [plain]


def test_merging_refuses_two_different_plain_flows() -> None:
    m = match(reg15=1)
    with pytest.raises(FlowError, match="two different flows"):
        merge_flows([Flow(0, 5, m, (ALLOW,)), Flow(0, 5, m, (DEFAULT,))])


def test_overlapping_alternatives_of_one_match_are_merged() -> None:
    # 10.0.0.1 appears in both conjunctions' first clause: one flow, two conjunctions.
    text = (
        "(ip4.src == {10.0.0.1, 10.0.0.3, 10.0.0.5} && tcp.dst == {1, 3, 5}) || "
        "(ip4.src == {10.0.0.1, 10.0.0.7, 10.0.0.9} && tcp.src == {1, 3, 5})"
    )
    flows = compile_acl_match(text, CTX).flows(0, 100, (ALLOW,), conj_id=1)
    shared = [f for f in flows if f.match.value("ipv4_src") == int(V4[1])]
    assert [f.actions for f in shared] == [(Conjunction(1, 1, 2), Conjunction(2, 1, 2))]


def test_a_frame_from_a_tcp_builder_reaches_an_acl_like_a_real_one() -> None:
    # The same segment, decoded by the switch model and by packets.decode.
    frame = tcp(22, V4[1], flags=SYN)
    info = packets.decode(frame)
    fields = packet_fields(frame, in_port=1)
    assert (info.dst_port, info.tcp_flags) == (fields["tcp_dst"], fields["tcp_flags"])
    assert struct.unpack("!H", frame[36:38]) == (22,)


def test_hundreds_of_exceptions_leave_the_fewest_prefixes_outside_them() -> None:
    # Kube-OVN's "allow a network except these addresses", with 300 exceptions.
    exceptions = frozenset(f"10.0.{i // 200}.{i % 200}" for i in range(0, 600, 2))
    ctx = MatchContext(address_sets={"allow": frozenset({"10.0.0.0/16"}), "except": exceptions})
    compiled = compile_acl_match("ip4.src == $allow && ip4.src != $except", ctx)
    sw = Switch(FlowSet.of([*compiled.flows(0, 1, (ALLOW,)), Flow(0, 0, match(), (DEFAULT,))]))
    for address, expected in [
        ("10.0.0.0", False),
        ("10.0.0.1", True),
        ("10.0.2.198", False),
        ("10.0.2.199", True),
        ("10.0.200.5", True),
        ("10.1.0.1", False),
    ]:
        frame = packets.udp_datagram(A, B, ipaddress.IPv4Address(address), V4[2], 1, 2)
        assert allowed(sw, frame) is expected, address
