"""A model of an OpenFlow switch running a FlowSet, for tests that ask what a packet does.

It follows OVS's semantics for what liveport uses: highest-priority match per table (ties
are a compile error, FlowSet refuses them), conjunctive matches (see lookup), resubmit
continues after the sub-table, output to the packet's own in_port is dropped, registers
start at zero, learn installs a flow that later packets see, controller actions are
recorded. Fields are extracted from frames as OVS's flow_extract does for what liveport
matches on, plus private fields (named "_...") that connection tracking keys on.

Connection tracking is OVS's userspace conntrack as `liveport.model.conntrack` models it
(what it does and does not model is said there); the Switch holds its `Conntrack`. As
ofproto-dpif-xlate.c does:
- ct looks the packet up in its zone (a number, or bits [0..15] of a register), commits
  and runs exec when asked. With table=N it forks (compose_recirculate_and_fork): a copy
  of the packet, with ct_state, ct_mark and ct_label set and the registers kept, is
  processed from table N; then the original goes on with the actions after ct. The
  original is untracked after ct, with or without table (flow_clear_conntrack): ct_state,
  ct_mark and ct_label read 0, whatever they were before. Result lists the fork's
  outputs before the original's later ones, the order in which OVS's userspace datapath
  executes them (the recirculated copy at once, then the rest of the action list).
- ct_clear sets ct_state, ct_mark and ct_label to 0 (OVS also forgets the zone, which is
  no match field here).
- OVS refuses a flow with ct that does not match IPv4 or IPv6 (so no other packet reaches
  ct), ct(commit) on a flow matching ct_state +inv, and the ct forms flows.check_ct_flow
  names: a Switch with such a flow raises FlowError.
A caller may also set ct_state (ct_mark, ct_label) in the fields itself, as a packet that
comes back from conntrack would have them.

Pure: a Switch is a value; process returns a new Switch holding what the packet changed
(learned flows, connections). `trace` runs a packet the same way and also returns every
table lookup and every output, controller, ct and learn action in the order they ran
(`Event`), for `liveport trace`.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from liveport.model.conntrack import UNPARSABLE, Conntrack, icmp_fields
from liveport.model.errors import InvalidInput
from liveport.model.flows import (
    FIELD_BITS,
    VLAN_PRESENT,
    Conjunction,
    Controller,
    Ct,
    CtClear,
    Flow,
    FlowError,
    FlowSet,
    Learn,
    LearnLoadValue,
    LearnMatchField,
    LearnMatchValue,
    LearnOutputField,
    Load,
    Match,
    MatchField,
    Output,
    OutputReg,
    PopVlan,
    PushVlan,
    Resubmit,
    SetField,
    check_ct_flow,
)
from liveport.model.packets import (
    ETH_ARP,
    ETH_IPV4,
    ETH_IPV6,
    ETH_RARP,
    ETH_VLAN,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
)

MAX_DEPTH = 64
IPPROTO_SCTP = 132
IPPROTO_FRAGMENT = 44  # the IPv6 fragment extension header
FRAG_ANY = 1  # ip_frag bits, as OVS numbers them
FRAG_LATER = 2
ND_NS, ND_NA = 135, 136
ND_OPT_SOURCE_LL, ND_OPT_TARGET_LL = 1, 2
TCP_HEADER, UDP_HEADER = 20, 8
CT_FIELDS = ("ct_state", "ct_mark", "ct_label")
CT_ZONE_MASK = 0xFFFF  # ct takes its zone from bits [0..15] of a register


def packet_fields(frame: bytes, in_port: int, tunnel_id: int = 0) -> dict[str, int]:
    """The match fields OVS would extract from frame arriving on in_port."""
    if len(frame) < 14:
        raise InvalidInput(f"frame of {len(frame)} bytes is shorter than an Ethernet header")
    (ethertype,) = struct.unpack("!H", frame[12:14])
    fields = {
        "in_port": in_port,
        "eth_dst": int.from_bytes(frame[0:6], "big"),
        "eth_src": int.from_bytes(frame[6:12], "big"),
        "tunnel_id": tunnel_id,
    }
    body = frame[14:]
    if ethertype == ETH_VLAN and len(body) >= 4:
        tci, ethertype = struct.unpack("!HH", body[:4])
        fields["vlan_vid"] = VLAN_PRESENT | tci & 0xFFF
        fields["vlan_pcp"] = tci >> 13
        body = body[4:]
    fields["eth_type"] = ethertype
    if ethertype in (ETH_ARP, ETH_RARP) and len(body) >= 28:
        fields["arp_op"] = int.from_bytes(body[6:8], "big")
        fields["arp_sha"] = int.from_bytes(body[8:14], "big")
        fields["arp_spa"] = int.from_bytes(body[14:18], "big")
        fields["arp_tha"] = int.from_bytes(body[18:24], "big")
        fields["arp_tpa"] = int.from_bytes(body[24:28], "big")
    elif ethertype == ETH_IPV4 and len(body) >= 20:
        _ipv4_fields(body, fields)
    elif ethertype == ETH_IPV6 and len(body) >= 40:
        _ipv6_fields(body, fields)
    return fields


def _ipv4_fields(body: bytes, fields: dict[str, int]) -> None:
    ihl = (body[0] & 0x0F) * 4
    fields["ipv4_src"] = int.from_bytes(body[12:16], "big")
    fields["ipv4_dst"] = int.from_bytes(body[16:20], "big")
    fields["ip_proto"] = body[9]
    fields["ip_dscp"], fields["ip_ecn"] = body[1] >> 2, body[1] & 3
    fields["nw_ttl"] = body[8]
    (flags_offset,) = struct.unpack("!H", body[6:8])
    more, offset = flags_offset & 0x2000, flags_offset & 0x1FFF
    fields["ip_frag"] = (FRAG_ANY if more or offset else 0) | (FRAG_LATER if offset else 0)
    if not offset:  # OVS leaves L4 fields zero in all but the first fragment
        _transport_fields(body[9], body[ihl:], fields, ipv6=False)


def _ipv6_fields(body: bytes, fields: dict[str, int]) -> None:
    (first_word,) = struct.unpack("!I", body[:4])
    traffic_class = first_word >> 20 & 0xFF
    fields["ipv6_flabel"] = first_word & 0xFFFFF
    fields["ip_dscp"], fields["ip_ecn"] = traffic_class >> 2, traffic_class & 3
    fields["nw_ttl"] = body[7]
    fields["ipv6_src"] = int.from_bytes(body[8:24], "big")
    fields["ipv6_dst"] = int.from_bytes(body[24:40], "big")
    proto, payload = body[6], body[40:]
    fields["ip_frag"] = 0
    if proto == IPPROTO_FRAGMENT and len(payload) >= 8:
        (offset_flags,) = struct.unpack("!H", payload[2:4])
        offset = offset_flags >> 3
        fields["ip_frag"] = FRAG_ANY | (FRAG_LATER if offset else 0)
        proto, payload = payload[0], (payload[8:] if not offset else b"")
    fields["ip_proto"] = proto
    _transport_fields(proto, payload, fields, ipv6=True)


def _transport_fields(proto: int, l4: bytes, fields: dict[str, int], *, ipv6: bool) -> None:
    ports = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_SCTP: "sctp"}.get(proto)
    if ports is not None and len(l4) >= 4:
        fields[f"{ports}_src"], fields[f"{ports}_dst"] = struct.unpack("!HH", l4[:4])
        if proto == IPPROTO_TCP and len(l4) >= 14:
            fields["tcp_flags"] = struct.unpack("!H", l4[12:14])[0] & 0xFFF
        if not _conntrack_can_parse(proto, l4):
            fields[UNPARSABLE] = 1
    elif proto == IPPROTO_ICMP and not ipv6 and len(l4) >= 2:
        fields["icmpv4_type"], fields["icmpv4_code"] = l4[0], l4[1]
        fields.update(icmp_fields(l4, ipv6=False))
    elif proto == IPPROTO_ICMPV6 and ipv6 and len(l4) >= 4:
        fields["icmpv6_type"], fields["icmpv6_code"] = l4[0], l4[1]
        fields.update(icmp_fields(l4, ipv6=True))
        if l4[0] in (ND_NS, ND_NA) and l4[1] == 0 and len(l4) >= 24:
            _nd_fields(l4, fields)


def _conntrack_can_parse(proto: int, l4: bytes) -> bool:
    """Whether conntrack finds a whole TCP or UDP header (check_l4_tcp, check_l4_udp)."""
    if proto == IPPROTO_TCP:
        offset = (l4[12] >> 4) * 4 if len(l4) > 12 else 0
        return len(l4) >= TCP_HEADER and TCP_HEADER <= offset <= len(l4)
    if proto == IPPROTO_UDP:
        length = struct.unpack("!H", l4[4:6])[0] if len(l4) >= UDP_HEADER else 0
        return UDP_HEADER <= length <= len(l4)
    return True


def _nd_fields(icmp: bytes, fields: dict[str, int]) -> None:
    """Neighbour discovery: the target and the link-layer address option OVS extracts."""
    fields["ipv6_nd_target"] = int.from_bytes(icmp[8:24], "big")
    wanted, name = (
        (ND_OPT_SOURCE_LL, "ipv6_nd_sll") if icmp[0] == ND_NS else (ND_OPT_TARGET_LL, "ipv6_nd_tll")
    )
    options = icmp[24:]
    while len(options) >= 8 and options[1]:
        if options[0] == wanted and options[1] == 1:
            fields[name] = int.from_bytes(options[2:8], "big")
        options = options[options[1] * 8 :]


def matches(m: Match, fields: Mapping[str, int]) -> bool:
    # Registers and metadata start at zero; protocol fields absent from a packet cannot be
    # matched because every flow carries their prerequisites.
    for f in m.fields:
        mask = f.mask if f.mask is not None else (1 << FIELD_BITS[f.name]) - 1
        if fields.get(f.name, 0) & mask != f.value:
            return False
    return True


@dataclass(frozen=True)
class Result:
    outputs: tuple[int, ...] = ()  # ports, in order (tunnel ports included)
    tunnel_ids: tuple[int, ...] = ()  # tunnel_id at the time of each output
    controller: tuple[bytes, ...] = ()  # userdata of each controller action
    learned: tuple[Flow, ...] = ()
    vlans: tuple[int, ...] = ()  # vlan_vid at the time of each output (0: untagged)


# The fields an Event keeps of the packet at that moment: the pipeline's registers and
# what conntrack said (what decides which flows match after classification).
EVENT_FIELDS = (
    "in_port",
    "tunnel_id",
    "metadata",
    *(f"reg{i}" for i in range(16)),
    "conj_id",
    *CT_FIELDS,
)


@dataclass(frozen=True)
class Event:
    """One thing a traced packet did, at resubmit depth `depth`:
    - "lookup": table `table` was searched; `flow` is the flow that matched (None: none did,
      the packet's path ends there);
    - "output": sent out of `port` (tunnel_id and vlan at that moment in `fields`);
    - "in_port": an output to the packet's own in_port, which OVS skips;
    - "controller": sent to the controller with `userdata`;
    - "ct": tracked in zone `port`; `fields` holds the ct_state the fork continues with
      (when the action names a table);
    - "learn": installed `flow`."""

    kind: str
    depth: int
    table: int | None = None
    flow: Flow | None = None
    port: int | None = None
    userdata: bytes = b""
    fields: Mapping[str, int] = field(default_factory=dict)


def _snapshot(fields: Mapping[str, int]) -> dict[str, int]:
    return {name: fields[name] for name in EVENT_FIELDS if fields.get(name)}


@dataclass
class _Run:
    """What one packet and its forks do, together."""

    conntrack: Conntrack
    outputs: list[int] = field(default_factory=list)
    tunnel_ids: list[int] = field(default_factory=list)
    controller: list[bytes] = field(default_factory=list)
    learned: list[Flow] = field(default_factory=list)
    vlans: list[int] = field(default_factory=list)
    events: list[Event] | None = None  # recorded only when tracing

    def note(self, event: Event) -> None:
        if self.events is not None:
            self.events.append(event)


@dataclass(frozen=True)
class Switch:
    flows: FlowSet
    learned: FlowSet = field(default_factory=FlowSet)
    conntrack: Conntrack = field(default_factory=Conntrack)

    @functools.cached_property
    def _tables(self) -> dict[int, tuple[Flow, ...]]:
        # Sorted once: a switch is a value, and tests look many packets up in one.
        for flow in self.flows:
            check_ct_flow(flow.match, flow.actions)
        tables = {f.table for f in self.flows} | {f.table for f in self.learned}
        return {t: (*self.flows.table(t), *self.learned.table(t)) for t in tables}

    def lookup(self, table: int, fields: Mapping[str, int]) -> Flow | None:
        """The flow whose actions the packet runs in table, with OVS's conjunctive match:
        flows with conjunction actions are only candidates. When, at a priority above the
        best ordinary match, the packet matches a flow of every clause of a conjunction, OVS
        looks the packet up again among the ordinary flows with conj_id set to its id, and
        a match there wins; otherwise lower priorities are tried in turn."""
        flows = self._tables.get(table, ())
        best: Flow | None = None
        soft: list[Flow] = []
        for flow in flows:
            if not matches(flow.match, fields):
                continue
            if _is_conjunctive(flow):
                soft.append(flow)
            elif best is None or flow.priority > best.priority:
                best = flow
        floor = best.priority if best is not None else -1
        for priority in sorted({f.priority for f in soft if f.priority > floor}, reverse=True):
            for conj_id in _satisfied(f for f in soft if f.priority == priority):
                found = _best_ordinary(flows, {**fields, "conj_id": conj_id})
                if found is not None:
                    return found
        return best

    def process(self, fields: Mapping[str, int]) -> tuple[Result, Switch]:
        """Runs one packet from table 0; returns what it did and the switch after it (with
        what it learned and the connections it changed)."""
        return self._process(fields, _Run(self.conntrack))

    def trace(self, fields: Mapping[str, int]) -> tuple[Result, tuple[Event, ...], Switch]:
        """As process, with the events of the packet's way through the tables."""
        events: list[Event] = []
        result, after = self._process(fields, _Run(self.conntrack, events=events))
        return result, tuple(events), after

    def _process(self, fields: Mapping[str, int], run: _Run) -> tuple[Result, Switch]:
        self._table(0, dict(fields), run, depth=0)
        result = Result(
            tuple(run.outputs),
            tuple(run.tunnel_ids),
            tuple(run.controller),
            tuple(run.learned),
            tuple(run.vlans),
        )
        if not run.learned and run.conntrack is self.conntrack:
            return result, self
        learned = _replacing(self.learned, run.learned) if run.learned else self.learned
        after = replace(self, learned=learned, conntrack=run.conntrack)
        if learned is self.learned and "_tables" in self.__dict__:
            after.__dict__["_tables"] = self._tables  # the same flows: keep them sorted
        return result, after

    def _table(self, table: int, fields: dict[str, int], run: _Run, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise RecursionError("resubmit depth exceeded")
        flow = self.lookup(table, fields)
        if run.events is not None:
            # A flow reached through a conjunction names its id (the ACL's key, model.acl).
            conj_id = flow.match.value("conj_id") if flow is not None else None
            seen = {**fields, "conj_id": conj_id} if conj_id is not None else fields
            run.note(Event("lookup", depth, table, flow, fields=_snapshot(seen)))
        if flow is None:
            return
        for action in flow.actions:
            self._action(action, fields, run, depth)

    def _action(self, action: object, f: dict[str, int], run: _Run, depth: int) -> None:
        if isinstance(action, Output | OutputReg):
            port = action.port if isinstance(action, Output) else f.get(action.field, 0)
            if port != f.get("in_port"):
                run.outputs.append(port)
                run.tunnel_ids.append(f.get("tunnel_id", 0))
                run.vlans.append(f.get("vlan_vid", 0))
                run.note(Event("output", depth, port=port, fields=_output_fields(f)))
            else:
                run.note(Event("in_port", depth, port=port))
        elif isinstance(action, PushVlan):
            # The new tag copies the VID and PCP of the one below it, if any (OVS).
            f["vlan_vid"] = VLAN_PRESENT | f.get("vlan_vid", 0) & 0xFFF
            f["vlan_pcp"] = f.get("vlan_pcp", 0)
        elif isinstance(action, PopVlan):
            f.pop("vlan_vid", None)
            f.pop("vlan_pcp", None)
        elif isinstance(action, SetField):
            f[action.field] = action.value
        elif isinstance(action, Load):
            width = action.nbits or FIELD_BITS[action.field] - action.start
            mask = ((1 << width) - 1) << action.start
            f[action.field] = (f.get(action.field, 0) & ~mask) | (
                (action.value << action.start) & mask
            )
        elif isinstance(action, Resubmit):
            self._table(action.table, f, run, depth + 1)
        elif isinstance(action, Controller):
            run.controller.append(action.userdata)
            run.note(Event("controller", depth, userdata=action.userdata))
        elif isinstance(action, Learn):
            run.learned.append(_learn(action, f))
            run.note(Event("learn", depth, flow=run.learned[-1]))
        elif isinstance(action, Ct):
            self._ct(action, f, run, depth)
        elif isinstance(action, CtClear):
            _clear_ct(f)
        else:
            raise TypeError(f"unknown action {action!r}")

    def _ct(self, action: Ct, f: dict[str, int], run: _Run, depth: int) -> None:
        zone = f.get(action.zone_field, 0) & CT_ZONE_MASK if action.zone_field else action.zone
        verdict, run.conntrack = run.conntrack.track(
            f, zone, commit=action.commit, loads=action.exec
        )
        run.note(
            Event(
                "ct",
                depth,
                action.table,
                port=zone,
                fields={"ct_state": int(verdict.state), "ct_mark": verdict.mark},
            )
        )
        if action.table is not None:
            fork = {
                **f,
                "ct_state": int(verdict.state),
                "ct_mark": verdict.mark,
                "ct_label": verdict.label,
            }
            self._table(action.table, fork, run, depth + 1)
        _clear_ct(f)


def _output_fields(fields: Mapping[str, int]) -> dict[str, int]:
    return {k: fields[k] for k in ("tunnel_id", "vlan_vid") if fields.get(k)}


def _clear_ct(fields: dict[str, int]) -> None:
    for name in CT_FIELDS:
        fields.pop(name, None)


def _is_conjunctive(flow: Flow) -> bool:
    conjunctions = sum(isinstance(a, Conjunction) for a in flow.actions)
    if conjunctions and conjunctions != len(flow.actions):
        raise FlowError(f"conjunction actions mixed with others (OVS refuses it): {flow}")
    return conjunctions > 0


def _satisfied(flows: Iterable[Flow]) -> list[int]:
    """Ids of the conjunctions whose every clause one of flows belongs to, ascending."""
    seen: dict[int, set[int]] = {}
    sizes: dict[int, int] = {}
    for flow in flows:
        for action in flow.actions:
            assert isinstance(action, Conjunction)
            seen.setdefault(action.id, set()).add(action.clause)
            sizes[action.id] = action.n_clauses
    return sorted(i for i, clauses in seen.items() if clauses == set(range(1, sizes[i] + 1)))


def _best_ordinary(flows: Iterable[Flow], fields: Mapping[str, int]) -> Flow | None:
    # The second lookup ignores conjunctive flows, as OVS's does (no recursion).
    best: Flow | None = None
    for flow in flows:
        if (
            matches(flow.match, fields)
            and not _is_conjunctive(flow)
            and (best is None or flow.priority > best.priority)
        ):
            best = flow
    return best


def _learn(action: Learn, fields: Mapping[str, int]) -> Flow:
    match_fields = []
    acts: list[Load | Output] = []
    for spec in action.specs:
        if isinstance(spec, LearnMatchValue):
            match_fields.append(MatchField(spec.field, spec.value))
        elif isinstance(spec, LearnMatchField):
            match_fields.append(MatchField(spec.field, fields.get(spec.src_field, 0)))
        elif isinstance(spec, LearnLoadValue):
            acts.append(Load(spec.field, spec.value))
        elif isinstance(spec, LearnOutputField):
            acts.append(Output(fields.get(spec.src_field, 0)))
    return Flow(
        action.table,
        action.priority,
        Match(tuple(sorted(match_fields))),
        tuple(acts),
        action.cookie,
    )


def _replacing(learned: FlowSet, flows: list[Flow]) -> FlowSet:
    table = dict(learned.flows)
    for flow in flows:
        table[flow.key] = flow  # learning the same flow again replaces it, as in OVS
    return FlowSet(table)
