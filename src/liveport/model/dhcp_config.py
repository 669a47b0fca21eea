"""DHCP_Options rows of the northbound database, parsed: what the native DHCPv4 server and the
stateless DHCPv6 server of a logical switch port answer, with OVN's option names and syntax.

OVN hands these options to ovn-controller inside a logical-flow action, so their values follow
that action language: IPv4/IPv6 addresses, prefixes, sets in braces ({8.8.8.8, 7.7.7.7}),
decimal or 0x integers, and double-quoted strings (domain_name="example.org", as Neutron
writes them). Each value is checked and encoded to its wire form here, once, so answering a
request is only copying bytes.

Pure. Problems are returned, never raised: a malformed optional option is one problem string
naming it and is left out of replies (OVN would drop the port's whole DHCP flow instead); a
row without a usable cidr or mandatory option yields no config at all, as in OVN.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import Enum

from liveport.model.addr import Mac, PortAddresses
from liveport.model.errors import InvalidInput

INFINITE_LEASE = 0xFFFFFFFF  # RFC 2131 section 3.3
MAX_OPTION_LEN = 255  # one DHCPv4 option's length octet (RFC 3396 splitting is not used)
MAX_OPTION_LEN_V6 = 0xFFFF
OPT_NETMASK = 1
OPT_HOSTNAME = 12
OPT_LEASE_TIME = 51
OPT_SERVER_ID = 54
OPT_T1 = 58
OPT_T2 = 59
OPT_BOOTFILE = 67


class Kind(Enum):
    """The value types of ovn-l7.h (its ipv4 split into one address and a set of them)."""

    IPV4 = "ipv4"
    IPV4_SET = "ipv4 set"
    BOOL = "bool"  # 0 or 1
    UINT8 = "uint8"
    UINT16 = "uint16"
    UINT32 = "uint32"
    STR = "str"  # a quoted string
    HOST_ID = "host_id"  # an IPv4 address or a quoted name
    DOMAINS = "domains"  # a quoted, comma-separated list of domain names
    STATIC_ROUTES = "static_routes"  # a set of prefix, gateway pairs
    MAC = "mac"
    IPV6_SET = "ipv6 set"
    BOOLEAN_WORD = "true/false"


@dataclass(frozen=True)
class Spec:
    code: int  # the DHCPv4 / DHCPv6 option code; 0 where the key is not an option on the wire
    kind: Kind
    low: int = 0
    high: int = 0  # integer range, for integer kinds


def _int(code: int, kind: Kind, low: int = 0) -> Spec:
    high = {Kind.BOOL: 1, Kind.UINT8: 0xFF, Kind.UINT16: 0xFFFF, Kind.UINT32: 0xFFFFFFFF}[kind]
    return Spec(code, kind, low, high)


# The DHCPv4 keys of northd's supported_dhcp_opts (ovn-l7.h), plus server_mac. Integer widths
# are the encoded ones: nb.xml documents arp_cache_timeout and tcp_keepalive_interval up to
# 255, but OVN (like RFC 2132) puts them on the wire as 32-bit values.
DHCPV4_OPTIONS: Mapping[str, Spec] = {
    "netmask": Spec(1, Kind.IPV4),
    "router": Spec(3, Kind.IPV4_SET),
    "dns_server": Spec(6, Kind.IPV4_SET),
    "log_server": Spec(7, Kind.IPV4_SET),
    "lpr_server": Spec(9, Kind.IPV4_SET),
    "hostname": Spec(OPT_HOSTNAME, Kind.STR),
    "domain_name": Spec(15, Kind.STR),
    "swap_server": Spec(16, Kind.IPV4),
    "ip_forward_enable": _int(19, Kind.BOOL),
    "policy_filter": Spec(21, Kind.IPV4_SET),
    "default_ttl": _int(23, Kind.UINT8),
    "mtu": _int(26, Kind.UINT16, low=68),  # RFC 2132 section 5.1: at least 68
    "broadcast_address": Spec(28, Kind.IPV4),
    "router_discovery": _int(31, Kind.BOOL),
    "router_solicitation": Spec(32, Kind.IPV4),
    "arp_cache_timeout": _int(35, Kind.UINT32),
    "ethernet_encap": _int(36, Kind.BOOL),
    "tcp_ttl": _int(37, Kind.UINT8),
    "tcp_keepalive_interval": _int(38, Kind.UINT32),
    "nis_server": Spec(41, Kind.IPV4_SET),
    "ntp_server": Spec(42, Kind.IPV4_SET),
    "netbios_name_server": Spec(44, Kind.IPV4_SET),
    "netbios_node_type": _int(46, Kind.UINT8),
    "lease_time": _int(OPT_LEASE_TIME, Kind.UINT32),
    "server_id": Spec(OPT_SERVER_ID, Kind.IPV4),
    "T1": _int(OPT_T1, Kind.UINT32),
    "T2": _int(OPT_T2, Kind.UINT32),
    "tftp_server": Spec(66, Kind.HOST_ID),
    "bootfile_name": Spec(OPT_BOOTFILE, Kind.STR),
    "domain_search_list": Spec(119, Kind.DOMAINS),
    "classless_static_route": Spec(121, Kind.STATIC_ROUTES),
    "tftp_server_address": Spec(150, Kind.IPV4_SET),
    "path_prefix": Spec(210, Kind.STR),
    "ms_classless_static_route": Spec(249, Kind.STATIC_ROUTES),
    "wpad": Spec(252, Kind.STR),
    # Not options of their own on the wire: the reply's siaddr, the non-iPXE bootfile (sent
    # as option 67) and the server's Ethernet address.
    "next_server": Spec(0, Kind.IPV4),
    "bootfile_name_alt": Spec(0, Kind.STR),
    "server_mac": Spec(0, Kind.MAC),
}
DHCPV4_MANDATORY = ("server_id", "server_mac", "lease_time")  # northd's build_dhcpv4_action
# Keys kept out of DhcpConfig.options because the reply treats them specially.
_V4_SPECIAL = frozenset({"next_server", "bootfile_name", "bootfile_name_alt", "server_mac"})

DHCPV6_OPTIONS: Mapping[str, Spec] = {
    "server_id": Spec(2, Kind.MAC),  # a MAC, sent as a DUID-LL
    "dns_server": Spec(23, Kind.IPV6_SET),
    "domain_search": Spec(24, Kind.STR),
    "dhcpv6_stateless": Spec(0, Kind.BOOLEAN_WORD),
}
# Known to OVN's DHCPv6 server but not (yet) to liveport's stateless one.
DHCPV6_UNSUPPORTED = frozenset({"fqdn", "bootfile_name", "bootfile_name_alt"})


@dataclass(frozen=True)
class _Token:
    text: str
    quoted: bool


_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_WORD = re.compile(r'[^\s,{}"]+')
_INTEGER = re.compile(r"(0[xX][0-9a-fA-F]+|[0-9]+)")


def _tokens(value: str) -> tuple[_Token, ...]:
    """Splits an option value into its constants: one, or a set in braces separated by
    commas and/or blanks, as OVN's action lexer reads it. Strings take JSON escapes."""
    text = value.strip()
    braced = text.startswith("{")
    if braced:
        if not text.endswith("}"):
            raise InvalidInput("a set opened with '{' must close with '}'")
        text = text[1:-1]
    found: list[_Token] = []
    pos = _skip_separators(text, 0)
    while pos < len(text):
        if (string := _STRING.match(text, pos)) is not None:
            found.append(_Token(_unescape(string.group(1)), quoted=True))
            pos = string.end()
        elif (word := _WORD.match(text, pos)) is not None:
            found.append(_Token(word.group(0), quoted=False))
            pos = word.end()
        else:
            raise InvalidInput(f"unexpected {text[pos]!r} at offset {pos}")
        pos = _skip_separators(text, pos)
    if not found:
        raise InvalidInput("no value")
    if len(found) > 1 and not braced:  # OVN would read the second as the next option's name
        raise InvalidInput("several values must be a set in braces: {a, b}")
    return tuple(found)


def _skip_separators(text: str, pos: int) -> int:
    while pos < len(text) and (text[pos] == "," or text[pos].isspace()):
        pos += 1
    return pos


def _unescape(raw: str) -> str:
    try:
        text = json.loads(f'"{raw}"', strict=False)
    except ValueError:
        raise InvalidInput(f"bad escape in string {raw!r}") from None
    assert isinstance(text, str)
    return text


def _one(found: tuple[_Token, ...]) -> _Token:
    if len(found) != 1:
        raise InvalidInput(f"takes one value, not {len(found)}")
    return found[0]


def _word(token: _Token, what: str) -> str:
    if token.quoted:
        raise InvalidInput(f"{what} is written without quotes")
    return token.text


def _ipv4(token: _Token) -> ipaddress.IPv4Address:
    text = _word(token, "an IPv4 address")
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise InvalidInput(f"{text!r} is not an IPv4 address") from None


def _ipv6(token: _Token) -> ipaddress.IPv6Address:
    text = _word(token, "an IPv6 address")
    try:
        return ipaddress.IPv6Address(text)
    except ValueError:
        raise InvalidInput(f"{text!r} is not an IPv6 address") from None


def _integer(token: _Token, low: int, high: int) -> int:
    text = _word(token, "a number")
    if not _INTEGER.fullmatch(text):
        raise InvalidInput(f"{text!r} is not an integer")
    number = int(text, 0)
    if not low <= number <= high:
        raise InvalidInput(f"{number} is outside {low}..{high}")
    return number


def _string(token: _Token) -> bytes:
    if not token.quoted:
        raise InvalidInput(f'a string must be quoted, as in "{token.text}"')
    if not token.text:
        raise InvalidInput("empty string")
    return token.text.encode()


def _route(prefix: _Token, gateway: _Token) -> bytes:
    """RFC 3442: the prefix length, the prefix's significant octets, then the router."""
    text = _word(prefix, "a prefix")
    try:
        network = ipaddress.IPv4Network(text, strict=False)
    except ValueError:
        raise InvalidInput(f"{text!r} is not an IPv4 prefix") from None
    significant = (network.prefixlen + 7) // 8
    return (
        bytes([network.prefixlen])
        + network.network_address.packed[:significant]
        + _ipv4(gateway).packed
    )


def _labels(domain: str) -> list[bytes]:
    name = domain.removesuffix(".")  # a fully qualified name's root is the terminating 0
    if not name.isascii() or any(c.isspace() for c in name):
        raise InvalidInput(f"{domain!r} is not a domain name")
    labels = [label.encode() for label in name.split(".")]
    if any(not 1 <= len(label) <= 63 for label in labels) or len(name) > 253:
        raise InvalidInput(f"{domain!r} is not a domain name (labels of 1..63 characters)")
    return labels


def encode_domains(domains: Iterable[str], compress: bool = True) -> bytes:
    """RFC 1035 names, one after another. With compression (DHCPv4's RFC 3397 search list),
    a suffix already written becomes a pointer to it, as OVN encodes domain_search_list."""
    out = bytearray()
    written: dict[tuple[bytes, ...], int] = {}
    for domain in domains:
        labels = _labels(domain)
        for start in range(len(labels)):
            suffix = tuple(labels[start:])
            if compress and suffix in written:
                out += struct.pack("!H", 0xC000 | written[suffix])
                break
            if len(out) < 0x3FFF:  # a pointer has 14 bits
                written[suffix] = len(out)
            out += bytes([len(labels[start])]) + labels[start]
        else:
            out.append(0)
    return bytes(out)


def _domain_list(token: _Token) -> list[str]:
    if not token.quoted:
        raise InvalidInput(f'a domain list must be quoted, as in "{token.text}"')
    domains = [d.strip() for d in token.text.split(",") if d.strip()]
    if not domains:
        raise InvalidInput("no domain names")
    return domains


def encode(spec: Spec, value: str) -> bytes:
    """The wire form of one option value (for MAC and BOOLEAN_WORD keys: the MAC's 6 bytes,
    or one byte 0/1). Raises InvalidInput saying why the value is refused."""
    found = _tokens(value)
    kind = spec.kind
    if kind is Kind.IPV4:
        return _ipv4(_one(found)).packed
    if kind is Kind.IPV4_SET:
        return b"".join(_ipv4(t).packed for t in found)
    if kind is Kind.IPV6_SET:
        return b"".join(_ipv6(t).packed for t in found)
    if kind in (Kind.BOOL, Kind.UINT8):
        return bytes([_integer(_one(found), spec.low, spec.high)])
    if kind is Kind.UINT16:
        return struct.pack("!H", _integer(_one(found), spec.low, spec.high))
    if kind is Kind.UINT32:
        return struct.pack("!I", _integer(_one(found), spec.low, spec.high))
    if kind is Kind.STR:
        return _string(_one(found))
    if kind is Kind.HOST_ID:
        token = _one(found)
        return _string(token) if token.quoted else _ipv4(token).packed
    if kind is Kind.DOMAINS:
        return encode_domains(_domain_list(_one(found)))
    if kind is Kind.STATIC_ROUTES:
        if len(found) % 2:
            raise InvalidInput(f"{len(found)} values: routes are prefix, gateway pairs")
        return b"".join(_route(found[i], found[i + 1]) for i in range(0, len(found), 2))
    if kind is Kind.MAC:
        return Mac.parse(_word(_one(found), "a MAC address")).packed
    word = _word(_one(found), "true or false").lower()
    if word not in ("true", "false"):
        raise InvalidInput(f"{word!r} is neither true nor false")
    return bytes([word == "true"])


@dataclass(frozen=True)
class DhcpOption:
    """One DHCPv4 option as replies carry it: its NB key, code and encoded value."""

    name: str
    code: int
    data: bytes


@dataclass(frozen=True)
class DhcpConfig:
    """A usable DHCPv4 configuration: what every reply of a DHCP_Options row says.

    `options` are the reply's options in OVN's order (sorted by key, as northd writes them
    into put_dhcp_opts), the subnet mask from the cidr included; bootfile_name(_alt) and
    next_server are kept apart because which of them a reply carries depends on the request.
    """

    cidr: ipaddress.IPv4Network
    server_id: ipaddress.IPv4Address
    server_mac: Mac
    lease_time: int
    options: tuple[DhcpOption, ...]
    next_server: ipaddress.IPv4Address | None = None
    bootfile_name: bytes | None = None
    bootfile_name_alt: bytes | None = None

    def option(self, name: str) -> bytes | None:
        """The encoded value of the option with this NB key, if the replies carry it."""
        return next((o.data for o in self.options if o.name == name), None)

    def _seconds(self, name: str) -> int | None:
        data = self.option(name)
        return None if data is None else int.from_bytes(data, "big")

    @property
    def t1(self) -> int:
        """When a client starts renewing: T1 if configured, else RFC 2131's half lease. OVN
        sends T1/T2 only when configured (clients apply the same defaults)."""
        configured = self._seconds("T1")
        if configured is not None:
            return configured
        return INFINITE_LEASE if self.lease_time == INFINITE_LEASE else self.lease_time // 2

    @property
    def t2(self) -> int:
        """When a client starts rebinding: T2 if configured, else 7/8 of the lease."""
        configured = self._seconds("T2")
        if configured is not None:
            return configured
        return INFINITE_LEASE if self.lease_time == INFINITE_LEASE else self.lease_time * 7 // 8

    def with_option(self, name: str, data: bytes) -> DhcpConfig:
        """This config with the option `name` set to `data` (kept in key order)."""
        spec = DHCPV4_OPTIONS[name]
        others = [o for o in self.options if o.name != name]
        merged = sorted([*others, DhcpOption(name, spec.code, data)], key=lambda o: o.name)
        return replace(self, options=tuple(merged))


def _v4_network(cidr: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(cidr.strip(), strict=False)
    except ValueError:
        raise InvalidInput(f"cidr {cidr!r} is not an IPv4 prefix") from None


def parse_dhcpv4_options(
    cidr: str, options: Mapping[str, str]
) -> tuple[DhcpConfig | None, tuple[str, ...]]:
    """A DHCP_Options row's cidr and options as a DHCPv4 config, and the problems found.
    None when the cidr is unusable or server_id, server_mac or lease_time is missing or
    malformed (northd then installs no DHCPv4 flows). Memoised: rows are parsed every pass."""
    return _parse_dhcpv4(cidr, tuple(sorted(options.items())))


@functools.lru_cache(maxsize=4096)
def _parse_dhcpv4(
    cidr: str, items: tuple[tuple[str, str], ...]
) -> tuple[DhcpConfig | None, tuple[str, ...]]:
    problems: list[str] = []
    try:
        network: ipaddress.IPv4Network | None = _v4_network(cidr)
    except InvalidInput as exc:
        problems.append(f"DHCPv4 {exc}")
        network = None
    encoded = _encode_all(items, DHCPV4_OPTIONS, "DHCPv4", MAX_OPTION_LEN, problems)
    unusable = [name for name in DHCPV4_MANDATORY if name not in encoded]
    if unusable:
        problems.append(
            f"DHCPv4 needs {', '.join(unusable)} (missing or malformed); no DHCPv4 replies"
        )
    if network is None or unusable:
        return None, tuple(problems)
    _check_timers(encoded, problems)
    if "netmask" not in encoded:  # northd adds the cidr's mask; a configured one overrides it
        encoded["netmask"] = network.netmask.packed
    config = DhcpConfig(
        cidr=network,
        server_id=ipaddress.IPv4Address(encoded["server_id"]),
        server_mac=Mac.from_bytes(encoded["server_mac"]),
        lease_time=int.from_bytes(encoded["lease_time"], "big"),
        options=tuple(
            DhcpOption(name, DHCPV4_OPTIONS[name].code, data)
            for name, data in sorted(encoded.items())
            if name not in _V4_SPECIAL
        ),
        next_server=(
            ipaddress.IPv4Address(encoded["next_server"]) if "next_server" in encoded else None
        ),
        bootfile_name=encoded.get("bootfile_name"),
        bootfile_name_alt=encoded.get("bootfile_name_alt"),
    )
    return config, tuple(problems)


def _encode_all(
    items: Iterable[tuple[str, str]],
    specs: Mapping[str, Spec],
    family: str,
    max_len: int,
    problems: list[str],
) -> dict[str, bytes]:
    """Every known, well-formed option encoded; a problem for each other one."""
    encoded: dict[str, bytes] = {}
    for name, value in items:
        spec = specs.get(name)
        if spec is None:
            problems.append(f"unknown {family} option {name}={value!r} ignored")
            continue
        try:
            data = encode(spec, value)
        except InvalidInput as exc:
            problems.append(f"{family} option {name}={value!r} ignored: {exc}")
            continue
        if len(data) > max_len:
            problems.append(
                f"{family} option {name}={value!r} ignored: {len(data)} bytes encoded, "
                f"an option holds at most {max_len}"
            )
            continue
        encoded[name] = data
    return encoded


def _check_timers(encoded: dict[str, bytes], problems: list[str]) -> None:
    """RFC 2131 4.4.5: renewal (T1) comes before rebinding (T2), both before the lease ends.
    Timers out of that order are reported but still sent, as OVN sends them (its own tests
    configure T1 above the lease); clients then fall back to their defaults."""
    values: dict[str, int] = {
        n: int.from_bytes(encoded[n], "big") for n in ("T1", "T2") if n in encoded
    }
    if int.from_bytes(encoded["lease_time"], "big") != INFINITE_LEASE:
        values["lease_time"] = int.from_bytes(encoded["lease_time"], "big")
    for early, lates in (("T1", ("T2", "lease_time")), ("T2", ("lease_time",))):
        if early not in values:
            continue
        late = next((n for n in lates if n in values and values[early] >= values[n]), None)
        if late is not None:
            problems.append(
                f"DHCPv4 option {early}={values[early]} is not below {late}={values[late]} "
                "(sent anyway, as OVN does)"
            )


def parse_hostname(value: str) -> bytes:
    """Logical_Switch_Port options:hostname, in the same quoted syntax; raises InvalidInput."""
    return encode(DHCPV4_OPTIONS["hostname"], value)


@dataclass(frozen=True)
class DhcpOffer:
    """What the DHCPv4 server gives one address entry of a port: the MAC it answers, the
    address it offers and the config (with the port's own hostname, if it has one)."""

    mac: Mac
    ip: ipaddress.IPv4Address
    config: DhcpConfig


def port_dhcp(
    port: str,
    addresses: Iterable[PortAddresses],
    config: DhcpConfig,
    port_options: Mapping[str, str] | None = None,
) -> tuple[tuple[DhcpOffer, ...], tuple[str, ...]]:
    """The DHCPv4 offers of a port whose dhcpv4_options is `config`: for each address entry,
    its first IPv4 address inside the cidr, as northd picks it. options:hostname of the port
    takes precedence over the row's hostname. No offer at all is a problem."""
    problems: list[str] = []
    hostname = (port_options or {}).get("hostname")
    if hostname is not None:
        try:
            config = config.with_option("hostname", parse_hostname(hostname))
        except InvalidInput as exc:
            problems.append(f"port {port}: options:hostname={hostname!r} ignored: {exc}")
    offers = []
    for entry in addresses:
        ip = next((ip for ip in entry.ipv4 if ip in config.cidr), None)
        if ip is not None:
            offers.append(DhcpOffer(entry.mac, ip, config))
    if not offers:
        problems.append(
            f"port {port}: no IPv4 address in {config.cidr}, the cidr of its "
            "dhcpv4_options; no DHCPv4 replies"
        )
    return tuple(offers), tuple(problems)


@dataclass(frozen=True)
class Dhcpv6Config:
    """A usable stateless DHCPv6 configuration. server_id is the server's MAC: replies come
    from it and from its link-local address, and carry it as a DUID-LL."""

    cidr: ipaddress.IPv6Network
    server_mac: Mac
    dns_servers: tuple[ipaddress.IPv6Address, ...] = ()
    domain_search: tuple[str, ...] = ()
    stateless: bool = False  # dhcpv6_stateless=true: no addresses, only other configuration

    @property
    def server_ip(self) -> ipaddress.IPv6Address:
        return self.server_mac.ipv6_link_local()

    @property
    def server_duid(self) -> bytes:
        return duid_ll(self.server_mac)


def duid_ll(mac: Mac) -> bytes:
    """DUID-LL (RFC 8415 section 11.4): type 3, hardware type 1 (Ethernet), the MAC."""
    return struct.pack("!HH", 3, 1) + mac.packed


def parse_dhcpv6_options(
    cidr: str, options: Mapping[str, str]
) -> tuple[Dhcpv6Config | None, tuple[str, ...]]:
    """A DHCP_Options row as a DHCPv6 config, and the problems found; None when the cidr is
    not an IPv6 prefix or server_id (a MAC) is missing or malformed."""
    return _parse_dhcpv6(cidr, tuple(sorted(options.items())))


@functools.lru_cache(maxsize=4096)
def _parse_dhcpv6(
    cidr: str, items: tuple[tuple[str, str], ...]
) -> tuple[Dhcpv6Config | None, tuple[str, ...]]:
    problems: list[str] = []
    try:
        network: ipaddress.IPv6Network | None = ipaddress.IPv6Network(cidr.strip(), strict=False)
    except ValueError:
        problems.append(f"DHCPv6 cidr {cidr!r} is not an IPv6 prefix")
        network = None
    supported = []
    for name, value in items:
        if name in DHCPV6_UNSUPPORTED:
            problems.append(f"DHCPv6 option {name}={value!r} ignored: liveport does not send it")
        else:
            supported.append((name, value))
    encoded = _encode_all(supported, DHCPV6_OPTIONS, "DHCPv6", MAX_OPTION_LEN_V6, problems)
    if "domain_search" in encoded:
        try:
            search = _domain_search(encoded["domain_search"].decode())
        except InvalidInput as exc:
            problems.append(f"DHCPv6 option domain_search ignored: {exc}")
            search = ()
    else:
        search = ()
    if "server_id" not in encoded:
        problems.append("DHCPv6 needs server_id (missing or malformed); no DHCPv6 replies")
    if network is None or "server_id" not in encoded:
        return None, tuple(problems)
    dns = encoded.get("dns_server", b"")
    config = Dhcpv6Config(
        cidr=network,
        server_mac=Mac.from_bytes(encoded["server_id"]),
        dns_servers=tuple(ipaddress.IPv6Address(dns[i : i + 16]) for i in range(0, len(dns), 16)),
        domain_search=search,
        stateless=encoded.get("dhcpv6_stateless") == b"\x01",
    )
    return config, tuple(problems)


def _domain_search(text: str) -> tuple[str, ...]:
    domains = tuple(d.strip() for d in text.split(",") if d.strip())
    encode_domains(domains, compress=False)  # validates every name
    return domains


@dataclass(frozen=True)
class Dhcpv6Offer:
    """What the DHCPv6 server answers for one address entry of a port."""

    mac: Mac
    ip: ipaddress.IPv6Address
    config: Dhcpv6Config


def port_dhcpv6(
    port: str, addresses: Iterable[PortAddresses], config: Dhcpv6Config
) -> tuple[tuple[Dhcpv6Offer, ...], tuple[str, ...]]:
    """As port_dhcp: northd answers DHCPv6, stateless too, only for an address entry with an
    IPv6 address inside the cidr."""
    offers = []
    for entry in addresses:
        ip = next((ip for ip in entry.ipv6 if ip in config.cidr), None)
        if ip is not None:
            offers.append(Dhcpv6Offer(entry.mac, ip, config))
    if offers:
        return tuple(offers), ()
    return (), (
        f"port {port}: no IPv6 address in {config.cidr}, the cidr of its dhcpv6_options; "
        "no DHCPv6 replies",
    )
