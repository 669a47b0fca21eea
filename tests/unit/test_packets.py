import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liveport.model import packets
from liveport.model.addr import Mac
from liveport.model.errors import InvalidInput

M = Mac.parse("00:00:00:00:00:01")
IP = ipaddress.IPv4Address("10.0.0.1")


def test_rarp_is_qemus_announcement() -> None:
    frame = packets.rarp(M)
    info = packets.decode(frame)
    assert info.kind is packets.Kind.RARP
    assert info.op == 3 and info.src == M and info.dst.is_broadcast
    assert frame[12:14] == b"\x80\x35"
    assert frame[22:28] == M.packed and frame[32:38] == M.packed  # sha and tha are the MAC


def test_garp_has_equal_sender_and_target() -> None:
    info = packets.decode(packets.garp(M, IP))
    assert info.kind is packets.Kind.GARP
    assert info.src_ip == IP and info.target == IP


def test_arp_request_is_not_garp() -> None:
    info = packets.decode(packets.arp_request(M, IP, ipaddress.IPv4Address("10.0.0.2")))
    assert info.kind is packets.Kind.ARP


def test_unsolicited_na_checksum_and_fields() -> None:
    target = M.ipv6_link_local()
    frame = packets.unsolicited_na(M, target)
    info = packets.decode(frame)
    assert info.kind is packets.Kind.NA and info.target == target
    assert str(info.dst) == "33:33:00:00:00:01"
    ip6 = frame[14:54]
    icmp = frame[54 : 54 + struct.unpack("!H", ip6[4:6])[0]]
    pseudo = ip6[8:40] + struct.pack("!I3xB", len(icmp), 58)
    assert packets._checksum(pseudo + icmp) == 0  # a valid checksum sums to zero
    flags = struct.unpack("!I", icmp[4:8])[0]
    assert flags & packets.NA_FLAG_OVERRIDE and not flags & packets.NA_FLAG_SOLICITED


@given(seq=st.integers(0, 2**64 - 1), sent=st.integers(0, 2**64 - 1))
def test_udp_sequence_round_trip(seq: int, sent: int) -> None:
    dst = Mac.parse("00:00:00:00:00:02")
    frame = packets.udp_seq(M, dst, IP, ipaddress.IPv4Address("10.0.0.2"), seq, sent)
    info = packets.decode(frame)
    assert (info.kind, info.seq, info.sent_ns, info.src, info.dst) == (
        packets.Kind.UDP,
        seq,
        sent,
        M,
        dst,
    )
    assert packets._checksum(frame[14:34]) == 0  # IPv4 header checksum


def test_short_frame_is_an_error() -> None:
    with pytest.raises(InvalidInput):
        packets.decode(b"\x00" * 10)
