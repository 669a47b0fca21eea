"""The error a malformed or meaningless match expression raises.

Every message names the column (1-based) of the token at fault, and where the problem is
that something else was expected there, what was expected and what was found:
"at column 19: expected a value after '==', found '&&'".
"""

from __future__ import annotations

from liveport.model.errors import InvalidInput


class MatchSyntaxError(InvalidInput):
    """A match expression cannot be parsed, or says something OVN's rules forbid (an
    unknown field, a value of the wrong type or width, '<' on a nominal field, an unknown
    address set or port group, ...)."""

    def __init__(
        self, column: int, detail: str, *, expected: str | None = None, found: str | None = None
    ) -> None:
        self.column = column
        self.detail = detail
        self.expected = expected
        self.found = found
        super().__init__(f"at column {column}: {detail}")


def expected(column: int, what: str, found: str) -> MatchSyntaxError:
    """'expected <what>, found <found>' at column."""
    return MatchSyntaxError(column, f"expected {what}, found {found}", expected=what, found=found)
