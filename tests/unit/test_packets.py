import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liveport.model import packets
from liveport.model.addr import IPAddress, Mac
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
    assert packets.checksum(pseudo + icmp) == 0  # a valid checksum sums to zero
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
    assert packets.checksum(frame[14:34]) == 0  # IPv4 header checksum


def test_short_frame_is_an_error() -> None:
    with pytest.raises(InvalidInput):
        packets.decode(b"\x00" * 10)


IP6 = ipaddress.IPv6Address("fd00::1")
IP6_PEER = ipaddress.IPv6Address("fd00::2")
PEER = Mac.parse("00:00:00:00:00:02")
IP_PEER = ipaddress.IPv4Address("10.0.0.2")


def _l4_checksum_is_valid(frame: bytes) -> bool:
    """Recomputes the TCP/UDP/ICMPv6 checksum of an untagged IP frame over its pseudo-header."""
    if frame[12:14] == b"\x08\x00":
        ihl = (frame[14] & 0x0F) * 4
        total = struct.unpack("!H", frame[16:18])[0]
        segment = frame[14 + ihl : 14 + total]
        pseudo = frame[26:34] + struct.pack("!BBH", 0, frame[23], len(segment))
    else:
        length = struct.unpack("!H", frame[18:20])[0]
        segment = frame[54 : 54 + length]
        pseudo = frame[22:54] + struct.pack("!I3xB", len(segment), frame[20])
    return packets.checksum(pseudo + segment) == 0


@pytest.mark.parametrize(("src_ip", "dst_ip"), [(IP, IP_PEER), (IP6, IP6_PEER)], ids=["v4", "v6"])
def test_a_tcp_segment_decodes_to_its_ports_and_flags(src_ip: IPAddress, dst_ip: IPAddress) -> None:
    flags = packets.TcpFlags.SYN | packets.TcpFlags.ACK
    frame = packets.tcp_segment(M, PEER, src_ip, dst_ip, 40000, 22, flags, 7, 9, b"hello")
    info = packets.decode(frame)
    assert (info.kind, info.ip_proto, info.src_port, info.dst_port, info.tcp_flags) == (
        packets.Kind.TCP,
        packets.IPPROTO_TCP,
        40000,
        22,
        0x12,
    )
    assert (info.src_ip, info.dst_ip) == (src_ip, dst_ip)
    assert _l4_checksum_is_valid(frame)
    assert "ports 40000 > 22" in info.summary() and "SYN" in info.summary()


def test_tcp_segments_carry_sequence_numbers_and_payload() -> None:
    frame = packets.tcp_segment(M, PEER, IP, IP_PEER, 1, 2, packets.TcpFlags.ACK, 5, 6, b"xyz")
    seq, ack = struct.unpack("!II", frame[34 + 4 : 34 + 12])
    assert (seq, ack) == (5, 6)
    assert frame[54:57] == b"xyz"


@pytest.mark.parametrize(("src_ip", "dst_ip"), [(IP, IP_PEER), (IP6, IP6_PEER)], ids=["v4", "v6"])
def test_a_udp_datagram_decodes_to_its_ports(src_ip: IPAddress, dst_ip: IPAddress) -> None:
    frame = packets.udp_datagram(M, PEER, src_ip, dst_ip, 68, 67, b"dhcp")
    info = packets.decode(frame)
    assert (info.kind, info.src_port, info.dst_port, info.seq) == (packets.Kind.UDP, 68, 67, None)
    assert _l4_checksum_is_valid(frame)


def test_icmp_echoes_decode_to_their_type_and_code() -> None:
    v4 = packets.icmp4_echo(M, PEER, IP, IP_PEER, ident=1, seq=2)
    v4_reply = packets.icmp4_echo(M, PEER, IP, IP_PEER, reply=True)
    v6 = packets.icmp6_echo(M, PEER, IP6, IP6_PEER, ident=1, seq=2)
    assert (packets.decode(v4).kind, packets.decode(v4).icmp_type) == (packets.Kind.ICMP, 8)
    assert packets.decode(v4_reply).icmp_type == 0
    assert (packets.decode(v6).kind, packets.decode(v6).icmp_type) == (packets.Kind.ICMPV6, 128)
    assert packets.checksum(v4[34:42]) == 0  # ICMPv4 covers only the message
    assert _l4_checksum_is_valid(v6)  # ICMPv6 covers the pseudo-header too


def test_ttl_and_tos_reach_the_ip_header() -> None:
    v4 = packets.tcp_segment(M, PEER, IP, IP_PEER, 1, 2, ttl=3, tos=0xB8)
    assert (v4[15], v4[22]) == (0xB8, 3)
    assert packets.checksum(v4[14:34]) == 0
    v6 = packets.udp_datagram(M, PEER, IP6, IP6_PEER, 1, 2, ttl=255, tos=0xB8)
    assert (struct.unpack("!I", v6[14:18])[0] >> 20 & 0xFF, v6[21]) == (0xB8, 255)


def test_a_vlan_tag_is_decoded_and_the_inner_frame_kept() -> None:
    frame = packets.vlan_tagged(packets.tcp_segment(M, PEER, IP, IP_PEER, 1, 22), vid=5, pcp=3)
    info = packets.decode(frame)
    assert (info.vlan_tci, info.ethertype, info.kind, info.dst_port) == (
        3 << 13 | 5,
        packets.ETH_IPV4,
        packets.Kind.TCP,
        22,
    )
    assert info.to_json()["vlan_tci"] == 3 << 13 | 5
    with pytest.raises(InvalidInput, match="VID has 12 bits"):
        packets.vlan_tagged(frame, vid=4096)


def test_addresses_of_two_families_are_refused() -> None:
    with pytest.raises(InvalidInput, match="not of one address family"):
        packets.tcp_segment(M, PEER, IP, IP6_PEER, 1, 2)


def test_frames_the_lab_decodes_keep_their_json() -> None:
    # Captures written before ports were decoded must read the same: new keys only appear
    # for frames that have them.
    info = packets.decode(packets.garp(M, IP))
    assert set(info.to_json()) == {
        "src",
        "dst",
        "ethertype",
        "kind",
        "length",
        "src_ip",
        "target",
        "op",
    }
