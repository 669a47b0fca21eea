"""Recursive-descent parser of OVN's match language (lib/expr.c's grammar and checks).

    expr    := not ('&&' not)* | not ('||' not)*      -- mixing needs parentheses
    not     := '!' primary | primary                  -- '!' needs an "atomic" primary
    primary := '(' expr ')'                           -- atomic
             | 'is_chassis_resident' '(' string ')'   -- atomic
             | field                                  -- 1-bit field or predicate; atomic
             | field relop values
             | values relop field [relop values]      -- "80 == tcp.dst", "1 <= x <= 9"
             | '0' | '1'                              -- false, true; atomic
    field   := name ['[' bit ['..' bit] ']']
    values  := value | '{' value [','] (value [','])* '}'
    value   := number['/'mask] | string | '$'address_set | '@'port_group

Everything that can be checked without the address sets and port groups is checked here,
with OVN's rules: the field exists; a value has the field's type and fits its width; only
== and != on sets, masked values, nominal fields (eth.type, ip.proto, ...) and Boolean
predicates; a nominal field only tested for equality and a nominal predicate only
positively, counting the '!'s around it; a bare multi-bit field only under '!'. liveport is
stricter than OVN in one way: an address is only compared with a field holding that kind
of address (OVN accepts "ip6.src == 10.0.0.1", as ::10.0.0.1, or a MAC on ip6.src).
"""

from __future__ import annotations

import functools

from liveport.model.expr import symbols
from liveport.model.expr.errors import MatchSyntaxError, expected
from liveport.model.expr.lexer import FORMAT_BITS, RELOPS, Format, Lexer, T, Token
from liveport.model.expr.symbols import Kind, Level, Symbol
from liveport.model.expr.tree import (
    TURNED,
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
    Value,
    compared_symbols,
)

MAX_NESTING = 100  # parentheses, as OVN allows
MAX_BIT = 1 << 16
_VALUE_TOKENS = (T.INTEGER, T.STRING, T.ADDRESS_SET, T.PORT_GROUP, T.LCURLY)
_LOWER = ("<", "<=")
_UPPER = (">", ">=")


@functools.lru_cache(maxsize=8192)
def parse_match(text: str) -> Expr:
    """The syntax tree of a match expression; raises MatchSyntaxError."""
    return _Parser(text).parse()


@functools.cache
def level(name: str) -> Level:
    """A symbol's level of measurement; a predicate is nominal when its expansion tests a
    nominal symbol, and Boolean otherwise."""
    symbol = symbols.SYMBOLS[name]
    if symbol.level is not None:
        return symbol.level
    assert symbol.predicate is not None
    tested = compared_symbols(parse_match(symbol.predicate))
    return Level.NOMINAL if any(level(n) is Level.NOMINAL for n in tested) else Level.BOOLEAN


class _Parser:
    def __init__(self, text: str) -> None:
        self.lexer = Lexer(text)
        self.negated = False  # inside an odd number of '!'
        self.nesting = 0

    def parse(self) -> Expr:
        if self.lexer.peek().type is T.END:
            raise expected(1, "an expression", "end of input")
        expr = self._expr()
        token = self.lexer.peek()
        if token.type is not T.END:
            raise expected(
                token.column, "'&&', '||' or the end of the expression", token.describe()
            )
        return expr

    # ----- Boolean structure ---------------------------------------------------------------

    def _expr(self) -> Expr:
        first, _ = self._not()
        kind = self.lexer.peek().type
        if kind not in (T.AND, T.OR):
            return first
        operands = [first]
        while self.lexer.peek().type is kind:
            self.lexer.next()
            operands.append(self._not()[0])
        token = self.lexer.peek()
        if token.type in (T.AND, T.OR):
            raise MatchSyntaxError(
                token.column,
                "'&&' and '||' must be parenthesised when used together, e.g. a && (b || c)",
                found=token.describe(),
            )
        node = And if kind is T.AND else Or
        flat: list[Expr] = []
        for operand in operands:
            flat.extend(operand.operands if isinstance(operand, node) else (operand,))
        return node(tuple(flat))

    def _not(self) -> tuple[Expr, bool]:
        """An operand of && or ||, and whether '!' could apply to it unparenthesised."""
        token = self.lexer.peek()
        if token.type is not T.NOT:
            return self._primary()
        self.lexer.next()
        self.negated = not self.negated
        operand, atomic = self._primary()
        self.negated = not self.negated
        if not atomic:
            raise MatchSyntaxError(
                token.column,
                f"'!' needs parentheses around the comparison it negates: !({operand})",
            )
        return Not(operand, token.column), True

    def _primary(self) -> tuple[Expr, bool]:
        token = self.lexer.peek()
        if token.type is T.LPAREN:
            return self._parenthesised(), True
        if token.type is T.ID:
            if self.lexer.peek(1).type is T.LPAREN:
                return self._function(), True
            return self._field_first()
        if token.type in _VALUE_TOKENS:
            return self._value_first()
        raise expected(token.column, "a comparison, '(' or '!'", token.describe())

    def _parenthesised(self) -> Expr:
        opening = self.lexer.next()
        if self.nesting >= MAX_NESTING:
            raise MatchSyntaxError(opening.column, "parentheses are nested too deeply")
        self.nesting += 1
        expr = self._expr()
        self.nesting -= 1
        closing = self.lexer.next()
        if closing.type is not T.RPAREN:
            raise expected(
                closing.column,
                f"')' to close the '(' at column {opening.column}",
                closing.describe(),
            )
        return expr

    def _function(self) -> Expr:
        name = self.lexer.next()
        if name.name != "is_chassis_resident":
            raise MatchSyntaxError(
                name.column,
                f"unknown function {name.name!r} (only is_chassis_resident exists)",
                found=name.describe(),
            )
        self.lexer.next()  # '('
        port = self.lexer.next()
        if port.type is not T.STRING:
            raise expected(port.column, "a quoted port name", port.describe())
        closing = self.lexer.next()
        if closing.type is not T.RPAREN:
            raise expected(closing.column, "')'", closing.describe())
        return ChassisResident(port.name, name.column)

    # ----- comparisons ---------------------------------------------------------------------

    def _field_first(self) -> tuple[Expr, bool]:
        field = self._field()
        token = self.lexer.peek()
        if token.type in RELOPS:
            op = RELOPS[self.lexer.next().type]
            values, braced = self._values(f"a value after '{op}'")
            return self._compare(field, op, values, braced, token), False
        return self._bare(field, token), True

    def _bare(self, field: FieldRef, token: Token) -> Expr:
        """A field named alone: a 1-bit field or predicate is true when set."""
        symbol = symbols.SYMBOLS[field.name]
        if symbol.is_string or token.type is T.EQUALS:
            raise expected(
                token.column, f"a relational operator such as '==' after {field}", token.describe()
            )
        if field.n_bits > 1 and not self.negated:
            raise MatchSyntaxError(
                field.column,
                f"{field} has {field.n_bits} bits: write '{field} != 0' to test it against 0",
            )
        zero = IntValue(0, None, Format.DECIMAL, field.column)
        return self._compare(field, "!=", (zero,), False, token, implicit=True)

    def _value_first(self) -> tuple[Expr, bool]:
        first = self.lexer.peek()
        values, braced = self._values("a value")
        token = self.lexer.peek()
        if token.type not in RELOPS:
            literal = values[0] if len(values) == 1 and not braced else None
            if (
                isinstance(literal, IntValue)
                and literal.format is Format.DECIMAL
                and literal.mask is None
                and literal.value in (0, 1)
            ):
                return Bool(literal.value == 1, first.column), True
            after = "the set" if braced else first.text
            raise expected(token.column, f"a relational operator after {after}", token.describe())
        op = RELOPS[self.lexer.next().type]
        field = self._field()
        second = self.lexer.peek()
        if second.type not in RELOPS:
            return self._compare(field, TURNED[op], values, braced, token), False
        op2 = RELOPS[self.lexer.next().type]
        if not ((op in _LOWER and op2 in _LOWER) or (op in _UPPER and op2 in _UPPER)):
            raise MatchSyntaxError(
                second.column,
                "a range is written 'a < field < b' or 'a > field > b' "
                "(each '<' may be '<=', each '>' '>=')",
            )
        values2, braced2 = self._values(f"a value after '{op2}'")
        low = self._compare(field, TURNED[op], values, braced, token)
        high = self._compare(field, op2, values2, braced2, second)
        return And((low, high)), False

    def _field(self) -> FieldRef:
        token = self.lexer.next()
        if token.type is not T.ID:
            raise expected(token.column, "a field name", token.describe())
        symbol = symbols.lookup(token.name)
        if symbol is None:
            raise MatchSyntaxError(
                token.column,
                f"unknown field {token.name!r}",
                expected="a field name",
                found=token.describe(),
            )
        if self.lexer.peek().type is not T.LSQUARE:
            return FieldRef(symbol.name, 0, symbol.width, True, token.column)
        return self._bits(symbol, token)

    def _bits(self, symbol: Symbol, name: Token) -> FieldRef:
        """symbol[low] or symbol[low..high]."""
        bracket = self.lexer.next()
        if symbol.is_string:
            raise MatchSyntaxError(
                bracket.column, f"{symbol.name} is a string field: it has no bits to select"
            )
        low = high = self._bit_number()
        if self.lexer.peek().type is T.ELLIPSIS:
            self.lexer.next()
            high = self._bit_number()
        closing = self.lexer.next()
        if closing.type is not T.RSQUARE:
            raise expected(closing.column, "']'", closing.describe())
        if low > high:
            raise MatchSyntaxError(bracket.column, f"bit range {low}..{high} is reversed")
        if high >= symbol.width:
            raise MatchSyntaxError(
                bracket.column,
                f"{symbol.name} has {symbol.width} bits: bits {low}..{high} are not all in it",
            )
        whole = low == 0 and high == symbol.width - 1
        if level(symbol.name) is Level.NOMINAL and not whole:
            raise MatchSyntaxError(
                bracket.column, f"bits of nominal field {symbol.name} cannot be selected"
            )
        return FieldRef(symbol.name, low, high - low + 1, False, name.column)

    def _bit_number(self) -> int:
        token = self.lexer.next()
        if token.type is not T.INTEGER or token.format is not Format.DECIMAL or token.mask:
            raise expected(token.column, "a bit number", token.describe())
        if token.value >= MAX_BIT:
            raise expected(token.column, "a small bit number", token.describe())
        return token.value

    # ----- values ----------------------------------------------------------------------------

    def _values(self, what: str) -> tuple[tuple[Value, ...], bool]:
        """One value, or a {set}; all strings or all integers."""
        if self.lexer.peek().type is not T.LCURLY:
            return (self._value(what),), False
        self.lexer.next()
        values = [self._value("a value")]
        while True:
            if self.lexer.peek().type is T.COMMA:
                self.lexer.next()
            if self.lexer.peek().type is T.RCURLY:
                self.lexer.next()
                return tuple(values), True
            value = self._value("a value or '}'")
            if _is_string(value) != _is_string(values[0]):
                kind = "a string" if _is_string(values[0]) else "an integer"
                raise expected(value.column, kind, str(value))
            values.append(value)

    def _value(self, what: str) -> Value:
        token = self.lexer.next()
        if token.type is T.INTEGER:
            assert token.format is not None
            return IntValue(token.value, token.mask, token.format, token.column)
        if token.type is T.STRING:
            return StrValue(token.name, token.column)
        if token.type is T.ADDRESS_SET:
            return AddressSetRef(token.name, token.column)
        if token.type is T.PORT_GROUP:
            return PortGroupRef(token.name, token.column)
        raise expected(token.column, what, token.describe())

    def _compare(
        self,
        field: FieldRef,
        op: Relop,
        values: tuple[Value, ...],
        braced: bool,
        op_token: Token,
        *,
        implicit: bool = False,
    ) -> Compare:
        symbol = symbols.SYMBOLS[field.name]
        for value in values:
            _check_type(symbol, field, value)
        if op not in ("==", "!="):
            _check_relational(field, op, values, braced, op_token)
        self._check_nominal(symbol, field, op, values, op_token)
        return Compare(field, op, values, braced, implicit, field.column)

    def _check_nominal(
        self, symbol: Symbol, field: FieldRef, op: Relop, values: tuple[Value, ...], token: Token
    ) -> None:
        if level(symbol.name) is not Level.NOMINAL:
            return
        if symbol.predicate is not None:
            for value in values:
                assert isinstance(value, IntValue)  # a predicate has 1 bit
                if not bool(value.value & 1) ^ (op == "!=") ^ self.negated:
                    raise MatchSyntaxError(
                        field.column,
                        f"nominal predicate {field.name} may only be tested positively: "
                        f"'{field.name}' or '{field.name} == 1', not '!{field.name}' "
                        f"or '{field.name} == 0'",
                    )
            return
        if op != ("!=" if self.negated else "=="):
            raise MatchSyntaxError(
                token.column,
                f"nominal field {field.name} may only be tested for equality "
                "(counting the '!' around it)",
            )
        for value in values:
            if isinstance(value, IntValue) and value.mask not in (None, (1 << field.n_bits) - 1):
                raise MatchSyntaxError(
                    value.column, f"nominal field {field.name} cannot be matched under a mask"
                )


def _is_string(value: Value) -> bool:
    return isinstance(value, StrValue | PortGroupRef)


def _check_type(symbol: Symbol, field: FieldRef, value: Value) -> None:
    if symbol.is_string:
        if not _is_string(value):
            raise MatchSyntaxError(
                value.column,
                f"{field} is a string field (a port name): {value} is not a string",
                expected="a string",
                found=str(value),
            )
        return
    if _is_string(value):
        what = "a port group" if isinstance(value, PortGroupRef) else "a string"
        raise MatchSyntaxError(
            value.column,
            f"{field} is an integer field: {value} is {what}",
            expected="an integer",
            found=str(value),
        )
    if isinstance(value, IntValue):
        check_constant(field, symbols.field_kind(symbol, field.ofs, field.n_bits), value)


_ACCEPTS: dict[Kind, tuple[Format, ...]] = {
    Kind.INTEGER: (Format.DECIMAL, Format.HEX),
    Kind.MAC: (Format.MAC, Format.DECIMAL, Format.HEX),
    Kind.IPV4: (Format.IPV4, Format.DECIMAL, Format.HEX),
    Kind.IPV6: (Format.IPV6, Format.DECIMAL, Format.HEX),
}


def check_constant(field: FieldRef, kind: Kind, value: IntValue, origin: str = "") -> None:
    """Raises unless value may be compared with field (bits of a field of kind): an address
    only with a field of that kind of address, and no wider than the field. origin names
    the address set an entry came from."""
    subject = f"address set ${origin} holds {value}, " if origin else f"{value} is "
    if value.format not in _ACCEPTS[kind]:
        raise MatchSyntaxError(
            value.column, f"{field} is {kind.value}: {subject}{article(value.format.value)}"
        )
    if value.mask is not None:
        width = value.mask.bit_length()
    else:
        width = FORMAT_BITS.get(value.format) or value.value.bit_length()
    if width > field.n_bits:
        needs = f"address set ${origin} holds {value}, which needs" if origin else f"{value} needs"
        raise MatchSyntaxError(
            value.column, f"{needs} {width} bits, but {field} has {field.n_bits}"
        )


def article(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiouI" else f"a {noun}"


def _check_relational(
    field: FieldRef, op: Relop, values: tuple[Value, ...], braced: bool, token: Token
) -> None:
    only = f"only == and != may be used with {{}}, not '{op}'"
    if braced:
        raise MatchSyntaxError(token.column, only.format("a set of values"))
    lvl = level(field.name)
    if lvl is not Level.ORDINAL:
        raise MatchSyntaxError(token.column, only.format(f"{lvl.value} field {field.name}"))
    value = values[0]
    if isinstance(value, AddressSetRef):
        raise MatchSyntaxError(value.column, only.format(f"an address set ({value})"))
    if isinstance(value, IntValue) and value.mask is not None:
        raise MatchSyntaxError(
            value.column,
            only.format("a masked value")
            + f": compare bits instead, e.g. '{field.name}[0..15] {op} 0x1111'",
        )
