"""Native DHCPv4 on the wire: requests decoded defensively from VM frames, and the server's
replies checked by an independent decoder (os-ken's packet library) field by field: message
type, addresses, every option, IP and UDP checksums, Ethernet/IP addressing."""

from __future__ import annotations

import ipaddress
import struct
import time
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from os_ken.lib.packet import dhcp as okdhcp
from os_ken.lib.packet import ethernet, ipv4, packet, packet_utils, udp

from liveport.model import dhcp, packets
from liveport.model.addr import BROADCAST, Mac, parse_address_entry
from liveport.model.dhcp import MessageType
from liveport.model.dhcp_config import DhcpConfig, parse_dhcpv4_options, port_dhcp

CLIENT = Mac.parse("f0:00:00:00:00:02")
OTHER = Mac.parse("f0:00:00:00:00:09")
PORT_IP = ipaddress.IPv4Address("10.0.0.6")
SERVER_IP = ipaddress.IPv4Address("10.0.0.1")
SERVER_MAC = Mac.parse("ff:10:00:00:00:01")  # the server MAC of OVN's own dhcpv4 test
ANY = ipaddress.IPv4Address("0.0.0.0")
BCAST = ipaddress.IPv4Address("255.255.255.255")
XID = 0x6359AA76
ROW = {
    "server_id": "10.0.0.1",
    "server_mac": "ff:10:00:00:00:01",
    "lease_time": "3600",
    "router": "10.0.0.1",
}
# What ovn-controller puts after option 53 for ROW (tests/ovn.at, "dhcpv4 : 1 HV, 2 LS").
OVN_OPTIONS = "330400000e100104ffffff0003040a00000136040a000001"


def make_config(**extra: str) -> DhcpConfig:
    config, problems = parse_dhcpv4_options("10.0.0.0/24", {**ROW, **extra})
    assert config is not None and problems == ()
    return config


CONFIG = make_config()


def ip4(text: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(text)


def answer(frame: bytes, config: DhcpConfig = CONFIG) -> bytes | None:
    request = dhcp.parse_request(frame)
    assert request is not None
    return dhcp.reply(request, CLIENT, PORT_IP, config)


class Decoded:
    """A reply as os-ken reads it, with its checksums verified."""

    def __init__(self, frame: bytes) -> None:
        protocols = packet.Packet(frame).protocols
        eth, ip, dgram, message = protocols[:4]
        assert isinstance(eth, ethernet.ethernet)
        assert isinstance(ip, ipv4.ipv4)
        assert isinstance(dgram, udp.udp)
        assert isinstance(message, okdhcp.dhcp), protocols
        self.eth, self.ip, self.udp, self.dhcp = eth, ip, dgram, message
        header = frame[14 : 14 + ip.header_length * 4]
        assert packet_utils.checksum(header) == 0, "IPv4 header checksum"
        segment = frame[14 + len(header) : 14 + ip.total_length]
        assert dgram.csum != 0
        assert packet_utils.checksum_ip(ip, len(segment), segment) == 0, "UDP checksum"
        assert dgram.total_length == len(segment)

    @property
    def options(self) -> list[tuple[int, bytes]]:
        return [(o.tag, o.value) for o in self.dhcp.options.option_list]

    @property
    def message_type(self) -> int:
        assert self.options[0][0] == 53
        return self.options[0][1][0]

    def option_bytes(self) -> str:
        """The options after the message type, as the hex of OVN's expected replies."""
        return "".join(f"{tag:02x}{len(value):02x}{value.hex()}" for tag, value in self.options[1:])

    def addressing(self) -> tuple[str, str, str, str, int, int]:
        return (
            self.eth.src,
            self.eth.dst,
            self.ip.src,
            self.ip.dst,
            self.udp.src_port,
            self.udp.dst_port,
        )


def decoded(frame: bytes | None) -> Decoded:
    assert frame is not None
    return Decoded(frame)


# ---- the client frames ----


def test_a_discover_is_a_broadcast_bootrequest_from_the_unconfigured_client() -> None:
    frame = dhcp.dhcp_discover(CLIENT, XID, hostname="vm2")
    protocols = packet.Packet(frame).protocols
    eth, ip, dgram, message = protocols[:4]
    assert (eth.src, eth.dst, ip.src, ip.dst) == (
        str(CLIENT),
        "ff:ff:ff:ff:ff:ff",
        "0.0.0.0",
        "255.255.255.255",
    )
    assert (dgram.src_port, dgram.dst_port) == (68, 67)
    assert (message.op, message.xid, message.chaddr, message.hlen) == (1, XID, str(CLIENT), 6)
    options = {o.tag: o.value for o in message.options.option_list}
    assert options[53] == b"\x01" and options[12] == b"vm2"
    assert len(frame) - 42 >= 300  # the BOOTP minimum


def test_a_client_request_decodes_to_what_it_was_built_with() -> None:
    frame = dhcp.dhcp_request(CLIENT, XID, PORT_IP, SERVER_IP, hostname="vm2", broadcast=True)
    request = dhcp.parse_request(frame)
    assert request == dhcp.DhcpRequest(
        src_mac=CLIENT,
        src_ip=ANY,
        dst_ip=BCAST,
        message_type=MessageType.REQUEST,
        xid=XID,
        flags=0x8000,
        ciaddr=ANY,
        giaddr=ANY,
        chaddr=CLIENT,
        requested_ip=PORT_IP,
        server_id=SERVER_IP,
        parameter_requests=dhcp.DEFAULT_PARAMETER_REQUESTS,
        hostname="vm2",
    )
    assert request.broadcast


def test_a_renewal_is_unicast_from_the_leased_address_with_ciaddr() -> None:
    frame = dhcp.dhcp_request(CLIENT, XID, ciaddr=PORT_IP, dst_ip=SERVER_IP, dst_mac=SERVER_MAC)
    request = dhcp.parse_request(frame)
    assert request is not None
    assert (request.src_ip, request.dst_ip, request.ciaddr) == (PORT_IP, SERVER_IP, PORT_IP)
    assert (request.requested_ip, request.server_id) == (None, None)
    assert packets.decode(frame).dst == SERVER_MAC


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        (dhcp.dhcp_release(CLIENT, XID, PORT_IP, SERVER_IP), MessageType.RELEASE),
        (dhcp.dhcp_decline(CLIENT, XID, PORT_IP, SERVER_IP), MessageType.DECLINE),
        (dhcp.dhcp_inform(CLIENT, XID, PORT_IP), MessageType.INFORM),
    ],
)
def test_the_other_client_messages_decode_with_their_type(frame: bytes, kind: MessageType) -> None:
    request = dhcp.parse_request(frame)
    assert request is not None and request.message_type is kind


def test_client_id_etherboot_and_extra_options_are_decoded() -> None:
    frame = dhcp.client_frame(
        MessageType.DISCOVER,
        CLIENT,
        XID,
        client_id=b"\x01" + CLIENT.packed,
        etherboot=True,
        extra_options={60: b"PXEClient"},
    )
    request = dhcp.parse_request(frame)
    message = dhcp.parse_message(frame)
    assert request is not None and message is not None
    assert request.client_id == b"\x01" + CLIENT.packed
    assert request.etherboot
    assert message.options[60] == b"PXEClient"


# ---- replies, as ovn-controller answers ----


def test_discover_is_offered_the_ports_address_with_ovns_options() -> None:
    reply = decoded(answer(dhcp.dhcp_discover(CLIENT, XID)))
    assert reply.message_type == MessageType.OFFER
    assert reply.option_bytes() == OVN_OPTIONS
    assert reply.addressing() == (str(SERVER_MAC), str(CLIENT), "10.0.0.1", "10.0.0.6", 67, 68)
    message = reply.dhcp
    assert (message.op, message.htype, message.hlen, message.xid) == (2, 1, 6, XID)
    assert (message.ciaddr, message.yiaddr, message.siaddr, message.giaddr) == (
        "0.0.0.0",
        "10.0.0.6",
        "0.0.0.0",
        "0.0.0.0",
    )
    assert message.chaddr == str(CLIENT)
    assert message.flags == 0


def test_a_broadcast_flag_makes_the_ip_reply_broadcast_but_not_the_ethernet_one() -> None:
    reply = decoded(answer(dhcp.dhcp_discover(CLIENT, XID, broadcast=True)))
    assert reply.addressing()[1:4] == (str(CLIENT), "10.0.0.1", "255.255.255.255")
    assert reply.dhcp.flags == 0x8000
    assert reply.dhcp.yiaddr == "10.0.0.6"


@pytest.mark.parametrize(
    ("state", "frame"),
    [
        ("selecting", dhcp.dhcp_request(CLIENT, XID, PORT_IP, SERVER_IP)),
        ("init-reboot", dhcp.dhcp_request(CLIENT, XID, PORT_IP)),
        (
            "renewing",
            dhcp.dhcp_request(CLIENT, XID, ciaddr=PORT_IP, dst_ip=SERVER_IP, dst_mac=SERVER_MAC),
        ),
        ("rebinding", dhcp.dhcp_request(CLIENT, XID, ciaddr=PORT_IP)),
    ],
)
def test_a_request_for_the_ports_address_is_acked_in_every_state(state: str, frame: bytes) -> None:
    reply = decoded(answer(frame))
    assert reply.message_type == MessageType.ACK, state
    assert reply.option_bytes() == OVN_OPTIONS
    assert reply.dhcp.yiaddr == "10.0.0.6"
    request = dhcp.parse_request(frame)
    assert request is not None
    assert reply.dhcp.ciaddr == str(request.ciaddr)  # echoed in an ACK (RFC 2131 table 3)
    assert reply.addressing() == (str(SERVER_MAC), str(CLIENT), "10.0.0.1", "10.0.0.6", 67, 68)


@pytest.mark.parametrize(
    ("case", "frame"),
    [
        ("another requested address", dhcp.dhcp_request(CLIENT, XID, ip4("10.0.0.7"), SERVER_IP)),
        ("init-reboot elsewhere", dhcp.dhcp_request(CLIENT, XID, ip4("10.0.1.6"))),
        (
            "renewing another ciaddr",
            dhcp.client_frame(
                MessageType.REQUEST, CLIENT, XID, ciaddr=ip4("10.0.0.7"), src_ip=PORT_IP
            ),
        ),
        ("no address at all", dhcp.client_frame(MessageType.REQUEST, CLIENT, XID, src_ip=PORT_IP)),
        ("a requested 0.0.0.0", dhcp.dhcp_request(CLIENT, XID, ANY)),
    ],
)
def test_a_request_for_any_other_address_is_nakked(case: str, frame: bytes) -> None:
    reply = decoded(answer(frame))
    assert reply.message_type == MessageType.NAK, case
    assert reply.options == [(53, b"\x06"), (54, SERVER_IP.packed)]
    assert (reply.dhcp.yiaddr, reply.dhcp.siaddr, reply.dhcp.ciaddr) == ("0.0.0.0",) * 3
    assert reply.addressing() == (
        str(SERVER_MAC),
        str(CLIENT),
        "10.0.0.1",
        "255.255.255.255",
        67,
        68,
    )


def test_a_request_selecting_another_servers_offer_is_not_answered() -> None:
    frame = dhcp.dhcp_request(CLIENT, XID, PORT_IP, ip4("10.0.0.2"))
    assert answer(frame) is None


def test_inform_is_acked_without_address_lease_or_mask() -> None:
    frame = dhcp.dhcp_inform(CLIENT, XID, PORT_IP, dst_ip=SERVER_IP)
    reply = decoded(answer(frame, make_config(T1="1000", T2="2000")))
    assert reply.message_type == MessageType.ACK
    assert reply.option_bytes() == "03040a00000136040a000001"  # as ovn.at's DHCPINFORM
    assert (reply.dhcp.yiaddr, reply.dhcp.ciaddr) == ("0.0.0.0", "10.0.0.6")
    assert reply.addressing()[3] == "10.0.0.6"


@pytest.mark.parametrize(
    "frame",
    [
        dhcp.dhcp_release(CLIENT, XID, PORT_IP, SERVER_IP),
        dhcp.dhcp_decline(CLIENT, XID, PORT_IP, SERVER_IP),
    ],
)
def test_release_and_decline_are_not_answered(frame: bytes) -> None:
    assert answer(frame) is None


@pytest.mark.parametrize(
    ("case", "frame"),
    [
        ("from another MAC", dhcp.dhcp_discover(OTHER, XID)),
        (
            "from another source address",
            dhcp.client_frame(
                MessageType.REQUEST, CLIENT, XID, ciaddr=PORT_IP, src_ip=ip4("10.0.0.7")
            ),
        ),
        (
            "to another destination",
            dhcp.dhcp_request(CLIENT, XID, ciaddr=PORT_IP, dst_ip=ip4("10.0.0.4")),
        ),
    ],
)
def test_requests_outside_the_dhcp_flows_match_are_not_answered(case: str, frame: bytes) -> None:
    assert answer(frame) is None, case


def test_the_t1_option_sorts_first_as_in_ovns_reply() -> None:
    config, _ = parse_dhcpv4_options("10.0.0.0/24", {**ROW, "T1": "4000"})  # above the lease
    assert config is not None
    reply = decoded(answer(dhcp.dhcp_request(CLIENT, XID, PORT_IP), config))
    assert reply.option_bytes() == "3a0400000fa0" + OVN_OPTIONS


def test_every_configured_option_arrives_with_its_value() -> None:
    config = make_config(
        dns_server="{8.8.8.8, 7.7.7.7}",
        domain_name='"ovn.org"',
        mtu="1442",
        classless_static_route="{30.0.0.0/24,10.0.0.10, 0.0.0.0/0,10.0.0.1}",
        domain_search_list='"ovn.org,abc.ovn.org"',
        ntp_server="10.0.0.42",
        ip_forward_enable="1",
        wpad='"http://wpad/wpad.dat"',
        tftp_server='"tftp.ovn.org"',
    )
    reply = decoded(answer(dhcp.dhcp_discover(CLIENT, XID), config))
    options = dict(reply.options)
    assert options[6] == ip4("8.8.8.8").packed + ip4("7.7.7.7").packed
    assert options[15] == b"ovn.org"
    assert struct.unpack("!H", options[26]) == (1442,)
    assert options[121] == bytes([24, 30, 0, 0, 10, 0, 0, 10, 0, 10, 0, 0, 1])
    assert options[119] == b"\x03ovn\x03org\x00\x03abc\xc0\x00"
    assert options[42] == ip4("10.0.0.42").packed
    assert options[19] == b"\x01"
    assert options[252] == b"http://wpad/wpad.dat"
    assert options[66] == b"tftp.ovn.org"
    assert options[1] == ip4("255.255.255.0").packed
    assert struct.unpack("!I", options[51]) == (3600,)
    assert options[54] == SERVER_IP.packed
    assert [tag for tag, _ in reply.options] == [53] + [o.code for o in config.options]


def test_the_ports_hostname_is_in_its_replies() -> None:
    entry = parse_address_entry(f"{CLIENT} {PORT_IP}")
    (offer,), _ = port_dhcp("vm2", [entry], CONFIG, {"hostname": '"vm2"'})
    request = dhcp.parse_request(dhcp.dhcp_discover(CLIENT, XID))
    assert request is not None
    reply = decoded(dhcp.reply(request, offer.mac, offer.ip, offer.config))
    assert dict(reply.options)[12] == b"vm2"


@pytest.mark.parametrize(
    ("bootfiles", "etherboot", "sent"),
    [
        ({"bootfile_name": '"bootfile"'}, False, b"bootfile"),
        ({"bootfile_name": '"bootfile"'}, True, b"bootfile"),
        ({"bootfile_name_alt": '"alt"'}, False, b"alt"),
        ({"bootfile_name_alt": '"alt"'}, True, b"alt"),
        ({"bootfile_name": '"bootfile"', "bootfile_name_alt": '"alt"'}, True, b"bootfile"),
        ({"bootfile_name": '"bootfile"', "bootfile_name_alt": '"alt"'}, False, b"alt"),
    ],
)
def test_ipxe_clients_get_bootfile_name_and_others_bootfile_name_alt(
    bootfiles: dict[str, str], etherboot: bool, sent: bytes
) -> None:
    frame = dhcp.dhcp_discover(CLIENT, XID, etherboot=etherboot)
    reply = decoded(answer(frame, make_config(**bootfiles)))
    assert reply.options[1] == (67, sent)  # right after the message type, as pinctrl puts it
    assert [tag for tag, _ in reply.options].count(67) == 1
    assert all(tag < 253 for tag, _ in reply.options)  # OVN's internal codes stay internal


def test_ovns_etherboot_offer_matches_byte_for_byte() -> None:
    config = make_config(bootfile_name_alt='"bootfile_name_alt"', bootfile_name='"bootfile"')
    reply = decoded(answer(dhcp.dhcp_discover(CLIENT, XID, etherboot=True), config))
    assert reply.option_bytes() == "4308626f6f7466696c65" + OVN_OPTIONS


def test_next_server_is_the_replys_siaddr_except_in_a_nak() -> None:
    config = make_config(next_server="10.0.0.9")
    offer = decoded(answer(dhcp.dhcp_discover(CLIENT, XID), config))
    assert offer.dhcp.siaddr == "10.0.0.9"
    nak = decoded(answer(dhcp.dhcp_request(CLIENT, XID, ip4("10.0.0.7")), config))
    assert nak.dhcp.siaddr == "0.0.0.0"


def test_replies_are_at_least_the_bootp_minimum_and_our_decoder_agrees_with_os_ken() -> None:
    frame = answer(dhcp.dhcp_discover(CLIENT, XID))
    assert frame is not None
    reply = Decoded(frame)
    assert reply.udp.total_length - 8 >= 300
    ours = dhcp.parse_message(frame)
    assert ours is not None
    assert ours.op == dhcp.BOOTREPLY and ours.message_type == MessageType.OFFER
    assert ours.yiaddr == PORT_IP and ours.xid == XID
    assert dict(ours.options) == {tag: value for tag, value in reply.options}
    assert dhcp.parse_request(frame) is None  # a reply is never taken for a request


def test_the_reply_echoes_relay_address_flags_and_xid() -> None:
    request = dhcp.parse_request(dhcp.dhcp_discover(CLIENT, 7, broadcast=True))
    assert request is not None
    relayed = replace(request, giaddr=ip4("10.0.0.254"))
    reply = decoded(dhcp.reply(relayed, CLIENT, PORT_IP, CONFIG))
    assert (reply.dhcp.giaddr, reply.dhcp.flags, reply.dhcp.xid) == ("10.0.0.254", 0x8000, 7)


# ---- hostile and malformed frames ----

MAGIC = dhcp.MAGIC_COOKIE


def bootp(
    options: bytes,
    *,
    op: int = 1,
    htype: int = 1,
    hlen: int = 6,
    cookie: bytes = MAGIC,
    ports: tuple[int, int] = (68, 67),
) -> bytes:
    header = struct.pack("!BBBBIHH16x16s192x", op, htype, hlen, 0, XID, 0, 0, CLIENT.packed)
    return packets.udp4_frame(
        BROADCAST, CLIENT, ANY, BCAST, ports[0], ports[1], header + cookie + options
    )


DISCOVER = dhcp.dhcp_discover(CLIENT, XID)
IP_AT, UDP_AT, BOOTP_AT = 14, 34, 42


def patched(frame: bytes, offset: int, data: bytes) -> bytes:
    return frame[:offset] + data + frame[offset + len(data) :]


@pytest.mark.parametrize(
    ("case", "frame"),
    [
        ("empty", b""),
        ("shorter than Ethernet", DISCOVER[:13]),
        ("Ethernet only", DISCOVER[:14]),
        ("half an IP header", DISCOVER[:30]),
        ("IP header only", DISCOVER[:34]),
        ("cut inside the BOOTP header", DISCOVER[:200]),
        ("cut inside the cookie", DISCOVER[: BOOTP_AT + 238]),
        ("ARP ethertype", patched(DISCOVER, 12, b"\x08\x06")),
        ("IPv6 ethertype", patched(DISCOVER, 12, b"\x86\xdd")),
        ("802.1Q tagged", DISCOVER[:12] + b"\x81\x00\x00\x05" + DISCOVER[12:]),
        ("IP version 6", patched(DISCOVER, IP_AT, b"\x65")),
        ("IP header length 16", patched(DISCOVER, IP_AT, b"\x44")),
        ("IP total length past the frame", patched(DISCOVER, IP_AT + 2, b"\xff\xff")),
        ("IP total length below its header", patched(DISCOVER, IP_AT + 2, b"\x00\x14")),
        ("a first fragment", patched(DISCOVER, IP_AT + 6, b"\x20\x00")),
        ("a later fragment", patched(DISCOVER, IP_AT + 6, b"\x00\x10")),
        ("TCP", patched(DISCOVER, IP_AT + 9, b"\x06")),
        ("UDP length below 8", patched(DISCOVER, UDP_AT + 4, b"\x00\x04")),
        ("UDP length past the datagram", patched(DISCOVER, UDP_AT + 4, b"\xff\xff")),
        ("UDP length cutting the BOOTP header", patched(DISCOVER, UDP_AT + 4, b"\x00\x64")),
        ("from the server port", bootp(b"\x35\x01\x01\xff", ports=(67, 68))),
        ("to another port", bootp(b"\x35\x01\x01\xff", ports=(68, 6767))),
        ("a BOOTREPLY", bootp(b"\x35\x01\x01\xff", op=2)),
        ("IEEE 802 hardware", bootp(b"\x35\x01\x01\xff", htype=6)),
        ("16-byte hardware address", bootp(b"\x35\x01\x01\xff", hlen=16)),
        ("no magic cookie", bootp(b"\x35\x01\x01\xff", cookie=b"\x00\x00\x00\x00")),
        ("plain BOOTP, no message type", bootp(b"\xff")),
        ("message type of two bytes", bootp(b"\x35\x02\x01\x01\xff")),
        ("empty message type", bootp(b"\x35\x00\xff")),
        ("an OFFER from a client", bootp(b"\x35\x01\x02\xff")),
        ("an ACK from a client", bootp(b"\x35\x01\x05\xff")),
        ("message type 0", bootp(b"\x35\x01\x00\xff")),
        ("unknown message type 18", bootp(b"\x35\x01\x12\xff")),
        ("option length past the end", bootp(b"\x35\x01\x01\x0c\x20vm")),
        ("option code without length", bootp(b"\x35\x01\x01\x0c")),
    ],
)
def test_a_frame_that_is_not_a_dhcp_request_i_answer_is_none(case: str, frame: bytes) -> None:
    assert dhcp.parse_request(frame) is None, case


def test_ethernet_padding_after_the_ip_datagram_is_ignored() -> None:
    request = dhcp.parse_request(DISCOVER + b"\xde\xad" * 50)
    assert request is not None and request.xid == XID


def test_ip_options_are_skipped() -> None:
    header = bytearray(DISCOVER[IP_AT : IP_AT + 20])
    header[0] = 0x46
    header[2:4] = struct.pack("!H", struct.unpack("!H", header[2:4])[0] + 4)
    frame = DISCOVER[:IP_AT] + bytes(header) + b"\x01\x01\x01\x00" + DISCOVER[IP_AT + 20 :]
    request = dhcp.parse_request(frame)
    assert request is not None and request.message_type is MessageType.DISCOVER


@pytest.mark.parametrize(
    ("options", "check"),
    [
        # PAD between options, no END before the data runs out
        (b"\x00\x00\x35\x01\x01\x00\x0c\x03vm2", lambda r: r.hostname == "vm2"),
        # a repeated option is concatenated (RFC 3396)
        (b"\x35\x01\x01\x0c\x02vm\x0c\x01x\xff", lambda r: r.hostname == "vmx"),
        # options after END are not read
        (b"\x35\x01\x01\xff\x0c\x03vm2", lambda r: r.hostname is None),
        # a requested address or server id of the wrong length counts as absent
        (
            b"\x35\x01\x03\x32\x03\x0a\x00\x00\x36\x05\x0a\x00\x00\x01\x00\xff",
            lambda r: (r.requested_ip, r.server_id) == (None, None),
        ),
        # a host name that is not UTF-8 is still a string
        (b"\x35\x01\x01\x0c\x02\xff\xfe\xff", lambda r: r.hostname == "\ufffd\ufffd"),
        # the parameter request list
        (b"\x35\x01\x01\x37\x03\x01\x03\x06\xff", lambda r: r.parameter_requests == (1, 3, 6)),
    ],
)
def test_options_are_decoded_leniently_where_it_is_safe(options: bytes, check: Any) -> None:
    request = dhcp.parse_request(bootp(options))
    assert request is not None
    assert check(request)


def test_thousands_of_repeated_options_decode_in_linear_time() -> None:
    # The largest options area a UDP datagram can carry, all one-byte host-name pieces.
    options = b"\x35\x01\x01" + b"\x0c\x01a" * 21000 + b"\xff"
    start = time.monotonic()
    request = dhcp.parse_request(bootp(options))
    assert request is not None and request.hostname == "a" * 21000
    assert time.monotonic() - start < 1.0


@settings(max_examples=300)
@given(st.binary(max_size=700))
def test_random_bytes_never_raise(frame: bytes) -> None:
    request = dhcp.parse_request(frame)
    assert request is None or isinstance(request, dhcp.DhcpRequest)


@settings(max_examples=300)
@given(
    positions=st.lists(st.integers(0, len(DISCOVER) - 1), max_size=8),
    values=st.binary(min_size=8, max_size=8),
    cut=st.integers(0, len(DISCOVER)),
)
def test_corrupted_discovers_never_raise(positions: list[int], values: bytes, cut: int) -> None:
    frame = bytearray(DISCOVER)
    for position, value in zip(positions, values, strict=False):
        frame[position] = value
    dhcp.parse_request(bytes(frame[:cut]))
    dhcp.parse_message(bytes(frame))


@settings(max_examples=300)
@given(options=st.binary(max_size=400), flags=st.sampled_from([0, 0x8000]))
def test_any_options_area_decodes_or_not_and_any_answer_is_a_valid_frame(
    options: bytes, flags: int
) -> None:
    frame = bytearray(bootp(b"\x35\x01\x03" + options))
    frame[BOOTP_AT + 10 : BOOTP_AT + 12] = struct.pack("!H", flags)  # checksum no longer matters
    request = dhcp.parse_request(bytes(frame))
    if request is None:
        return
    reply = dhcp.reply(request, CLIENT, PORT_IP, CONFIG)
    if reply is not None:
        assert Decoded(reply).message_type in (MessageType.ACK, MessageType.NAK)
