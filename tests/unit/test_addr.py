import ipaddress

import pytest

from liveport.model.addr import (
    Mac,
    parse_address_entry,
    parse_ip,
    parse_port_security_entry,
)
from liveport.model.errors import InvalidInput


def test_mac_round_trip_and_normalisation() -> None:
    mac = Mac.parse("00:0A:bc:00:00:01")
    assert str(mac) == "00:0a:bc:00:00:01"
    assert Mac.from_bytes(mac.packed) == mac
    assert not mac.is_multicast
    assert Mac.parse("ff:ff:ff:ff:ff:ff").is_broadcast
    assert Mac.parse("33:33:00:00:00:01").is_multicast


@pytest.mark.parametrize(
    "text",
    ["00:00:00:00:00:1", "00:00:00:00:00:0g", "", "00-00-00-00-00-01", "00:00:00:00:00:00:00"],
)
def test_malformed_mac_is_refused_with_the_text(text: str) -> None:
    with pytest.raises(InvalidInput, match="malformed MAC"):
        Mac.parse(text)


def test_ipv6_link_local_is_eui64() -> None:
    assert Mac.parse("52:54:00:12:34:56").ipv6_link_local() == ipaddress.IPv6Address(
        "fe80::5054:ff:fe12:3456"
    )


def test_address_entry() -> None:
    entry = parse_address_entry("00:00:00:00:00:01 10.0.0.1 fd00::1")
    assert entry.mac == Mac.parse("00:00:00:00:00:01")
    assert entry.ipv4 == (ipaddress.IPv4Address("10.0.0.1"),)
    assert entry.ipv6 == (ipaddress.IPv6Address("fd00::1"),)


def test_bad_ip_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"malformed IP address '10\.0\.0\.300'"):
        parse_ip("10.0.0.300")
    with pytest.raises(InvalidInput):
        parse_address_entry("00:00:00:00:00:01 10.0.0.300")


def test_port_security_prefixes() -> None:
    ps = parse_port_security_entry("00:00:00:00:00:01 10.0.0.0/24 10.1.0.5")
    assert ps.networks == (ipaddress.ip_network("10.0.0.0/24"), ipaddress.ip_network("10.1.0.5/32"))
