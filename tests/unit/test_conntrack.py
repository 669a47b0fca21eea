"""The conntrack model: what ct_state a packet gets, what a commit stores, marks, labels and
zones. SEQUENCE is what ovs-vswitchd 3.1's userspace conntrack does with a series of
packets (tests/lab/test_conntrack_lab.py keeps checking it against a real switch)."""

from __future__ import annotations

import pytest

from liveport.model import packets
from liveport.model.conntrack import (
    ICMP_ID,
    Connection,
    Conntrack,
    ConnTuple,
    TcpState,
    Verdict,
    packet_key,
)
from liveport.model.flows import ETH_IPV4, ETH_IPV6, CtState, FlowError, Load
from liveport.model.flowsim import packet_fields

from tests.conntrack_cases import (
    ACK,
    EST,
    FIN,
    I6A,
    I6B,
    IA,
    IB,
    INV,
    NEW,
    REL,
    ROUTER,
    RPL,
    RST,
    SEQUENCE,
    SYN,
    TRK,
    A,
    B,
    echo,
    fragment,
    sctp,
    tcp,
    udp,
)


def run(sequence: list[tuple[str, bytes, CtState]], zone: int = 7) -> tuple[list[str], Conntrack]:
    """The sequence through one conntrack; the mismatches, named."""
    ct = Conntrack()
    wrong = []
    for what, frame, expected in sequence:
        verdict, ct = ct.track(packet_fields(frame, in_port=1), zone, commit=True)
        if verdict.state != expected:
            wrong.append(f"{what}: {verdict.state!r}, OVS: {expected!r}")
    return wrong, ct


def test_ct_state_is_what_ovs_gave_each_packet() -> None:
    wrong, _ = run(SEQUENCE)
    assert wrong == []


def test_the_connections_are_those_ovs_stored() -> None:
    _, ct = run(SEQUENCE)
    v4 = [(c.orig.proto, c.orig.src_port, c.orig.dst_port, c.orig.icmp_id) for c in ct.zone(7)]
    assert sorted(v4) == [
        (1, 0, 0, 7),  # echo
        (1, 0, 0, 8),
        (1, 0, 0, 9),  # timestamp
        (6, 1234, 22, 0),  # the IPv6 one
        (6, 40000, 80, 0),
        (6, 40002, 82, 0),
        (17, 5000, 53, 0),
        (58, 0, 0, 3),
        (132, 0, 0, 0),  # SCTP: no ports in OVS 3.1
    ]
    handshake = ct.get(7, ConnTuple(ETH_IPV4, int(IA), int(IB), 6, 40000, 80))
    assert handshake is not None
    assert (handshake.tcp_orig, handshake.tcp_reply) == (TcpState.ESTABLISHED,) * 2
    picked_up = ct.get(7, ConnTuple(ETH_IPV4, int(IA), int(IB), 6, 40002, 82))
    assert picked_up is not None
    assert (picked_up.tcp_orig, picked_up.tcp_reply) == (TcpState.SYN_SENT, TcpState.CLOSED)
    timestamp = ct.get(7, ConnTuple(ETH_IPV4, int(IA), int(IB), 1, 0, 0, 9, 13))
    assert timestamp is not None and not timestamp.answered


@pytest.mark.parametrize(
    ("frame", "key"),
    [
        (udp(5000, 53), ConnTuple(ETH_IPV4, int(IA), int(IB), 17, 5000, 53)),
        (echo(7), ConnTuple(ETH_IPV4, int(IA), int(IB), 1, 0, 0, 7, 8)),
        (echo(7, reply=True), ConnTuple(ETH_IPV4, int(IB), int(IA), 1, 0, 0, 7, 0)),
        (
            packets.icmp6_echo(A, B, I6A, I6B, 3),
            ConnTuple(ETH_IPV6, int(I6A), int(I6B), 58, 0, 0, 3, 128),
        ),
        (sctp(5000, 6000), ConnTuple(ETH_IPV4, int(IA), int(IB), 132)),
    ],
)
def test_packets_are_keyed_by_their_tuple(frame: bytes, key: ConnTuple) -> None:
    assert packet_key(packet_fields(frame, in_port=1)) == (key, False)


def test_an_icmp_error_is_keyed_by_the_reply_tuple_of_what_it_embeds() -> None:
    about = udp(5000, 53)
    expected = ConnTuple(ETH_IPV4, int(IB), int(IA), 17, 53, 5000)
    for error in (
        packets.icmp_error(B, A, IB, IA, about),
        packets.icmp_error(B, A, ROUTER, IA, about, kind=11, code=0),
    ):
        assert packet_key(packet_fields(error, in_port=1)) == (expected, True)
    v6 = packets.udp_datagram(A, B, I6A, I6B, 5000, 53)
    error6 = packets.icmp_error(B, A, I6B, I6A, v6)
    assert packet_key(packet_fields(error6, in_port=1)) == (
        ConnTuple(ETH_IPV6, int(I6B), int(I6A), 17, 53, 5000),
        True,
    )


def test_tuples_reverse_icmp_types() -> None:
    request = ConnTuple(ETH_IPV4, 1, 2, 1, 0, 0, 5, 13)
    assert request.reversed() == ConnTuple(ETH_IPV4, 2, 1, 1, 0, 0, 5, 14)
    assert request.reversed().reversed() == request
    assert ConnTuple(ETH_IPV6, 1, 2, 58, 0, 0, 5, 128).reversed().icmp_type == 129


def test_fields_without_the_icmp_id_count_as_id_zero() -> None:
    fields = packet_fields(echo(0), in_port=1)
    del fields[ICMP_ID]
    assert packet_key(fields) == packet_key(packet_fields(echo(0), in_port=1))


# ----- commit, mark and label -------------------------------------------------------------


def fields_of(frame: bytes) -> dict[str, int]:
    return packet_fields(frame, in_port=1)


def test_without_commit_nothing_is_stored_and_every_packet_is_new() -> None:
    ct = Conntrack()
    for _ in range(2):
        verdict, ct = ct.track(fields_of(udp(5000, 53)), 1)
        assert verdict == Verdict(TRK | NEW)
    assert len(ct) == 0


def test_commit_stores_the_packets_direction_as_the_original() -> None:
    _, ct = Conntrack().track(fields_of(udp(53, 5000, back=True)), 1, commit=True)
    (conn,) = ct.zone(1)
    assert conn.orig == ConnTuple(ETH_IPV4, int(IB), int(IA), 17, 53, 5000)
    verdict, _ = ct.track(fields_of(udp(5000, 53)), 1)
    assert verdict.state == TRK | EST | RPL


def test_a_stored_connection_is_updated_without_commit() -> None:
    _, ct = Conntrack().track(fields_of(udp(5000, 53)), 1, commit=True)
    _, ct = ct.track(fields_of(udp(53, 5000, back=True)), 1)  # answered, without commit
    verdict, _ = ct.track(fields_of(udp(5000, 53)), 1)
    assert verdict.state == TRK | EST
    assert ct.zone(1)[0].answered


def test_zones_are_separate() -> None:
    _, ct = Conntrack().track(fields_of(udp(5000, 53)), 1, commit=True)
    _, ct = ct.track(fields_of(udp(53, 5000, back=True)), 1)
    assert ct.track(fields_of(udp(5000, 53)), 1)[0].state == TRK | EST
    assert ct.track(fields_of(udp(5000, 53)), 2)[0].state == TRK | NEW
    assert ct.track(fields_of(udp(53, 5000, back=True)), 2)[0].state == TRK | NEW
    _, ct = ct.track(fields_of(udp(5000, 53)), 2, commit=True)
    assert [z for z, _ in ct] == [1, 2]


MARK_BIT0 = Load("ct_mark", 1, 0, 1)
MARK_BIT1 = Load("ct_mark", 1, 1, 1)


@pytest.mark.parametrize(
    ("loads", "mark", "label"),
    [
        ((), 0, 0),
        ((MARK_BIT0,), 1, 0),
        ((MARK_BIT0, MARK_BIT1), 3, 0),
        ((Load("ct_mark", 0xDEADBEEF), MARK_BIT0), 0xDEADBEEF, 0),
        ((Load("ct_mark", 0xFF), Load("ct_mark", 0, 4, 4)), 0x0F, 0),
        ((Load("ct_label", 1 << 127 | 5),), 0, 1 << 127 | 5),
        ((Load("ct_label", 0xABC, 64, 64), Load("ct_label", 1, 0, 1)), 0, 0xABC << 64 | 1),
    ],
)
def test_a_commit_loads_mark_and_label_into_the_connection(
    loads: tuple[Load, ...], mark: int, label: int
) -> None:
    verdict, ct = Conntrack().track(fields_of(udp(5000, 53)), 1, commit=True, loads=loads)
    assert verdict == Verdict(TRK | NEW, mark, label)
    (conn,) = ct.zone(1)
    assert (conn.mark, conn.label) == (mark, label)
    # Later packets of the connection, either way, carry them.
    assert ct.track(fields_of(udp(53, 5000, back=True)), 1)[0] == Verdict(
        TRK | EST | RPL, mark, label
    )


def test_exec_changes_the_mark_of_an_existing_connection() -> None:
    _, ct = Conntrack().track(fields_of(udp(5000, 53)), 1, commit=True, loads=[MARK_BIT0])
    verdict, ct = ct.track(fields_of(udp(53, 5000, back=True)), 1, commit=True, loads=[MARK_BIT1])
    assert verdict == Verdict(TRK | EST | RPL, 3)
    assert ct.zone(1)[0].mark == 3
    # A related packet (an ICMP error) gets the connection's mark, and exec applies.
    error = packets.icmp_error(B, A, IB, IA, udp(5000, 53))
    assert ct.track(fields_of(error), 1)[0] == Verdict(TRK | REL | RPL, 3)
    verdict, ct = ct.track(fields_of(error), 1, commit=True, loads=[Load("ct_mark", 0, 0, 1)])
    assert verdict.mark == 2 and ct.zone(1)[0].mark == 2


def test_an_invalid_segment_of_a_connection_carries_its_mark() -> None:
    _, ct = Conntrack().track(fields_of(tcp(40000, 80, SYN)), 1, commit=True, loads=[MARK_BIT0])
    assert ct.track(fields_of(tcp(40000, 80, FIN)), 1)[0] == Verdict(TRK | INV, 1)
    # A packet conntrack cannot key carries nothing.
    assert ct.track(fields_of(tcp(40000, 80, SYN | RST)), 1)[0] == Verdict(TRK | INV, 1)
    assert ct.track(fields_of(fragment()), 1)[0] == Verdict(TRK | INV)


def test_an_invalid_packet_is_not_committed() -> None:
    verdict, ct = Conntrack().track(fields_of(tcp(80, 40000, SYN | ACK)), 1, commit=True)
    assert verdict == Verdict(TRK | INV) and len(ct) == 0


def test_exec_needs_commit_and_loads_only_mark_and_label() -> None:
    with pytest.raises(FlowError, match="commit"):
        Conntrack().track(fields_of(udp(5000, 53)), 1, loads=[MARK_BIT0])
    with pytest.raises(FlowError, match="ct_mark or ct_label"):
        Conntrack().track(fields_of(udp(5000, 53)), 1, commit=True, loads=[Load("reg0", 1)])


def test_a_track_that_changes_nothing_returns_the_same_conntrack() -> None:
    _, ct = Conntrack().track(fields_of(udp(5000, 53)), 1, commit=True)
    _, ct = ct.track(fields_of(udp(53, 5000, back=True)), 1)
    _, again = ct.track(fields_of(udp(5000, 53)), 1, commit=True)
    assert again is ct


def test_tcp_sides_follow_the_handshake() -> None:
    steps = [
        (tcp(40000, 80, SYN), TcpState.SYN_SENT, TcpState.CLOSED),
        (tcp(80, 40000, SYN | ACK, back=True), TcpState.ESTABLISHED, TcpState.SYN_SENT),
        (tcp(40000, 80, ACK), TcpState.ESTABLISHED, TcpState.ESTABLISHED),
    ]
    ct = Conntrack()
    for frame, orig, reply in steps:
        _, ct = ct.track(fields_of(frame), 1, commit=True)
        (conn,) = ct.zone(1)
        assert (conn.tcp_orig, conn.tcp_reply) == (orig, reply)


def test_a_connection_is_found_from_either_direction_in_its_zone_only() -> None:
    _, ct = Conntrack().track(fields_of(udp(5000, 53)), 9, commit=True)
    _, ct = ct.track(fields_of(udp(5000, 53)), 2, commit=True)
    assert [zone for zone, _ in ct] == [2, 9]
    orig = ConnTuple(ETH_IPV4, int(IA), int(IB), 17, 5000, 53)
    conn = ct.get(9, orig)
    assert conn == Connection(orig)
    assert ct.lookup(9, orig) == (conn, False)
    assert ct.lookup(9, orig.reversed()) == (conn, True)
    assert ct.get(9, orig.reversed()) is None
    assert ct.lookup(3, orig) is None
