"""A model of an OpenFlow switch running a FlowSet, for tests that ask what a packet does.

It follows OVS's semantics for what liveport uses: highest-priority match per table (ties
are a compile error, FlowSet refuses them), resubmit continues after the sub-table, output
to the packet's own in_port is dropped, registers start at zero, learn installs a flow
that later packets see, controller actions are recorded. Pure: a Switch is a value that
returns a new Switch when learning.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from liveport.model.flows import (
    FIELD_BITS,
    Controller,
    Flow,
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
    Resubmit,
    SetField,
)
from liveport.model.packets import ETH_ARP, ETH_IPV4, ETH_IPV6, ETH_RARP, Kind, decode

MAX_DEPTH = 64


def packet_fields(frame: bytes, in_port: int, tunnel_id: int = 0) -> dict[str, int]:
    """The match fields OVS would extract from frame arriving on in_port."""
    info = decode(frame)
    fields = {
        "in_port": in_port,
        "eth_src": info.src.value,
        "eth_dst": info.dst.value,
        "eth_type": info.ethertype,
        "tunnel_id": tunnel_id,
    }
    if info.ethertype in (ETH_ARP, ETH_RARP) and len(frame) >= 42:
        body = frame[14:]
        fields["arp_op"] = int.from_bytes(body[6:8], "big")
        fields["arp_sha"] = int.from_bytes(body[8:14], "big")
        fields["arp_spa"] = int.from_bytes(body[14:18], "big")
        fields["arp_tha"] = int.from_bytes(body[18:24], "big")
        fields["arp_tpa"] = int.from_bytes(body[24:28], "big")
    elif info.ethertype == ETH_IPV4 and info.src_ip is not None:
        fields["ipv4_src"] = int(info.src_ip)
        fields["ipv4_dst"] = int(info.dst_ip) if info.dst_ip is not None else 0
        fields["ip_proto"] = frame[14 + 9]
    elif info.ethertype == ETH_IPV6 and info.src_ip is not None:
        fields["ipv6_src"] = int(info.src_ip)
        fields["ipv6_dst"] = int(info.dst_ip) if info.dst_ip is not None else 0
        fields["ip_proto"] = frame[14 + 6]
        if info.kind is Kind.NA and info.target is not None:
            fields["icmpv6_type"] = 136
            fields["icmpv6_code"] = 0
            fields["ipv6_nd_target"] = int(info.target)
    return fields


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


@dataclass
class _Run:
    fields: dict[str, int]
    outputs: list[int] = field(default_factory=list)
    tunnel_ids: list[int] = field(default_factory=list)
    controller: list[bytes] = field(default_factory=list)
    learned: list[Flow] = field(default_factory=list)


@dataclass(frozen=True)
class Switch:
    flows: FlowSet
    learned: FlowSet = field(default_factory=FlowSet)

    def lookup(self, table: int, fields: Mapping[str, int]) -> Flow | None:
        best: Flow | None = None
        for flow in (*self.flows.table(table), *self.learned.table(table)):
            if matches(flow.match, fields) and (best is None or flow.priority > best.priority):
                best = flow
        return best

    def process(self, fields: Mapping[str, int]) -> tuple[Result, Switch]:
        """Runs one packet from table 0; returns what it did and the switch after learning."""
        run = _Run(dict(fields))
        self._table(0, run, depth=0)
        result = Result(
            tuple(run.outputs), tuple(run.tunnel_ids), tuple(run.controller), tuple(run.learned)
        )
        if not run.learned:
            return result, self
        return result, Switch(self.flows, _replacing(self.learned, run.learned))

    def _table(self, table: int, run: _Run, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise RecursionError("resubmit depth exceeded")
        flow = self.lookup(table, run.fields)
        if flow is None:
            return
        for action in flow.actions:
            self._action(action, run, depth)

    def _action(self, action: object, run: _Run, depth: int) -> None:
        f = run.fields
        if isinstance(action, Output):
            if action.port != f.get("in_port"):
                run.outputs.append(action.port)
                run.tunnel_ids.append(f.get("tunnel_id", 0))
        elif isinstance(action, OutputReg):
            port = f.get(action.field, 0)
            if port != f.get("in_port"):
                run.outputs.append(port)
                run.tunnel_ids.append(f.get("tunnel_id", 0))
        elif isinstance(action, SetField):
            f[action.field] = action.value
        elif isinstance(action, Load):
            width = action.nbits or FIELD_BITS[action.field] - action.start
            mask = ((1 << width) - 1) << action.start
            f[action.field] = (f.get(action.field, 0) & ~mask) | (
                (action.value << action.start) & mask
            )
        elif isinstance(action, Resubmit):
            self._table(action.table, run, depth + 1)
        elif isinstance(action, Controller):
            run.controller.append(action.userdata)
        elif isinstance(action, Learn):
            run.learned.append(_learn(action, f))
        else:
            raise TypeError(f"unknown action {action!r}")


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
