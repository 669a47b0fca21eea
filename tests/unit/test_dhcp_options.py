"""DHCP_Options rows: OVN's option names and value syntax, encoded to the wire, and every way
a row or a port can be refused."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liveport.model.addr import Mac, PortAddresses, parse_address_entry
from liveport.model.dhcp_config import (
    DHCPV4_OPTIONS,
    INFINITE_LEASE,
    DhcpConfig,
    encode_domains,
    parse_dhcpv4_options,
    parse_dhcpv6_options,
    port_dhcp,
    port_dhcpv6,
)
from liveport.model.errors import InvalidInput

CIDR = "10.0.0.0/24"
BASE = {"server_id": "10.0.0.1", "server_mac": "fa:16:3e:00:00:01", "lease_time": "3600"}


def config(**extra: str) -> DhcpConfig:
    parsed, problems = parse_dhcpv4_options(CIDR, {**BASE, **extra})
    assert problems == ()
    assert parsed is not None
    return parsed


def encoded(name: str, value: str) -> bytes | None:
    parsed, problems = parse_dhcpv4_options(CIDR, {**BASE, name: value})
    assert parsed is not None, problems
    return parsed.option(name)


def ip(text: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(text)


def test_the_mandatory_options_make_a_config_with_the_cidrs_netmask() -> None:
    parsed = config()
    assert parsed.cidr == ipaddress.IPv4Network(CIDR)
    assert parsed.server_id == ip("10.0.0.1")
    assert parsed.server_mac == Mac.parse("fa:16:3e:00:00:01")
    assert parsed.lease_time == 3600
    # northd's order: sorted by key, the cidr's mask added, server_mac not an option.
    assert [(o.name, o.code, o.data.hex()) for o in parsed.options] == [
        ("lease_time", 51, "00000e10"),
        ("netmask", 1, "ffffff00"),
        ("server_id", 54, "0a000001"),
    ]


@pytest.mark.parametrize(
    ("name", "value", "wire"),
    [
        # ipv4, one address or a set (braces, commas and/or blanks, as OVN's lexer)
        ("router", "10.0.0.1", "0a000001"),
        ("dns_server", "{8.8.8.8,7.7.7.7}", "0808080807070707"),
        ("dns_server", "{8.8.8.8 7.7.7.7}", "0808080807070707"),
        ("dns_server", "{ 8.8.8.8, 7.7.7.7 }", "0808080807070707"),
        ("dns_server", "{8.8.8.8}", "08080808"),
        ("log_server", "10.0.0.7", "0a000007"),
        ("lpr_server", "10.0.0.9", "0a000009"),
        ("swap_server", "10.0.0.16", "0a000010"),
        ("policy_filter", "{10.0.0.0, 255.0.0.0}", "0a000000ff000000"),
        ("router_solicitation", "224.0.0.2", "e0000002"),
        ("nis_server", "10.0.0.41", "0a000029"),
        ("ntp_server", "{10.0.0.42, 10.0.0.43}", "0a00002a0a00002b"),
        ("netbios_name_server", "{10.0.0.7,10.0.0.8}", "0a0000070a000008"),
        ("tftp_server_address", "{10.0.0.4,10.0.0.5}", "0a0000040a000005"),
        ("broadcast_address", "10.0.0.255", "0a0000ff"),
        ("netmask", "255.255.254.0", "fffffe00"),
        # bool
        ("ip_forward_enable", "1", "01"),
        ("router_discovery", "0", "00"),
        ("ethernet_encap", "1", "01"),
        # integers, decimal or hex, in the width OVN encodes
        ("default_ttl", "121", "79"),
        ("tcp_ttl", "64", "40"),
        ("netbios_node_type", "2", "02"),
        ("mtu", "1442", "05a2"),
        ("mtu", "0x5a2", "05a2"),
        ("mtu", "68", "0044"),
        ("arp_cache_timeout", "10", "0000000a"),
        ("tcp_keepalive_interval", "7200", "00001c20"),
        ("T1", "1800", "00000708"),
        ("T2", "3000", "00000bb8"),
        # strings, quoted; JSON escapes
        ("domain_name", '"ovn.org"', "6f766e2e6f7267"),
        ("hostname", '"ip-10-0-0-4"', "69702d31302d302d302d34"),
        ("wpad", '"https://example.org"', b"https://example.org".hex()),
        ("path_prefix", '"/tftpboot"', b"/tftpboot".hex()),
        ("domain_name", r'"a\"b"', b'a"b'.hex()),
        ("domain_name", '"caf\\u00e9"', "café".encode().hex()),
        # host_id: an address or a quoted name
        ("tftp_server", "10.0.0.10", "0a00000a"),
        ("tftp_server", '"tftp_server_test"', b"tftp_server_test".hex()),
        # domains: RFC 1035 names with suffix compression, byte for byte as in OVN's tests
        (
            "domain_search_list",
            '"ovn.org,abc.ovn.org"',
            "036f766e036f72670003616263c000",
        ),
        (
            "domain_search_list",
            '"test1.com,test2.com"',
            "05746573743103636f6d00057465737432c006",
        ),
        (
            "domain_search_list",
            '"ovn.org,abc.ovn.org,def.ovn.org,ovn.test,def.ovn.test,test.org,abc.com"',
            "036f766e036f72670003616263c00003646566c000036f766e0474657374"
            "0003646566c0150474657374c0040361626303636f6d00",
        ),
        # static routes (RFC 3442): prefix length, significant octets, router
        (
            "classless_static_route",
            "{30.0.0.0/24,10.0.0.4,40.0.0.0/16,10.0.0.6,0.0.0.0/0,10.0.0.1}",
            "181e00000a0000041028000a000006000a000001",
        ),
        ("classless_static_route", "{10.229.0.128/25, 10.0.0.1}", "190ae500800a000001"),
        ("classless_static_route", "{10.0.0.7, 10.0.0.1}", "200a0000070a000001"),
        ("ms_classless_static_route", "{0.0.0.0/0, 10.0.0.1}", "000a000001"),
    ],
)
def test_each_option_type_is_encoded_as_ovn_encodes_it(name: str, value: str, wire: str) -> None:
    assert encoded(name, value) == bytes.fromhex(wire.replace(" ", ""))
    assert DHCPV4_OPTIONS[name].code > 0


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("router", "10.0.0.256", "is not an IPv4 address"),
        ("router", "{10.0.0.1, 10.0.0.2", "must close with '}'"),
        ("router", '"10.0.0.1"', "written without quotes"),
        ("router", "10.0.0.1/24", "is not an IPv4 address"),
        ("router", "", "no value"),
        ("dns_server", "8.8.8.8, 7.7.7.7", "must be a set in braces"),
        ("dns_server", "8.8.8.8 7.7.7.7", "must be a set in braces"),
        ("router", "{}", "no value"),
        ("dns_server", "{8.8.8.8, {7.7.7.7}}", "unexpected '{'"),
        ("dns_server", "{8.8.8.8, fe80::1}", "'fe80::1' is not an IPv4 address"),
        ("netmask", "{255.0.0.0, 255.255.0.0}", "takes one value, not 2"),
        ("ip_forward_enable", "2", "outside 0..1"),
        ("ip_forward_enable", "yes", "is not an integer"),
        ("default_ttl", "256", "outside 0..255"),
        ("default_ttl", "-1", "is not an integer"),
        ("mtu", "67", "outside 68..65535"),
        ("mtu", "65536", "outside 68..65535"),
        ("mtu", "1_500", "is not an integer"),
        ("mtu", '"1500"', "written without quotes"),
        ("arp_cache_timeout", "4294967296", "outside 0..4294967295"),
        ("domain_name", "example.org", "must be quoted"),
        ("domain_name", '""', "empty string"),
        ("domain_name", '"unterminated', "unexpected '\"'"),
        ("domain_name", r'"bad \q escape"', "bad escape"),
        ("hostname", '{"a", "b"}', "takes one value, not 2"),
        ("bootfile_name", "pxelinux.0", "must be quoted"),
        ("wpad", '"' + "x" * 256 + '"', "256 bytes encoded, an option holds at most 255"),
        ("tftp_server", "tftp.example.org", "is not an IPv4 address"),
        ("domain_search_list", "ovn.org", "must be quoted"),
        ("domain_search_list", '"ovn..org"', "is not a domain name"),
        ("domain_search_list", '"' + "x" * 64 + '.org"', "labels of 1..63"),
        ("domain_search_list", '"a b.org"', "is not a domain name"),
        ("domain_search_list", '" , "', "no domain names"),
        ("classless_static_route", "{30.0.0.0/24}", "1 values: routes are prefix, gateway"),
        ("classless_static_route", "{30.0.0.0/33, 10.0.0.1}", "is not an IPv4 prefix"),
        ("classless_static_route", "{30.0.0.0/24, 10.0.0.0/8}", "is not an IPv4 address"),
        ("next_server", "{10.0.0.9, 10.0.0.8}", "takes one value"),
        ("offerip", "10.0.0.4", "unknown DHCPv4 option"),
        ("dns-server", "8.8.8.8", "unknown DHCPv4 option"),
    ],
)
def test_a_malformed_optional_option_is_one_problem_naming_it_and_is_left_out(
    name: str, value: str, why: str
) -> None:
    parsed, problems = parse_dhcpv4_options(CIDR, {**BASE, "router": "10.0.0.1", name: value})
    assert parsed is not None  # the rest of the row still serves the port
    assert len(problems) == 1
    assert name in problems[0] and why in problems[0], problems
    if name != "router":
        assert parsed.option("router") == ip("10.0.0.1").packed
    assert parsed.option(name) is None or name == "netmask"


@pytest.mark.parametrize("missing", ["server_id", "server_mac", "lease_time"])
def test_a_row_without_a_mandatory_option_gives_no_config(missing: str) -> None:
    options = {k: v for k, v in BASE.items() if k != missing}
    parsed, problems = parse_dhcpv4_options(CIDR, options)
    assert parsed is None
    assert problems == (f"DHCPv4 needs {missing} (missing or malformed); no DHCPv4 replies",)


@pytest.mark.parametrize(
    ("name", "value"),
    [("server_id", "10.0.0"), ("server_mac", "fa:16:3e:00:00"), ("lease_time", "-1")],
)
def test_a_malformed_mandatory_option_gives_no_config_and_says_both_why_and_what(
    name: str, value: str
) -> None:
    parsed, problems = parse_dhcpv4_options(CIDR, {**BASE, name: value})
    assert parsed is None
    assert len(problems) == 2
    assert problems[0].startswith(f"DHCPv4 option {name}={value!r} ignored")
    assert f"needs {name}" in problems[1]


@pytest.mark.parametrize("cidr", ["10.0.0.0/33", "fd00::/64", "", "ten"])
def test_a_cidr_that_is_not_an_ipv4_prefix_gives_no_config(cidr: str) -> None:
    parsed, problems = parse_dhcpv4_options(cidr, BASE)
    assert parsed is None
    assert problems == (f"DHCPv4 cidr {cidr!r} is not an IPv4 prefix",)


def test_a_cidr_with_host_bits_is_its_network_as_in_northd() -> None:
    parsed, _ = parse_dhcpv4_options("10.0.0.5/24", BASE)
    assert parsed is not None and parsed.cidr == ipaddress.IPv4Network(CIDR)


def test_a_configured_netmask_replaces_the_cidrs_rather_than_being_sent_twice() -> None:
    parsed = config(netmask="255.255.0.0")
    assert [o.data for o in parsed.options if o.code == 1] == [bytes.fromhex("ffff0000")]


def test_bootfiles_and_next_server_are_kept_apart_from_the_options() -> None:
    parsed = config(
        bootfile_name='"boot.ipxe"', bootfile_name_alt='"undionly.kpxe"', next_server="10.0.0.9"
    )
    assert parsed.bootfile_name == b"boot.ipxe"
    assert parsed.bootfile_name_alt == b"undionly.kpxe"
    assert parsed.next_server == ip("10.0.0.9")
    assert {o.name for o in parsed.options} == {"lease_time", "netmask", "server_id"}


@pytest.mark.parametrize(
    ("timers", "problems"),
    [
        ({"T1": "1800", "T2": "3150"}, ()),
        ({"T1": "3600"}, ("T1=3600 is not below lease_time=3600",)),
        ({"T2": "4000"}, ("T2=4000 is not below lease_time=3600",)),
        ({"T1": "3000", "T2": "2000"}, ("T1=3000 is not below T2=2000",)),
        (
            {"T1": "4000", "T2": "5000"},
            ("T1=4000 is not below lease_time=3600", "T2=5000 is not below lease_time=3600"),
        ),
        ({"T1": "4000", "T2": "5000", "lease_time": str(INFINITE_LEASE)}, ()),
    ],
)
def test_timers_out_of_order_are_reported_but_sent_as_ovn_sends_them(
    timers: dict[str, str], problems: tuple[str, ...]
) -> None:
    parsed, found = parse_dhcpv4_options(CIDR, {**BASE, **timers})
    assert parsed is not None
    assert found == tuple(f"DHCPv4 option {p} (sent anyway, as OVN does)" for p in problems)
    assert all(parsed.option(n) is not None for n in ("T1", "T2") if n in timers)


def test_t1_and_t2_default_to_half_and_seven_eighths_of_the_lease() -> None:
    assert (config().t1, config().t2) == (1800, 3150)
    assert (config(T1="100", T2="200").t1, config(T1="100", T2="200").t2) == (100, 200)
    infinite = parse_dhcpv4_options(CIDR, {**BASE, "lease_time": str(INFINITE_LEASE)})[0]
    assert infinite is not None and (infinite.t1, infinite.t2) == (INFINITE_LEASE,) * 2


def test_parsing_is_memoised_and_order_of_keys_does_not_matter() -> None:
    first = parse_dhcpv4_options(CIDR, dict(BASE))
    second = parse_dhcpv4_options(CIDR, dict(reversed(list(BASE.items()))))
    assert first is second


@given(st.dictionaries(st.sampled_from(sorted(DHCPV4_OPTIONS)), st.text(max_size=40)))
def test_no_option_value_ever_raises(options: dict[str, str]) -> None:
    parsed, problems = parse_dhcpv4_options(CIDR, {**BASE, **options})
    assert all(isinstance(p, str) for p in problems)
    if parsed is not None:
        assert all(len(o.data) <= 255 for o in parsed.options)


def test_encode_domains_without_compression_for_dhcpv6() -> None:
    assert encode_domains(["a.org", "b.org"], compress=False) == (
        b"\x01a\x03org\x00\x01b\x03org\x00"
    )
    with pytest.raises(InvalidInput):
        encode_domains(["a..org"])


# ---- ports ----

PORT = parse_address_entry("fa:16:3e:00:00:04 10.0.0.4 fd00::4")


def test_a_port_is_offered_its_first_address_inside_the_cidr() -> None:
    entry = parse_address_entry("fa:16:3e:00:00:04 20.0.0.4 10.0.0.4 10.0.0.5")
    offers, problems = port_dhcp("vm4", [entry], config())
    assert problems == ()
    assert [(o.mac, o.ip) for o in offers] == [(entry.mac, ip("10.0.0.4"))]


def test_each_address_entry_of_a_port_gets_its_own_offer() -> None:
    other = parse_address_entry("fa:16:3e:00:00:05 10.0.0.5")
    offers, _ = port_dhcp("vm4", [PORT, other], config())
    assert [(str(o.mac), str(o.ip)) for o in offers] == [
        ("fa:16:3e:00:00:04", "10.0.0.4"),
        ("fa:16:3e:00:00:05", "10.0.0.5"),
    ]


@pytest.mark.parametrize(
    "addresses",
    [
        [parse_address_entry("fa:16:3e:00:00:04 20.0.0.4")],
        [parse_address_entry("fa:16:3e:00:00:04 fd00::4")],
        [parse_address_entry("fa:16:3e:00:00:04")],
        [],
    ],
)
def test_a_port_without_an_address_in_the_cidr_gets_no_offer_and_a_problem(
    addresses: list[PortAddresses],
) -> None:
    offers, problems = port_dhcp("vm4", addresses, config())
    assert offers == ()
    assert problems == (
        "port vm4: no IPv4 address in 10.0.0.0/24, the cidr of its dhcpv4_options; "
        "no DHCPv4 replies",
    )


def test_the_ports_hostname_takes_precedence_over_the_rows() -> None:
    offers, problems = port_dhcp("vm4", [PORT], config(hostname='"row"'), {"hostname": '"vm4"'})
    assert problems == ()
    assert offers[0].config.option("hostname") == b"vm4"
    assert [o.name for o in offers[0].config.options] == sorted(
        o.name for o in offers[0].config.options
    )


def test_a_malformed_port_hostname_is_a_problem_and_the_rows_is_kept() -> None:
    offers, problems = port_dhcp("vm4", [PORT], config(hostname='"row"'), {"hostname": "vm4"})
    assert offers[0].config.option("hostname") == b"row"
    assert problems == (
        "port vm4: options:hostname='vm4' ignored: a string must be quoted, as in \"vm4\"",
    )


# ---- DHCPv6 ----

V6 = "fd00::/64"


def test_a_dhcpv6_row_names_the_servers_mac_dns_and_search_list() -> None:
    parsed, problems = parse_dhcpv6_options(
        V6,
        {
            "server_id": "fa:16:3e:00:00:01",
            "dns_server": "{fd00::53, fd00::54}",
            "domain_search": '"ovn.org, example.org"',
            "dhcpv6_stateless": "true",
        },
    )
    assert problems == ()
    assert parsed is not None
    assert parsed.server_mac == Mac.parse("fa:16:3e:00:00:01")
    assert parsed.server_ip == ipaddress.IPv6Address("fe80::f816:3eff:fe00:1")
    assert parsed.server_duid == bytes.fromhex("00030001fa163e000001")
    assert parsed.dns_servers == (
        ipaddress.IPv6Address("fd00::53"),
        ipaddress.IPv6Address("fd00::54"),
    )
    assert parsed.domain_search == ("ovn.org", "example.org")
    assert parsed.stateless


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"dns_server": "8.8.8.8"}, "'8.8.8.8' is not an IPv6 address"),
        ({"domain_search": "ovn.org"}, "must be quoted"),
        ({"domain_search": '"ovn..org"'}, "is not a domain name"),
        ({"dhcpv6_stateless": "yes"}, "'yes' is neither true nor false"),
        ({"fqdn": '"vm.ovn.org"'}, "liveport does not send it"),
        ({"bootfile_name": '"boot"'}, "liveport does not send it"),
        ({"lease_time": "3600"}, "unknown DHCPv6 option"),
    ],
)
def test_a_malformed_or_unsupported_dhcpv6_option_is_a_problem(
    options: dict[str, str], problem: str
) -> None:
    parsed, problems = parse_dhcpv6_options(V6, {"server_id": "fa:16:3e:00:00:01", **options})
    assert parsed is not None
    assert len(problems) == 1 and problem in problems[0], problems


@pytest.mark.parametrize(
    ("cidr", "options"),
    [
        (V6, {}),
        (V6, {"server_id": "fd00::1"}),
        ("10.0.0.0/24", {"server_id": "fa:16:3e:00:00:01"}),
    ],
)
def test_a_dhcpv6_row_needs_an_ipv6_cidr_and_a_server_mac(
    cidr: str, options: dict[str, str]
) -> None:
    parsed, problems = parse_dhcpv6_options(cidr, options)
    assert parsed is None and problems


def test_a_port_needs_an_ipv6_address_in_the_cidr_even_for_stateless_dhcpv6() -> None:
    parsed, _ = parse_dhcpv6_options(V6, {"server_id": "fa:16:3e:00:00:01"})
    assert parsed is not None
    offers, problems = port_dhcpv6("vm4", [PORT], parsed)
    assert [(o.mac, str(o.ip)) for o in offers] == [(PORT.mac, "fd00::4")]
    assert problems == ()
    v4only = parse_address_entry("fa:16:3e:00:00:04 10.0.0.4")
    assert port_dhcpv6("vm4", [v4only], parsed)[1]
