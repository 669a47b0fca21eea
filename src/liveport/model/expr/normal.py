"""The normal form a match compiles to: a disjunction of Terms, each a conjunction of exact
(or masked) field matches and of clauses, a clause being a disjunction of matches on one
field. This is the form OVN normalises to (lib/expr.c, expr_normalize): a Term with no
clause is one flow, a Term with one clause one flow per alternative, and a Term with
several clauses is either multiplied out or becomes a conjunctive match.

Fields here are OpenFlow fields; a match on a field is an Atom (value, mask) with no value
bits outside the mask and a non-zero mask (a zero mask matches everything, so it is never
kept). Alternatives of a clause are kept few: when every mask is a prefix (as for
addresses, ports and ranges), they are the fewest prefixes that cover their union, found
and intersected as ranges of values; otherwise duplicates and alternatives that another
one covers are dropped, and two that differ only in their lowest masked bit are merged.

Fields other fields' prerequisites depend on (symbols.CROSSPRODUCT_FIELDS) never form a
clause: their alternatives stay separate Terms, so each flow carries them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from liveport.model.expr.symbols import CROSSPRODUCT_FIELDS
from liveport.model.flows import FIELD_BITS

Atom = tuple[int, int]  # (value, mask)


@dataclass(frozen=True, order=True)
class Clause:
    field: str
    atoms: tuple[Atom, ...]  # at least two, sorted


@dataclass(frozen=True, order=True)
class Term:
    hard: tuple[tuple[str, Atom], ...] = ()  # sorted by field, one atom per field
    clauses: tuple[Clause, ...] = ()  # sorted by field; no field also in hard

    def single_field(self) -> str | None:
        """The field, if the term constrains exactly one."""
        if len(self.hard) == 1 and not self.clauses:
            return self.hard[0][0]
        if not self.hard and len(self.clauses) == 1:
            return self.clauses[0].field
        return None

    def alternatives(self) -> list[Atom]:
        """The atoms of a single-field term."""
        return [self.hard[0][1]] if self.hard else list(self.clauses[0].atoms)


# A normal form: a list of Terms, any of which may hold. [] is false, [Term()] true.
Terms = list[Term]
TRUE: Terms = [Term()]
FALSE: Terms = []


def atom(field: str, value: int, mask: int) -> Terms:
    """field matches value under mask."""
    if mask == 0:
        return list(TRUE)
    return [Term(hard=((field, (value & mask, mask)),))]


def disjoin(parts: Iterable[Terms]) -> Terms:
    """Any of parts. Terms that all constrain one field (not a crossproduct one) become a
    single term with a clause on it."""
    terms: list[Term] = []
    for part in parts:
        for term in part:
            if term == Term():
                return list(TRUE)
            terms.append(term)
    fields = {t.single_field() for t in terms}
    if len(terms) > 1 and len(fields) == 1:
        (field,) = fields
        if field is not None and field not in CROSSPRODUCT_FIELDS:
            return _single(field, [a for t in terms for a in t.alternatives()])
    return _unique(terms)


def conjoin(parts: Iterable[Terms]) -> Terms:
    """All of parts: the product of their terms, each pair merged."""
    result = list(TRUE)
    for part in parts:
        if not part:
            return list(FALSE)
        result = _unique([m for a in result for b in part for m in and_terms(a, b)])
        if not result:
            return list(FALSE)
    return result


def and_terms(a: Term, b: Term) -> Terms:
    """a and b as terms (none if they cannot both hold)."""
    hard = dict(a.hard)
    for field, mine in b.hard:
        if field in hard:
            both = intersect(hard[field], mine)
            if both is None:
                return []
            hard[field] = both
        else:
            hard[field] = mine
    clauses = {c.field: list(c.atoms) for c in a.clauses}
    for clause in b.clauses:
        ours = clauses.get(clause.field)
        if ours is None:
            clauses[clause.field] = list(clause.atoms)
        else:
            clauses[clause.field] = _intersect_all(clause.field, ours, list(clause.atoms))
    return _settle(hard, clauses)


def _intersect_all(field: str, ours: list[Atom], theirs: list[Atom]) -> list[Atom]:
    """The values both alternatives ours and theirs match."""
    width = FIELD_BITS.get(field, 0)
    if prefixes_only(ours, width) and prefixes_only(theirs, width):
        # Ranges intersect in linear time (a set of addresses minus a few hundred
        # exceptions would take minutes pairwise).
        return from_ranges(
            intersect_ranges(to_ranges(ours, width), to_ranges(theirs, width)), width
        )
    return [x for p in ours for q in theirs if (x := intersect(p, q)) is not None]


def _settle(hard: dict[str, Atom], clauses: dict[str, list[Atom]]) -> Terms:
    """A term from hard matches and clauses, folding a field's hard match into its clause."""
    kept: list[Clause] = []
    for field, atoms in clauses.items():
        exact = hard.pop(field, None)
        if exact is not None:
            atoms = [x for a in atoms if (x := intersect(a, exact)) is not None]  # noqa: PLW2901
        alternatives = reduce(atoms, FIELD_BITS.get(field))
        if not alternatives:
            return []
        if alternatives[0][1] == 0:
            continue  # some alternative matches everything: no constraint
        if len(alternatives) == 1:
            hard[field] = alternatives[0]
        else:
            kept.append(Clause(field, tuple(alternatives)))
    return [Term(tuple(sorted(hard.items())), tuple(sorted(kept)))]


def _single(field: str, atoms: list[Atom]) -> Terms:
    alternatives = reduce(atoms, FIELD_BITS.get(field))
    if not alternatives:
        return list(FALSE)
    if alternatives[0][1] == 0:
        return list(TRUE)
    if len(alternatives) == 1:
        return [Term(hard=((field, alternatives[0]),))]
    return [Term(clauses=(Clause(field, tuple(alternatives)),))]


def _unique(terms: Sequence[Term]) -> Terms:
    seen: set[Term] = set()
    out = []
    for term in terms:
        if term not in seen:
            seen.add(term)
            out.append(term)
    return out


def intersect(a: Atom, b: Atom) -> Atom | None:
    """Both matches at once, or None if no value matches both."""
    if (a[0] ^ b[0]) & a[1] & b[1]:
        return None
    return a[0] | b[0], a[1] | b[1]


def reduce(atoms: Iterable[Atom], width: int | None = None) -> list[Atom]:
    """Alternatives with the same union, as few as this finds: when every mask is a prefix
    of a width-bit field, the fewest prefixes (the union's ranges, each split into aligned
    blocks); otherwise without duplicates, without atoms another covers, and with buddies
    (equal but for the lowest masked bit) merged. Sorted; an atom with a zero mask
    (everything) comes alone."""
    current = set(atoms)
    if width and prefixes_only(current, width):
        current = set(from_ranges(to_ranges(current, width), width))  # minimal already
    else:
        current = _fixpoint(current)
    if any(mask == 0 for _, mask in current):
        return [(0, 0)]
    return sorted(current, key=lambda a: (a[1], a[0]))


def _fixpoint(current: set[Atom]) -> set[Atom]:
    while True:
        merged = _merge_buddies(_drop_covered(current))
        if merged == current:
            return current
        current = merged


def _drop_covered(atoms: set[Atom]) -> set[Atom]:
    """Without the atoms another atom (with fewer mask bits) covers."""
    by_mask: dict[int, set[int]] = {}
    for value, mask in atoms:
        by_mask.setdefault(mask, set()).add(value)
    masks = sorted(by_mask, key=lambda m: m.bit_count())
    kept = set()
    for value, mask in atoms:
        covered = any(
            other != mask and other & mask == other and value & other in by_mask[other]
            for other in masks
            if other.bit_count() < mask.bit_count()
        )
        if not covered:
            kept.add((value, mask))
    return kept


def _merge_buddies(atoms: set[Atom]) -> set[Atom]:
    out = set(atoms)
    for value, mask in sorted(atoms):
        if (value, mask) not in out:
            continue
        low = mask & -mask
        buddy = (value ^ low, mask)
        if buddy in out:
            out.discard((value, mask))
            out.discard(buddy)
            out.add((value & ~low, mask & ~low))
    return out


# ----- prefixes as ranges ------------------------------------------------------------------


def prefixes_only(atoms: Iterable[Atom], width: int) -> bool:
    """Whether every mask is leading ones of a width-bit field (a CIDR prefix)."""
    full = (1 << width) - 1
    for _, mask in atoms:
        hole = ~mask & full
        if mask > full or hole & (hole + 1):
            return False
    return width > 0


def to_ranges(atoms: Iterable[Atom], width: int) -> list[tuple[int, int]]:
    """The union of prefix atoms as sorted, disjoint, non-adjacent [low, high] ranges."""
    full = (1 << width) - 1
    spans = sorted((value, value | (~mask & full)) for value, mask in atoms)
    merged: list[tuple[int, int]] = []
    for low, high in spans:
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


def intersect_ranges(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    i = j = 0
    while i < len(a) and j < len(b):
        low, high = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if low <= high:
            out.append((low, high))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def complement_ranges(ranges: list[tuple[int, int]], width: int) -> list[tuple[int, int]]:
    """The values of a width-bit field outside sorted, disjoint ranges."""
    out = []
    low = 0
    for start, end in ranges:
        if start > low:
            out.append((low, start - 1))
        low = end + 1
    if low <= (1 << width) - 1:
        out.append((low, (1 << width) - 1))
    return out


def from_ranges(ranges: Iterable[tuple[int, int]], width: int) -> list[Atom]:
    return [atom for low, high in ranges for atom in prefixes(low, high, width)]


def prefixes(low: int, high: int, width: int) -> list[Atom]:
    """The fewest (value, mask) prefixes of a width-bit field that cover exactly
    [low, high]: from low, each time the largest aligned block that fits."""
    full = (1 << width) - 1
    out = []
    while low <= high:
        size = low & -low if low else 1 << width
        while size > high - low + 1:
            size >>= 1
        out.append((low, full & ~(size - 1)))
        low += size
    return out
