"""Frames that VMs send in the lab and in tests, and a decoder for what they receive.

Builds the announcements a migrating VM makes (QEMU's RARP, a guest's gratuitous ARP and
IPv6 unsolicited Neighbor Advertisement), ordinary ARP, UDP datagrams that carry a sequence
number and a send timestamp so captures can measure loss and delay, and the traffic that
security-group rules tell apart: TCP segments, UDP datagrams and ICMP echoes over IPv4 or
IPv6, ICMP errors about such a packet, optionally 802.1Q-tagged, and checksummed UDP
frames for DHCP. Pure: bytes in,
bytes or frozen values out.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import IntFlag, StrEnum

from liveport.model.addr import BROADCAST, IPAddress, Mac
from liveport.model.errors import InvalidInput

ETH_IPV4 = 0x0800
ETH_ARP = 0x0806
ETH_RARP = 0x8035
ETH_IPV6 = 0x86DD
ETH_VLAN = 0x8100
ARP_REQUEST = 1
ARP_REPLY = 2
RARP_REQUEST = 3
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8
ICMPV6_ECHO_REQUEST = 128
ICMPV6_ECHO_REPLY = 129
ICMPV6_NA = 136
ICMP_UNREACHABLE = 3  # ICMPv4 destination unreachable
ICMP_PORT_UNREACHABLE = 3  # its code for "port unreachable"
ICMPV6_UNREACHABLE = 1
ICMPV6_PORT_UNREACHABLE = 4
ICMPV6_ERROR_MAX = 1280 - 40 - 8  # an ICMPv6 error fits the minimum MTU (RFC 4443)
NA_FLAG_OVERRIDE = 0x20000000
NA_FLAG_SOLICITED = 0x40000000

SEQ_MAGIC = b"LPSQ"
SEQ_UDP_PORT = 7001
_SEQ_PAYLOAD = struct.Struct("!4sQQ")  # magic, sequence number, send time in ns

IPV6_ALL_NODES = ipaddress.IPv6Address("ff02::1")
ALL_NODES_MAC = Mac.parse("33:33:00:00:00:01")


class Kind(StrEnum):
    ARP = "arp"
    GARP = "garp"
    RARP = "rarp"
    NA = "na"
    UDP = "udp"
    TCP = "tcp"
    ICMP = "icmp"
    ICMPV6 = "icmpv6"
    IPV4 = "ipv4"
    IPV6 = "ipv6"
    OTHER = "other"


class TcpFlags(IntFlag):
    """The nine TCP flag bits, as OpenFlow's tcp_flags numbers them."""

    FIN = 0x001
    SYN = 0x002
    RST = 0x004
    PSH = 0x008
    ACK = 0x010
    URG = 0x020
    ECE = 0x040
    CWR = 0x080
    NS = 0x100


def _eth(dst: Mac, src: Mac, ethertype: int, payload: bytes) -> bytes:
    frame = dst.packed + src.packed + struct.pack("!H", ethertype) + payload
    return frame.ljust(60, b"\x00")  # minimum Ethernet frame without FCS


def _arp_body(op: int, sha: Mac, spa: bytes, tha: Mac, tpa: bytes, ptype: int = ETH_IPV4) -> bytes:
    return struct.pack("!HHBBH", 1, ptype, 6, 4, op) + sha.packed + spa + tha.packed + tpa


def arp_request(src: Mac, src_ip: ipaddress.IPv4Address, target_ip: ipaddress.IPv4Address) -> bytes:
    body = _arp_body(ARP_REQUEST, src, src_ip.packed, Mac(0), target_ip.packed)
    return _eth(BROADCAST, src, ETH_ARP, body)


def arp_reply(
    src: Mac, src_ip: ipaddress.IPv4Address, dst: Mac, dst_ip: ipaddress.IPv4Address
) -> bytes:
    body = _arp_body(ARP_REPLY, src, src_ip.packed, dst, dst_ip.packed)
    return _eth(dst, src, ETH_ARP, body)


def garp(src: Mac, ip: ipaddress.IPv4Address) -> bytes:
    """A gratuitous ARP request, as a guest with GUEST_ANNOUNCE sends after migration."""
    body = _arp_body(ARP_REQUEST, src, ip.packed, Mac(0), ip.packed)
    return _eth(BROADCAST, src, ETH_ARP, body)


def rarp(src: Mac) -> bytes:
    """QEMU's self-announcement: a RARP 'request reverse' with sender = target = the MAC."""
    body = _arp_body(RARP_REQUEST, src, b"\x00" * 4, src, b"\x00" * 4)
    return _eth(BROADCAST, src, ETH_RARP, body)


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of data."""
    if len(data) % 2:
        data += b"\x00"
    total = int(sum(struct.unpack(f"!{len(data) // 2}H", data)))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def unsolicited_na(src: Mac, target: ipaddress.IPv6Address) -> bytes:
    """An IPv6 unsolicited Neighbor Advertisement for target, to all nodes, with the
    target link-layer address option (what a guest's kernel sends after migration)."""
    src_ip = target
    icmp = struct.pack("!BBHI", ICMPV6_NA, 0, 0, NA_FLAG_OVERRIDE) + target.packed
    icmp += struct.pack("!BB", 2, 1) + src.packed  # option 2: target link-layer address
    pseudo = src_ip.packed + IPV6_ALL_NODES.packed + struct.pack("!I3xB", len(icmp), 58)
    csum = checksum(pseudo + icmp)
    icmp = icmp[:2] + struct.pack("!H", csum) + icmp[4:]
    ip6 = struct.pack("!IHBB", 0x60000000, len(icmp), IPPROTO_ICMPV6, 255)
    ip6 += src_ip.packed + IPV6_ALL_NODES.packed
    return _eth(ALL_NODES_MAC, src, ETH_IPV6, ip6 + icmp)


def _ipv4_header(
    src: ipaddress.IPv4Address,
    dst: ipaddress.IPv4Address,
    proto: int,
    payload_len: int,
    *,
    ttl: int = 64,
    tos: int = 0,
) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        tos,
        20 + payload_len,
        0,
        0x4000,  # don't fragment
        ttl,
        proto,
        0,
        src.packed,
        dst.packed,
    )
    csum = checksum(header)
    return header[:10] + struct.pack("!H", csum) + header[12:]


def udp4_frame(
    dst: Mac,
    src: Mac,
    src_ip: ipaddress.IPv4Address,
    dst_ip: ipaddress.IPv4Address,
    src_port: int,
    dst_port: int,
    payload: bytes,
) -> bytes:
    """An Ethernet/IPv4/UDP frame with valid IP and UDP checksums (DHCP clients and servers)."""
    length = 8 + len(payload)
    pseudo = src_ip.packed + dst_ip.packed + struct.pack("!xBH", IPPROTO_UDP, length)
    udp = _udp_with_checksum(pseudo, src_port, dst_port, payload)
    return _eth(dst, src, ETH_IPV4, _ipv4_header(src_ip, dst_ip, IPPROTO_UDP, length) + udp)


def udp6_frame(
    dst: Mac,
    src: Mac,
    src_ip: ipaddress.IPv6Address,
    dst_ip: ipaddress.IPv6Address,
    src_port: int,
    dst_port: int,
    payload: bytes,
    hop_limit: int = 255,
) -> bytes:
    """An Ethernet/IPv6/UDP frame with a valid UDP checksum (mandatory over IPv6)."""
    length = 8 + len(payload)
    pseudo = src_ip.packed + dst_ip.packed + struct.pack("!I3xB", length, IPPROTO_UDP)
    udp = _udp_with_checksum(pseudo, src_port, dst_port, payload)
    ip6 = struct.pack("!IHBB", 0x60000000, length, IPPROTO_UDP, hop_limit)
    return _eth(dst, src, ETH_IPV6, ip6 + src_ip.packed + dst_ip.packed + udp)


def _udp_with_checksum(pseudo: bytes, src_port: int, dst_port: int, payload: bytes) -> bytes:
    header = struct.pack("!HHHH", src_port, dst_port, 8 + len(payload), 0)
    # A computed checksum of zero is sent as all ones: zero means "no checksum" (RFC 768).
    csum = checksum(pseudo + header + payload) or 0xFFFF
    return header[:6] + struct.pack("!H", csum) + payload


def udp_seq(
    src: Mac,
    dst: Mac,
    src_ip: ipaddress.IPv4Address,
    dst_ip: ipaddress.IPv4Address,
    seq: int,
    sent_ns: int = 0,
    port: int = SEQ_UDP_PORT,
) -> bytes:
    """A UDP datagram whose payload carries a sequence number and the send time."""
    payload = seq_payload(seq, sent_ns)
    udp = struct.pack("!HHHH", port, port, 8 + len(payload), 0) + payload
    return _eth(dst, src, ETH_IPV4, _ipv4_header(src_ip, dst_ip, IPPROTO_UDP, len(udp)) + udp)


def vlan_tagged(frame: bytes, vid: int, pcp: int = 0) -> bytes:
    """frame with an 802.1Q tag (VLAN vid, priority pcp) after its MAC addresses."""
    if not 0 <= vid < 1 << 12 or not 0 <= pcp < 1 << 3:
        raise InvalidInput(f"VLAN {vid} priority {pcp}: a VID has 12 bits, a PCP 3")
    return frame[:12] + struct.pack("!HH", ETH_VLAN, pcp << 13 | vid) + frame[12:]


def _pseudo_header(src_ip: IPAddress, dst_ip: IPAddress, proto: int, length: int) -> bytes:
    """What the TCP, UDP and ICMPv6 checksums cover besides the segment itself."""
    if isinstance(src_ip, ipaddress.IPv4Address):
        return src_ip.packed + dst_ip.packed + struct.pack("!BBH", 0, proto, length)
    return src_ip.packed + dst_ip.packed + struct.pack("!I3xB", length, proto)


def _ip_frame(
    src: Mac,
    dst: Mac,
    src_ip: IPAddress,
    dst_ip: IPAddress,
    proto: int,
    segment: bytes,
    *,
    ttl: int,
    tos: int,
    checksum_at: int | None,
) -> bytes:
    """An IPv4 or IPv6 frame (after the addresses' family) carrying segment, whose
    checksum (if it has one at byte checksum_at) covers the pseudo-header."""
    if src_ip.version != dst_ip.version:
        raise InvalidInput(f"{src_ip} and {dst_ip} are not of one address family")
    if not 0 <= ttl <= 0xFF or not 0 <= tos <= 0xFF:
        raise InvalidInput(f"TTL {ttl} and TOS {tos} must each fit in a byte")
    if checksum_at is not None:
        csum = checksum(_pseudo_header(src_ip, dst_ip, proto, len(segment)) + segment)
        segment = segment[:checksum_at] + struct.pack("!H", csum) + segment[checksum_at + 2 :]
    if isinstance(src_ip, ipaddress.IPv4Address) and isinstance(dst_ip, ipaddress.IPv4Address):
        header = _ipv4_header(src_ip, dst_ip, proto, len(segment), ttl=ttl, tos=tos)
        return _eth(dst, src, ETH_IPV4, header + segment)
    first_word = 6 << 28 | tos << 20  # version, traffic class, flow label 0
    header = struct.pack("!IHBB", first_word, len(segment), proto, ttl)
    return _eth(dst, src, ETH_IPV6, header + src_ip.packed + dst_ip.packed + segment)


def tcp_segment(
    src: Mac,
    dst: Mac,
    src_ip: IPAddress,
    dst_ip: IPAddress,
    src_port: int,
    dst_port: int,
    flags: int = TcpFlags.SYN,
    seq: int = 0,
    ack: int = 0,
    payload: bytes = b"",
    *,
    ttl: int = 64,
    tos: int = 0,
) -> bytes:
    """A TCP segment over IPv4 or IPv6 (after the addresses), with a valid checksum."""
    offset_flags = 5 << 12 | (flags & 0x1FF)  # a 20-byte header, no options
    header = struct.pack("!HHIIHHHH", src_port, dst_port, seq, ack, offset_flags, 0xFFFF, 0, 0)
    return _ip_frame(
        src, dst, src_ip, dst_ip, IPPROTO_TCP, header + payload, ttl=ttl, tos=tos, checksum_at=16
    )


def udp_datagram(
    src: Mac,
    dst: Mac,
    src_ip: IPAddress,
    dst_ip: IPAddress,
    src_port: int,
    dst_port: int,
    payload: bytes = b"",
    *,
    ttl: int = 64,
    tos: int = 0,
) -> bytes:
    """A UDP datagram over IPv4 or IPv6, with a valid checksum."""
    header = struct.pack("!HHHH", src_port, dst_port, 8 + len(payload), 0)
    return _ip_frame(
        src, dst, src_ip, dst_ip, IPPROTO_UDP, header + payload, ttl=ttl, tos=tos, checksum_at=6
    )


def icmp4_echo(
    src: Mac,
    dst: Mac,
    src_ip: ipaddress.IPv4Address,
    dst_ip: ipaddress.IPv4Address,
    ident: int = 0,
    seq: int = 0,
    *,
    reply: bool = False,
    payload: bytes = b"",
    ttl: int = 64,
) -> bytes:
    """An ICMPv4 echo request (or reply)."""
    kind = ICMP_ECHO_REPLY if reply else ICMP_ECHO_REQUEST
    message = struct.pack("!BBHHH", kind, 0, 0, ident, seq) + payload
    message = message[:2] + struct.pack("!H", checksum(message)) + message[4:]
    return _ip_frame(
        src, dst, src_ip, dst_ip, IPPROTO_ICMP, message, ttl=ttl, tos=0, checksum_at=None
    )


def icmp6_echo(
    src: Mac,
    dst: Mac,
    src_ip: ipaddress.IPv6Address,
    dst_ip: ipaddress.IPv6Address,
    ident: int = 0,
    seq: int = 0,
    *,
    reply: bool = False,
    payload: bytes = b"",
    hop_limit: int = 64,
) -> bytes:
    """An ICMPv6 echo request (or reply); its checksum covers the pseudo-header."""
    kind = ICMPV6_ECHO_REPLY if reply else ICMPV6_ECHO_REQUEST
    message = struct.pack("!BBHHH", kind, 0, 0, ident, seq) + payload
    return _ip_frame(
        src, dst, src_ip, dst_ip, IPPROTO_ICMPV6, message, ttl=hop_limit, tos=0, checksum_at=2
    )


def icmp_error(
    src: Mac,
    dst: Mac,
    src_ip: IPAddress,
    dst_ip: IPAddress,
    about: bytes,
    *,
    kind: int | None = None,
    code: int | None = None,
    ttl: int = 64,
) -> bytes:
    """An ICMP (ICMPv6) error about the frame `about`, port unreachable unless kind and code
    say otherwise: it carries about's IP header and the first 8 bytes after it (ICMPv4,
    RFC 792), or as much of about's IP packet as fits the minimum MTU (ICMPv6, RFC 4443)."""
    packet = about[14:]
    if src_ip.version == 4:
        embedded = packet[: (packet[0] & 0x0F) * 4 + 8]
        message = struct.pack(
            "!BBHI",
            ICMP_UNREACHABLE if kind is None else kind,
            ICMP_PORT_UNREACHABLE if code is None else code,
            0,
            0,
        )
        message += embedded
        message = message[:2] + struct.pack("!H", checksum(message)) + message[4:]
        return _ip_frame(
            src, dst, src_ip, dst_ip, IPPROTO_ICMP, message, ttl=ttl, tos=0, checksum_at=None
        )
    message = struct.pack(
        "!BBHI",
        ICMPV6_UNREACHABLE if kind is None else kind,
        ICMPV6_PORT_UNREACHABLE if code is None else code,
        0,
        0,
    )
    message += packet[:ICMPV6_ERROR_MAX]
    return _ip_frame(
        src, dst, src_ip, dst_ip, IPPROTO_ICMPV6, message, ttl=ttl, tos=0, checksum_at=2
    )


@dataclass(frozen=True)
class FrameInfo:
    """What a frame is, as far as the lab cares."""

    dst: Mac
    src: Mac
    ethertype: int
    kind: Kind
    length: int
    src_ip: IPAddress | None = None
    dst_ip: IPAddress | None = None
    seq: int | None = None
    sent_ns: int | None = None
    op: int | None = None  # ARP/RARP operation
    target: IPAddress | None = None  # ARP target IP or ND target
    vlan_tci: int | None = None  # the 802.1Q tag's TCI, if the frame has one
    ip_proto: int | None = None
    src_port: int | None = None  # TCP or UDP
    dst_port: int | None = None
    tcp_flags: int | None = None
    tcp_seq: int | None = None  # the TCP header's sequence and acknowledgement numbers
    tcp_ack: int | None = None
    payload_len: int | None = None  # bytes of TCP payload (the IP length, not the padding)
    icmp_type: int | None = None  # ICMPv4 or ICMPv6
    icmp_code: int | None = None

    def summary(self) -> str:
        text = f"{self.src} > {self.dst}"
        if self.vlan_tci is not None:
            text += f" vlan {self.vlan_tci & 0xFFF}"
        text += f" {self.kind}"
        if self.kind is Kind.UDP and self.seq is not None:
            text += f" seq={self.seq}"
        if self.src_ip is not None:
            text += f" {self.src_ip}"
            if self.dst_ip is not None:
                text += f" > {self.dst_ip}"
        if self.src_port is not None:
            text += f" ports {self.src_port} > {self.dst_port}"
        if self.tcp_flags is not None:
            names = [flag.name or "" for flag in TcpFlags if flag & self.tcp_flags]
            text += f" flags {'|'.join(names) or 'none'}"
        if self.tcp_seq is not None:
            text += f" seq {self.tcp_seq} ack {self.tcp_ack} len {self.payload_len}"
            if self.seq is not None:
                text += f" lab-seq={self.seq}"
        if self.icmp_type is not None and self.kind is not Kind.NA:
            text += f" type {self.icmp_type} code {self.icmp_code}"
        if self.target is not None and self.kind in (Kind.ARP, Kind.NA):
            text += f" who-has/is {self.target}"
        return text

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "src": str(self.src),
            "dst": str(self.dst),
            "ethertype": f"0x{self.ethertype:04x}",
            "kind": str(self.kind),
            "length": self.length,
        }
        for name in ("src_ip", "dst_ip", "target"):
            value = getattr(self, name)
            if value is not None:
                out[name] = str(value)
        for name in (
            "seq",
            "sent_ns",
            "op",
            "vlan_tci",
            "ip_proto",
            "src_port",
            "dst_port",
            "tcp_flags",
            "tcp_seq",
            "tcp_ack",
            "payload_len",
            "icmp_type",
            "icmp_code",
        ):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


def decode(frame: bytes) -> FrameInfo:
    """Classifies an Ethernet frame; raises InvalidInput if it is shorter than a header."""
    if len(frame) < 14:
        raise InvalidInput(f"frame of {len(frame)} bytes is shorter than an Ethernet header")
    dst, src = Mac.from_bytes(frame[0:6]), Mac.from_bytes(frame[6:12])
    (ethertype,) = struct.unpack("!H", frame[12:14])
    body = frame[14:]
    vlan_tci = None
    if ethertype == ETH_VLAN and len(body) >= 4:
        vlan_tci, ethertype = struct.unpack("!HH", body[:4])
        body = body[4:]

    def info(kind: Kind, **fields: object) -> FrameInfo:
        return FrameInfo(dst, src, ethertype, kind, len(frame), vlan_tci=vlan_tci, **fields)  # type: ignore[arg-type]

    if ethertype in (ETH_ARP, ETH_RARP) and len(body) >= 28:
        op = struct.unpack("!H", body[6:8])[0]
        if ethertype == ETH_RARP:
            return info(Kind.RARP, op=op)
        spa = ipaddress.IPv4Address(body[14:18])
        tpa = ipaddress.IPv4Address(body[24:28])
        kind = Kind.GARP if spa == tpa and int(spa) != 0 else Kind.ARP
        return info(kind, op=op, src_ip=spa, target=tpa)
    if ethertype == ETH_IPV4 and len(body) >= 20:
        ihl = (body[0] & 0x0F) * 4
        proto = body[9]
        sip, dip = ipaddress.IPv4Address(body[12:16]), ipaddress.IPv4Address(body[16:20])
        later_fragment = struct.unpack("!H", body[6:8])[0] & 0x1FFF != 0
        (total,) = struct.unpack("!H", body[2:4])
        # Short frames are padded to Ethernet's minimum: the IP length says where L4 ends.
        end = total if ihl <= total <= len(body) else len(body)
        l4 = b"" if later_fragment else body[ihl:end]
        kind, fields = _transport(proto, l4, Kind.IPV4)
        return info(kind, src_ip=sip, dst_ip=dip, ip_proto=proto, **fields)
    if ethertype == ETH_IPV6 and len(body) >= 40:
        nxt = body[6]
        sip6, dip6 = ipaddress.IPv6Address(body[8:24]), ipaddress.IPv6Address(body[24:40])
        icmp = body[40:]
        if nxt == IPPROTO_ICMPV6 and len(icmp) >= 24 and icmp[0] == ICMPV6_NA:
            target = ipaddress.IPv6Address(icmp[8:24])
            return info(
                Kind.NA,
                src_ip=sip6,
                dst_ip=dip6,
                target=target,
                ip_proto=nxt,
                icmp_type=icmp[0],
                icmp_code=icmp[1],
            )
        (length,) = struct.unpack("!H", body[4:6])
        kind, fields = _transport(nxt, body[40 : 40 + length], Kind.IPV6)
        return info(kind, src_ip=sip6, dst_ip=dip6, ip_proto=nxt, **fields)
    return info(Kind.OTHER)


def seq_payload(seq: int, sent_ns: int = 0) -> bytes:
    """The lab's payload: magic, a sequence number and the send time (UDP and TCP data)."""
    return _SEQ_PAYLOAD.pack(SEQ_MAGIC, seq, sent_ns)


SEQ_PAYLOAD_SIZE = _SEQ_PAYLOAD.size


def _lab_payload(data: bytes) -> dict[str, int]:
    if len(data) >= _SEQ_PAYLOAD.size:
        magic, seq, sent = _SEQ_PAYLOAD.unpack(data[: _SEQ_PAYLOAD.size])
        if magic == SEQ_MAGIC:
            return {"seq": seq, "sent_ns": sent}
    return {}


def _transport(proto: int, l4: bytes, default: Kind) -> tuple[Kind, dict[str, int]]:
    """What an IP packet's payload is, and its ports, TCP flags or ICMP type and code."""
    if proto == IPPROTO_UDP and len(l4) >= 8:
        sport, dport = struct.unpack("!HH", l4[:4])
        fields = {"src_port": sport, "dst_port": dport}
        fields.update(_lab_payload(l4[8:]))
        return Kind.UDP, fields
    if proto == IPPROTO_TCP and len(l4) >= 20:
        sport, dport, tcp_seq, tcp_ack, offset_flags = struct.unpack("!HHIIH", l4[:14])
        data = l4[max(20, (offset_flags >> 12) * 4) :]
        fields = {
            "src_port": sport,
            "dst_port": dport,
            "tcp_flags": offset_flags & 0x1FF,
            "tcp_seq": tcp_seq,
            "tcp_ack": tcp_ack,
            "payload_len": len(data),
        }
        fields.update(_lab_payload(data))
        return Kind.TCP, fields
    icmp_kind = {IPPROTO_ICMP: Kind.ICMP, IPPROTO_ICMPV6: Kind.ICMPV6}.get(proto)
    if icmp_kind is not None and len(l4) >= 4:
        return icmp_kind, {"icmp_type": l4[0], "icmp_code": l4[1]}
    return (Kind.UDP if proto == IPPROTO_UDP else default), {}
