"""The match-expression parser: what it accepts, the tree it builds, and every error it
reports, with the column it reports it at."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liveport.model.errors import InvalidInput
from liveport.model.expr import (
    MatchContext,
    MatchSyntaxError,
    address_sets,
    compile_acl_match,
    parse_match,
    port_groups,
)
from liveport.model.expr.lexer import Format, NumberError, parse_number
from liveport.model.expr.tree import And, Compare, FieldRef, IntValue, Not, Or

# ----- accepted shapes -----------------------------------------------------------------------

# (as written, canonical text). The canonical form names the field first, keeps values as
# written (a masked value without its bits outside the mask) and puts && and || operands in
# parentheses where needed.
VALID = [
    # Neutron's security-group ACLs (neutron/common/ovn/acl.py).
    (
        'outport == "p1" && ip4 && ip4.src == $as1 && tcp && tcp.dst == 22',
        'outport == "p1" && ip4 && ip4.src == $as1 && tcp && tcp.dst == 22',
    ),
    ("inport == @pg1 && ip4", "inport == @pg1 && ip4"),
    ("outport == @pg1 && ip", "outport == @pg1 && ip"),
    ("tcp.dst >= 1000 && tcp.dst <= 2000", "tcp.dst >= 1000 && tcp.dst <= 2000"),
    (
        "icmp4 && icmp4.type == 8 && icmp4.code == 0",
        "icmp4 && icmp4.type == 8 && icmp4.code == 0",
    ),
    ("ip6 && icmp6.type == {130, 133, 135, 136}", "ip6 && icmp6.type == {130, 133, 135, 136}"),
    (
        "ip4.dst == {255.255.255.255, 10.0.0.0/24} && udp && udp.src == 68 && udp.dst == 67",
        "ip4.dst == {255.255.255.255, 10.0.0.0/24} && udp && udp.src == 68 && udp.dst == 67",
    ),
    ("ip4 && ip.proto == 112", "ip4 && ip.proto == 112"),
    ("ip6 && ip6.src == fd00::/64", "ip6 && ip6.src == fd00::/64"),
    # Kube-OVN's network policies: dotted set names, != against a set.
    (
        "ip4.src == $ovn.default.np.allow.IPv4 && ip4.src != $ovn.default.np.except.IPv4",
        "ip4.src == $ovn.default.np.allow.IPv4 && ip4.src != $ovn.default.np.except.IPv4",
    ),
    (
        "outport == @ovn.np.web && ip && tcp.dst == 8080",
        "outport == @ovn.np.web && ip && tcp.dst == 8080",
    ),
    # Connection tracking.
    ("ct.est && !ct.rel", "ct.est && !ct.rel"),
    ("ct.new && !ct.est", "ct.new && !ct.est"),
    ("!ct.trk || ct.inv", "!ct.trk || ct.inv"),
    ("ct_mark == 0x1/0x1", "ct_mark == 0x1/0x1"),
    ("ct_label[0..31] == 5", "ct_label[0..31] == 5"),
    # Values.
    ("ip.proto == 112", "ip.proto == 112"),
    (
        "eth.src == 00:00:00:00:00:01/ff:ff:ff:00:00:00",
        "eth.src == 00:00:00:00:00:00/ff:ff:ff:00:00:00",
    ),
    ("ip4.src == 0.0.0.0/0", "ip4.src == 0.0.0.0/0"),
    ("ip4.src == 10.1.2.3/255.255.0.0", "ip4.src == 10.1.0.0/16"),
    ("ip4.src == 10.0.0.1/255.0.255.0", "ip4.src == 10.0.0.0/255.0.255.0"),
    ("ip6.dst == ::ffff:10.0.0.1", "ip6.dst == ::ffff:a00:1"),
    ("eth.type == 0x800", "eth.type == 0x800"),
    ("eth.type==0x800", "eth.type == 0x800"),
    ("tcp.flags == 0x2/0x12", "tcp.flags == 0x2/0x12"),
    ("ip4.src == 0/0xff", "ip4.src == 0x0/0xff"),
    ("eth.dst == ff:ff:ff:ff:ff:ff", "eth.dst == ff:ff:ff:ff:ff:ff"),
    ("eth.dst == AA:BB:CC:DD:EE:FF", "eth.dst == aa:bb:cc:dd:ee:ff"),
    ('inport == "a \\"quoted\\" \\u00e9 name"', 'inport == "a \\"quoted\\" é name"'),
    # Sets: commas are optional, even after the last value; a set of one is still a set.
    ("tcp.dst == {80 443 8080}", "tcp.dst == {80, 443, 8080}"),
    ("tcp.dst == {80, 443,}", "tcp.dst == {80, 443}"),
    ("tcp.dst == {80}", "tcp.dst == {80}"),
    ('outport == {"p1", @pg1}', 'outport == {"p1", @pg1}'),
    ("ip4.src == {$as1, 10.0.0.1}", "ip4.src == {$as1, 10.0.0.1}"),
    # Negation and grouping.
    ("!(tcp.dst == 80)", "!(tcp.dst == 80)"),
    ("!(tcp.dst == 80 || tcp.dst == 443)", "!(tcp.dst == 80 || tcp.dst == 443)"),
    ("!(ip.proto != 6)", "!(ip.proto != 6)"),
    ('!(inport != "p1")', '!(inport != "p1")'),
    ("!tcp.dst", "!tcp.dst"),
    ("(ip4 || ip6) && tcp", "(ip4 || ip6) && tcp"),
    ("ip4 && (tcp.dst == 1 || udp.dst == 2)", "ip4 && (tcp.dst == 1 || udp.dst == 2)"),
    ("((ip4)) && ((tcp))", "ip4 && tcp"),
    ("ip4 && (tcp && tcp.dst == 1)", "ip4 && tcp && tcp.dst == 1"),
    # Constants first, and ranges.
    ("80 == tcp.dst", "tcp.dst == 80"),
    ("1000 <= tcp.dst", "tcp.dst >= 1000"),
    ("1024 <= tcp.src <= 49151", "tcp.src >= 1024 && tcp.src <= 49151"),
    ("5 > vlan.pcp >= 1", "vlan.pcp < 5 && vlan.pcp >= 1"),
    # Bits, predicates, Booleans.
    ("eth.dst[40]", "eth.dst[40]"),
    ("eth.dst[40] == 1", "eth.dst[40] == 1"),
    ("ip4.dst[28..31] == 0xe", "ip4.dst[28..31] == 0xe"),
    ("eth.type[0..15] == 0x806", "eth.type[0..15] == 0x806"),
    ("eth.bcast || eth.mcast", "eth.bcast || eth.mcast"),
    ("!eth.bcast", "!eth.bcast"),
    ("vlan.present && vlan.vid == 5", "vlan.present && vlan.vid == 5"),
    ("ip[0] == 1", "ip[0] == 1"),
    ("nd && nd.target == fe80::1", "nd && nd.target == fe80::1"),
    ("ip.is_frag || !ip.first_frag", "ip.is_frag || !ip.first_frag"),
    ("1", "1"),
    ("0", "0"),
    ("!1", "!(1)"),
    ('is_chassis_resident("p1")', 'is_chassis_resident("p1")'),
    # Comments and whitespace.
    ("ip4 /* IPv4 */ && tcp // the rest\n && tcp.dst == 22", "ip4 && tcp && tcp.dst == 22"),
    ("\tip4\n&&\n  tcp ", "ip4 && tcp"),
]


@pytest.mark.parametrize(("text", "canonical"), VALID, ids=[v[0] for v in VALID])
def test_a_valid_match_parses_to_its_canonical_text(text: str, canonical: str) -> None:
    assert str(parse_match(text)) == canonical


@pytest.mark.parametrize(("text", "canonical"), VALID, ids=[v[0] for v in VALID])
def test_the_canonical_text_parses_to_the_same_tree(text: str, canonical: str) -> None:
    assert parse_match(canonical) == parse_match(text)


def test_the_tree_names_fields_values_and_columns() -> None:
    expr = parse_match("ip4 && tcp.dst == {80, 0x1bb}")
    assert isinstance(expr, And)
    bare, ports = expr.operands
    assert isinstance(bare, Compare) and bare.implicit and bare.op == "!="
    assert ports == Compare(
        FieldRef("tcp.dst", 0, 16), "==", (IntValue(80), IntValue(0x1BB, None, Format.HEX)), True
    )
    assert isinstance(ports, Compare)
    assert (ports.column, ports.values[1].column) == (8, 24)


def test_ranges_and_negations_keep_their_structure() -> None:
    assert parse_match("!(1 < vlan.pcp < 4)") == Not(
        And(
            (
                Compare(FieldRef("vlan.pcp", 0, 3), ">", (IntValue(1),)),
                Compare(FieldRef("vlan.pcp", 0, 3), "<", (IntValue(4),)),
            )
        )
    )
    assert isinstance(parse_match("ip4 || ip6 || arp"), Or)


def test_referenced_sets_and_groups_are_listed() -> None:
    expr = parse_match('inport == @pg1 && (ip4.src == {$a, $b} || outport == {@pg2, "x"})')
    assert address_sets(expr) == {"a", "b"}
    assert port_groups(expr) == {"pg1", "pg2"}


def test_parsing_is_memoised() -> None:
    assert parse_match("ip4 && tcp") is parse_match("ip4 && tcp")


@pytest.mark.parametrize(
    ("written", "parsed"),
    [
        ("0", (0, None, Format.DECIMAL)),
        ("18446744073709551615", ((1 << 64) - 1, None, Format.DECIMAL)),
        ("0x0800", (0x800, None, Format.HEX)),
        ("0X1F", (0x1F, None, Format.HEX)),
        ("10.0.0.1/8", (0x0A000000, 0xFF000000, Format.IPV4)),
        ("fe80::1/10", (0xFE80 << 112, ((1 << 10) - 1) << 118, Format.IPV6)),
        ("::", (0, None, Format.IPV6)),
        ("00:11:22:33:44:55", (0x001122334455, None, Format.MAC)),
        ("0/0x10", (0, 0x10, Format.HEX)),
        ("5/7", (5, 7, Format.DECIMAL)),
    ],
)
def test_numbers_read_as_ovn_writes_them(
    written: str, parsed: tuple[int, int | None, Format]
) -> None:
    assert parse_number(written) == parsed


@pytest.mark.parametrize("written", ["", "01", "0x", "0xg", "1.2.3", "10.0.0.1/33", "1/0x1"])
def test_malformed_numbers_are_refused(written: str) -> None:
    with pytest.raises(NumberError):
        parse_number(written)


# ----- errors --------------------------------------------------------------------------------

CTX = MatchContext(
    address_sets={
        "as4": frozenset({"10.0.0.1", "10.0.1.0/24"}),
        "as6": frozenset({"fe80::1"}),
        "mixed": frozenset({"10.0.0.1", "fe80::1"}),
        "bad": frozenset({"10.0.0.1", "not-an-address"}),
        "wide": frozenset({"4294967296"}),
    },
    port_groups={"pg1": frozenset({"p1"})},
    ports={"p1": 1},
)

# (text, column, message after "at column N: ").
ERRORS = [
    # Syntax.
    ("", 1, "expected an expression, found end of input"),
    ("tcp && tcp.dst == && ip4", 19, "expected a value after '==', found '&&'"),
    (
        "ip4.src = 1.2.3.4",
        9,
        "expected a relational operator such as '==' after ip4.src, found '='",
    ),
    ("inport", 7, "expected a relational operator such as '==' after inport, found end of input"),
    ("123", 4, "expected a relational operator after 123, found end of input"),
    ("123 x", 5, "expected a relational operator after 123, found 'x'"),
    ("{1, 2}", 7, "expected a relational operator after the set, found end of input"),
    ("123 == 123", 8, "expected a field name, found '123'"),
    ("&& ip4", 1, "expected a comparison, '(' or '!', found '&&'"),
    ("!!ct.est", 2, "expected a comparison, '(' or '!', found '!'"),
    ("(1 x)", 4, "expected ')' to close the '(' at column 1, found 'x'"),
    ("(tcp", 5, "expected ')' to close the '(' at column 1, found end of input"),
    ("ip4 ip6", 5, "expected '&&', '||' or the end of the expression, found 'ip6'"),
    ("ip4 )", 5, "expected '&&', '||' or the end of the expression, found ')'"),
    (
        "ip4 && ip6 || tcp",
        12,
        "'&&' and '||' must be parenthesised when used together, e.g. a && (b || c)",
    ),
    (
        "ip4 || ip6 && tcp",
        12,
        "'&&' and '||' must be parenthesised when used together, e.g. a && (b || c)",
    ),
    (
        "!tcp.dst == 80",
        1,
        "'!' needs parentheses around the comparison it negates: !(tcp.dst == 80)",
    ),
    (
        "1 == tcp.dst == 2",
        14,
        "a range is written 'a < field < b' or 'a > field > b' (each '<' may be '<=', "
        "each '>' '>=')",
    ),
    (
        "1 < tcp.dst > 2",
        13,
        "a range is written 'a < field < b' or 'a > field > b' (each '<' may be '<=', "
        "each '>' '>=')",
    ),
    ("eth.dst == {}", 13, "expected a value, found '}'"),
    ("tcp.dst == {1, 2", 17, "expected a value or '}', found end of input"),
    ('{1, "eth0"} == tcp.dst', 5, 'expected an integer, found "eth0"'),
    ('inport == {"p1", 2}', 18, "expected a string, found 2"),
    ("(" * 101 + "1" + ")" * 101, 101, "parentheses are nested too deeply"),
    ('foo("x")', 1, "unknown function 'foo' (only is_chassis_resident exists)"),
    ("is_chassis_resident(1)", 21, "expected a quoted port name, found '1'"),
    ('is_chassis_resident("p1"', 25, "expected ')', found end of input"),
    # Lexical.
    ("tcp.dst == 1 & ip4", 14, "'&' is only valid as part of '&&'"),
    ("tcp.dst == 1 | ip4", 14, "'|' is only valid as part of '||'"),
    ("tcp.dst == 1 /x", 14, "'/' is only valid as part of '//', '/*' or a masked number"),
    (". == 1", 1, "'.' is only valid as part of '..' or a number"),
    ("ip4 #", 5, "invalid character '#'"),
    ("ip4 /* open", 5, "'/*' without a matching '*/'"),
    ("ip4 /* two\nlines */", 5, "'/*' without a matching '*/'"),
    ('inport == "p1', 11, "the string has no closing '\"'"),
    ('inport == "a\\qb"', 11, 'invalid escape in string "a\\qb"'),
    ("$ == 1", 1, "'$' must be followed by the name of an address set"),
    ("inport == @", 11, "'@' must be followed by the name of a port group"),
    ("tcp.dst == 0x", 12, "hex digits expected after 0x"),
    ("tcp.dst == 0xfg", 12, "invalid hexadecimal number 0xfg"),
    ("tcp.dst == 010", 12, "decimal 010 must not have leading zeros"),
    (
        "ip6.src == 18446744073709551616",
        12,
        "decimal 18446744073709551616 is not less than 2**64 (write it in hex)",
    ),
    ("ip4.src == 1.2.3", 12, "invalid number 1.2.3"),
    ("ip4.src == 1.2.3.4:80", 19, "invalid character ':'"),  # a number ends at ":" after "."
    ("ip4.src == 10.0.0.1/33", 12, "prefix length 33 is longer than an IPv4 address (32 bits)"),
    (
        "ip4.src == 10.0.0.1/ff:ff:ff:ff:ff:ff",
        12,
        "the mask of 10.0.0.1/ff:ff:ff:ff:ff:ff is a MAC address, which does not go with an "
        "IPv4 address",
    ),
    ("ip4.src == 10.0.0.1/", 12, "a number is missing"),
    # Fields and bits.
    ("ip5.src == 1.2.3.4", 1, "unknown field 'ip5.src'"),
    ("reg0 == 1", 1, "unknown field 'reg0'"),
    ("eth.type[5..1] == 1", 9, "bit range 5..1 is reversed"),
    ("eth.type[12..16] == 1", 9, "eth.type has 16 bits: bits 12..16 are not all in it"),
    ("eth.type[10] == 1", 9, "bits of nominal field eth.type cannot be selected"),
    ("inport[1] == 1", 7, "inport is a string field: it has no bits to select"),
    ("eth.type[] == 1", 10, "expected a bit number, found ']'"),
    ("eth.type[::1] == 1", 10, "expected a bit number, found '::1'"),
    ("eth.type[99999] == 1", 10, "expected a small bit number, found '99999'"),
    ("eth.type[5!] == 1", 11, "expected ']', found '!'"),
    ("tcp.dst", 1, "tcp.dst has 16 bits: write 'tcp.dst != 0' to test it against 0"),
    ("!(!(vlan.pcp))", 5, "vlan.pcp has 3 bits: write 'vlan.pcp != 0' to test it against 0"),
    # Types and widths.
    ("tcp.dst == 70000", 12, "70000 needs 17 bits, but tcp.dst has 16"),
    ("vlan.vid == 0x1000", 13, "0x1000 needs 13 bits, but vlan.vid has 12"),
    ("ct.est == 2", 11, "2 needs 2 bits, but ct.est has 1"),
    ("ip4.dst[28..31] == 0x10", 20, "0x10 needs 5 bits, but ip4.dst[28..31] has 4"),
    ("tcp.dst == 0/0x10000", 12, "0x0/0x10000 needs 17 bits, but tcp.dst has 16"),
    (
        "ip4.src == 00:00:00:00:00:01",
        12,
        "ip4.src is an IPv4 address field: 00:00:00:00:00:01 is a MAC address",
    ),
    ("ip4.src == fe80::1", 12, "ip4.src is an IPv4 address field: fe80::1 is an IPv6 address"),
    ("ip6.src == 10.0.0.1", 12, "ip6.src is an IPv6 address field: 10.0.0.1 is an IPv4 address"),
    ("eth.src == 10.0.0.1", 12, "eth.src is a MAC address field: 10.0.0.1 is an IPv4 address"),
    ("tcp.dst == 10.0.0.1", 12, "tcp.dst is an integer field: 10.0.0.1 is an IPv4 address"),
    (
        "ip4.dst[24..31] == 10.0.0.0",
        20,
        "ip4.dst[24..31] is an integer field: 10.0.0.0 is an IPv4 address",
    ),
    (
        "ip4.src == {10.0.0.1, fe80::1}",
        23,
        "ip4.src is an IPv4 address field: fe80::1 is an IPv6 address",
    ),
    ('tcp.dst == "80"', 12, 'tcp.dst is an integer field: "80" is a string'),
    ("ip4.src == @pg1", 12, "ip4.src is an integer field: @pg1 is a port group"),
    ("inport == 1", 11, "inport is a string field (a port name): 1 is not a string"),
    ("inport == $as4", 11, "inport is a string field (a port name): $as4 is not a string"),
    # Relational operators.
    ("ip4.src > {1, 2}", 9, "only == and != may be used with a set of values, not '>'"),
    ("eth.type > 0x800", 10, "only == and != may be used with nominal field eth.type, not '>'"),
    ("ip.ttl < 5", 8, "only == and != may be used with nominal field ip.ttl, not '<'"),
    (
        "vlan.present > 0",
        14,
        "only == and != may be used with Boolean field vlan.present, not '>'",
    ),
    ("ip4 >= 1", 5, "only == and != may be used with nominal field ip4, not '>='"),
    (
        "eth.src > 00:00:00:00:11:11/00:00:00:00:ff:ff",
        11,
        "only == and != may be used with a masked value, not '>': compare bits instead, "
        "e.g. 'eth.src[0..15] > 0x1111'",
    ),
    ("ip4.src < $as4", 11, "only == and != may be used with an address set ($as4), not '<'"),
    # Nominal fields and predicates.
    (
        "ip.proto != 6",
        10,
        "nominal field ip.proto may only be tested for equality (counting the '!' around it)",
    ),
    (
        "!(ip.proto == 6)",
        12,
        "nominal field ip.proto may only be tested for equality (counting the '!' around it)",
    ),
    (
        'inport != "p1"',
        8,
        "nominal field inport may only be tested for equality (counting the '!' around it)",
    ),
    (
        "!(inport == @pg1)",
        10,
        "nominal field inport may only be tested for equality (counting the '!' around it)",
    ),
    (
        "icmp4.type != 8",
        12,
        "nominal field icmp4.type may only be tested for equality (counting the '!' around it)",
    ),
    ("ip.dscp == 0x10/0x10", 12, "nominal field ip.dscp cannot be matched under a mask"),
    (
        "!ip4",
        2,
        "nominal predicate ip4 may only be tested positively: 'ip4' or 'ip4 == 1', "
        "not '!ip4' or 'ip4 == 0'",
    ),
    (
        "ip4 == 0",
        1,
        "nominal predicate ip4 may only be tested positively: 'ip4' or 'ip4 == 1', "
        "not '!ip4' or 'ip4 == 0'",
    ),
    (
        "!(tcp && tcp.dst == 80)",
        3,
        "nominal predicate tcp may only be tested positively: 'tcp' or 'tcp == 1', "
        "not '!tcp' or 'tcp == 0'",
    ),
    (
        "ip != 1",
        1,
        "nominal predicate ip may only be tested positively: 'ip' or 'ip == 1', "
        "not '!ip' or 'ip == 0'",
    ),
    # Address sets and port groups (checked when compiled, against the context).
    ("ip4.src == $nosuch", 12, "unknown address set $nosuch"),
    ("inport == @nosuch", 11, "unknown port group @nosuch"),
    (
        "ip4.src == $as6",
        12,
        "ip4.src is an IPv4 address field: address set $as6 holds fe80::1, an IPv6 address",
    ),
    (
        "ip4.src == $mixed",
        12,
        "ip4.src is an IPv4 address field: address set $mixed holds fe80::1, an IPv6 address",
    ),
    (
        "eth.src == $as4",
        12,
        "eth.src is a MAC address field: address set $as4 holds 10.0.0.1, an IPv4 address",
    ),
    (
        "ip4.src == $bad",
        12,
        "address set $bad holds 'not-an-address', not an address: invalid number not-an-address",
    ),
    (
        "ip4.src == $wide",
        12,
        "address set $wide holds 4294967296, which needs 33 bits, but ip4.src has 32",
    ),
]


@pytest.mark.parametrize(("text", "column", "message"), ERRORS, ids=[e[0] for e in ERRORS])
def test_an_invalid_match_names_the_column_and_the_problem(
    text: str, column: int, message: str
) -> None:
    with pytest.raises(MatchSyntaxError) as caught:
        compile_acl_match(text, CTX)
    assert (caught.value.column, caught.value.detail) == (column, message)
    assert str(caught.value) == f"at column {column}: {message}"


def test_an_error_says_what_was_expected_and_found() -> None:
    with pytest.raises(MatchSyntaxError) as caught:
        parse_match("tcp && tcp.dst == && ip4")
    assert (caught.value.expected, caught.value.found) == ("a value after '=='", "'&&'")


def test_errors_are_invalid_input_for_the_cli() -> None:
    assert issubclass(MatchSyntaxError, InvalidInput)


TOKENS = [
    "ip4",
    "tcp.dst",
    "eth.src",
    "inport",
    "ct.est",
    "==",
    "!=",
    "<",
    "<=",
    ">=",
    "!",
    "&&",
    "||",
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    "..",
    ",",
    "0",
    "1",
    "80",
    "0x1f",
    "10.0.0.1/24",
    "fe80::1",
    "00:00:00:00:00:01",
    '"p1"',
    "$as4",
    "@pg1",
    "/*",
    "*/",
    "//",
    "=",
    "&",
    ".",
    "$",
    "@",
    '"',
    "\n",
    "²",
    "é",
    "1.2.3",
    "0x",
    "/",
]


@given(st.lists(st.sampled_from(TOKENS), max_size=12).map(" ".join))
def test_any_token_soup_is_parsed_or_refused_with_a_match_error(text: str) -> None:
    try:
        compile_acl_match(text, CTX)
    except MatchSyntaxError as exc:
        assert 1 <= exc.column <= len(text) + 1


@given(st.text(max_size=40))
def test_any_text_is_parsed_or_refused_with_a_match_error(text: str) -> None:
    try:
        compile_acl_match(text, CTX)
    except MatchSyntaxError as exc:
        assert 1 <= exc.column <= len(text) + 1
