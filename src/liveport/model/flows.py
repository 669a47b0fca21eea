"""OpenFlow flows as frozen values, and the difference between two flow tables.

A Flow is identified on a switch by (table, priority, match) -- its FlowKey; its actions
and cookie are what may change. A FlowSet is a frozen mapping FlowKey -> Flow. The agent
compiles a desired FlowSet from database state and the OpenFlow layer applies
diff(installed, desired): deletes, then adds and modifications, in one bundle.

Field values are integers (MACs and IP addresses too); the OpenFlow layer encodes them.
Match prerequisites are checked when a flow is built, because ovs-ofctl silently drops a
field whose prerequisites are missing and OVS rejects the whole bundle over the wire.
Conjunction actions build OVS's conjunctive matches (see Conjunction and the conj_id field);
liveport.model.expr compiles ACL matches into them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import IntFlag

from liveport.model.errors import LiveportError


class FlowError(LiveportError):
    """A flow is malformed (unknown field, missing prerequisite, conflicting duplicates)."""


# name -> bit width. Names follow os-ken's OXM names (ofproto_v1_3.oxm_types).
FIELD_BITS: Mapping[str, int] = {
    "in_port": 32,
    "metadata": 64,
    "eth_dst": 48,
    "eth_src": 48,
    "eth_type": 16,
    "ip_proto": 8,
    "ipv4_src": 32,
    "ipv4_dst": 32,
    "ipv6_src": 128,
    "ipv6_dst": 128,
    "arp_op": 16,
    "arp_spa": 32,
    "arp_tpa": 32,
    "arp_sha": 48,
    "arp_tha": 48,
    "icmpv6_type": 8,
    "icmpv6_code": 8,
    "ipv6_nd_target": 128,
    "tunnel_id": 64,
    **{f"reg{i}": 32 for i in range(16)},
    # OpenFlow 1.3's VLAN fields, as OVS dumps them: vlan_vid carries the "present" bit
    # (0x1000) above the 12-bit VID; vlan_pcp needs that bit set.
    "vlan_vid": 13,
    "vlan_pcp": 3,
    "ip_dscp": 6,  # the DSCP value itself (OXM), not the TOS byte
    "ip_ecn": 2,
    "nw_ttl": 8,
    "ip_frag": 2,  # bit 0: a fragment; bit 1: not the first fragment
    "ipv6_flabel": 20,
    "tcp_src": 16,
    "tcp_dst": 16,
    "tcp_flags": 12,
    "udp_src": 16,
    "udp_dst": 16,
    "sctp_src": 16,
    "sctp_dst": 16,
    "icmpv4_type": 8,
    "icmpv4_code": 8,
    "ipv6_nd_sll": 48,
    "ipv6_nd_tll": 48,
    "ct_state": 32,
    "ct_mark": 32,
    "ct_label": 128,
    "conj_id": 32,  # set only while OVS looks up the flow of a satisfied conjunction
}

ETH_IPV4 = 0x0800
ETH_ARP = 0x0806
ETH_RARP = 0x8035
ETH_IPV6 = 0x86DD
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
IPPROTO_SCTP = 132
VLAN_PRESENT = 0x1000  # OFPVID_PRESENT: the frame has an 802.1Q tag
ICMPV6_NS = 135
ICMPV6_NA = 136


class CtState(IntFlag):
    """The bits of ct_state, as OVS numbers them (CS_* in lib/packets.h)."""

    NEW = 0x01
    EST = 0x02
    REL = 0x04
    RPL = 0x08
    INV = 0x10
    TRK = 0x20
    SNAT = 0x40
    DNAT = 0x80


# A prerequisite names a value a field must have: exactly (an int), or under a mask
# ((value, mask)): the field must be matched on at least the mask's bits, with those values.
Requirement = int | tuple[int, int]
_IP = ({"eth_type": ETH_IPV4}, {"eth_type": ETH_IPV6})
_ARP = ({"eth_type": ETH_ARP}, {"eth_type": ETH_RARP})

# field -> the alternatives of requirements, one of which the match must meet (OVS checks
# each field's own prerequisites, so chains such as tcp_dst -> ip_proto -> eth_type are
# checked link by link).
_PREREQUISITES: Mapping[str, tuple[Mapping[str, Requirement], ...]] = {
    "ip_proto": _IP,
    "ipv4_src": ({"eth_type": ETH_IPV4},),
    "ipv4_dst": ({"eth_type": ETH_IPV4},),
    "ipv6_src": ({"eth_type": ETH_IPV6},),
    "ipv6_dst": ({"eth_type": ETH_IPV6},),
    "ipv6_flabel": ({"eth_type": ETH_IPV6},),
    "ip_dscp": _IP,
    "ip_ecn": _IP,
    "nw_ttl": _IP,
    "ip_frag": _IP,
    "arp_op": _ARP,
    "arp_spa": _ARP,
    "arp_tpa": _ARP,
    "arp_sha": _ARP,
    "arp_tha": _ARP,
    "tcp_src": ({"ip_proto": IPPROTO_TCP},),
    "tcp_dst": ({"ip_proto": IPPROTO_TCP},),
    "tcp_flags": ({"ip_proto": IPPROTO_TCP},),
    "udp_src": ({"ip_proto": IPPROTO_UDP},),
    "udp_dst": ({"ip_proto": IPPROTO_UDP},),
    "sctp_src": ({"ip_proto": IPPROTO_SCTP},),
    "sctp_dst": ({"ip_proto": IPPROTO_SCTP},),
    "icmpv4_type": ({"eth_type": ETH_IPV4, "ip_proto": IPPROTO_ICMP},),
    "icmpv4_code": ({"eth_type": ETH_IPV4, "ip_proto": IPPROTO_ICMP},),
    "icmpv6_type": ({"eth_type": ETH_IPV6, "ip_proto": IPPROTO_ICMPV6},),
    "icmpv6_code": ({"eth_type": ETH_IPV6, "ip_proto": IPPROTO_ICMPV6},),
    "ipv6_nd_target": ({"icmpv6_type": ICMPV6_NS}, {"icmpv6_type": ICMPV6_NA}),
    "ipv6_nd_sll": ({"icmpv6_type": ICMPV6_NS},),
    "ipv6_nd_tll": ({"icmpv6_type": ICMPV6_NA},),
    "vlan_pcp": ({"vlan_vid": (VLAN_PRESENT, VLAN_PRESENT)},),
}


def prerequisites(field: str) -> tuple[Mapping[str, Requirement], ...]:
    """The alternatives of requirements a match on field must meet (empty: none)."""
    return _PREREQUISITES.get(field, ())


# Reserved OpenFlow port numbers.
OFPP_IN_PORT = 0xFFFFFFF8
OFPP_TABLE = 0xFFFFFFF9
OFPP_CONTROLLER = 0xFFFFFFFD
OFPP_LOCAL = 0xFFFFFFFE


@functools.total_ordering
@dataclass(frozen=True, slots=True)
class MatchField:
    name: str
    value: int
    mask: int | None = None

    def __lt__(self, other: object) -> bool:
        # An exact match (no mask) sorts before masked ones of the same field and value.
        if not isinstance(other, MatchField):
            return NotImplemented
        return self._order() < other._order()

    def _order(self) -> tuple[str, int, int]:
        return self.name, self.value, -1 if self.mask is None else self.mask

    def __str__(self) -> str:
        if self.mask is None:
            return f"{self.name}={self.value:#x}"
        return f"{self.name}={self.value:#x}/{self.mask:#x}"


@dataclass(frozen=True, order=True)
class Match:
    fields: tuple[MatchField, ...] = ()

    def __hash__(self) -> int:
        # Flow tables hash their keys on every pass; a Match is built once and kept.
        cached: int | None = self.__dict__.get("_hash")
        if cached is None:
            cached = hash(self.fields)
            object.__setattr__(self, "_hash", cached)
        return cached

    def get(self, name: str) -> MatchField | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None

    def value(self, name: str) -> int | None:
        f = self.get(name)
        return None if f is None or f.mask is not None else f.value

    def names(self) -> frozenset[str]:
        return frozenset(f.name for f in self.fields)

    def __str__(self) -> str:
        return ",".join(str(f) for f in self.fields) or "*"


def match(**fields: int | tuple[int, int]) -> Match:
    """match(in_port=3, eth_type=0x806, eth_dst=(value, mask)) with prerequisites checked."""
    items = []
    for name, raw in fields.items():
        bits = FIELD_BITS.get(name)
        if bits is None:
            raise FlowError(f"unknown match field {name!r}")
        value, mask = raw if isinstance(raw, tuple) else (raw, None)
        limit = (1 << bits) - 1
        if not 0 <= value <= limit or (mask is not None and not 0 <= mask <= limit):
            raise FlowError(f"value of {name} does not fit in {bits} bits")
        if mask is not None and value & ~mask:
            raise FlowError(f"value of {name} has bits outside its mask")
        items.append(MatchField(name, value, None if mask == limit else mask))
    # MatchField's own order (its __lt__), without a call per comparison.
    items.sort(key=_field_order)
    result = Match(tuple(items))
    check_prerequisites(result)
    return result


def _field_order(f: MatchField) -> tuple[str, int, int]:
    return f.name, f.value, -1 if f.mask is None else f.mask


def check_prerequisites(m: Match) -> None:
    for f in m.fields:
        alternatives = _PREREQUISITES.get(f.name)
        if alternatives and not any(_meets(m, alt) for alt in alternatives):
            wanted = " or ".join(
                ",".join(f"{k}={_requirement_text(v)}" for k, v in alt.items())
                for alt in alternatives
            )
            raise FlowError(f"match on {f.name} needs {wanted}")


def _meets(m: Match, requirements: Mapping[str, Requirement]) -> bool:
    for name, wanted in requirements.items():
        f = m.get(name)
        if f is None:
            return False
        if isinstance(wanted, int):
            if f.mask is not None or f.value != wanted:
                return False
            continue
        value, mask = wanted
        have = f.mask if f.mask is not None else (1 << FIELD_BITS[name]) - 1
        if have & mask != mask or f.value & mask != value:
            return False
    return True


def _requirement_text(wanted: Requirement) -> str:
    if isinstance(wanted, int):
        return f"{wanted:#x}"
    return f"{wanted[0]:#x}/{wanted[1]:#x}"


# ----- actions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Output:
    port: int


@dataclass(frozen=True)
class OutputReg:
    """Output to the port number held in a register (NXAST_OUTPUT_REG)."""

    field: str


@dataclass(frozen=True)
class SetField:
    field: str
    value: int


@dataclass(frozen=True)
class Load:
    """Loads value into bits [start, start+nbits) of field (NXAST_REG_LOAD2 semantics)."""

    field: str
    value: int
    start: int = 0
    nbits: int | None = None


@dataclass(frozen=True)
class Resubmit:
    """Processes the packet in another table, then continues with the next action."""

    table: int


@dataclass(frozen=True)
class Controller:
    """Sends the packet to the controller with userdata (NXAST_CONTROLLER2)."""

    userdata: bytes = b""
    max_len: int = 0xFFFF


@dataclass(frozen=True)
class LearnMatchValue:
    """The learned flow matches field == value."""

    field: str
    value: int


@dataclass(frozen=True)
class LearnMatchField:
    """The learned flow matches field == the current packet's src_field."""

    field: str
    src_field: str


@dataclass(frozen=True)
class LearnLoadValue:
    """The learned flow loads value into field."""

    field: str
    value: int


@dataclass(frozen=True)
class LearnOutputField:
    """The learned flow outputs to the port held in src_field (a field, not a number)."""

    src_field: str


LearnSpec = LearnMatchValue | LearnMatchField | LearnLoadValue | LearnOutputField


@dataclass(frozen=True)
class Learn:
    """Installs a flow built from specs into `table` (NXAST_LEARN). Learned flows may only
    load and output, so the pipeline gates with registers rather than resubmits."""

    table: int
    priority: int
    cookie: int
    specs: tuple[LearnSpec, ...]
    idle_timeout: int = 0
    hard_timeout: int = 0


@dataclass(frozen=True, order=True)
class Conjunction:
    """Makes the flow one of the alternatives of dimension `clause` (1-based, as in
    ovs-ofctl's conjunction(id, k/n)) of conjunctive flow `id` (NXAST_CONJUNCTION). A flow
    with conjunctions has no other actions: when a packet has matched a flow of each of the
    n_clauses dimensions at one priority, OVS looks the packet up again with conj_id = id
    and runs that flow's actions instead."""

    id: int
    clause: int
    n_clauses: int


@dataclass(frozen=True)
class Ct:
    """Sends the packet through connection tracking (NXAST_CT), as ovs-actions(7) says.

    The zone is bits [0, 16) of `zone_field` (a register) or, without one, the number
    `zone`. With `table`, OVS forks: a copy of the packet is tracked and then processed
    from that table with ct_state (and ct_mark, ct_label) set and the registers kept, while
    the original goes on with the next action, untracked. `commit` stores the connection;
    `exec` (commit only) loads values into its ct_mark or ct_label as it is stored."""

    commit: bool = False
    zone_field: str | None = None
    zone: int = 0
    table: int | None = None
    exec: tuple[Load, ...] = ()


@dataclass(frozen=True)
class PushVlan:
    """Adds an 802.1Q header (OFPAT_PUSH_VLAN, TPID 0x8100): the packet's vlan_vid then says
    a tag is present; a SetField of vlan_vid (VLAN_PRESENT | VID) gives its VID."""


@dataclass(frozen=True)
class PopVlan:
    """Removes the outermost 802.1Q header (OFPAT_POP_VLAN)."""


@dataclass(frozen=True)
class CtClear:
    """Forgets the packet's connection tracking state (NXAST_CT_CLEAR)."""


def check_ct_flow(m: Match, actions: Iterable[object]) -> None:
    """Raises FlowError for ct actions OVS refuses (ofp-actions.c): a zone wider than 16
    bits or from a field that is not a register (liveport's rule: OVS also takes other
    fields), exec without commit or loading other fields than ct_mark and ct_label, and,
    with the flow's match (OFPBAC_MATCH_INCONSISTENT, check_CT), ct on a flow that does not
    match eth_type IPv4 or IPv6 (so a non-IP packet never reaches ct) and ct(commit) on a
    flow that matches ct_state +inv."""
    cts = [a for a in actions if isinstance(a, Ct)]
    for ct in cts:
        if ct.zone_field is not None and ct.zone_field not in CT_ZONE_FIELDS:
            raise FlowError(f"ct zone from {ct.zone_field}: only a register (reg0..reg15)")
        if not 0 <= ct.zone <= CT_ZONE_MAX:
            raise FlowError(f"ct zone {ct.zone} is outside 0..{CT_ZONE_MAX}")
        if ct.exec and not ct.commit:
            raise FlowError("ct with exec but without commit")
        for load in ct.exec:
            if load.field not in CT_EXEC_FIELDS:
                raise FlowError(f"ct exec may load only ct_mark or ct_label, not {load.field}")
    if not cts:
        return
    if m.value("eth_type") not in (ETH_IPV4, ETH_IPV6):
        raise FlowError(f"ct needs a match on eth_type {ETH_IPV4:#x} or {ETH_IPV6:#x}: {m}")
    state = m.get("ct_state")
    if state is not None and state.value & CtState.INV and any(ct.commit for ct in cts):
        raise FlowError(f"ct(commit) on a flow matching ct_state +inv: {m}")


CT_ZONE_MAX = 0xFFFF
CT_ZONE_FIELDS = frozenset(f"reg{i}" for i in range(16))  # where ct may take its zone from
CT_EXEC_FIELDS = frozenset({"ct_mark", "ct_label"})  # what ct's exec may load


Action = (
    Output
    | OutputReg
    | SetField
    | Load
    | Resubmit
    | Controller
    | Learn
    | Conjunction
    | Ct
    | CtClear
    | PushVlan
    | PopVlan
)


# ----- flows and flow sets -------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class FlowKey:
    table: int
    priority: int
    match: Match

    def __str__(self) -> str:
        return f"table={self.table},priority={self.priority},{self.match}"


@dataclass(frozen=True)
class Flow:
    table: int
    priority: int
    match: Match
    actions: tuple[Action, ...]
    cookie: int = 0

    @functools.cached_property
    def key(self) -> FlowKey:
        return FlowKey(self.table, self.priority, self.match)

    def __str__(self) -> str:
        acts = ",".join(_action_text(a) for a in self.actions) or "drop"
        return f"cookie={self.cookie:#x},{self.key},actions={acts}"


def _action_text(action: Action) -> str:
    if isinstance(action, Output):
        names = {OFPP_IN_PORT: "in_port", OFPP_CONTROLLER: "controller", OFPP_LOCAL: "local"}
        return f"output:{names.get(action.port, action.port)}"
    if isinstance(action, OutputReg):
        return f"output:{action.field}"
    if isinstance(action, SetField):
        return f"set_field:{action.value:#x}->{action.field}"
    if isinstance(action, Load):
        bits = f"[{action.start}..{action.start + action.nbits - 1}]" if action.nbits else ""
        return f"load:{action.value:#x}->{action.field}{bits}"
    if isinstance(action, Resubmit):
        return f"resubmit(,{action.table})"
    if isinstance(action, Controller):
        return f"controller(userdata={action.userdata.hex()})"
    if isinstance(action, Conjunction):
        return f"conjunction({action.id},{action.clause}/{action.n_clauses})"
    if isinstance(action, Ct):
        parts = ["commit"] if action.commit else []
        parts.append(
            f"zone={action.zone_field}[0..15]" if action.zone_field else f"zone={action.zone}"
        )
        if action.table is not None:
            parts.append(f"table={action.table}")
        if action.exec:
            parts.append(f"exec({','.join(_action_text(a) for a in action.exec)})")
        return f"ct({','.join(parts)})"
    if isinstance(action, CtClear):
        return "ct_clear"
    if isinstance(action, PushVlan):
        return "push_vlan:0x8100"
    if isinstance(action, PopVlan):
        return "pop_vlan"
    return f"learn(table={action.table},priority={action.priority},cookie={action.cookie:#x},...)"


@dataclass(frozen=True)
class FlowSet:
    """An immutable flow table: at most one Flow per FlowKey."""

    flows: Mapping[FlowKey, Flow] = field(default_factory=dict)

    @classmethod
    def of(cls, flows: Iterable[Flow]) -> FlowSet:
        table: dict[FlowKey, Flow] = {}
        for flow in flows:
            key = flow.key
            previous = table.get(key)
            if previous is not None and previous != flow:
                raise FlowError(f"two different flows for {key}: {previous} / {flow}")
            table[key] = flow
        return cls(table)

    def __iter__(self) -> Iterator[Flow]:
        return iter(self.flows.values())

    def __len__(self) -> int:
        return len(self.flows)

    def __contains__(self, key: object) -> bool:
        return key in self.flows

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FlowSet) and dict(self.flows) == dict(other.flows)

    def __hash__(self) -> int:
        return hash(frozenset(self.flows.items()))

    def get(self, key: FlowKey) -> Flow | None:
        return self.flows.get(key)

    def table(self, table: int) -> list[Flow]:
        return sorted(
            (f for f in self.flows.values() if f.table == table),
            key=lambda f: (-f.priority, f.match),
        )

    def with_cookie(self, cookie: int, mask: int) -> FlowSet:
        return FlowSet({k: f for k, f in self.flows.items() if f.cookie & mask == cookie & mask})

    def union(self, other: FlowSet) -> FlowSet:
        return FlowSet.of([*self, *other])

    def dump(self) -> list[str]:
        """Normalised text, one flow per line, in table/priority order (for golden tests)."""
        return [
            str(f)
            for f in sorted(self.flows.values(), key=lambda f: (f.table, -f.priority, f.match))
        ]


@dataclass(frozen=True)
class FlowDiff:
    deletes: tuple[Flow, ...] = ()
    adds: tuple[Flow, ...] = ()
    modifies: tuple[Flow, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.deletes or self.adds or self.modifies)

    def __len__(self) -> int:
        return len(self.deletes) + len(self.adds) + len(self.modifies)


def diff(installed: FlowSet, desired: FlowSet) -> FlowDiff:
    """What to send so that a switch holding `installed` holds `desired` afterwards."""
    deletes = tuple(f for k, f in installed.flows.items() if k not in desired.flows)
    adds = []
    modifies = []
    for key, flow in desired.flows.items():
        old = installed.flows.get(key)
        if old is None:
            adds.append(flow)
        elif old != flow:
            modifies.append(flow)
    return FlowDiff(deletes=deletes, adds=tuple(adds), modifies=tuple(modifies))


def apply_diff(installed: FlowSet, change: FlowDiff) -> FlowSet:
    """The table a switch holds after applying change (used to check diffs are exact)."""
    table = dict(installed.flows)
    for flow in change.deletes:
        table.pop(flow.key, None)
    for flow in (*change.adds, *change.modifies):
        table[flow.key] = flow
    return FlowSet(table)
