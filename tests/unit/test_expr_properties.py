"""Property tests of the match compiler: for random expressions and random packets, the
compiled flows, run in the switch model, do what a direct evaluation of the expression
says -- with conjunctive matches and multiplied out alike.

The evaluator here reads the syntax tree the way OVN's semantics (ovn-sb(5), lib/expr.c)
define it, independently of the compiler's normal form: '!' is pushed down to the
comparisons and inverts them; a comparison holds when the field's bits compare as asked
*and* the symbol's prerequisites hold (prerequisites are never negated); a set holds for
'==' if any value does and for '!=' if all do; an empty set makes '==' false and '!='
true; a port name holds when the packet's port register has that port's key; fields a
packet does not have read as 0, as OVS's do.
"""

from __future__ import annotations

import ipaddress
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liveport.model.expr import MatchContext, compile_acl_match, parse_match
from liveport.model.expr import symbols as sym
from liveport.model.expr.normal import reduce
from liveport.model.expr.tree import (
    INVERSE,
    AddressSetRef,
    And,
    Bool,
    ChassisResident,
    Compare,
    Expr,
    FieldRef,
    IntValue,
    Not,
    Or,
    PortGroupRef,
    StrValue,
)
from liveport.model.flows import Flow, FlowSet, Output, match
from liveport.model.flowsim import Switch

CTX = MatchContext(
    address_sets={
        "as": frozenset({"10.0.0.1", "10.0.0.2/31", "192.168.0.0/16"}),
        "as6": frozenset({"fd00::1", "fd00::2"}),
        "macs": frozenset({"00:00:00:00:00:01", "00:00:00:00:00:03"}),
        "empty": frozenset(),
    },
    port_groups={"pg": frozenset({"p1", "p2", "ghost"}), "nobody": frozenset()},
    ports={"p1": 1, "p2": 2, "p3": 3},
    resident_ports=frozenset({"p1"}),
)
PORT_KEYS = {"p1": 1, "p2": 2, "p3": 3}
ALLOW, DEFAULT = Output(1), Output(2)
MAX_MULTIPLIED = 3000  # flows: beyond this the multiplied-out check is skipped (too slow)

# ----- the evaluator ---------------------------------------------------------------------------


def holds(expr: Expr, packet: dict[str, int], negated: bool = False) -> bool:
    if isinstance(expr, Bool):
        return expr.value != negated
    if isinstance(expr, ChassisResident):
        return (expr.port in CTX.resident_ports) != negated
    if isinstance(expr, Not):
        return holds(expr.operand, packet, not negated)
    if isinstance(expr, And | Or):
        results = [holds(e, packet, negated) for e in expr.operands]
        return all(results) if isinstance(expr, And) != negated else any(results)
    return _compare(expr, packet, INVERSE[expr.op] if negated else expr.op)


def _compare(node: Compare, packet: dict[str, int], op: str) -> bool:
    symbol = sym.SYMBOLS[node.field.name]
    if symbol.is_string:
        names = _names(node)
        if not names:
            return op == "!="
        register = "reg14" if symbol.name == "inport" else "reg15"
        key = packet.get(register, 0)
        return any(PORT_KEYS.get(n) == key for n in names)
    values = _integers(node)
    if not values:
        return op == "!="
    results = [_one(symbol, node.field, op, v, m, packet) for v, m in values]
    result = any(results) if op == "==" else all(results)
    return result and (symbol.prereqs is None or holds(parse_match(symbol.prereqs), packet))


def _one(
    symbol: sym.Symbol,
    field: FieldRef,
    op: str,
    value: int,
    mask: int | None,
    packet: dict[str, int],
) -> bool:
    if symbol.predicate is not None:
        positive = bool(value & 1) ^ (op == "!=")
        return holds(parse_match(symbol.predicate), packet, not positive)
    x = _read(symbol, field, packet)
    if op in ("==", "!="):
        m = (1 << field.n_bits) - 1 if mask is None else mask
        return ((x & m) == (value & m)) == (op == "==")
    return {"<": x < value, "<=": x <= value, ">": x > value, ">=": x >= value}[op]


def _read(symbol: sym.Symbol, field: FieldRef, packet: dict[str, int]) -> int:
    owner = sym.base(symbol)
    if owner.name == "vlan.tci":
        raw = 0
        if "vlan_vid" in packet:
            raw = packet["vlan_vid"] | packet["vlan_pcp"] << 13
    else:
        assert owner.openflow is not None
        raw = packet.get(owner.openflow, 0)
    return raw >> (symbol.ofs + field.ofs) & ((1 << field.n_bits) - 1)


def _names(node: Compare) -> set[str]:
    out = set()
    for value in node.values:
        if isinstance(value, StrValue):
            out.add(value.value)
        elif isinstance(value, PortGroupRef):
            out |= CTX.port_groups[value.name]
    return out


def _integers(node: Compare) -> list[tuple[int, int | None]]:
    out: list[tuple[int, int | None]] = []
    for value in node.values:
        if isinstance(value, IntValue):
            out.append((value.value, value.mask))
        elif isinstance(value, AddressSetRef):
            for entry in CTX.address_sets[value.name]:
                net = _entry(entry, node.field.name)
                out.append(net)
    return out


def _entry(entry: str, field: str) -> tuple[int, int | None]:
    if ":" in entry and len(entry) == 17 and "::" not in entry:
        return int(entry.replace(":", ""), 16), None
    net = ipaddress.ip_network(entry, strict=False)
    full = net.prefixlen == net.max_prefixlen
    return int(net.network_address), None if full else int(net.netmask)


# ----- random packets --------------------------------------------------------------------------

MACS = [0x000000000001, 0x000000000002, 0x000000000003, 0xFFFFFFFFFFFF, 0x333300000001]
V4 = [int(ipaddress.IPv4Address(a)) for a in ("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.1.1")]
V4 += [int(ipaddress.IPv4Address("192.168.7.7")), int(ipaddress.IPv4Address("224.0.0.1"))]
V6 = [int(ipaddress.IPv6Address(a)) for a in ("fd00::1", "fd00::2", "fd00::3", "ff02::1")]
PORTS = [0, 1, 2, 3, 22, 79, 80, 81, 443, 999, 1000, 1999, 2000, 2001, 65535]


Choose = Callable[[Sequence[Any]], Any]


def random_packet(choose: Choose) -> dict[str, int]:
    """The fields OVS would extract from some packet, every value picked by choose from a
    few that the expressions below test (so that comparisons hold often enough)."""
    p: dict[str, int] = {
        "eth_src": choose(MACS),
        "eth_dst": choose(MACS),
        "ct_state": choose(range(0x100)),
        "ct_mark": choose(range(4)),
        "reg14": choose(range(4)),
        "reg15": choose(range(4)),
    }
    if choose([True, False]):
        p["vlan_vid"] = 0x1000 | choose([0, 5, 6])
        p["vlan_pcp"] = choose(range(8))
    family = choose([0x800, 0x86DD, 0x806, 0x1234])
    p["eth_type"] = family
    if family == 0x806:
        p.update(
            arp_op=choose([1, 2]),
            arp_spa=choose(V4),
            arp_tpa=choose(V4),
            arp_sha=choose(MACS),
            arp_tha=choose(MACS),
        )
    elif family in (0x800, 0x86DD):
        _ip(choose, p, family == 0x800)
    return p


def _ip(choose: Choose, p: dict[str, int], v4: bool) -> None:
    if v4:
        p["ipv4_src"], p["ipv4_dst"] = choose(V4), choose(V4)
        proto = choose([6, 17, 1, 112])
    else:
        p["ipv6_src"], p["ipv6_dst"] = choose(V6), choose(V6)
        p["ipv6_flabel"] = choose([0, 5])
        proto = choose([6, 17, 58])
    p.update(
        ip_proto=proto,
        nw_ttl=choose([1, 64, 255]),
        ip_dscp=choose([0, 46]),
        ip_ecn=choose(range(4)),
        ip_frag=choose([0, 0, 0, 1, 3]),
    )
    if p["ip_frag"] & 2:
        return  # later fragments have no transport header
    if proto in (6, 17):
        name = "tcp" if proto == 6 else "udp"
        p[f"{name}_src"], p[f"{name}_dst"] = choose(PORTS), choose(PORTS)
        if proto == 6:
            p["tcp_flags"] = choose([0x2, 0x12, 0x10, 0x11])
    elif proto == 1:
        p["icmpv4_type"], p["icmpv4_code"] = choose([0, 8, 3]), choose([0, 1])
    elif proto == 58:
        kind = choose([128, 129, 135, 136])
        p["icmpv6_type"], p["icmpv6_code"] = kind, choose([0, 0, 1])
        if kind in (135, 136) and p["icmpv6_code"] == 0:
            p["ipv6_nd_target"] = choose(V6)
            p["ipv6_nd_sll" if kind == 135 else "ipv6_nd_tll"] = choose(MACS)


@st.composite
def packets(draw: st.DrawFn) -> dict[str, int]:
    return random_packet(lambda options: draw(st.sampled_from(list(options))))


# Every expression is also tried on these (a fixed sample is cheaper than drawing more).
_RNG = random.Random(20240601)
POOL = [random_packet(_RNG.choice) for _ in range(80)]


# ----- random expressions ------------------------------------------------------------------------

PORT = st.sampled_from(["0", "1", "22", "80", "443", "1000", "2000", "65535", "0x50"])
RELOP = st.sampled_from(["==", "!=", "<", "<=", ">", ">="])
ADDR4 = st.sampled_from(["10.0.0.1", "10.0.0.2", "10.0.0.0/30", "10.0.0.0/8", "192.168.0.0/16"])
ADDR6 = st.sampled_from(["fd00::1", "fd00::2", "fd00::/126", "ff02::1"])
MAC = st.sampled_from(
    ["00:00:00:00:00:01", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00/01:00:00:00:00:00"]
)


def _set(values: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.lists(values, min_size=1, max_size=4).map(lambda v: "{" + ", ".join(v) + "}")


# Comparisons that may appear under any number of '!'.
ORDINAL = st.one_of(
    st.builds(
        lambda f, op, v: f"{f} {op} {v}",
        st.sampled_from(["tcp.dst", "tcp.src", "udp.dst"]),
        RELOP,
        PORT,
    ),
    st.builds(
        lambda f, op, v: f"{f} {op} {v}",
        st.sampled_from(["tcp.dst", "udp.src"]),
        st.sampled_from(["==", "!="]),
        _set(PORT),
    ),
    st.builds(lambda lo, hi: f"{lo} <= tcp.dst <= {hi}", PORT, PORT),
    st.builds(
        lambda f, op, v: f"{f} {op} {v}",
        st.sampled_from(["ip4.src", "ip4.dst", "arp.spa"]),
        st.sampled_from(["==", "!="]),
        st.one_of(ADDR4, _set(ADDR4), st.sampled_from(["$as", "$empty", "{$as, 10.0.1.1}"])),
    ),
    st.builds(
        lambda f, op, v: f"{f} {op} {v}",
        st.sampled_from(["ip6.src", "ip6.dst", "nd.target"]),
        st.sampled_from(["==", "!="]),
        st.one_of(ADDR6, st.just("$as6")),
    ),
    st.builds(
        lambda f, op, v: f"{f} {op} {v}",
        st.sampled_from(["eth.src", "eth.dst", "arp.sha", "nd.sll"]),
        st.sampled_from(["==", "!="]),
        st.one_of(MAC, st.just("$macs")),
    ),
    st.sampled_from(
        [
            "ct.est",
            "ct.new",
            "ct.rel",
            "ct.trk",
            "ct.inv",
            "ct.rpl",
            "ct_mark == 1",
            "ct_mark[0] == 1",
            "ct_mark != 0",
            "ct_state == 0x22/0x26",
            "eth.bcast",
            "eth.mcast",
            "ip4.mcast",
            "eth.dst[40] == 0",
            "tcp.flags == 0x2/0x12",
            "tcp.flags != 0x10/0x10",
            "ip.frag == 0x1/0x1",
            "ip.is_frag",
            "ip.later_frag",
            "ip.first_frag",
            "ip6.label == 5",
            "ip6.label < 3",
            "ip4.dst[28..31] == 0xe",
            "ip4.src[24..31] > 9",
            "vlan.vid == 5",
            "vlan.pcp == 3",
            "vlan.pcp > 4",
            "vlan.present",
            "vlan.tci == 0",
            "vlan.tci[12..15] == 0x1",
            "1",
            "0",
            'is_chassis_resident("p1")',
            'is_chassis_resident("p2")',
        ]
    ),
)
# Comparisons only allowed outside any '!' (nominal fields and predicates).
NOMINAL = st.sampled_from(
    [
        "ip4",
        "ip6",
        "ip",
        "tcp",
        "udp",
        "icmp4",
        "icmp6",
        "icmp",
        "arp",
        "nd",
        "nd_ns",
        "nd_na",
        "ip.proto == {6, 17}",
        "ip.proto == 112",
        "eth.type == 0x800",
        "eth.type == {0x806, 0x1234}",
        "icmp4.type == 8",
        "icmp4.code == 0",
        "icmp6.type == {128, 135}",
        "icmp6.code == 0",
        "ip.ttl == 255",
        "ip.dscp == 46",
        "ip.ecn == {1, 2}",
        "arp.op == 1",
        "!ip.proto",
        'inport == "p1"',
        "inport == @pg",
        'outport == {"p1", "p3"}',
        'outport == "ghost"',
        "outport == @nobody",
        'inport == {"p2", @pg}',
    ]
)
# Nominal comparisons written to be valid under an odd number of '!'.
NOMINAL_NEGATED = st.sampled_from(
    ["ip.proto != 6", 'inport != "p1"', "outport != @pg", "eth.type != 0x806", "icmp4.type != 0"]
)


def expressions(positive: bool, depth: int) -> st.SearchStrategy[str]:
    leaf = st.one_of(ORDINAL, NOMINAL if positive else NOMINAL_NEGATED)
    if depth == 0:
        return leaf
    sub = st.deferred(lambda: expressions(positive, depth - 1))
    flipped = st.deferred(lambda: expressions(not positive, depth - 1))
    return st.one_of(
        leaf,
        st.lists(sub, min_size=2, max_size=3).map(lambda xs: " && ".join(f"({x})" for x in xs)),
        st.lists(sub, min_size=2, max_size=3).map(lambda xs: " || ".join(f"({x})" for x in xs)),
        flipped.map(lambda x: f"!({x})"),
    )


def _multiplied_size(text: str) -> int:
    terms = compile_acl_match(text, CTX).terms
    return sum(math.prod(len(c.atoms) for c in t.clauses) for t in terms)


def _switch(text: str, use_conjunction: bool) -> Switch:
    compiled = compile_acl_match(text, CTX)
    flows = compiled.flows(0, 100, (ALLOW,), conj_id=1, use_conjunction=use_conjunction)
    return Switch(FlowSet.of([*flows, Flow(0, 0, match(), (DEFAULT,))]))


def _allowed(sw: Switch, packet: dict[str, int]) -> bool:
    result, _ = sw.process(packet)
    return result.outputs == (1,)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions(positive=True, depth=3), st.lists(packets(), min_size=5, max_size=5))
def test_compiled_flows_match_exactly_the_packets_the_expression_describes(
    text: str, drawn: list[dict[str, int]]
) -> None:
    sample = [*drawn, *POOL]
    expr = parse_match(text)
    expected = [holds(expr, p) for p in sample]
    conjunctive = _switch(text, use_conjunction=True)
    assert [_allowed(conjunctive, p) for p in sample] == expected, text
    if _multiplied_size(text) <= MAX_MULTIPLIED:
        multiplied = _switch(text, use_conjunction=False)
        assert [_allowed(multiplied, p) for p in sample] == expected, text


# Conjunctions of sets over different fields: what becomes conjunctive matches.
DIMENSION = st.one_of(
    st.builds(
        lambda f, op, v: f"{f} {op} {v}",
        st.sampled_from(["tcp.dst", "tcp.src"]),
        st.sampled_from(["==", "!="]),
        st.lists(PORT, min_size=3, max_size=5).map(lambda v: "{" + ", ".join(v) + "}"),
    ),
    st.builds(
        lambda f, v: f"{f} == {v}",
        st.sampled_from(["ip4.src", "ip4.dst"]),
        st.one_of(
            st.lists(ADDR4, min_size=3, max_size=4).map(lambda v: "{" + ", ".join(v) + "}"),
            st.just("$as"),
        ),
    ),
    st.sampled_from(
        [
            "ip4.src != 10.0.0.1",
            "tcp.dst != 80",
            "tcp.src > 1000",
            "eth.src != 00:00:00:00:00:01",
            "ct_mark != 0",
            "outport == @pg",
            'inport == {"p1", "p2", "p3"}',
            "ct.est || ct.new || ct.inv",
        ]
    ),
)
CONJUNCTIVE = st.one_of(
    st.lists(DIMENSION, min_size=2, max_size=4).map(lambda xs: " && ".join(f"({x})" for x in xs)),
    st.lists(
        st.lists(DIMENSION, min_size=2, max_size=3).map(
            lambda xs: " && ".join(f"({x})" for x in xs)
        ),
        min_size=2,
        max_size=3,
    ).map(lambda xs: " || ".join(f"({x})" for x in xs)),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CONJUNCTIVE, st.lists(packets(), min_size=5, max_size=5))
def test_conjunctive_matches_agree_with_the_expression(
    text: str, drawn: list[dict[str, int]]
) -> None:
    sample = [*drawn, *POOL]
    expr = parse_match(text)
    sw = _switch(text, use_conjunction=True)
    assert [_allowed(sw, p) for p in sample] == [holds(expr, p) for p in sample], text


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.lists(st.integers(0, 0xFFFF), max_size=20)
)
def test_a_port_range_is_the_fewest_prefixes_and_nothing_else(
    a: int, b: int, probes: list[int]
) -> None:
    low, high = min(a, b), max(a, b)
    text = f"ip4 && tcp && tcp.dst >= {low} && tcp.dst <= {high}"
    (term,) = compile_acl_match(text, CTX).terms
    alternatives = [a for f, a in term.hard if f == "tcp_dst"] + [
        a for c in term.clauses if c.field == "tcp_dst" for a in c.atoms
    ]
    everything = (low, high) == (0, 0xFFFF)  # no constraint at all
    assert len(alternatives) == (0 if everything else _fewest_prefixes(low, high, 0, 16))
    sw = _switch(text, use_conjunction=True)
    base = {"eth_type": 0x800, "ip_proto": 6}
    for port in [*probes, low, high, max(low - 1, 0), min(high + 1, 0xFFFF)]:
        assert _allowed(sw, {**base, "tcp_dst": port}) == (low <= port <= high)


def _fewest_prefixes(low: int, high: int, start: int, bits: int) -> int:
    """Prefixes of the binary trie needed to cover [low, high] within the block of 2**bits
    values at start: the block itself if inside, else its two halves'."""
    end = start + (1 << bits) - 1
    if high < start or low > end:
        return 0
    if low <= start and end <= high:
        return 1
    half = 1 << (bits - 1)
    return _fewest_prefixes(low, high, start, bits - 1) + _fewest_prefixes(
        low, high, start + half, bits - 1
    )


@given(
    st.lists(st.tuples(st.integers(0, 63), st.integers(1, 63)), max_size=12),
    st.sampled_from([None, 6]),
)
def test_reducing_alternatives_keeps_the_values_they_match(
    raw: list[tuple[int, int]], width: int | None
) -> None:
    if width is not None:  # prefixes of a 6-bit field
        raw = [(v, 0x3F & ~((1 << (m % 7)) - 1)) for v, m in raw]
        raw = [(v, m) for v, m in raw if m]
    atoms = [(v & m, m) for v, m in raw]
    reduced = reduce(atoms, width)

    def covered(alternatives: list[tuple[int, int]], x: int) -> bool:
        return any(x & m == v for v, m in alternatives)

    assert all(covered(atoms, x) == covered(reduced, x) for x in range(64))
    assert len(reduced) <= max(len(set(atoms)), 1)
