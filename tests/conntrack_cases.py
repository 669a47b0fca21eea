"""Packets with the ct_state ovs-vswitchd 3.1's userspace conntrack (the dummy datapath)
gives each, in this order, in one zone where every new connection is committed.
tests/unit/test_conntrack.py checks the model against the states;
tests/lab/test_conntrack_lab.py sends the same packets through a real ovs-vswitchd and the
simulator and compares what each does."""

from __future__ import annotations

import ipaddress
import struct

from liveport.model import packets
from liveport.model.addr import Mac
from liveport.model.flows import CtState
from liveport.model.packets import TcpFlags
from liveport.model.tcp import Endpoint, Side, TcpFlow

A, B = Mac.parse("02:00:00:00:00:0a"), Mac.parse("02:00:00:00:00:0b")
IA, IB = ipaddress.IPv4Address("10.0.0.10"), ipaddress.IPv4Address("10.0.0.11")
ROUTER = ipaddress.IPv4Address("10.0.0.1")
I6A, I6B = ipaddress.IPv6Address("fd00::a"), ipaddress.IPv6Address("fd00::b")
SYN, ACK, FIN, RST, PSH = TcpFlags.SYN, TcpFlags.ACK, TcpFlags.FIN, TcpFlags.RST, TcpFlags.PSH

TRK, NEW, EST, REL, RPL, INV = (
    CtState.TRK,
    CtState.NEW,
    CtState.EST,
    CtState.REL,
    CtState.RPL,
    CtState.INV,
)


def tcp(src_port: int, dst_port: int, flags: int, *, back: bool = False, seq: int = 2) -> bytes:
    """A segment of no particular connection (numbered as no stack would)."""
    if back:
        return packets.tcp_segment(B, A, IB, IA, src_port, dst_port, flags, seq, seq + 1000)
    return packets.tcp_segment(A, B, IA, IB, src_port, dst_port, flags, seq, seq + 1000)


def handshake() -> list[tuple[str, bytes, CtState]]:
    """A connection from A:40000 to B:80 numbered as real stacks would (TcpFlow)."""
    flow = TcpFlow(Endpoint(A, IA, 40000), Endpoint(B, IB, 80))
    syn = flow.syn().frame
    return [
        ("tcp syn", syn, TRK | NEW),
        ("tcp syn again", syn, TRK | NEW),
        ("tcp syn-ack", flow.syn_ack().frame, TRK | EST | RPL),
        ("tcp ack", flow.handshake_ack().frame, TRK | EST),
        ("tcp data", flow.data(Side.CLIENT, 1).frame, TRK | EST),
        ("tcp data back", flow.data(Side.SERVER, 1).frame, TRK | EST | RPL),
        ("tcp ack back", flow.ack(Side.CLIENT).frame, TRK | EST),
        ("fin without ack", flow.segment(Side.CLIENT, TcpFlags.FIN).frame, TRK | INV),
    ]


def udp(src_port: int, dst_port: int, *, back: bool = False) -> bytes:
    if back:
        return packets.udp_datagram(B, A, IB, IA, src_port, dst_port, b"r")
    return packets.udp_datagram(A, B, IA, IB, src_port, dst_port, b"q")


def echo(ident: int, *, reply: bool = False) -> bytes:
    if reply:
        return packets.icmp4_echo(B, A, IB, IA, ident, reply=True)
    return packets.icmp4_echo(A, B, IA, IB, ident)


def icmp_message(icmp_type: int, code: int, rest: bytes) -> bytes:
    message = struct.pack("!BBH", icmp_type, code, 0) + rest
    message = message[:2] + struct.pack("!H", packets.checksum(message)) + message[4:]
    return packets._ip_frame(A, B, IA, IB, 1, message, ttl=64, tos=0, checksum_at=None)


def fragment() -> bytes:
    frame = bytearray(udp(5000, 53))
    frame[20:22] = struct.pack("!H", 0x2000)  # more fragments, offset 0
    return bytes(frame)


def sctp(src_port: int, dst_port: int) -> bytes:
    header = struct.pack("!HHII", src_port, dst_port, 0, 0)
    return packets._ip_frame(A, B, IA, IB, 132, header, ttl=64, tos=0, checksum_at=None)


# (what, frame, the ct_state ovs-vswitchd 3.1 gives it).
SEQUENCE: list[tuple[str, bytes, CtState]] = [
    *handshake(),
    ("udp", udp(5000, 53), TRK | NEW),
    ("udp again, unanswered", udp(5000, 53), TRK | NEW),
    ("udp answer", udp(53, 5000, back=True), TRK | EST | RPL),
    ("udp after the answer", udp(5000, 53), TRK | EST),
    ("echo", echo(7), TRK | NEW),
    ("echo again, unanswered", echo(7), TRK | NEW),
    ("echo reply", echo(7, reply=True), TRK | EST | RPL),
    ("echo after the reply", echo(7), TRK | EST),
    ("echo with another id", echo(8), TRK | NEW),
    ("unreachable about udp", packets.icmp_error(B, A, IB, IA, udp(5000, 53)), TRK | REL | RPL),
    (
        "unreachable about the answer",
        packets.icmp_error(A, B, IA, IB, udp(53, 5000, back=True)),
        TRK | REL,
    ),
    (
        "time exceeded from a router",
        packets.icmp_error(B, A, ROUTER, IA, udp(5000, 53), kind=11, code=0),
        TRK | REL | RPL,
    ),
    ("unreachable about no connection", packets.icmp_error(B, A, IB, IA, udp(5001, 53)), TRK | INV),
    (
        "unreachable not about its destination",
        packets.icmp_error(B, A, IB, IB, udp(5000, 53)),
        TRK | INV,
    ),
    ("syn-ack of no connection", tcp(81, 40001, SYN | ACK, back=True), TRK | INV),
    ("mid-stream ack", tcp(40002, 82, ACK, seq=5000), TRK | NEW),
    ("mid-stream ack again", tcp(40002, 82, ACK, seq=5000), TRK | EST),
    ("mid-stream data", tcp(40002, 82, ACK | PSH, seq=5000), TRK | EST),
    ("syn+fin", tcp(40003, 83, SYN | FIN), TRK | INV),
    ("no flags", tcp(40004, 84, 0), TRK | INV),
    ("sctp", sctp(5000, 6000), TRK | NEW),
    ("sctp, other ports: the same connection", sctp(5001, 6001), TRK | NEW),
    ("udp port 0", udp(0, 53), TRK | INV),
    ("icmp timestamp", icmp_message(13, 0, struct.pack("!HH", 9, 1) + bytes(12)), TRK | NEW),
    ("echo with code 1", icmp_message(8, 1, struct.pack("!HH", 9, 1)), TRK | INV),
    ("echo reply of no connection", echo(9, reply=True), TRK | INV),
    ("icmpv6 echo", packets.icmp6_echo(A, B, I6A, I6B, 3), TRK | NEW),
    ("neighbour advertisement", packets.unsolicited_na(A, I6A), TRK | INV),
    ("tcp over ipv6", packets.tcp_segment(A, B, I6A, I6B, 1234, 22, SYN), TRK | NEW),
    ("truncated ipv4", udp(5000, 53)[: 14 + 12], TRK | INV),
    ("fragment", fragment(), TRK | INV),
    ("arp", packets.arp_request(A, IA, IB), TRK | INV),
]
