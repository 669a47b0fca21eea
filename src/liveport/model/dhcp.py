"""Native DHCPv4 on the wire: a VM's request decoded from its Ethernet frame, the server's
answer built as the exact frame the chassis sends back, and client frames for the lab.

The answers follow ovn-controller's (pinctrl.c, put_dhcp_opts) where they matter to a guest:
OFFER for DISCOVER, ACK for a REQUEST of the port's address (from the requested-IP option,
else ciaddr), NAK for any other, ACK without lease or mask for INFORM, silence for RELEASE
and DECLINE; the Ethernet reply goes to the requester's MAC from server_mac, the IP reply from
server_id to the offered address, or to 255.255.255.255 when the client set the broadcast
flag. Where OVN and RFC 2131 part, the RFC is followed and the difference is named where it
is made.

Everything a VM sends is untrusted: decoding is bounded by the frame and its own length
fields, and anything malformed or not addressed to this server is None, never an exception.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum

from liveport.model.addr import BROADCAST, Mac
from liveport.model.dhcp_config import (
    OPT_BOOTFILE,
    OPT_LEASE_TIME,
    OPT_NETMASK,
    OPT_SERVER_ID,
    OPT_T1,
    OPT_T2,
    DhcpConfig,
)
from liveport.model.frozen import FrozenMap
from liveport.model.packets import ETH_IPV4, IPPROTO_UDP, udp4_frame

SERVER_PORT = 67
CLIENT_PORT = 68
BOOTREQUEST = 1
BOOTREPLY = 2
HTYPE_ETHERNET = 1
FLAG_BROADCAST = 0x8000
MAGIC_COOKIE = b"\x63\x82\x53\x63"
MIN_BOOTP_LEN = 300  # RFC 1542 section 2.1: some BOOTP relays and clients drop shorter ones

OPT_PAD = 0
OPT_END = 255
OPT_REQUESTED_IP = 50
OPT_MESSAGE_TYPE = 53
OPT_PARAMETER_REQUESTS = 55
OPT_HOST_NAME = 12
OPT_CLIENT_ID = 61
OPT_ETHERBOOT = 175  # sent by iPXE; selects bootfile_name over bootfile_name_alt

ANY = ipaddress.IPv4Address(0)
LIMITED_BROADCAST = ipaddress.IPv4Address("255.255.255.255")

# op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, sname, file
_BOOTP = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
_FIXED_LEN = _BOOTP.size + len(MAGIC_COOKIE)  # 240


class MessageType(IntEnum):
    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8


CLIENT_MESSAGES = frozenset(
    {
        MessageType.DISCOVER,
        MessageType.REQUEST,
        MessageType.DECLINE,
        MessageType.RELEASE,
        MessageType.INFORM,
    }
)
# What a client asks for by default (Linux dhclient's usual list, abridged).
DEFAULT_PARAMETER_REQUESTS = (1, 3, 6, 12, 15, 26, 28, 42, 119, 121)


@dataclass(frozen=True)
class DhcpMessage:
    """Any BOOTP/DHCP message carried in an Ethernet/IPv4/UDP frame. `options` maps each
    code to its value, repeated instances concatenated (RFC 3396)."""

    src_mac: Mac
    dst_mac: Mac
    src_ip: ipaddress.IPv4Address
    dst_ip: ipaddress.IPv4Address
    src_port: int
    dst_port: int
    op: int
    xid: int
    secs: int
    flags: int
    ciaddr: ipaddress.IPv4Address
    yiaddr: ipaddress.IPv4Address
    siaddr: ipaddress.IPv4Address
    giaddr: ipaddress.IPv4Address
    chaddr: Mac
    options: FrozenMap[int, bytes]

    @property
    def message_type(self) -> int | None:
        value = self.options.get(OPT_MESSAGE_TYPE)
        return value[0] if value is not None and len(value) == 1 else None

    def ipv4_option(self, code: int) -> ipaddress.IPv4Address | None:
        """An option holding one IPv4 address; None if absent or not 4 bytes long."""
        value = self.options.get(code)
        return ipaddress.IPv4Address(value) if value is not None and len(value) == 4 else None


def parse_message(frame: bytes) -> DhcpMessage | None:
    """Decodes a DHCP message from an Ethernet frame; None unless the frame is an unfragmented
    IPv4 UDP datagram holding a BOOTP header for Ethernet, the magic cookie and well-formed
    options. Lengths come from the IP and UDP headers, so Ethernet padding is ignored."""
    if len(frame) < 14 or struct.unpack_from("!H", frame, 12)[0] != ETH_IPV4:
        return None
    datagram = _udp_payload(frame[14:])
    if datagram is None:
        return None
    src_ip, dst_ip, src_port, dst_port, payload = datagram
    if len(payload) < _FIXED_LEN or payload[_BOOTP.size : _FIXED_LEN] != MAGIC_COOKIE:
        return None
    op, htype, hlen, _, xid, secs, flags, ci, yi, si, gi, chaddr, _, _ = _BOOTP.unpack_from(payload)
    if htype != HTYPE_ETHERNET or hlen != 6:  # as pinctrl: only Ethernet clients
        return None
    options = parse_options(payload[_FIXED_LEN:])
    if options is None:
        return None
    return DhcpMessage(
        src_mac=Mac.from_bytes(frame[6:12]),
        dst_mac=Mac.from_bytes(frame[0:6]),
        src_ip=src_ip,
        dst_ip=dst_ip,
        src_port=src_port,
        dst_port=dst_port,
        op=op,
        xid=xid,
        secs=secs,
        flags=flags,
        ciaddr=ipaddress.IPv4Address(ci),
        yiaddr=ipaddress.IPv4Address(yi),
        siaddr=ipaddress.IPv4Address(si),
        giaddr=ipaddress.IPv4Address(gi),
        chaddr=Mac.from_bytes(chaddr[:6]),
        options=FrozenMap(options),
    )


def _udp_payload(
    packet: bytes,
) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address, int, int, bytes] | None:
    """Source, destination, ports and payload of an IPv4 UDP datagram, bounds checked."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    header_len = (packet[0] & 0x0F) * 4
    total_len, fragment, proto = struct.unpack_from("!H2xH1xB", packet, 2)
    if header_len < 20 or not header_len + 8 <= total_len <= len(packet):
        return None
    if fragment & 0x3FFF or proto != IPPROTO_UDP:  # more-fragments bit or an offset
        return None
    udp = packet[header_len:total_len]
    src_port, dst_port, udp_len = struct.unpack_from("!HHH", udp)
    if not 8 <= udp_len <= len(udp):
        return None
    src, dst = ipaddress.IPv4Address(packet[12:16]), ipaddress.IPv4Address(packet[16:20])
    return src, dst, src_port, dst_port, udp[8:udp_len]


def parse_options(data: bytes) -> dict[int, bytes] | None:
    """The options after the magic cookie, up to END (or the end of the data); None when an
    option's length runs past the end. Repeated options are concatenated (RFC 3396)."""
    parts: dict[int, list[bytes]] = {}
    pos = 0
    while pos < len(data):
        code = data[pos]
        if code == OPT_END:
            break
        if code == OPT_PAD:
            pos += 1
            continue
        if pos + 2 > len(data) or pos + 2 + data[pos + 1] > len(data):
            return None
        end = pos + 2 + data[pos + 1]
        parts.setdefault(code, []).append(data[pos + 2 : end])
        pos = end
    # Joined once at the end: a hostile frame may repeat one code thousands of times.
    return {code: b"".join(values) for code, values in parts.items()}


@dataclass(frozen=True)
class DhcpRequest:
    """A client's DHCP message to the server, with what answering it needs."""

    src_mac: Mac
    src_ip: ipaddress.IPv4Address
    dst_ip: ipaddress.IPv4Address
    message_type: MessageType
    xid: int
    flags: int
    ciaddr: ipaddress.IPv4Address
    giaddr: ipaddress.IPv4Address
    chaddr: Mac
    requested_ip: ipaddress.IPv4Address | None = None  # option 50
    server_id: ipaddress.IPv4Address | None = None  # option 54
    parameter_requests: tuple[int, ...] = ()  # option 55
    client_id: bytes | None = None  # option 61
    hostname: str | None = None  # option 12
    etherboot: bool = False  # option 175 present: an iPXE client

    @property
    def broadcast(self) -> bool:
        return bool(self.flags & FLAG_BROADCAST)


def parse_request(frame: bytes) -> DhcpRequest | None:
    """A BOOTREQUEST from UDP port 68 to 67 whose message type is one a client sends
    (DISCOVER, REQUEST, DECLINE, RELEASE, INFORM); None for anything else, including BOOTP
    without a message type, which OVN does not answer either."""
    message = parse_message(frame)
    if message is None or message.op != BOOTREQUEST:
        return None
    if (message.src_port, message.dst_port) != (CLIENT_PORT, SERVER_PORT):
        return None
    kind = message.message_type
    if kind is None or kind not in CLIENT_MESSAGES:
        return None
    options = message.options
    host_name = options.get(OPT_HOST_NAME)
    return DhcpRequest(
        src_mac=message.src_mac,
        src_ip=message.src_ip,
        dst_ip=message.dst_ip,
        message_type=MessageType(kind),
        xid=message.xid,
        flags=message.flags,
        ciaddr=message.ciaddr,
        giaddr=message.giaddr,
        chaddr=message.chaddr,
        requested_ip=message.ipv4_option(OPT_REQUESTED_IP),
        server_id=message.ipv4_option(OPT_SERVER_ID),
        parameter_requests=tuple(options.get(OPT_PARAMETER_REQUESTS, b"")),
        client_id=options.get(OPT_CLIENT_ID),
        hostname=None if host_name is None else host_name.decode("utf-8", "replace"),
        etherboot=OPT_ETHERBOOT in options,
    )


def decide(
    request: DhcpRequest, port_mac: Mac, port_ip: ipaddress.IPv4Address, config: DhcpConfig
) -> MessageType | None:
    """The kind of reply the server sends, or None for none. The addressing checks are the
    match of northd's DHCP flow: from the port's MAC, from its address or 0.0.0.0, to
    server_id or 255.255.255.255."""
    if request.src_mac != port_mac or request.src_ip not in (port_ip, ANY):
        return None
    if request.dst_ip not in (config.server_id, LIMITED_BROADCAST):
        return None
    kind = request.message_type
    if kind is MessageType.DISCOVER:
        return MessageType.OFFER
    if kind is MessageType.INFORM:
        return MessageType.ACK
    if kind is not MessageType.REQUEST:
        return None  # RELEASE and DECLINE are only logged by ovn-controller
    if request.server_id is not None and request.server_id != config.server_id:
        # SELECTING another server's offer (RFC 2131 section 4.3.2): stay silent. pinctrl
        # ignores option 54 and answers anyway, second-guessing the server the client chose.
        return None
    # The address asked for: option 50 (SELECTING, INIT-REBOOT), else ciaddr (RENEWING,
    # REBINDING); neither, or another address, is NAKed.
    wanted = request.requested_ip
    if wanted is None or wanted == ANY:  # pinctrl too reads an option 50 of 0.0.0.0 as absent
        wanted = request.ciaddr
    return MessageType.ACK if wanted == port_ip else MessageType.NAK


def reply(
    request: DhcpRequest, port_mac: Mac, port_ip: ipaddress.IPv4Address, config: DhcpConfig
) -> bytes | None:
    """The frame that answers `request` from a port with this MAC and address, or None."""
    kind = decide(request, port_mac, port_ip, config)
    if kind is None:
        return None
    inform = request.message_type is MessageType.INFORM
    nak = kind is MessageType.NAK
    header = _BOOTP.pack(
        BOOTREPLY,
        HTYPE_ETHERNET,
        6,
        0,
        request.xid,
        0,
        request.flags,
        # RFC 2131 table 3: ciaddr echoed in ACKs only (pinctrl echoes it always; clients
        # send 0 where the RFC wants 0, so both agree in practice).
        (request.ciaddr if kind is MessageType.ACK else ANY).packed,
        (ANY if nak or inform else port_ip).packed,
        (ANY if nak else config.next_server or ANY).packed,
        request.giaddr.packed,
        request.chaddr.packed,
        b"",
        b"",
    )
    body = MAGIC_COOKIE + b"".join(
        _option(code, data)
        for code, data in _reply_options(kind, inform, request.etherboot, config)
    )
    payload = (header + body + bytes([OPT_END])).ljust(MIN_BOOTP_LEN, b"\x00")
    # RFC 2131 section 4.1: a NAK is broadcast (pinctrl sends it to the port's address).
    # The IP header is a fresh one (TTL 64) and the UDP checksum is computed, where pinctrl
    # copies the request's IP header and sends no UDP checksum; a guest accepts either.
    broadcast = nak or request.broadcast
    return udp4_frame(
        dst=request.src_mac,
        src=config.server_mac,
        src_ip=config.server_id,
        dst_ip=LIMITED_BROADCAST if broadcast else port_ip,
        src_port=SERVER_PORT,
        dst_port=CLIENT_PORT,
        payload=payload,
    )


_NOT_FOR_INFORM = frozenset({OPT_NETMASK, OPT_LEASE_TIME, OPT_T1, OPT_T2})


def _reply_options(
    kind: MessageType, inform: bool, etherboot: bool, config: DhcpConfig
) -> Iterable[tuple[int, bytes]]:
    """The message type first, then, as pinctrl orders them, the bootfile and the configured
    options. A NAK carries only the server identifier, which RFC 2131 requires (pinctrl sends
    none); an INFORM's ACK leaves out what concerns a lease (RFC 2131 section 3.4)."""
    yield OPT_MESSAGE_TYPE, bytes([kind])
    if kind is MessageType.NAK:
        yield OPT_SERVER_ID, config.server_id.packed
        return
    bootfile = _bootfile(config, etherboot)
    if bootfile is not None:
        yield OPT_BOOTFILE, bootfile
    for option in config.options:
        if not (inform and option.code in _NOT_FOR_INFORM):
            yield option.code, option.data


def _bootfile(config: DhcpConfig, etherboot: bool) -> bytes | None:
    """bootfile_name for iPXE (which sends option 175), bootfile_name_alt for other clients;
    either one alone for everyone."""
    name, alt = config.bootfile_name, config.bootfile_name_alt
    if name is not None and alt is not None:
        return name if etherboot else alt
    return name if name is not None else alt


def _option(code: int, data: bytes) -> bytes:
    return bytes([code, len(data)]) + data


def client_frame(
    message_type: MessageType,
    mac: Mac,
    xid: int,
    *,
    ciaddr: ipaddress.IPv4Address = ANY,
    requested_ip: ipaddress.IPv4Address | None = None,
    server_id: ipaddress.IPv4Address | None = None,
    hostname: str | None = None,
    client_id: bytes | None = None,
    parameter_requests: tuple[int, ...] = DEFAULT_PARAMETER_REQUESTS,
    broadcast: bool = False,
    etherboot: bool = False,
    src_ip: ipaddress.IPv4Address | None = None,
    dst_ip: ipaddress.IPv4Address = LIMITED_BROADCAST,
    dst_mac: Mac = BROADCAST,
    extra_options: Mapping[int, bytes] | None = None,
) -> bytes:
    """A DHCP message as a VM's client sends it. The IP source is ciaddr unless given."""
    header = _BOOTP.pack(
        BOOTREQUEST,
        HTYPE_ETHERNET,
        6,
        0,
        xid,
        0,
        FLAG_BROADCAST if broadcast else 0,
        ciaddr.packed,
        ANY.packed,
        ANY.packed,
        ANY.packed,
        mac.packed,
        b"",
        b"",
    )
    options = [_option(OPT_MESSAGE_TYPE, bytes([message_type]))]
    if client_id is not None:
        options.append(_option(OPT_CLIENT_ID, client_id))
    if requested_ip is not None:
        options.append(_option(OPT_REQUESTED_IP, requested_ip.packed))
    if server_id is not None:
        options.append(_option(OPT_SERVER_ID, server_id.packed))
    if hostname is not None:
        options.append(_option(OPT_HOST_NAME, hostname.encode()))
    if parameter_requests:
        options.append(_option(OPT_PARAMETER_REQUESTS, bytes(parameter_requests)))
    if etherboot:
        options.append(_option(OPT_ETHERBOOT, b"\x00\x00"))
    options.extend(_option(code, data) for code, data in (extra_options or {}).items())
    payload = header + MAGIC_COOKIE + b"".join(options) + bytes([OPT_END])
    return udp4_frame(
        dst=dst_mac,
        src=mac,
        src_ip=ciaddr if src_ip is None else src_ip,
        dst_ip=dst_ip,
        src_port=CLIENT_PORT,
        dst_port=SERVER_PORT,
        payload=payload.ljust(MIN_BOOTP_LEN, b"\x00"),
    )


def dhcp_discover(
    mac: Mac,
    xid: int,
    *,
    hostname: str | None = None,
    broadcast: bool = False,
    etherboot: bool = False,
    requested_ip: ipaddress.IPv4Address | None = None,
) -> bytes:
    """DHCPDISCOVER, broadcast from 0.0.0.0."""
    return client_frame(
        MessageType.DISCOVER,
        mac,
        xid,
        hostname=hostname,
        broadcast=broadcast,
        etherboot=etherboot,
        requested_ip=requested_ip,
    )


def dhcp_request(
    mac: Mac,
    xid: int,
    requested_ip: ipaddress.IPv4Address | None = None,
    server_id: ipaddress.IPv4Address | None = None,
    *,
    ciaddr: ipaddress.IPv4Address = ANY,
    dst_ip: ipaddress.IPv4Address = LIMITED_BROADCAST,
    dst_mac: Mac = BROADCAST,
    hostname: str | None = None,
    broadcast: bool = False,
) -> bytes:
    """DHCPREQUEST. SELECTING: requested_ip and server_id; INIT-REBOOT: requested_ip only;
    RENEWING: ciaddr, unicast (dst_ip=server_id, dst_mac=its MAC); REBINDING: ciaddr,
    broadcast."""
    return client_frame(
        MessageType.REQUEST,
        mac,
        xid,
        ciaddr=ciaddr,
        requested_ip=requested_ip,
        server_id=server_id,
        hostname=hostname,
        broadcast=broadcast,
        dst_ip=dst_ip,
        dst_mac=dst_mac,
    )


def dhcp_release(
    mac: Mac,
    xid: int,
    ciaddr: ipaddress.IPv4Address,
    server_id: ipaddress.IPv4Address,
    dst_mac: Mac = BROADCAST,
) -> bytes:
    """DHCPRELEASE, unicast from the leased address to the server."""
    return client_frame(
        MessageType.RELEASE,
        mac,
        xid,
        ciaddr=ciaddr,
        server_id=server_id,
        parameter_requests=(),
        dst_ip=server_id,
        dst_mac=dst_mac,
    )


def dhcp_inform(
    mac: Mac,
    xid: int,
    ciaddr: ipaddress.IPv4Address,
    dst_ip: ipaddress.IPv4Address = LIMITED_BROADCAST,
    dst_mac: Mac = BROADCAST,
) -> bytes:
    """DHCPINFORM from a client that already has its address and wants the rest."""
    return client_frame(MessageType.INFORM, mac, xid, ciaddr=ciaddr, dst_ip=dst_ip, dst_mac=dst_mac)


def dhcp_decline(
    mac: Mac, xid: int, requested_ip: ipaddress.IPv4Address, server_id: ipaddress.IPv4Address
) -> bytes:
    """DHCPDECLINE: the offered address is already in use on the link."""
    return client_frame(
        MessageType.DECLINE,
        mac,
        xid,
        requested_ip=requested_ip,
        server_id=server_id,
        parameter_requests=(),
    )
