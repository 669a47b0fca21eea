"""The tokens of OVN's match language, read one at a time from the text.

Follows OVN's lexer (lib/lex.c): identifiers may contain dots ("ip4.src"); a number is
whatever run of letters, digits, colons and single dots starts with a digit (or with hex
digits followed by a colon, or "::"), and is then read as a MAC, a decimal or 0x hex
integer, an IPv4 or an IPv6 address, optionally followed by "/mask" in the same form or,
for an IP address, "/prefix-length"; strings are JSON strings; "$name" names an address
set and "@name" a port group; "//" and "/* */" are comments.

Tokens are produced on demand, so the first error in reading order is the one reported.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from dataclasses import dataclass
from enum import Enum

from liveport.model.expr.errors import MatchSyntaxError


class T(Enum):
    """Token types."""

    ID = "a name"
    INTEGER = "a number"
    STRING = "a string"
    ADDRESS_SET = "an address set"
    PORT_GROUP = "a port group"
    LPAREN = "'('"
    RPAREN = "')'"
    LCURLY = "'{'"
    RCURLY = "'}'"
    LSQUARE = "'['"
    RSQUARE = "']'"
    ELLIPSIS = "'..'"
    COMMA = "','"
    EQ = "'=='"
    NE = "'!='"
    LT = "'<'"
    LE = "'<='"
    GT = "'>'"
    GE = "'>='"
    NOT = "'!'"
    AND = "'&&'"
    OR = "'||'"
    EQUALS = "'='"
    END = "end of input"


class Format(Enum):
    """How a number was written, which says what kind of value it is."""

    DECIMAL = "decimal"
    HEX = "hexadecimal"
    IPV4 = "IPv4 address"
    IPV6 = "IPv6 address"
    MAC = "MAC address"


# Widths of the values a format stands for (a decimal or hex number: its own bit length).
FORMAT_BITS = {Format.IPV4: 32, Format.IPV6: 128, Format.MAC: 48}
RELOPS = {T.EQ: "==", T.NE: "!=", T.LT: "<", T.LE: "<=", T.GT: ">", T.GE: ">="}
MAX_HEX_BITS = 128
MAX_DECIMAL = 1 << 64

_SIMPLE = {
    "(": T.LPAREN,
    ")": T.RPAREN,
    "{": T.LCURLY,
    "}": T.RCURLY,
    "[": T.LSQUARE,
    "]": T.RSQUARE,
    ",": T.COMMA,
}
# Longest first, so "==" is not read as "=" "=".
_OPERATORS = (
    ("==", T.EQ),
    ("!=", T.NE),
    ("<=", T.LE),
    (">=", T.GE),
    ("&&", T.AND),
    ("||", T.OR),
    ("..", T.ELLIPSIS),
    ("<", T.LT),
    (">", T.GT),
    ("!", T.NOT),
    ("=", T.EQUALS),
)
_ID_START = re.compile(r"[A-Za-z_]")
_ID = re.compile(r"[A-Za-z_.][A-Za-z_.0-9]*")
_MAC = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")
# ASCII only: str.isdigit() and isalnum() accept other scripts' digits, which int() refuses.
_DIGITS = frozenset("0123456789")
_ALNUM = _DIGITS | frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_HEX_THEN_COLON = re.compile(r"[0-9A-Fa-f]*:")


@dataclass(frozen=True)
class Token:
    type: T
    column: int  # 1-based position of the token's first character
    text: str  # as written
    value: int = 0  # INTEGER
    mask: int | None = None  # INTEGER written with "/mask"
    format: Format | None = None  # INTEGER
    name: str = ""  # ID, ADDRESS_SET, PORT_GROUP: the name; STRING: the decoded string

    def describe(self) -> str:
        """The token as an error message shows it."""
        if self.type is T.END:
            return "end of input"
        return repr(self.text) if self.type is T.STRING else f"'{self.text}'"


class NumberError(ValueError):
    """A number is malformed; the message says how."""


class Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self._pos = 0
        self._tokens: list[Token] = []

    def peek(self, ahead: int = 0) -> Token:
        while len(self._tokens) <= ahead:
            self._tokens.append(self._read())
        return self._tokens[ahead]

    def next(self) -> Token:
        token = self.peek()
        self._tokens.pop(0)
        return token

    # ----- reading ---------------------------------------------------------------------------

    def _read(self) -> Token:
        self._skip_space_and_comments()
        text, start = self.text, self._pos
        if start >= len(text):
            return Token(T.END, start + 1, "")
        char = text[start]
        if char in _SIMPLE:
            self._pos += 1
            return Token(_SIMPLE[char], start + 1, char)
        if char == '"':
            return self._string()
        if char in "$@":
            return self._reference()
        if self._starts_number(start):
            return self._number()
        if _ID_START.match(char):
            match = _ID.match(text, start)
            assert match is not None
            self._pos = match.end()
            return Token(T.ID, start + 1, match.group(), name=match.group())
        for spelling, kind in _OPERATORS:
            if text.startswith(spelling, start):
                self._pos += len(spelling)
                return Token(kind, start + 1, spelling)
        raise self._invalid_character(start)

    def _invalid_character(self, start: int) -> MatchSyntaxError:
        char = self.text[start]
        hints = {
            "&": "'&' is only valid as part of '&&'",
            "|": "'|' is only valid as part of '||'",
            ".": "'.' is only valid as part of '..' or a number",
            "/": "'/' is only valid as part of '//', '/*' or a masked number",
        }
        detail = hints.get(char) or (
            f"invalid character {char!r}" if char.isprintable() else f"invalid byte {char!r}"
        )
        return MatchSyntaxError(start + 1, detail, found=repr(char))

    def _skip_space_and_comments(self) -> None:
        text = self.text
        while self._pos < len(text):
            if text[self._pos].isspace():
                self._pos += 1
            elif text.startswith("//", self._pos):
                end = text.find("\n", self._pos)
                self._pos = len(text) if end < 0 else end
            elif text.startswith("/*", self._pos):
                end = text.find("*/", self._pos + 2)
                newline = text.find("\n", self._pos + 2)
                if end < 0 or 0 <= newline < end:
                    # OVN allows comments within a line only.
                    raise MatchSyntaxError(self._pos + 1, "'/*' without a matching '*/'")
                self._pos = end + 2
            else:
                return

    def _starts_number(self, start: int) -> bool:
        text = self.text
        if text[start] in _DIGITS or text.startswith("::", start):
            return True
        # A MAC or IPv6 address may start with hex letters, but then a colon comes before
        # anything else: "fe80::1", "aa:bb:...". Names never have colons.
        return bool(_HEX_THEN_COLON.match(text, start)) and text[start] in "abcdefABCDEF"

    def _number(self) -> Token:
        start = self._pos
        end = _number_end(self.text, start)
        if end < len(self.text) and self.text[end] == "/":
            end = _number_end(self.text, end + 1)
        self._pos = end
        written = self.text[start:end]
        try:
            value, mask, fmt = parse_number(written)
        except NumberError as exc:
            raise MatchSyntaxError(start + 1, str(exc), found=repr(written)) from None
        return Token(T.INTEGER, start + 1, written, value=value, mask=mask, format=fmt)

    def _string(self) -> Token:
        start = self._pos
        pos = start + 1
        while pos < len(self.text) and self.text[pos] != '"':
            pos += 2 if self.text[pos] == "\\" else 1
        if pos >= len(self.text):
            raise MatchSyntaxError(
                start + 1, "the string has no closing '\"'", expected="'\"'", found="end of input"
            )
        written = self.text[start : pos + 1]
        self._pos = pos + 1
        try:
            decoded = json.loads(written)
        except ValueError:
            raise MatchSyntaxError(
                start + 1, f"invalid escape in string {written}", found=written
            ) from None
        return Token(T.STRING, start + 1, written, name=decoded)

    def _reference(self) -> Token:
        start = self._pos
        sigil = self.text[start]
        match = _ID.match(self.text, start + 1)
        if match is None or not _ID_START.match(self.text[start + 1]):
            what = "an address set" if sigil == "$" else "a port group"
            raise MatchSyntaxError(start + 1, f"'{sigil}' must be followed by the name of {what}")
        self._pos = match.end()
        kind = T.ADDRESS_SET if sigil == "$" else T.PORT_GROUP
        return Token(kind, start + 1, self.text[start : match.end()], name=match.group())


def _number_end(text: str, pos: int) -> int:
    """Where a number starting at pos ends: letters and digits, colons until a dot has been
    seen (so "1.2.3.4:80" stops at the colon), and dots not followed by another dot (so
    "0..15" stops at the ellipsis)."""
    saw_dot = False
    while pos < len(text):
        char = text[pos]
        if char in _ALNUM or (char == ":" and not saw_dot):
            pos += 1
        elif char == "." and not text.startswith("..", pos):
            saw_dot = True
            pos += 1
        else:
            break
    return pos


@functools.lru_cache(maxsize=65536)
def parse_number(written: str) -> tuple[int, int | None, Format]:
    """(value, mask or None, format) of a number as OVN writes one, e.g. "10.0.0.0/8",
    "0x800", "00:11:22:33:44:55/ff:ff:ff:00:00:00". Bits of the value outside the mask are
    cleared, as OVN does. Raises NumberError."""
    text, slash, mask_text = written.partition("/")
    value, fmt = _plain_number(text)
    if not slash:
        return value, None, fmt
    mask, mask_fmt = _plain_number(mask_text)
    if mask_fmt is fmt or (fmt is Format.DECIMAL and value == 0 and mask_fmt is Format.HEX):
        pass  # "0/0x1234" is OVN's way to write a masked zero
    elif fmt in (Format.IPV4, Format.IPV6) and mask_fmt is Format.DECIMAL:
        bits = FORMAT_BITS[fmt]
        if mask > bits:
            raise NumberError(f"prefix length {mask} is longer than an {fmt.value} ({bits} bits)")
        mask = ((1 << bits) - 1) ^ ((1 << (bits - mask)) - 1)
    else:
        raise NumberError(
            f"the mask of {written} is {_article(mask_fmt.value)}, which does not go with "
            f"{_article(fmt.value)}"
        )
    if fmt is Format.DECIMAL and mask_fmt is Format.HEX:
        fmt = Format.HEX
    return value & mask, mask, fmt


def _article(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiouI" else f"a {noun}"


def _plain_number(text: str) -> tuple[int, Format]:
    if not text:
        raise NumberError("a number is missing")
    if _MAC.fullmatch(text):
        return int(text.replace(":", ""), 16), Format.MAC
    if all(c in _DIGITS for c in text):
        if text[0] == "0" and len(text) > 1:
            raise NumberError(f"decimal {text} must not have leading zeros")
        value = int(text)
        if value >= MAX_DECIMAL:
            raise NumberError(f"decimal {text} is not less than 2**64 (write it in hex)")
        return value, Format.DECIMAL
    if text[:2] in ("0x", "0X"):
        digits = text[2:]
        if not digits:
            raise NumberError(f"hex digits expected after {text}")
        try:
            value = int(digits, 16)
        except ValueError:
            raise NumberError(f"invalid hexadecimal number {text}") from None
        if value.bit_length() > MAX_HEX_BITS:
            raise NumberError(f"hexadecimal {text} needs more than {MAX_HEX_BITS} bits")
        return value, Format.HEX
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise NumberError(f"invalid number {text}") from None
    return int(address), Format.IPV4 if address.version == 4 else Format.IPV6
