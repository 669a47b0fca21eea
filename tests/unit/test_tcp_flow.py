"""TcpFlow: the numbers both ends of a lab TCP connection put in their segments."""

from __future__ import annotations

import ipaddress

import pytest

from liveport.model import packets
from liveport.model.addr import Mac
from liveport.model.errors import Conflict, InvalidInput
from liveport.model.packets import TcpFlags
from liveport.model.tcp import (
    DATA_SIZE,
    WINDOW,
    Endpoint,
    Segment,
    Side,
    State,
    TcpFlow,
    flags_text,
    parse_flags,
)

CLIENT = Endpoint(Mac.parse("00:00:00:00:00:01"), ipaddress.ip_address("10.0.0.1"), 40000)
SERVER = Endpoint(Mac.parse("00:00:00:00:00:02"), ipaddress.ip_address("10.0.0.2"), 7002)


def _flow(client_isn: int = 0x1000_0000, server_isn: int = 0x2000_0000) -> TcpFlow:
    return TcpFlow(CLIENT, SERVER, client_isn, server_isn)


def _numbers(segment: Segment) -> tuple[str, int, int, int, int | None]:
    info = packets.decode(segment.frame)
    assert info.tcp_flags is not None and info.tcp_seq is not None and info.tcp_ack is not None
    assert info.payload_len is not None
    return flags_text(info.tcp_flags), info.tcp_seq, info.tcp_ack, info.payload_len, info.seq


def test_a_whole_connection_is_numbered_as_a_stack_would() -> None:
    flow = _flow(client_isn=1000, server_isn=5000)
    segments = [
        *flow.handshake(),
        flow.data(Side.CLIENT, 1),
        flow.data(Side.CLIENT, 2),
        flow.ack(Side.SERVER),
        flow.data(Side.SERVER, 1),
        *flow.close(),
    ]
    n = DATA_SIZE
    assert [_numbers(s) for s in segments] == [
        ("S", 1000, 0, 0, None),
        ("SA", 5000, 1001, 0, None),
        ("A", 1001, 5001, 0, None),
        ("PA", 1001, 5001, n, 1),
        ("PA", 1001 + n, 5001, n, 2),
        ("A", 5001, 1001 + 2 * n, 0, None),
        ("PA", 5001, 1001 + 2 * n, n, 1),
        ("FA", 1001 + 2 * n, 5001 + n, 0, None),
        ("FA", 5001 + n, 1002 + 2 * n, 0, None),
        ("A", 1002 + 2 * n, 5002 + n, 0, None),
    ]
    assert [s.side for s in segments[:3]] == [Side.CLIENT, Side.SERVER, Side.CLIENT]
    assert flow.state is State.CLOSED_DONE
    info = packets.decode(segments[0].frame)
    assert (info.src_port, info.dst_port, str(info.src_ip), str(info.dst_ip)) == (
        40000,
        7002,
        "10.0.0.1",
        "10.0.0.2",
    )


def test_sequence_numbers_wrap_around() -> None:
    flow = _flow(client_isn=(1 << 32) - 10)
    flow.handshake()
    first = flow.data(Side.CLIENT, 7)
    second = flow.data(Side.CLIENT, 8)
    assert first.seq == (1 << 32) - 9
    assert second.seq == (first.seq + DATA_SIZE) % (1 << 32)
    assert _numbers(flow.ack(Side.SERVER))[2] == (second.seq + DATA_SIZE) % (1 << 32)


def test_data_stops_at_the_peers_window_until_it_acknowledges() -> None:
    flow = _flow()
    flow.handshake()
    sent = 0
    while flow.window_left(Side.CLIENT) >= DATA_SIZE:
        if sent * DATA_SIZE >= WINDOW // 2:
            assert flow.ack_due(Side.SERVER)
        flow.data(Side.CLIENT, sent)
        sent += 1
    assert sent == WINDOW // DATA_SIZE
    with pytest.raises(Conflict, match="must acknowledge first"):
        flow.data(Side.CLIENT, sent)
    flow.ack(Side.SERVER)
    assert flow.window_left(Side.CLIENT) == WINDOW and not flow.ack_due(Side.SERVER)
    flow.data(Side.CLIENT, sent)
    # Data the server sends acknowledges the client's too.
    flow.data(Side.SERVER, 0)
    assert flow.window_left(Side.CLIENT) == WINDOW


def test_a_reset_carries_the_senders_next_sequence_number() -> None:
    flow = _flow()
    flow.handshake()
    flow.data(Side.SERVER, 1)
    rst = flow.rst(Side.SERVER)
    assert rst.flags == TcpFlags.RST | TcpFlags.ACK
    assert rst.seq == flow.nxt[Side.SERVER] and flow.state is State.CLOSED_DONE


def test_out_of_order_steps_are_refused() -> None:
    flow = _flow()
    with pytest.raises(Conflict, match="needs a connection that is syn-sent"):
        flow.syn_ack()
    with pytest.raises(Conflict, match="cannot send data"):
        flow.data(Side.CLIENT, 1)
    flow.handshake()
    flow.fin(Side.CLIENT)
    with pytest.raises(Conflict, match="cannot send data"):
        flow.data(Side.CLIENT, 1)
    flow.data(Side.SERVER, 1)  # half-closed: the server may still send
    with pytest.raises(InvalidInput, match="ISN 0"):
        _flow(client_isn=0)
    with pytest.raises(InvalidInput, match="not between 1 and 65535"):
        Endpoint(CLIENT.mac, CLIENT.ip, 0)
    v6 = Endpoint(CLIENT.mac, ipaddress.ip_address("fd00::1"), 1)
    with pytest.raises(InvalidInput, match="not of one family"):
        TcpFlow(v6, SERVER)


def test_hand_made_segments_leave_the_state_alone() -> None:
    flow = _flow()
    flow.handshake()
    before = dict(flow.nxt)
    odd = flow.segment(Side.SERVER, parse_flags("pa"), seq=123, ack=456, payload=b"x")
    assert _numbers(odd)[:4] == ("PA", 123, 456, 1)
    assert flow.nxt == before


def test_flag_letters() -> None:
    assert parse_flags("SA") == TcpFlags.SYN | TcpFlags.ACK
    assert parse_flags("none") == 0 and flags_text(0) == "none"
    assert flags_text(parse_flags("FPA")) == "FPA"
    with pytest.raises(InvalidInput, match="'X' is not one of"):
        parse_flags("SX")


def test_ipv6_segments_and_padding() -> None:
    a = Endpoint(CLIENT.mac, ipaddress.ip_address("fd00::1"), 1234)
    b = Endpoint(SERVER.mac, ipaddress.ip_address("fd00::2"), 80)
    flow = TcpFlow(a, b)
    syn = flow.syn()
    info = packets.decode(syn.frame)
    assert info.kind is packets.Kind.TCP and info.payload_len == 0
    # An IPv4 pure ACK is padded to 60 bytes; the padding is not payload.
    ack = _flow().segment(Side.CLIENT, TcpFlags.ACK)
    assert len(ack.frame) == 60 and packets.decode(ack.frame).payload_len == 0
