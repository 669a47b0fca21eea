"""Stateless DHCPv6: Information-requests decoded defensively, Replies checked with os-ken's
decoder (addressing, UDP checksum, message type, transaction id, every option)."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from os_ken.lib.packet import dhcp6 as okdhcp6
from os_ken.lib.packet import ethernet, ipv6, packet, packet_utils, udp

from liveport.model import dhcpv6, packets
from liveport.model.addr import Mac
from liveport.model.dhcp_config import Dhcpv6Config, duid_ll, parse_dhcpv6_options
from liveport.model.dhcpv6 import MessageType

CLIENT = Mac.parse("fa:16:3e:00:00:04")
SERVER_MAC = Mac.parse("fa:16:3e:00:00:01")
XID = 0xABCDEF


def make_config(**extra: str) -> Dhcpv6Config:
    config, problems = parse_dhcpv6_options(
        "fd00::/64", {"server_id": str(SERVER_MAC), "dhcpv6_stateless": "true", **extra}
    )
    assert config is not None and problems == ()
    return config


CONFIG = make_config(dns_server="{fd00::53, fd00::54}", domain_search='"ovn.org, example.org"')
INFO = dhcpv6.information_request(CLIENT, XID)


def answer(frame: bytes, config: Dhcpv6Config = CONFIG) -> bytes | None:
    request = dhcpv6.parse_dhcpv6_request(frame)
    assert request is not None
    return dhcpv6.dhcpv6_reply(request, CLIENT, config)


def decode(frame: bytes) -> tuple[ethernet.ethernet, ipv6.ipv6, udp.udp, okdhcp6.dhcp6]:
    eth, ip6, dgram, message = packet.Packet(frame).protocols[:4]
    assert isinstance(eth, ethernet.ethernet) and isinstance(ip6, ipv6.ipv6)
    assert isinstance(dgram, udp.udp) and isinstance(message, okdhcp6.dhcp6)
    segment = frame[54 : 54 + ip6.payload_length]
    assert dgram.csum != 0
    assert packet_utils.checksum_ip(ip6, len(segment), segment) == 0, "UDP checksum"
    return eth, ip6, dgram, message


def options(message: okdhcp6.dhcp6) -> list[tuple[int, bytes]]:
    return [(o.code, o.data) for o in message.options.option_list]


def test_an_information_request_is_multicast_from_the_link_local_address() -> None:
    eth, ip6, dgram, message = decode(INFO)
    assert (eth.src, eth.dst) == (str(CLIENT), "33:33:00:01:00:02")
    assert (ip6.src, ip6.dst) == ("fe80::f816:3eff:fe00:4", "ff02::1:2")
    assert (dgram.src_port, dgram.dst_port) == (546, 547)
    assert (message.msg_type, message.transaction_id) == (11, XID)
    assert options(message) == [
        (1, duid_ll(CLIENT)),
        (6, struct.pack("!HH", 23, 24)),
        (8, b"\x00\x00"),
    ]
    request = dhcpv6.parse_dhcpv6_request(INFO)
    assert request == dhcpv6.Dhcpv6Request(
        src_mac=CLIENT,
        src_ip=CLIENT.ipv6_link_local(),
        dst_ip=dhcpv6.ALL_DHCP_AGENTS,
        message_type=MessageType.INFORMATION_REQUEST,
        xid=XID,
        client_id=duid_ll(CLIENT),
        requested_options=(23, 24),
    )


def test_the_reply_carries_dns_search_list_and_server_duid_back_to_the_client() -> None:
    frame = answer(INFO)
    assert frame is not None
    eth, ip6, dgram, message = decode(frame)
    assert (eth.src, eth.dst) == (str(SERVER_MAC), str(CLIENT))
    assert (ip6.src, ip6.dst) == ("fe80::f816:3eff:fe00:1", "fe80::f816:3eff:fe00:4")
    assert (dgram.src_port, dgram.dst_port) == (547, 546)
    assert (message.msg_type, message.transaction_id) == (7, XID)
    assert options(message) == [
        (1, duid_ll(CLIENT)),
        (23, ipaddress.IPv6Address("fd00::53").packed + ipaddress.IPv6Address("fd00::54").packed),
        (24, b"\x03ovn\x03org\x00\x07example\x03org\x00"),
        (2, bytes.fromhex("00030001") + SERVER_MAC.packed),
    ]


def test_a_row_with_only_the_server_id_replies_with_only_the_identifiers() -> None:
    frame = answer(INFO, make_config())
    assert frame is not None
    assert [code for code, _ in options(decode(frame)[3])] == [1, 2]


def test_a_request_without_a_client_id_is_still_answered_without_one() -> None:
    request = dhcpv6.parse_dhcpv6_request(INFO)
    assert request is not None
    frame = dhcpv6.dhcpv6_reply(replace(request, client_id=None), CLIENT, CONFIG)
    assert frame is not None
    assert [code for code, _ in options(decode(frame)[3])] == [23, 24, 2]


def test_a_request_naming_this_server_is_answered() -> None:
    frame = dhcpv6.information_request(
        CLIENT, XID, extra_options=((dhcpv6.OPT_SERVER_ID, CONFIG.server_duid),)
    )
    assert answer(frame) is not None


@pytest.mark.parametrize(
    ("case", "frame"),
    [
        ("from another MAC", dhcpv6.information_request(Mac.parse("fa:16:3e:00:00:09"), XID)),
        (
            "naming another server",
            dhcpv6.information_request(
                CLIENT, XID, extra_options=((2, duid_ll(Mac.parse("fa:16:3e:00:00:02"))),)
            ),
        ),
        (
            "asking for an address",
            dhcpv6.information_request(CLIENT, XID, extra_options=((3, bytes(12)),)),
        ),
        (
            "from the unspecified address",
            dhcpv6.information_request(CLIENT, XID, src_ip=ipaddress.IPv6Address("::")),
        ),
    ],
)
def test_information_requests_the_server_must_not_answer(case: str, frame: bytes) -> None:
    assert answer(frame) is None, case


@pytest.mark.parametrize("kind", [MessageType.SOLICIT, MessageType.REQUEST, MessageType.RENEW])
def test_stateful_messages_are_left_unanswered(kind: MessageType) -> None:
    frame = patched(INFO, BODY_AT, bytes([kind]))
    request = dhcpv6.parse_dhcpv6_request(frame)
    assert request is not None and request.message_type is kind
    assert dhcpv6.dhcpv6_reply(request, CLIENT, CONFIG) is None


def test_a_request_not_sent_to_all_dhcp_agents_is_not_answered() -> None:
    request = dhcpv6.parse_dhcpv6_request(INFO)
    assert request is not None
    unicast = replace(request, dst_ip=CONFIG.server_ip)
    assert dhcpv6.dhcpv6_reply(unicast, CLIENT, CONFIG) is None


# ---- hostile and malformed frames ----

IP_AT, UDP_AT, BODY_AT = 14, 54, 62


def patched(frame: bytes, offset: int, data: bytes) -> bytes:
    return frame[:offset] + data + frame[offset + len(data) :]


def raw(body: bytes, ports: tuple[int, int] = (546, 547)) -> bytes:
    return packets.udp6_frame(
        dhcpv6.ALL_DHCP_AGENTS_MAC,
        CLIENT,
        CLIENT.ipv6_link_local(),
        dhcpv6.ALL_DHCP_AGENTS,
        ports[0],
        ports[1],
        body,
    )


@pytest.mark.parametrize(
    ("case", "frame"),
    [
        ("empty", b""),
        ("cut inside the IPv6 header", INFO[:40]),
        ("IPv6 header only", INFO[:54]),
        ("cut inside the options", INFO[:-3]),
        ("IPv4 ethertype", patched(INFO, 12, b"\x08\x00")),
        ("IP version 4", patched(INFO, IP_AT, b"\x40")),
        ("a hop-by-hop header", patched(INFO, IP_AT + 6, b"\x00")),
        ("payload length past the frame", patched(INFO, IP_AT + 4, b"\xff\xff")),
        ("payload length below UDP", patched(INFO, IP_AT + 4, b"\x00\x04")),
        ("UDP length past the datagram", patched(INFO, UDP_AT + 4, b"\xff\xff")),
        ("UDP length without a DHCPv6 header", patched(INFO, UDP_AT + 4, b"\x00\x0a")),
        ("from the server port", raw(b"\x0b\x00\x00\x01", ports=(547, 546))),
        ("a Reply", raw(b"\x07\x00\x00\x01")),
        ("an Advertise", raw(b"\x02\x00\x00\x01")),
        ("message type 0", raw(b"\x00\x00\x00\x01")),
        ("a Relay-forward", raw(b"\x0c" + bytes(33))),
        ("an option header cut short", raw(b"\x0b\x00\x00\x01\x00\x01\x00")),
        ("an option longer than the message", raw(b"\x0b\x00\x00\x01\x00\x01\x00\x10abc")),
    ],
)
def test_a_frame_that_is_not_a_dhcpv6_request_is_none(case: str, frame: bytes) -> None:
    assert dhcpv6.parse_dhcpv6_request(frame) is None, case


def test_an_odd_length_option_request_list_is_read_up_to_its_last_whole_code() -> None:
    request = dhcpv6.parse_dhcpv6_request(raw(b"\x0b\x00\x00\x01\x00\x06\x00\x03\x00\x17\x00"))
    assert request is not None and request.requested_options == (23,)


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(frame: bytes) -> None:
    request = dhcpv6.parse_dhcpv6_request(frame)
    assert request is None or isinstance(request, dhcpv6.Dhcpv6Request)


@settings(max_examples=300)
@given(body=st.binary(max_size=200))
def test_any_message_body_decodes_or_not_and_any_answer_is_a_valid_frame(body: bytes) -> None:
    request = dhcpv6.parse_dhcpv6_request(raw(b"\x0b\x00\x00\x01" + body))
    if request is None:
        return
    frame = dhcpv6.dhcpv6_reply(request, CLIENT, CONFIG)
    if frame is not None:
        assert decode(frame)[3].msg_type == 7
