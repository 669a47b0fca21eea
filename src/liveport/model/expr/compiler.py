"""Compiles a match expression to OpenFlow flows, as ovn-controller does (lib/expr.c).

1. Address sets ($name) and port groups (@name) are resolved through a MatchContext; port
   names become the logical port keys held in the inport/outport registers. A port name
   the context does not know matches nothing, as in OVN for a port not on the datapath;
   so does "== " an empty set, while "!=" an empty set is true (with no prerequisites).
2. Negations are pushed down to the comparisons, inverting them; each comparison then
   becomes matches of its field under masks: "x != v" the alternatives "x differs from v
   first at bit i" (one per bit), as in OVN; "x != {v1, v2, ...}" of prefixes the fewest
   prefixes outside their union (OVN intersects the per-bit alternatives of each, which
   comes to the same matches but takes minutes for hundreds of exceptions); a range the
   fewest value/mask prefixes covering it.
   Every comparison implies its field's prerequisites (tcp.dst: ip.proto == 6 and
   eth.type of IPv4 or IPv6), which are added once for a subexpression that tests a single
   symbol, as OVN does. Unlike OVN, prerequisites inside a negated predicate stay
   positive: OVN makes "!ip.is_frag" also match non-IP packets, through a "eth.type !=
   0x800" OpenFlow cannot express; here it means "an IP packet that is not a fragment".
3. The result is normalised (see normal.py) into Terms. A Term with several clauses (a
   conjunction of disjunctions over different fields, such as "ip4.src == $ten_addresses
   && tcp.dst == {five ports}") becomes an OVS conjunctive match when that takes fewer
   flows than multiplying the clauses out: a flow per alternative with a
   conjunction(id, k/n) action, plus one flow matching conj_id = id that carries the
   actions -- sum(sizes) + 1 flows instead of product(sizes). (OVN always uses a
   conjunction; for 2x2 alternatives four plain flows are both fewer and cheaper to look
   up.) Ids are the caller's: flows() uses conj_id, conj_id + 1, ... for the Terms that
   need one, n_conjunctions of them.

Everything is pure and deterministic: one text and context give one sorted list of flows.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product

from liveport.model.expr import symbols
from liveport.model.expr.errors import MatchSyntaxError
from liveport.model.expr.lexer import NumberError, parse_number
from liveport.model.expr.normal import (
    TRUE,
    Term,
    Terms,
    atom,
    complement_ranges,
    conjoin,
    disjoin,
    from_ranges,
    prefixes,
    prefixes_only,
    to_ranges,
)
from liveport.model.expr.parser import check_constant, parse_match
from liveport.model.expr.symbols import VLAN_TCI, Symbol
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
    Relop,
    StrValue,
)
from liveport.model.flows import (
    FIELD_BITS,
    VLAN_PRESENT,
    Action,
    Conjunction,
    Flow,
    FlowError,
    FlowKey,
    match,
)
from liveport.model.frozen import FrozenMap

FieldValue = int | tuple[int, int]  # as flows.match() takes them


@dataclass(frozen=True)
class MatchContext:
    """What names in a match refer to. Mappings are frozen on construction, so a context
    is hashable (to memoise compiled matches)."""

    address_sets: Mapping[str, frozenset[str]] = field(default_factory=FrozenMap)
    port_groups: Mapping[str, frozenset[str]] = field(default_factory=FrozenMap)
    ports: Mapping[str, int] = field(default_factory=FrozenMap)  # logical port -> key
    resident_ports: frozenset[str] = frozenset()  # is_chassis_resident() is true for these
    inport_field: str = "reg14"
    outport_field: str = "reg15"

    def __post_init__(self) -> None:
        for name in ("address_sets", "port_groups"):
            frozen = FrozenMap({k: frozenset(v) for k, v in getattr(self, name).items()})
            object.__setattr__(self, name, frozen)
        object.__setattr__(self, "ports", FrozenMap(self.ports))
        object.__setattr__(self, "resident_ports", frozenset(self.resident_ports))


EMPTY_CONTEXT = MatchContext()


def compile_acl_match(text: str | Expr, ctx: MatchContext = EMPTY_CONTEXT) -> CompiledMatch:
    """The flows a match expression (text, or a tree parse_match made) stands for.
    Raises MatchSyntaxError."""
    expr = parse_match(text) if isinstance(text, str) else text
    terms = _Lowering(ctx).lower(expr, negated=False)
    return CompiledMatch(tuple(terms))


@dataclass(frozen=True)
class CompiledMatch:
    terms: tuple[Term, ...]

    @property
    def matches_nothing(self) -> bool:
        return not self.terms

    @property
    def matches_everything(self) -> bool:
        return self.terms == (Term(),)

    @functools.cached_property
    def n_conjunctions(self) -> int:
        """How many conjunction ids flows() uses (from conj_id on)."""
        return sum(_pays(t) for t in self.terms)

    def flows(
        self,
        table: int,
        priority: int,
        actions: Sequence[Action],
        cookie: int = 0,
        base_fields: Mapping[str, FieldValue] | None = None,
        conj_id: int | None = None,
        *,
        use_conjunction: bool = True,
    ) -> list[Flow]:
        """The flows in table at priority that run actions for the packets this match
        matches. base_fields (e.g. {"metadata": datapath key}) are added to every flow.
        conj_id is the first of n_conjunctions ids, unique in the table, that conjunctive
        matches use (needed only when n_conjunctions > 0); use_conjunction=False multiplies
        every Term out instead. Sorted by match; every flow passes flows.match()'s checks."""
        plans: list[_Plan] = []
        next_id = conj_id
        for term in self.terms:
            if use_conjunction and _pays(term):
                if next_id is None or not 1 <= next_id < 1 << 32:
                    raise ValueError(
                        f"this match needs {self.n_conjunctions} conjunction ids: pass conj_id"
                    )
                plans.extend(_conjunctive(term, next_id))
                next_id += 1
            else:
                plans.extend(_multiplied(term))
        base = _atoms(base_fields or {})
        out: list[Flow] = []
        for group in _groups(plans):
            built = [b for p in group if (b := _with_base(p, base)) is not None]
            if _viable(group, built):
                out.extend(_flow(p, table, priority, actions, cookie) for p in built)
        return sorted(merge_flows(out), key=lambda f: f.match)


# ----- planning flows ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    fields: tuple[tuple[str, tuple[int, int]], ...]
    group: int = -1  # the conjunction it belongs to (-1: none)
    conjunction: Conjunction | None = None  # a clause flow's action
    conj_id: int | None = None  # the flow that carries the actions of a conjunction


def _pays(term: Term) -> bool:
    """Whether a conjunctive match takes fewer flows than multiplying term out."""
    sizes = [len(c.atoms) for c in term.clauses]
    return len(sizes) >= 2 and math.prod(sizes) > sum(sizes) + 1


def _multiplied(term: Term) -> list[_Plan]:
    choices = [[(c.field, a) for a in c.atoms] for c in term.clauses]
    return [_Plan(tuple(sorted((*term.hard, *combo)))) for combo in product(*choices)]


def _conjunctive(term: Term, conj_id: int) -> list[_Plan]:
    n = len(term.clauses)
    carrier = (*term.hard, ("conj_id", (conj_id, (1 << 32) - 1)))
    plans = [_Plan(carrier, conj_id, None, conj_id)]
    for k, clause in enumerate(term.clauses, start=1):
        action = Conjunction(conj_id, k, n)
        for alternative in clause.atoms:
            fields = tuple(sorted((*term.hard, (clause.field, alternative))))
            plans.append(_Plan(fields, conj_id, action))
    return plans


def _groups(plans: list[_Plan]) -> list[list[_Plan]]:
    """Plans that stand or fall together: a conjunction's flows, or one plain flow."""
    groups: dict[int, list[_Plan]] = {}
    out: list[list[_Plan]] = []
    for plan in plans:
        if plan.group < 0:
            out.append([plan])
        else:
            groups.setdefault(plan.group, []).append(plan)
    return out + list(groups.values())


def _viable(group: list[_Plan], built: list[_Plan]) -> bool:
    """Whether the flows of group that base_fields left can still match: all of a plain
    one; for a conjunction, its conj_id flow and a flow of every clause."""
    if group[0].group < 0:
        return len(built) == 1
    clauses = {p.conjunction.clause for p in built if p.conjunction is not None}
    n_clauses = next(p.conjunction.n_clauses for p in group if p.conjunction is not None)
    carrier = any(p.conj_id is not None for p in built)
    return carrier and clauses == set(range(1, n_clauses + 1))


def _atoms(fields: Mapping[str, FieldValue]) -> dict[str, tuple[int, int]]:
    out = {}
    for name, raw in fields.items():
        if name not in FIELD_BITS:
            raise FlowError(f"unknown match field {name!r}")
        value, mask = raw if isinstance(raw, tuple) else (raw, (1 << FIELD_BITS[name]) - 1)
        out[name] = (value, mask)
    return out


def _with_base(plan: _Plan, base: dict[str, tuple[int, int]]) -> _Plan | None:
    """plan with base's fields too, or None if no packet can match both."""
    fields = dict(plan.fields)
    for name, (value, mask) in base.items():
        if name in fields:
            have_value, have_mask = fields[name]
            if (have_value ^ value) & have_mask & mask:
                return None
            fields[name] = (have_value | value, have_mask | mask)
        else:
            fields[name] = (value, mask)
    return _Plan(tuple(sorted(fields.items())), plan.group, plan.conjunction, plan.conj_id)


def _flow(plan: _Plan, table: int, priority: int, actions: Sequence[Action], cookie: int) -> Flow:
    m = match(**dict(plan.fields))
    acts: tuple[Action, ...] = (plan.conjunction,) if plan.conjunction else tuple(actions)
    return Flow(table, priority, m, acts, cookie)


def merge_flows(flows: Iterable[Flow]) -> list[Flow]:
    """flows with those of one table, priority and match made one, as OVS can hold only one:
    conjunctive flows get the union of their conjunction actions; a plain flow absorbs
    conjunctive ones (at one priority a plain match wins over a conjunction anyway); two
    plain flows must be equal. For combining several matches' flows into one table."""
    by_key: dict[FlowKey, Flow] = {}
    for flow in flows:
        old = by_key.get(flow.key)
        by_key[flow.key] = flow if old is None else _merge(old, flow)
    return list(by_key.values())


def _merge(a: Flow, b: Flow) -> Flow:
    a_conj, b_conj = _conjunctions(a), _conjunctions(b)
    if a_conj and b_conj:
        actions = tuple(sorted({*a_conj, *b_conj}))
        return Flow(a.table, a.priority, a.match, actions, min(a.cookie, b.cookie))
    if a_conj:
        return b
    if b_conj or a == b:
        return a
    raise FlowError(f"two different flows for {a.key}: {a} / {b}")


def _conjunctions(flow: Flow) -> list[Conjunction]:
    """A conjunctive flow's actions ([] for any other flow)."""
    found = [a for a in flow.actions if isinstance(a, Conjunction)]
    return found if found and len(found) == len(flow.actions) else []


# ----- lowering an expression to the normal form ------------------------------------------


class _Lowering:
    def __init__(self, ctx: MatchContext) -> None:
        self.ctx = ctx

    def lower(self, expr: Expr, *, negated: bool, prereqs: bool = True) -> Terms:
        if isinstance(expr, Bool):
            return list(TRUE) if expr.value != negated else []
        if isinstance(expr, ChassisResident):
            resident = expr.port in self.ctx.resident_ports
            return list(TRUE) if resident != negated else []
        if isinstance(expr, Not):
            return self.lower(expr.operand, negated=not negated, prereqs=prereqs)
        if isinstance(expr, Compare):
            return self._compare(expr, negated, prereqs)
        # A subexpression over one symbol gets that symbol's prerequisites once (as OVN
        # does), so that "tcp.dst == {...}" stays one clause on tcp_dst.
        unique = self._unique_symbol(expr) if prereqs else None
        inner = prereqs and unique is None
        parts = [self.lower(e, negated=negated, prereqs=inner) for e in expr.operands]
        result = conjoin(parts) if isinstance(expr, And) != negated else disjoin(parts)
        if unique is not None:
            result = conjoin([result, _prerequisites(unique)])
        return result

    def _unique_symbol(self, expr: Expr) -> str | None:
        """The one symbol every comparison in expr tests, if there is one. A comparison
        with only empty sets is a constant, no comparison (as in OVN)."""
        if isinstance(expr, Compare):
            return None if self._empty(expr) else expr.field.name
        if isinstance(expr, Not):
            return self._unique_symbol(expr.operand)
        if isinstance(expr, And | Or):
            names = {self._unique_symbol(e) for e in expr.operands}
            if len(names) == 1:
                return names.pop()
        return None

    def _empty(self, node: Compare) -> bool:
        """Whether node compares with empty sets only (an unknown name is not empty: it is
        reported when the comparison is compiled)."""
        for value in node.values:
            contents: frozenset[str] | None = None
            if isinstance(value, AddressSetRef):
                contents = self.ctx.address_sets.get(value.name)
            elif isinstance(value, PortGroupRef):
                contents = self.ctx.port_groups.get(value.name)
            if contents is None or contents:
                return False
        return True

    def _compare(self, node: Compare, negated: bool, prereqs: bool) -> Terms:
        op = INVERSE[node.op] if negated else node.op
        symbol = symbols.SYMBOLS[node.field.name]
        if symbol.is_string:
            return self._ports(symbol, node, op)
        values = self._integers(node, symbol)
        if not values:  # an empty address set: OVN makes == false and != true
            return [] if op == "==" else list(TRUE)
        outside = _outside(symbol, node.field, values) if op == "!=" else None
        if outside is not None:
            result = outside
        else:
            single = [_comparison(symbol, node.field, op, v, m) for v, m in values]
            result = disjoin(single) if op == "==" else conjoin(single)
        if prereqs:
            result = conjoin([result, _prerequisites(symbol.name)])
        return result

    def _ports(self, symbol: Symbol, node: Compare, op: Relop) -> Terms:
        names: set[str] = set()
        for value in node.values:
            if isinstance(value, StrValue):
                names.add(value.value)
            elif isinstance(value, PortGroupRef):
                names.update(self._port_group(value))
        if not names:
            return [] if op == "==" else list(TRUE)
        assert op == "=="  # the parser allows a nominal field only positive equality
        register = self.ctx.inport_field if symbol.name == "inport" else self.ctx.outport_field
        full = (1 << FIELD_BITS[register]) - 1
        keys = sorted(k for n in names if (k := self.ctx.ports.get(n)) is not None)
        return disjoin([atom(register, key, full) for key in keys])

    def _port_group(self, ref: PortGroupRef) -> frozenset[str]:
        ports = self.ctx.port_groups.get(ref.name)
        if ports is None:
            raise MatchSyntaxError(ref.column, f"unknown port group @{ref.name}")
        return ports

    def _integers(self, node: Compare, symbol: Symbol) -> list[tuple[int, int | None]]:
        """(value, mask or None) of every value compared, address sets expanded."""
        out: dict[tuple[int, int | None], None] = {}
        for value in node.values:
            if isinstance(value, IntValue):
                out[value.value, value.mask] = None
            elif isinstance(value, AddressSetRef):
                for entry in self._address_set(value, node.field, symbol):
                    out[entry.value, entry.mask] = None
        return list(out)

    def _address_set(self, ref: AddressSetRef, fld: FieldRef, symbol: Symbol) -> list[IntValue]:
        entries = self.ctx.address_sets.get(ref.name)
        if entries is None:
            raise MatchSyntaxError(ref.column, f"unknown address set ${ref.name}")
        kind = symbols.field_kind(symbol, fld.ofs, fld.n_bits)
        out = []
        for entry in sorted(entries):
            try:
                value, mask, fmt = parse_number(entry.strip())
            except NumberError as exc:
                raise MatchSyntaxError(
                    ref.column, f"address set ${ref.name} holds {entry!r}, not an address: {exc}"
                ) from None
            constant = IntValue(value, mask, fmt, ref.column)
            check_constant(fld, kind, constant, origin=ref.name)
            out.append(constant)
        return out


@functools.lru_cache(maxsize=1024)
def _predicate(name: str, positive: bool) -> tuple[Term, ...]:
    """A predicate's expansion, or its negation (never involves ports or sets)."""
    expansion = symbols.SYMBOLS[name].predicate
    assert expansion is not None
    return tuple(_Lowering(EMPTY_CONTEXT).lower(parse_match(expansion), negated=not positive))


@functools.lru_cache(maxsize=1024)
def _prerequisite_terms(name: str) -> tuple[Term, ...]:
    prereqs = symbols.SYMBOLS[name].prereqs
    if prereqs is None:
        return tuple(TRUE)
    return tuple(_Lowering(EMPTY_CONTEXT).lower(parse_match(prereqs), negated=False))


def _prerequisites(name: str) -> Terms:
    return list(_prerequisite_terms(name))


def _outside(symbol: Symbol, fld: FieldRef, values: list[tuple[int, int | None]]) -> Terms | None:
    """x != each of values, for a whole field and prefix values ("ip4.src != $exceptions"):
    the fewest prefixes outside their union, computed at once rather than by intersecting
    one "!=" after another (which takes minutes for hundreds of values). None if that does
    not apply."""
    if symbol.predicate is not None or symbol.parent is not None or not fld.whole:
        return None
    if symbol.openflow in (None, VLAN_TCI) or len(values) < 2:
        return None
    full = (1 << fld.n_bits) - 1
    atoms = [(v & (full if m is None else m), full if m is None else m) for v, m in values]
    if not prefixes_only(atoms, fld.n_bits):
        return None
    outside = complement_ranges(to_ranges(atoms, fld.n_bits), fld.n_bits)
    assert symbol.openflow is not None
    return disjoin(atom(symbol.openflow, v, m) for v, m in from_ranges(outside, fld.n_bits))


def _comparison(symbol: Symbol, fld: FieldRef, op: Relop, value: int, mask: int | None) -> Terms:
    """symbol (bits fld.ofs.. of it) op value/mask, without prerequisites."""
    if symbol.predicate is not None:
        return list(_predicate(symbol.name, bool(value & 1) ^ (op == "!=")))
    owner = symbols.base(symbol)
    ofs = symbol.ofs + fld.ofs
    full = (1 << fld.n_bits) - 1
    mask = full if mask is None else mask
    if op == "==":
        alternatives = [(value & mask, mask)]
    elif op == "!=":
        alternatives = not_equal(value, mask)
    else:
        alternatives = relation(op, value, fld.n_bits)
    return disjoin(_field_atom(owner, v << ofs, m << ofs) for v, m in alternatives)


def not_equal(value: int, mask: int) -> list[tuple[int, int]]:
    """x != value under mask, as OVN writes it: for each masked bit i, "x agrees with value
    on the masked bits above i and differs at i" -- disjoint alternatives, one per bit."""
    out = []
    for bit in range(mask.bit_length()):
        if mask >> bit & 1:
            upper = mask & ~((1 << bit) - 1)
            out.append(((value & upper) ^ (1 << bit), upper))
    return out


def relation(op: Relop, value: int, n_bits: int) -> list[tuple[int, int]]:
    """x op value for an n_bits-wide x, as the fewest prefixes covering that range."""
    top = (1 << n_bits) - 1
    low, high = {
        "<": (0, value - 1),
        "<=": (0, value),
        ">": (value + 1, top),
        ">=": (value, top),
    }[op]
    return prefixes(low, high, n_bits)


def _field_atom(owner: Symbol, value: int, mask: int) -> Terms:
    assert owner.openflow is not None
    if owner.openflow == VLAN_TCI:
        return _vlan_tci(value, mask)
    return atom(owner.openflow, value, mask)


def _vlan_tci(value: int, mask: int) -> Terms:
    """A match on OVN's 16-bit TCI as OpenFlow 1.3 matches it: vlan_vid holds the present
    bit and the VID, vlan_pcp (exact only, and only for tagged frames) the priority. An
    untagged frame's TCI reads as 0."""
    vid, vid_mask = value & 0x1FFF, mask & 0x1FFF
    pcp, pcp_mask = value >> 13, mask >> 13
    if not pcp_mask:
        return atom("vlan_vid", vid, vid_mask)
    tagged: Terms = []
    if not vid_mask & VLAN_PRESENT or vid & VLAN_PRESENT:
        priorities = disjoin(atom("vlan_pcp", p, 7) for p in range(8) if p & pcp_mask == pcp)
        present = atom("vlan_vid", vid | VLAN_PRESENT, vid_mask | VLAN_PRESENT)
        tagged = conjoin([present, priorities])
    untagged = atom("vlan_vid", 0, vid_mask | VLAN_PRESENT) if not vid and not pcp else []
    return disjoin([tagged, untagged])


def describe(compiled: CompiledMatch) -> list[str]:
    """The normal form as text, a line per Term (for debugging and golden tests)."""

    def atom_text(name: str, a: tuple[int, int]) -> str:
        full = (1 << FIELD_BITS[name]) - 1 if name in FIELD_BITS else -1
        return f"{name}={a[0]:#x}" if a[1] == full else f"{name}={a[0]:#x}/{a[1]:#x}"

    lines = []
    for term in compiled.terms:
        parts = [atom_text(n, a) for n, a in term.hard]
        parts += [
            "{" + " | ".join(atom_text(c.field, a) for a in c.atoms) + "}" for c in term.clauses
        ]
        lines.append(" & ".join(parts) or "true")
    return lines
