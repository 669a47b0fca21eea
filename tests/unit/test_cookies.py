"""The cookie layout, encoded and decoded in one place."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liveport.model import cookies
from liveport.model.cookies import Cookie, Kind, cookie


@given(
    st.sampled_from(list(Kind)),
    st.integers(0, cookies.MAX_DATAPATH),
    st.integers(0, cookies.MAX_PORT),
)
def test_every_cookie_decodes_to_what_it_was_made_of(kind: Kind, dp: int, port: int) -> None:
    value = cookie(kind, dp, port)
    assert cookies.decode(value) == Cookie(kind, dp, port)
    assert cookies.kind_of(value) is kind and cookies.port_of(value) == (dp, port)
    wanted, mask = cookies.owned_by(kind, dp, port)
    assert value & mask == wanted & mask
    wanted, mask = cookies.of_kind(kind)
    assert value & mask == wanted & mask
    assert value & cookies.ALL[1] == cookies.ALL[0]


@pytest.mark.parametrize("value", [0, 0x1234 << 48, cookies.MAGIC | (99 << 40)])
def test_foreign_cookies_are_not_liveports(value: int) -> None:
    assert cookies.decode(value) is None and cookies.kind_of(value) is None


def test_a_cookie_refuses_keys_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="no cookie"):
        cookie(Kind.PORT, 1 << 24, 1)
    with pytest.raises(ValueError, match="no cookie"):
        cookie(Kind.PORT, 1, 1 << 16)
