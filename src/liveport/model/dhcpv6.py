"""Stateless DHCPv6 on the wire: a VM's Information-request decoded from its Ethernet frame,
the Reply with DNS servers and search list built as the frame the chassis sends back, and the
client's frame for the lab.

As ovn-controller answers (pinctrl.c, put_dhcpv6_opts): northd's flow takes requests from the
port's MAC to ff02::1:2, UDP 546 to 547; the Reply goes from server_id (a MAC) and its
link-local address back to the requester's MAC and address, UDP 547 to 546, echoing the
transaction id and Client Identifier and carrying the server's DUID-LL. Only
Information-request is answered: leasing addresses (Solicit, Request, Renew, ...) is stateful
DHCPv6, which liveport does not implement.

Decoding is bounded by the frame and its own length fields; anything malformed or not
addressed to this server is None, never an exception.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import IntEnum

from liveport.model.addr import Mac
from liveport.model.dhcp_config import Dhcpv6Config, duid_ll, encode_domains
from liveport.model.packets import ETH_IPV6, IPPROTO_UDP, udp6_frame

CLIENT_PORT = 546
SERVER_PORT = 547
ALL_DHCP_AGENTS = ipaddress.IPv6Address("ff02::1:2")
ALL_DHCP_AGENTS_MAC = Mac.parse("33:33:00:01:00:02")

OPT_CLIENT_ID = 1
OPT_SERVER_ID = 2
OPT_IA_NA = 3
OPT_IA_TA = 4
OPT_ORO = 6
OPT_ELAPSED_TIME = 8
OPT_DNS_SERVERS = 23
OPT_DOMAIN_LIST = 24
OPT_IA_PD = 25
_IA_OPTIONS = frozenset({OPT_IA_NA, OPT_IA_TA, OPT_IA_PD})
_PLAIN_MESSAGES = range(1, 12)  # RFC 8415's client/server messages; 12 and 13 are relays


class MessageType(IntEnum):
    SOLICIT = 1
    ADVERTISE = 2
    REQUEST = 3
    CONFIRM = 4
    RENEW = 5
    REBIND = 6
    REPLY = 7
    RELEASE = 8
    DECLINE = 9
    RECONFIGURE = 10
    INFORMATION_REQUEST = 11


CLIENT_MESSAGES = frozenset(
    {
        MessageType.SOLICIT,
        MessageType.REQUEST,
        MessageType.CONFIRM,
        MessageType.RENEW,
        MessageType.REBIND,
        MessageType.RELEASE,
        MessageType.DECLINE,
        MessageType.INFORMATION_REQUEST,
    }
)


@dataclass(frozen=True)
class Dhcpv6Message:
    """Any (non-relay) DHCPv6 message in an Ethernet/IPv6/UDP frame, options in order."""

    src_mac: Mac
    dst_mac: Mac
    src_ip: ipaddress.IPv6Address
    dst_ip: ipaddress.IPv6Address
    src_port: int
    dst_port: int
    message_type: int
    xid: int  # 24 bits
    options: tuple[tuple[int, bytes], ...]

    def option(self, code: int) -> bytes | None:
        """The first option with this code (RFC 8415 allows one of each that matters here)."""
        return next((data for c, data in self.options if c == code), None)


def parse_dhcpv6_message(frame: bytes) -> Dhcpv6Message | None:
    """Decodes a DHCPv6 message from an Ethernet frame; None unless it is IPv6 with UDP as
    the next header (extension headers are not followed), lengths consistent, and options
    that end where the message does. Relay messages have another layout and are None."""
    if len(frame) < 14 + 40 or struct.unpack_from("!H", frame, 12)[0] != ETH_IPV6:
        return None
    ip6 = frame[14:]
    payload_len, next_header = struct.unpack_from("!HB", ip6, 4)
    if ip6[0] >> 4 != 6 or next_header != IPPROTO_UDP or not 8 <= payload_len <= len(ip6) - 40:
        return None
    udp = ip6[40 : 40 + payload_len]
    src_port, dst_port, udp_len = struct.unpack_from("!HHH", udp)
    if not 8 + 4 <= udp_len <= len(udp):
        return None
    body = udp[8:udp_len]
    options = _parse_options(body[4:])
    if options is None or body[0] not in _PLAIN_MESSAGES:
        return None
    return Dhcpv6Message(
        src_mac=Mac.from_bytes(frame[6:12]),
        dst_mac=Mac.from_bytes(frame[0:6]),
        src_ip=ipaddress.IPv6Address(ip6[8:24]),
        dst_ip=ipaddress.IPv6Address(ip6[24:40]),
        src_port=src_port,
        dst_port=dst_port,
        message_type=body[0],
        xid=int.from_bytes(body[1:4], "big"),
        options=options,
    )


def _parse_options(data: bytes) -> tuple[tuple[int, bytes], ...] | None:
    found = []
    pos = 0
    while pos < len(data):
        if pos + 4 > len(data):
            return None
        code, length = struct.unpack_from("!HH", data, pos)
        end = pos + 4 + length
        if end > len(data):
            return None
        found.append((code, data[pos + 4 : end]))
        pos = end
    return tuple(found)


@dataclass(frozen=True)
class Dhcpv6Request:
    """A client's DHCPv6 message to the servers, with what answering it needs."""

    src_mac: Mac
    src_ip: ipaddress.IPv6Address
    dst_ip: ipaddress.IPv6Address
    message_type: MessageType
    xid: int
    client_id: bytes | None = None  # the client's DUID, echoed in the reply
    server_id: bytes | None = None  # the DUID of the server the client addresses, if any
    has_ia: bool = False  # asks for addresses or prefixes (IA_NA, IA_TA, IA_PD)
    requested_options: tuple[int, ...] = ()  # the Option Request option


def parse_dhcpv6_request(frame: bytes) -> Dhcpv6Request | None:
    """A client message from UDP port 546 to 547; None for anything else."""
    message = parse_dhcpv6_message(frame)
    if message is None or (message.src_port, message.dst_port) != (CLIENT_PORT, SERVER_PORT):
        return None
    if message.message_type not in CLIENT_MESSAGES:
        return None
    oro = message.option(OPT_ORO) or b""
    return Dhcpv6Request(
        src_mac=message.src_mac,
        src_ip=message.src_ip,
        dst_ip=message.dst_ip,
        message_type=MessageType(message.message_type),
        xid=message.xid,
        client_id=message.option(OPT_CLIENT_ID),
        server_id=message.option(OPT_SERVER_ID),
        has_ia=any(code in _IA_OPTIONS for code, _ in message.options),
        requested_options=struct.unpack(f"!{len(oro) // 2}H", oro[: len(oro) // 2 * 2]),
    )


def answers(request: Dhcpv6Request, port_mac: Mac, config: Dhcpv6Config) -> bool:
    """Whether the stateless server replies: an Information-request from the port's MAC to
    All_DHCP_Relay_Agents_and_Servers (northd's match), from an address a reply can reach,
    without IA options and naming no other server (RFC 8415 section 16.12)."""
    if request.src_mac != port_mac or request.dst_ip != ALL_DHCP_AGENTS:
        return False
    if request.src_ip.is_unspecified or request.src_ip.is_multicast:
        return False
    if request.message_type is not MessageType.INFORMATION_REQUEST or request.has_ia:
        return False
    return request.server_id is None or request.server_id == config.server_duid


def dhcpv6_reply(request: Dhcpv6Request, port_mac: Mac, config: Dhcpv6Config) -> bytes | None:
    """The Reply frame to an Information-request from the port with this MAC, or None."""
    if not answers(request, port_mac, config):
        return None
    # pinctrl's order: the Client Identifier, then the options sorted by NB key (dns_server,
    # domain_search, server_id). The search list is RFC 1035 names (pinctrl sends the string
    # as one length-prefixed label, which only a single-label domain survives).
    options = []
    if request.client_id is not None:
        options.append(_option(OPT_CLIENT_ID, request.client_id))
    if config.dns_servers:
        options.append(_option(OPT_DNS_SERVERS, b"".join(ip.packed for ip in config.dns_servers)))
    if config.domain_search:
        options.append(_option(OPT_DOMAIN_LIST, encode_domains(config.domain_search, False)))
    options.append(_option(OPT_SERVER_ID, config.server_duid))
    header = bytes([MessageType.REPLY]) + request.xid.to_bytes(3, "big")
    return udp6_frame(
        dst=request.src_mac,
        src=config.server_mac,
        src_ip=config.server_ip,
        dst_ip=request.src_ip,
        src_port=SERVER_PORT,
        dst_port=CLIENT_PORT,
        payload=header + b"".join(options),
    )


def _option(code: int, data: bytes) -> bytes:
    return struct.pack("!HH", code, len(data)) + data


def information_request(
    mac: Mac,
    xid: int,
    *,
    client_id: bytes | None = None,
    requested_options: tuple[int, ...] = (OPT_DNS_SERVERS, OPT_DOMAIN_LIST),
    src_ip: ipaddress.IPv6Address | None = None,
    extra_options: tuple[tuple[int, bytes], ...] = (),
) -> bytes:
    """An Information-request as a VM's stateless client sends it: from its link-local
    address to ff02::1:2, with its DUID (DUID-LL of the MAC unless given), the options it
    wants and an elapsed time of zero."""
    options = [
        _option(OPT_CLIENT_ID, duid_ll(mac) if client_id is None else client_id),
        _option(OPT_ORO, struct.pack(f"!{len(requested_options)}H", *requested_options)),
        _option(OPT_ELAPSED_TIME, b"\x00\x00"),
        *(_option(code, data) for code, data in extra_options),
    ]
    header = bytes([MessageType.INFORMATION_REQUEST]) + (xid & 0xFFFFFF).to_bytes(3, "big")
    return udp6_frame(
        dst=ALL_DHCP_AGENTS_MAC,
        src=mac,
        src_ip=mac.ipv6_link_local() if src_ip is None else src_ip,
        dst_ip=ALL_DHCP_AGENTS,
        src_port=CLIENT_PORT,
        dst_port=SERVER_PORT,
        payload=header + b"".join(options),
        hop_limit=1,
    )
