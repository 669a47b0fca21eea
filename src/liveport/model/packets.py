"""Frames that VMs send in the lab and in tests, and a decoder for what they receive.

Builds the announcements a migrating VM makes (QEMU's RARP, a guest's gratuitous ARP and
IPv6 unsolicited Neighbor Advertisement), ordinary ARP, UDP datagrams that carry a
sequence number and a send timestamp so captures can measure loss and delay, and checksummed
UDP frames for DHCP. Pure: bytes in, bytes or frozen values out.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import StrEnum

from liveport.model.addr import BROADCAST, IPAddress, Mac
from liveport.model.errors import InvalidInput

ETH_IPV4 = 0x0800
ETH_ARP = 0x0806
ETH_RARP = 0x8035
ETH_IPV6 = 0x86DD
ARP_REQUEST = 1
ARP_REPLY = 2
RARP_REQUEST = 3
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
ICMPV6_NA = 136
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
    IPV4 = "ipv4"
    IPV6 = "ipv6"
    OTHER = "other"


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


def _checksum(data: bytes) -> int:
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
    csum = _checksum(pseudo + icmp)
    icmp = icmp[:2] + struct.pack("!H", csum) + icmp[4:]
    ip6 = struct.pack("!IHBB", 0x60000000, len(icmp), IPPROTO_ICMPV6, 255)
    ip6 += src_ip.packed + IPV6_ALL_NODES.packed
    return _eth(ALL_NODES_MAC, src, ETH_IPV6, ip6 + icmp)


def _ipv4_header(
    src: ipaddress.IPv4Address, dst: ipaddress.IPv4Address, proto: int, payload_len: int
) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + payload_len, 0, 0x4000, 64, proto, 0, src.packed, dst.packed
    )
    csum = _checksum(header)
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
    csum = _checksum(pseudo + header + payload) or 0xFFFF
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
    payload = _SEQ_PAYLOAD.pack(SEQ_MAGIC, seq, sent_ns)
    udp = struct.pack("!HHHH", port, port, 8 + len(payload), 0) + payload
    return _eth(dst, src, ETH_IPV4, _ipv4_header(src_ip, dst_ip, IPPROTO_UDP, len(udp)) + udp)


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

    def summary(self) -> str:
        text = f"{self.src} > {self.dst} {self.kind}"
        if self.kind is Kind.UDP and self.seq is not None:
            text += f" seq={self.seq}"
        if self.src_ip is not None:
            text += f" {self.src_ip}"
            if self.dst_ip is not None:
                text += f" > {self.dst_ip}"
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
        for name in ("seq", "sent_ns", "op"):
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

    def info(kind: Kind, **fields: object) -> FrameInfo:
        return FrameInfo(dst, src, ethertype, kind, len(frame), **fields)  # type: ignore[arg-type]

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
        l4 = body[ihl:]
        if proto == IPPROTO_UDP and len(l4) >= 8 + _SEQ_PAYLOAD.size:
            magic, seq, sent = _SEQ_PAYLOAD.unpack(l4[8 : 8 + _SEQ_PAYLOAD.size])
            if magic == SEQ_MAGIC:
                return info(Kind.UDP, src_ip=sip, dst_ip=dip, seq=seq, sent_ns=sent)
        return info(Kind.UDP if proto == IPPROTO_UDP else Kind.IPV4, src_ip=sip, dst_ip=dip)
    if ethertype == ETH_IPV6 and len(body) >= 40:
        nxt = body[6]
        sip6, dip6 = ipaddress.IPv6Address(body[8:24]), ipaddress.IPv6Address(body[24:40])
        icmp = body[40:]
        if nxt == IPPROTO_ICMPV6 and len(icmp) >= 24 and icmp[0] == ICMPV6_NA:
            target = ipaddress.IPv6Address(icmp[8:24])
            return info(Kind.NA, src_ip=sip6, dst_ip=dip6, target=target)
        return info(Kind.IPV6, src_ip=sip6, dst_ip=dip6)
    return info(Kind.OTHER)
