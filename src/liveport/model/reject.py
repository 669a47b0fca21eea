"""What an ACL's `reject` sends back: a TCP reset for TCP, an ICMP (ICMPv6) port
unreachable for anything else IP, as OVN's reject does. Pure.

The ACL's flow sends the packet to the agent (a controller action whose userdata says
"reject" and the ACL's direction) and drops it. The agent builds the answer here and sends
it: for a from-lport reject straight back to the sender's VIF (the network refused what it
sent); for a to-lport reject into the pipeline from the receiver's VIF, as the receiver
would have answered, so that it reaches the sender wherever it is.

Nothing is answered to what must never be answered: a TCP reset, an ICMP error, a packet
to or from a broadcast or multicast address, a fragment other than the first, or what
cannot be parsed.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from liveport.model.acl import parse_reject_userdata, reject_userdata
from liveport.model.addr import Mac
from liveport.model.errors import InvalidInput
from liveport.model.packets import (
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    Kind,
    TcpFlags,
    decode,
    icmp_error,
    tcp_segment,
)

ICMP_ERROR_TYPES = frozenset({3, 4, 5, 11, 12})  # ICMPv4 errors (never answered)
__all__ = ["Answer", "answer", "parse_reject_userdata", "reject_userdata"]


@dataclass(frozen=True)
class Answer:
    frame: bytes
    what: str  # "tcp reset" or "icmp unreachable"


def answer(frame: bytes) -> Answer | None:
    """The answer to a rejected frame, from its destination to its source (None: it gets
    none)."""
    try:
        info = decode(frame)
    except InvalidInput:
        return None
    if info.src_ip is None or info.dst_ip is None:
        return None
    if _group(info.src_ip) or _group(info.dst_ip) or info.dst.is_multicast or info.src.is_multicast:
        return None
    if _later_fragment(frame):
        return None
    if info.kind is Kind.TCP and info.tcp_seq is not None and info.tcp_flags is not None:
        return _reset(info.src, info.dst, info.src_ip, info.dst_ip, frame, info.tcp_flags)
    if info.ip_proto == IPPROTO_ICMP and info.icmp_type in ICMP_ERROR_TYPES:
        return None
    if info.ip_proto == IPPROTO_ICMPV6 and info.icmp_type is not None and info.icmp_type < 128:
        return None  # ICMPv6 errors (types below 128)
    reply = icmp_error(info.dst, info.src, info.dst_ip, info.src_ip, frame)
    return Answer(reply, "icmp unreachable")


def _reset(
    src: Mac,
    dst: Mac,
    src_ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
    dst_ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
    frame: bytes,
    flags: int,
) -> Answer | None:
    """RFC 793's reset: to a segment with ACK, seq = its ack; otherwise seq 0 and ACK of
    everything it occupied."""
    if flags & TcpFlags.RST:
        return None
    info = decode(frame)
    assert info.src_port is not None and info.dst_port is not None and info.tcp_seq is not None
    if flags & TcpFlags.ACK:
        seq, ack, out_flags = info.tcp_ack or 0, 0, int(TcpFlags.RST)
    else:
        length = (info.payload_len or 0) + bool(flags & TcpFlags.SYN) + bool(flags & TcpFlags.FIN)
        seq, ack = 0, (info.tcp_seq + length) & 0xFFFFFFFF
        out_flags = int(TcpFlags.RST | TcpFlags.ACK)
    reply = tcp_segment(dst, src, dst_ip, src_ip, info.dst_port, info.src_port, out_flags, seq, ack)
    return Answer(reply, "tcp reset")


def _group(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip.is_multicast or ip.is_unspecified or ip == ipaddress.IPv4Address("255.255.255.255")


def _later_fragment(frame: bytes) -> bool:
    """An IPv4 fragment other than the first (it carries no transport header)."""
    ethertype = int.from_bytes(frame[12:14], "big")
    if ethertype != 0x0800 or len(frame) < 34:
        return False
    return bool(int.from_bytes(frame[20:22], "big") & 0x1FFF)
