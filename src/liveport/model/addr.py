"""Ethernet and IP addresses, and OVN's textual forms for a port's addresses.

Logical_Switch_Port.addresses holds entries like "00:00:00:00:00:01 10.0.0.1 fd00::1",
"unknown", "dynamic" or "router"; port_security holds "MAC [IP[/plen] ...]". These parsers
return frozen values or raise InvalidInput naming what was wrong.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from liveport.model.errors import InvalidInput

_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, order=True)
class Mac:
    """A 48-bit Ethernet address."""

    value: int

    @classmethod
    def parse(cls, text: str) -> Mac:
        if not _MAC_RE.match(text):
            raise InvalidInput(f"malformed MAC address {text!r} (expected xx:xx:xx:xx:xx:xx)")
        return cls(int(text.replace(":", ""), 16))

    @classmethod
    def from_bytes(cls, raw: bytes) -> Mac:
        if len(raw) != 6:
            raise InvalidInput(f"a MAC address has 6 bytes, not {len(raw)}")
        return cls(int.from_bytes(raw, "big"))

    def __str__(self) -> str:
        raw = self.value.to_bytes(6, "big")
        return ":".join(f"{b:02x}" for b in raw)

    @property
    def packed(self) -> bytes:
        return self.value.to_bytes(6, "big")

    @property
    def is_multicast(self) -> bool:
        return bool(self.value >> 40 & 1)

    @property
    def is_broadcast(self) -> bool:
        return self.value == 0xFFFFFFFFFFFF

    def unicast_problem(self) -> str | None:
        """Why this MAC cannot be a port's own address, or None: broadcast, multicast and
        the all-zero address are never one station's (a port claiming the broadcast address
        would capture every switch-wide broadcast)."""
        if self.is_broadcast:
            return f"{self} is the broadcast address, not a unicast MAC"
        if self.is_multicast:
            return f"{self} is a multicast address, not a unicast MAC"
        if self.value == 0:
            return f"{self} is the all-zero address, not a unicast MAC"
        return None

    def ipv6_link_local(self) -> ipaddress.IPv6Address:
        """The EUI-64 link-local address a guest derives from this MAC."""
        raw = bytearray(self.packed)
        raw[0] ^= 0x02
        eui = bytes(raw[:3]) + b"\xff\xfe" + bytes(raw[3:])
        return ipaddress.IPv6Address(b"\xfe\x80" + b"\x00" * 6 + eui)


BROADCAST = Mac(0xFFFFFFFFFFFF)


def parse_ip(text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise InvalidInput(f"malformed IP address {text!r}") from None


def parse_ipv4(text: str) -> ipaddress.IPv4Address:
    ip = parse_ip(text)
    if not isinstance(ip, ipaddress.IPv4Address):
        raise InvalidInput(f"{text!r} is not an IPv4 address")
    return ip


def parse_network(text: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidInput(f"malformed IP prefix {text!r}") from None


@dataclass(frozen=True)
class PortAddresses:
    """One entry of Logical_Switch_Port.addresses with a concrete MAC."""

    mac: Mac
    ips: tuple[IPAddress, ...] = ()

    @property
    def ipv4(self) -> tuple[ipaddress.IPv4Address, ...]:
        return tuple(ip for ip in self.ips if isinstance(ip, ipaddress.IPv4Address))

    @property
    def ipv6(self) -> tuple[ipaddress.IPv6Address, ...]:
        return tuple(ip for ip in self.ips if isinstance(ip, ipaddress.IPv6Address))


# Entries that carry no concrete MAC; liveport records them but does not implement them.
SPECIAL_ADDRESSES = frozenset({"unknown", "dynamic", "router"})


def parse_address_entry(entry: str) -> PortAddresses:
    """Parses one Logical_Switch_Port.addresses entry: 'MAC [IP ...]'."""
    words = entry.split()
    if not words:
        raise InvalidInput("empty address entry")
    return PortAddresses(mac=Mac.parse(words[0]), ips=tuple(parse_ip(w) for w in words[1:]))


@dataclass(frozen=True)
class PortSecurity:
    """One port_security entry: the source MAC a port may use and, if any, its IP prefixes."""

    mac: Mac
    networks: tuple[IPNetwork, ...] = ()


def parse_port_security_entry(entry: str) -> PortSecurity:
    """Parses 'MAC [IP[/plen] ...]'; a bare IP is a host prefix."""
    words = entry.split()
    if not words:
        raise InvalidInput("empty port_security entry")
    return PortSecurity(
        mac=Mac.parse(words[0]), networks=tuple(parse_network(w) for w in words[1:])
    )
