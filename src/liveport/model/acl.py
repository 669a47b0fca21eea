"""Security groups: OVN's ACLs, port groups and address sets, and the flows they become.

What an ACL means (ovn-nb(5), ovn-northd(8)); liveport implements it as follows.

- An ACL applies to a logical switch it is listed in (`Logical_Switch.acls`) and to every
  switch that has a port in a port group it is listed in (`Port_Group.acls`). `from-lport`
  ACLs judge what a port sends, where it enters the network (the chassis of its VIF);
  `to-lport` ACLs judge what a port is about to receive, on the chassis that delivers it.
- The ACL with the highest priority whose match the packet meets decides: `allow`,
  `allow-related` and `allow-stateless` let it pass, `drop` and `reject` do not. A packet no
  ACL matches passes.
- A switch with at least one `allow-related` ACL is stateful: every IP packet of its ports
  goes through connection tracking (one zone per port and chassis), `allow` means
  `allow-related`, and what was allowed is committed, so that replies and related packets
  (ICMP errors) pass whatever the ACLs say in the other direction. Invalid packets are
  dropped. When a `drop`/`reject` ACL matches a packet of an established connection, the
  connection is marked blocked (ct_mark bit 0) and its replies stop passing too; an `allow`
  ACL that matches it again unblocks it. This is what makes removing a rule cut the
  connections it allowed, as in OVN. `allow-stateless` traffic bypasses tracking.
  Neighbour discovery always passes.
- `reject` is enforced as `drop` (no TCP reset or ICMP unreachable is sent).

Never fail open: an ACL whose match cannot be parsed or compiled is reported with its name,
and if it drops (drop/reject), it drops every packet of its direction on the ports it could
apply to -- the members of the port groups it is listed in, or the whole switch it is
listed in -- at its priority. An ACL that allows and cannot be compiled allows nothing.

Connections carried across a live migration (ct_mark bit 1): a destination chassis admits
the connections the source tracked for the port, each by its addresses and ports, the
first time one of its packets reaches the destination's tracker; the connection is then
committed there with the carried mark and passes in both directions, as it did on the
source. See docs/security-groups.md.

Pure: views in, flows out. Compiled matches are memoised by everything they depend on.
"""

from __future__ import annotations

import functools
import ipaddress
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from liveport.model.addr import Mac
from liveport.model.errors import InvalidInput
from liveport.model.expr import (
    Expr,
    MatchContext,
    MatchSyntaxError,
    address_sets,
    compile_acl_match,
    parse_match,
    port_groups,
)
from liveport.model.expr.compiler import CompiledMatch
from liveport.model.expr.tree import Compare, StrValue, walk
from liveport.model.flows import (
    ETH_IPV4,
    ETH_IPV6,
    IPPROTO_ICMPV6,
    Action,
    Conjunction,
    Controller,
    Ct,
    CtClear,
    Flow,
    FlowError,
    FlowKey,
    Load,
    Resubmit,
    match,
)


class Direction(StrEnum):
    FROM_LPORT = "from-lport"
    TO_LPORT = "to-lport"


class Verdict(StrEnum):
    ALLOW = "allow"
    ALLOW_RELATED = "allow-related"
    ALLOW_STATELESS = "allow-stateless"
    DROP = "drop"
    REJECT = "reject"

    @property
    def allows(self) -> bool:
        return self in (Verdict.ALLOW, Verdict.ALLOW_RELATED, Verdict.ALLOW_STATELESS)


MAX_PRIORITY = 32767
REJECT_MAGIC = b"LPR"
_REJECT = struct.Struct("!3sBB")  # magic, version, direction
_REJECT_CODES = {Direction.FROM_LPORT: 1, Direction.TO_LPORT: 2}
MAX_KEY = (1 << 24) - 1
PRIORITY_OFFSET = 1000  # an ACL's flows sit at 1000 + its priority, as in OVN
# ct_state bits (OVS's CS_* order) and liveport's ct_mark bits.
NEW, EST, REL, RPL, INV, TRK = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
BLOCKED = 0x1  # a drop ACL matched the connection: its replies no longer pass
CARRIED = 0x2  # admitted at a migration's destination as a connection of the source
# Fixed flows of a stateful stage, above every ACL.
P_FIXED = 65535
P_CARRIED = 65534  # a carried connection's first packet on the destination
P_STATELESS = 2000  # in the pre-stage: allow-stateless traffic skips tracking
ND_TYPES = (133, 134, 135, 136)  # router/neighbour solicitation/advertisement


@dataclass(frozen=True)
class AclView:
    """One SB ACL as an agent sees it (for the switches it applies to)."""

    key: int
    direction: Direction
    priority: int
    match: str
    verdict: Verdict
    name: str = ""
    error: str | None = None  # northd could not parse it
    port_groups: tuple[str, ...] = ()  # the groups it is listed in (its scope)
    switches: frozenset[int] = frozenset()  # datapaths it is listed in directly

    @property
    def label(self) -> str:
        return f"ACL {self.name!r} (key {self.key})" if self.name else f"ACL key {self.key}"


def reject_userdata(direction: Direction) -> bytes:
    """The controller userdata of a reject ACL's flows (model.reject answers)."""
    return _REJECT.pack(REJECT_MAGIC, 1, _REJECT_CODES[direction])


def parse_reject_userdata(data: bytes) -> Direction | None:
    """The direction of the ACL that rejected (None: not a reject packet-in)."""
    if len(data) < _REJECT.size:
        return None
    magic, version, code = _REJECT.unpack_from(data)
    if magic != REJECT_MAGIC or version != 1:
        return None
    return next((d for d, c in _REJECT_CODES.items() if c == code), None)


# ----- what northd checks ---------------------------------------------------------------------


@functools.lru_cache(maxsize=16384)
def parsed(text: str) -> Expr | MatchSyntaxError:
    """The tree of a match, or the error that says why it has none (memoised)."""
    try:
        return parse_match(text)
    except MatchSyntaxError as exc:
        return exc


def references(text: str) -> tuple[frozenset[str], frozenset[str]]:
    """(address sets, port groups) a match names; nothing for a match that does not parse."""
    tree = parsed(text)
    if isinstance(tree, MatchSyntaxError):
        return frozenset(), frozenset()
    return address_sets(tree), port_groups(tree)


def acl_problem(
    text: str, known_sets: Iterable[str] | frozenset[str], known_groups: Iterable[str]
) -> str | None:
    """Why an ACL's match cannot be used (None: it can): a syntax or type error (with its
    column), or a name it refers to that does not exist."""
    tree = parsed(text)
    if isinstance(tree, MatchSyntaxError):
        return f"match {text!r}: {tree}"
    sets, groups = address_sets(tree), port_groups(tree)
    missing_sets = sorted(sets - frozenset(known_sets))
    missing_groups = sorted(groups - frozenset(known_groups))
    if missing_sets:
        return f"match {text!r}: no address set named {', '.join(missing_sets)}"
    if missing_groups:
        return f"match {text!r}: no port group named {', '.join(missing_groups)}"
    # What only compiling finds (e.g. a relation on a field that has none for a value).
    ctx = MatchContext(
        address_sets={name: frozenset() for name in sets},
        port_groups={name: frozenset() for name in groups},
    )
    try:
        compile_acl_match(tree, ctx)
    except (InvalidInput, FlowError, ValueError) as exc:
        return f"match {text!r}: {exc}"
    return None


def derived_address_sets(group: str, addresses: Iterable[str]) -> dict[str, frozenset[str]]:
    """The address sets OVN derives from a port group: `<group>_ip4` and `<group>_ip6`,
    the IP addresses in its ports' `addresses` entries ("MAC IP..." words)."""
    ip4: set[str] = set()
    ip6: set[str] = set()
    for entry in addresses:
        for word in entry.split()[1:]:
            try:
                ip = ipaddress.ip_interface(word).ip
            except ValueError:
                continue
            (ip4 if ip.version == 4 else ip6).add(str(ip))
    return {f"{group}_ip4": frozenset(ip4), f"{group}_ip6": frozenset(ip6)}


def address_set_entries(entries: Iterable[str]) -> tuple[frozenset[str], tuple[str, ...]]:
    """The entries of an address set liveport can use (IPv4/IPv6 addresses and prefixes,
    MAC addresses), and one problem per entry it cannot."""
    good: set[str] = set()
    problems: list[str] = []
    for entry in entries:
        text = entry.strip()
        try:
            good.add(str(ipaddress.ip_network(text, strict=False)) if "/" in text else _one(text))
        except (ValueError, InvalidInput):
            problems.append(f"{entry!r} is not an IP address, prefix or MAC address")
    return frozenset(good), tuple(sorted(problems))


def _one(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return str(Mac.parse(text))


def stateful(acls: Iterable[AclView]) -> bool:
    """Whether a switch with these ACLs tracks connections (OVN: any allow-related)."""
    return any(a.verdict is Verdict.ALLOW_RELATED for a in acls)


# ----- the flows of one stage ----------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """Where one direction's ACLs run in the pipeline. `pre` sends IP packets to the
    tracker (zone in bits [0, 16) of `zone_field`) and on to `table`, whose verdicts
    continue with `accept`."""

    direction: Direction
    pre: int
    table: int
    zone_field: str
    accept: tuple[Action, ...]


@dataclass(frozen=True)
class StageFlows:
    flows: tuple[Flow, ...]
    problems: Mapping[int, str]  # ACL key -> why it is enforced fail-closed (or dropped)


MatchFields = Mapping[str, int | tuple[int, int]]


def commit(zone_field: str, mark: int, bits: int = 1) -> Ct:
    """Stores the connection, setting ct_mark bits [0, bits) to mark."""
    return Ct(commit=True, zone_field=zone_field, exec=(Load("ct_mark", mark, 0, bits),))


def stage_flows(
    stage: Stage,
    dp: int,
    acls: Sequence[AclView],
    is_stateful: bool,
    context: Callable[[AclView], MatchContext],
    cookie_value: int,
) -> StageFlows:
    """The flows of one direction's ACL stage on one switch: the fixed ones and every
    ACL's (acls: those of the switch in this direction). context(acl) gives what the names
    in the ACL's match refer to on this switch."""
    flows: list[Flow] = list(_fixed(stage, dp, is_stateful, cookie_value))
    problems: dict[int, str] = {}
    by_key: dict[FlowKey, tuple[int, Flow]] = {}
    for acl in sorted(acls, key=lambda a: a.key):
        ctx = context(acl)
        compiled = acl_flows(stage, dp, acl, is_stateful, ctx, cookie_value)
        if compiled.problem:
            problems[acl.key] = compiled.problem
        for flow in compiled.flows:
            _add(by_key, acl.key, flow, problems)
    flows.extend(f for _, f in by_key.values())
    return StageFlows(tuple(flows), problems)


def _add(
    by_key: dict[FlowKey, tuple[int, Flow]], key: int, flow: Flow, problems: dict[int, str]
) -> None:
    """One table holds one flow per match and priority: conjunctive flows of several ACLs
    share it (their conjunction actions are merged); between a plain flow and conjunctive
    ones the plain one wins (OVS would let it anyway); of two plain flows that differ, the
    ACL with the lower key wins and the other is reported."""
    old = by_key.get(flow.key)
    if old is None:
        by_key[flow.key] = (key, flow)
        return
    old_key, old_flow = old
    a, b = _conjunctions(old_flow), _conjunctions(flow)
    if a and b:
        merged = tuple(sorted({*a, *b}))
        by_key[flow.key] = (
            min(old_key, key),
            Flow(flow.table, flow.priority, flow.match, merged, flow.cookie),
        )
    elif a:
        by_key[flow.key] = (key, flow)
    elif b or old_flow == flow:
        return
    else:
        problems.setdefault(
            key,
            f"matches the same packets at the same priority as ACL key {old_key} with "
            "another verdict; that ACL decides",
        )


def _ip_only(flows: Iterable[Flow]) -> list[Flow]:
    """OVS runs ct only on flows that match IPv4 or IPv6: a flow with a ct action and no
    eth_type becomes one flow per IP version (a packet that reaches one is tracked, so IP
    anyway)."""
    out: list[Flow] = []
    for flow in flows:
        if not any(isinstance(a, Ct) for a in flow.actions):
            out.append(flow)
            continue
        eth_type = flow.match.value("eth_type")
        if eth_type in (ETH_IPV4, ETH_IPV6):
            out.append(flow)
            continue
        if flow.match.get("eth_type") is not None:
            continue  # a tracked packet is never of another type: it cannot match
        for eth_type in (ETH_IPV4, ETH_IPV6):
            fields = {
                f.name: (f.value if f.mask is None else (f.value, f.mask))
                for f in flow.match.fields
            }
            out.append(replace(flow, match=match(**fields, eth_type=eth_type)))
    return out


def _conjunctions(flow: Flow) -> list[Conjunction]:
    found = [a for a in flow.actions if isinstance(a, Conjunction)]
    return found if found and len(found) == len(flow.actions) else []


def _fixed(stage: Stage, dp: int, is_stateful: bool, c: int) -> list[Flow]:
    pre, table, accept = stage.pre, stage.table, stage.accept
    # What the to-lport ACLs see of the tracker is the outport zone's state, or nothing: a
    # packet they do not track forgets what the from-lport stage's zone said of it.
    clear = is_stateful and stage.direction is Direction.TO_LPORT
    to_table: tuple[Action, ...] = (CtClear(), Resubmit(table)) if clear else (Resubmit(table),)
    out = [Flow(pre, 0, match(metadata=dp), to_table, c)]
    out.append(Flow(table, 0, match(metadata=dp), accept, c))
    if not is_stateful:
        return out
    track = Ct(zone_field=stage.zone_field, table=table)
    for eth_type in (ETH_IPV4, ETH_IPV6):
        out.append(Flow(pre, 100, match(metadata=dp, eth_type=eth_type), (track,), c))
    unblock = commit(stage.zone_field, 0)

    def fixed(priority: int, actions: tuple[Action, ...], **fields: int | tuple[int, int]) -> None:
        out.append(Flow(table, priority, match(metadata=dp, **fields), actions, c))

    for nd in ND_TYPES:  # neighbour discovery is never tracked and always passes
        nd_fields = {"eth_type": ETH_IPV6, "ip_proto": IPPROTO_ICMPV6, "icmpv6_type": nd}
        out.append(Flow(pre, 110, match(metadata=dp, **nd_fields), to_table, c))
        fixed(P_FIXED, accept, **nd_fields)
    fixed(P_FIXED, (), ct_state=(INV | TRK, INV | TRK))
    fixed(
        P_FIXED, (), ct_state=(EST | RPL | TRK, EST | RPL | INV | TRK), ct_mark=(BLOCKED, BLOCKED)
    )
    fixed(
        P_FIXED,
        accept,
        ct_state=(EST | RPL | TRK, NEW | EST | RPL | INV | TRK),
        ct_mark=(0, BLOCKED),
    )
    fixed(P_FIXED, accept, ct_state=(REL | TRK, NEW | EST | REL | INV | TRK), ct_mark=(0, BLOCKED))
    fixed(
        P_FIXED,
        accept,
        ct_state=(EST | TRK, NEW | EST | RPL | INV | TRK),
        ct_mark=(CARRIED, CARRIED | BLOCKED),
    )
    # No ACL matched: a new connection is committed (so that its replies pass).
    for eth_type in (ETH_IPV4, ETH_IPV6):
        fixed(1, (unblock, *accept), eth_type=eth_type, ct_state=(TRK, EST | TRK))
        fixed(
            1,
            (unblock, *accept),
            eth_type=eth_type,
            ct_state=(EST | TRK, EST | TRK),
            ct_mark=(BLOCKED, BLOCKED),
        )
    return out


@dataclass(frozen=True)
class AclFlows:
    flows: tuple[Flow, ...]
    problem: str | None = None


# (ct_state value, mask, ct_mark value, mask) constraints of each variant of an ACL's flows.
_NEW = (NEW | TRK, NEW | EST | TRK, 0, 0)
_EST_BLOCKED = (EST | TRK, NEW | EST | RPL | TRK, BLOCKED, BLOCKED)
_EST_OPEN = (EST | TRK, NEW | EST | RPL | TRK, 0, BLOCKED)
_UNTRACKED = (0, TRK, 0, 0)
_NOT_EST = (0, EST, 0, 0)
_EST_ANY_BLOCKED = (EST, EST, BLOCKED, BLOCKED)
_EST_ANY_OPEN = (EST, EST, 0, BLOCKED)
CONJ_SLOTS = 32  # conjunction ids per variant of one ACL


@functools.lru_cache(maxsize=8192)
def acl_flows(
    stage: Stage, dp: int, acl: AclView, is_stateful: bool, ctx: MatchContext, cookie_value: int
) -> AclFlows:
    """One ACL's flows on one switch (memoised: equal inputs, equal flows)."""
    priority = PRIORITY_OFFSET + acl.priority
    accept, zone = stage.accept, stage.zone_field
    tree = parsed(acl.match)
    problem: str | None = acl.error
    compiled: CompiledMatch | None = None
    if problem is None and isinstance(tree, MatchSyntaxError):
        problem = f"match {acl.match!r}: {tree}"
    if problem is None and not isinstance(tree, MatchSyntaxError):
        try:
            compiled = compile_acl_match(tree, ctx)
        except (InvalidInput, FlowError, ValueError) as exc:
            problem = f"match {acl.match!r}: {exc}"
    if compiled is None:
        if acl.verdict.allows:
            return AclFlows((), f"{problem}; it allows nothing")
        scope = _scope(acl, dp, stage, ctx)
        dropped = _variant(scope, 0, stage, dp, acl, priority, (), cookie_value, (0, 0, 0, 0))
        return AclFlows(
            tuple(dropped), f"{problem}; it drops all {acl.direction} traffic of its ports"
        )
    variants: list[tuple[tuple[int, int, int, int], tuple[Action, ...]]]
    # reject: the packet goes to the agent, which answers it (model.reject), and no further.
    refuse: tuple[Action, ...] = (
        (Controller(reject_userdata(stage.direction)),) if acl.verdict is Verdict.REJECT else ()
    )
    if acl.verdict is Verdict.ALLOW_STATELESS or not is_stateful:
        variants = [((0, 0, 0, 0), accept if acl.verdict.allows else refuse)]
    elif acl.verdict.allows:
        keep = (commit(zone, 0), *accept)
        variants = [(_NEW, keep), (_EST_BLOCKED, keep), (_EST_OPEN, accept), (_UNTRACKED, accept)]
    else:
        block = (commit(zone, BLOCKED), *refuse)
        variants = [(_NOT_EST, refuse), (_EST_ANY_BLOCKED, refuse), (_EST_ANY_OPEN, block)]
    flows: list[Flow] = []
    if acl.verdict is Verdict.ALLOW_STATELESS and is_stateful:
        # Its packets skip the tracker (the pre-stage sends them straight on).
        clear = stage.direction is Direction.TO_LPORT
        skip: tuple[Action, ...] = (
            (CtClear(), Resubmit(stage.table)) if clear else (Resubmit(stage.table),)
        )
        flows += _variant(
            compiled,
            7,
            replace(stage, table=stage.pre),
            dp,
            acl,
            P_STATELESS,
            skip,
            cookie_value,
            (0, 0, 0, 0),
        )
    for index, (constraint, actions) in enumerate(variants):
        flows += _variant(
            compiled, index, stage, dp, acl, priority, actions, cookie_value, constraint
        )
    return AclFlows(tuple(flows), problem)


def _variant(
    compiled: CompiledMatch,
    index: int,
    stage: Stage,
    dp: int,
    acl: AclView,
    priority: int,
    actions: tuple[Action, ...],
    cookie_value: int,
    constraint: tuple[int, int, int, int],
) -> list[Flow]:
    base: dict[str, int | tuple[int, int]] = {"metadata": dp}
    state, state_mask, mark, mark_mask = constraint
    if state_mask:
        base["ct_state"] = (state, state_mask)
    if mark_mask:
        base["ct_mark"] = (mark, mark_mask)
    conj_base = (acl.key << 8) | (index << 5)
    use = compiled.n_conjunctions <= CONJ_SLOTS
    return _ip_only(
        compiled.flows(
            stage.table,
            priority,
            actions,
            cookie_value,
            base,
            conj_id=conj_base if use and compiled.n_conjunctions else None,
            use_conjunction=use,
        )
    )


def _scope(acl: AclView, dp: int, stage: Stage, ctx: MatchContext) -> CompiledMatch:
    """What a broken drop ACL drops: everything on a switch it is listed in; otherwise
    the packets from (from-lport) or to (to-lport) the members of its port groups."""
    if dp in acl.switches or not acl.port_groups:
        return compile_acl_match("1")
    field = "inport" if stage.direction is Direction.FROM_LPORT else "outport"
    members = frozenset().union(*(ctx.port_groups.get(g, frozenset()) for g in acl.port_groups))
    scoped = MatchContext(port_groups={"scope": members}, ports=ctx.ports)
    return compile_acl_match(f"{field} == @scope", scoped)


# ----- what a match needs to know ---------------------------------------------------------------


def match_context(
    acl: AclView,
    sets: Mapping[str, frozenset[str]],
    groups: Mapping[str, frozenset[str]],
    ports: Mapping[str, int],
    inport_field: str,
    outport_field: str,
) -> MatchContext:
    """What the names in an ACL's match refer to on one switch: the address sets and port
    groups it names (and those it is listed in, for its fail-closed scope), with the keys
    of the switch's ports among their members and among the ports it names."""
    set_names, group_names = references(acl.match)
    group_names = group_names | frozenset(acl.port_groups)
    members = {g: groups.get(g, frozenset()) for g in group_names}
    named = {p for m in members.values() for p in m if p in ports}
    named |= {p for p in _port_names(acl.match) if p in ports}
    return MatchContext(
        address_sets={s: sets.get(s, frozenset()) for s in set_names},
        port_groups={g: frozenset(p for p in m if p in ports) for g, m in members.items()},
        ports={p: ports[p] for p in sorted(named)},
        inport_field=inport_field,
        outport_field=outport_field,
    )


@functools.lru_cache(maxsize=16384)
def _port_names(text: str) -> frozenset[str]:
    """Port names an ACL's match compares inport or outport with."""
    tree = parsed(text)
    if isinstance(tree, MatchSyntaxError):
        return frozenset()
    return frozenset(
        v.value
        for node in walk(tree)
        if isinstance(node, Compare) and node.field.name in ("inport", "outport")
        for v in node.values
        if isinstance(v, StrValue)
    )
