"""The syntax tree of a match expression, as the parser builds it.

Nodes are frozen values; their `column` (where they were written) takes no part in
equality, so two spellings of one expression compare equal. str() of a node is canonical,
re-parseable text: comparisons name the field first, values are in the form they were
written, and operands of '&&' and '||' are parenthesised where needed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field as _field

from liveport.model.addr import Mac
from liveport.model.expr.lexer import FORMAT_BITS, Format

Relop = str  # one of == != < <= > >=
INVERSE: dict[Relop, Relop] = {
    "==": "!=",
    "!=": "==",
    "<": ">=",
    "<=": ">",
    ">": "<=",
    ">=": "<",
}
# "a < x" says "x > a".
TURNED: dict[Relop, Relop] = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


@dataclass(frozen=True)
class FieldRef:
    """A symbol, or bits [ofs, ofs + n_bits) of it as in "ip4.dst[28..31]"."""

    name: str
    ofs: int
    n_bits: int
    whole: bool = True  # written without [..]
    column: int = _field(default=0, compare=False)

    def __str__(self) -> str:
        if self.whole:
            return self.name
        high = self.ofs + self.n_bits - 1
        return (
            f"{self.name}[{self.ofs}]" if high == self.ofs else f"{self.name}[{self.ofs}..{high}]"
        )


@dataclass(frozen=True)
class IntValue:
    """A number; mask None means all of the compared bits."""

    value: int
    mask: int | None = None
    format: Format = Format.DECIMAL
    column: int = _field(default=0, compare=False)

    def __str__(self) -> str:
        text = _format_number(self.value, self.format)
        if self.mask is None:
            return text
        bits = FORMAT_BITS.get(self.format)
        if self.format in (Format.IPV4, Format.IPV6) and bits is not None:
            prefix = _prefix_length(self.mask, bits)
            if prefix is not None:
                return f"{text}/{prefix}"
        return f"{text}/{_format_number(self.mask, self.format)}"


@dataclass(frozen=True)
class StrValue:
    value: str
    column: int = _field(default=0, compare=False)

    def __str__(self) -> str:
        return _quote(self.value)


@dataclass(frozen=True)
class AddressSetRef:
    """$name: the addresses of an Address_Set, resolved when the match is compiled."""

    name: str
    column: int = _field(default=0, compare=False)

    def __str__(self) -> str:
        return f"${self.name}"


@dataclass(frozen=True)
class PortGroupRef:
    """@name: the ports of a Port_Group, resolved when the match is compiled."""

    name: str
    column: int = _field(default=0, compare=False)

    def __str__(self) -> str:
        return f"@{self.name}"


Value = IntValue | StrValue | AddressSetRef | PortGroupRef


@dataclass(frozen=True)
class Compare:
    """field op value, or field op {values}: '==' with a set is true if the field equals
    any of them, '!=' if it equals none. `implicit` marks a bare 1-bit field or predicate
    ("ct.est" is "ct.est != 0")."""

    field: FieldRef
    op: Relop
    values: tuple[Value, ...]
    braced: bool = False
    implicit: bool = False
    column: int = _field(default=0, compare=False)

    def __str__(self) -> str:
        if self.implicit:
            return str(self.field)
        if self.braced or len(self.values) != 1:
            values = "{" + ", ".join(str(v) for v in self.values) + "}"
        else:
            values = str(self.values[0])
        return f"{self.field} {self.op} {values}"


@dataclass(frozen=True)
class Bool:
    value: bool
    column: int = _field(default=0, compare=False)

    def __str__(self) -> str:
        return "1" if self.value else "0"


@dataclass(frozen=True)
class ChassisResident:
    """is_chassis_resident("port"): true on the chassis where the port is bound."""

    port: str
    column: int = _field(default=0, compare=False)

    def __str__(self) -> str:
        return f"is_chassis_resident({_quote(self.port)})"


@dataclass(frozen=True)
class Not:
    operand: Expr
    column: int = _field(default=0, compare=False)

    def __str__(self) -> str:
        if isinstance(self.operand, Compare) and self.operand.implicit:
            return f"!{self.operand}"
        return f"!({self.operand})"


@dataclass(frozen=True)
class And:
    operands: tuple[Expr, ...]

    def __str__(self) -> str:
        return " && ".join(_operand(e, Or) for e in self.operands)


@dataclass(frozen=True)
class Or:
    operands: tuple[Expr, ...]

    def __str__(self) -> str:
        return " || ".join(_operand(e, And) for e in self.operands)


Expr = Compare | Bool | ChassisResident | Not | And | Or


def _operand(expr: Expr, other: type) -> str:
    # && and || need parentheses when used together (OVN refuses them mixed without).
    return f"({expr})" if isinstance(expr, other) else str(expr)


def walk(expr: Expr) -> Iterator[Expr]:
    """expr and every node below it."""
    yield expr
    if isinstance(expr, Not):
        yield from walk(expr.operand)
    elif isinstance(expr, And | Or):
        for operand in expr.operands:
            yield from walk(operand)


def compared_symbols(expr: Expr) -> set[str]:
    return {node.field.name for node in walk(expr) if isinstance(node, Compare)}


def address_sets(expr: Expr) -> frozenset[str]:
    """Names of the address sets expr refers to ($name)."""
    return frozenset(v.name for v in _values(expr) if isinstance(v, AddressSetRef))


def port_groups(expr: Expr) -> frozenset[str]:
    """Names of the port groups expr refers to (@name)."""
    return frozenset(v.name for v in _values(expr) if isinstance(v, PortGroupRef))


def _values(expr: Expr) -> Iterator[Value]:
    for node in walk(expr):
        if isinstance(node, Compare):
            yield from node.values


def _quote(text: str) -> str:
    out = ['"']
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _format_number(value: int, fmt: Format) -> str:
    if fmt is Format.DECIMAL:
        return str(value)
    if fmt is Format.HEX:
        return f"{value:#x}"
    if fmt is Format.IPV4:
        return str(ipaddress.IPv4Address(value))
    if fmt is Format.IPV6:
        return str(ipaddress.IPv6Address(value))
    return str(Mac(value))


def _prefix_length(mask: int, bits: int) -> int | None:
    """n if mask is n leading ones in a bits-wide field, else None."""
    inverted = ~mask & ((1 << bits) - 1)
    if inverted & (inverted + 1):
        return None
    return bits - inverted.bit_length()
