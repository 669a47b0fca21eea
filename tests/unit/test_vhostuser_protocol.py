"""The vhost-user codec on plain bytes: layouts, flags, names and refusals."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liveport.vhostuser import protocol as p

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)


def test_request_numbers_follow_the_spec() -> None:
    numbers = {request.name: request.value for request in p.Request}
    assert numbers["GET_FEATURES"] == 1
    assert numbers["GET_PROTOCOL_FEATURES"] == 15
    assert numbers["SET_VRING_ENABLE"] == 18
    assert numbers["SEND_RARP"] == 19
    assert numbers["GET_CONFIG"] == 24
    assert numbers["GET_STATUS"] == 40
    assert sorted(numbers.values()) == list(range(1, 41))
    assert p.request_name(11) == "GET_VRING_BASE"
    assert p.request_name(99) == "REQUEST_99"


def test_header_layout_is_three_native_u32() -> None:
    header = p.Header(p.Request.SET_FEATURES, p.VERSION | p.FLAG_NEED_REPLY, 8)
    raw = p.encode_header(header)
    assert raw == struct.pack("=III", 2, 0x9, 8)
    assert p.decode_header(raw) == header
    assert header.version == 1 and header.need_reply and not header.is_reply


def test_reply_flags_are_exactly_version_and_reply() -> None:
    answer = p.reply(p.Request.GET_FEATURES, p.encode_u64(5))
    assert answer.flags == 0x5
    assert p.encode(answer) == struct.pack("=IIIQ", 1, 0x5, 8, 5)


def test_ack_carries_zero_for_success_and_non_zero_for_failure() -> None:
    assert p.decode_u64(p.ack(p.Request.SET_MEM_TABLE, True).payload) == 0
    assert p.decode_u64(p.ack(p.Request.SET_MEM_TABLE, False).payload) == 1


@given(u32, u32, st.binary(max_size=64))
def test_message_roundtrip(request: int, flags: int, payload: bytes) -> None:
    message = p.Message(request, flags, payload)
    assert p.decode(p.encode(message)) == message


def test_decode_refuses_short_or_oversized_messages() -> None:
    with pytest.raises(p.ProtocolError, match="header is 12 bytes"):
        p.decode_header(b"\0" * 5)
    with pytest.raises(p.ProtocolError, match="too large"):
        p.decode_header(struct.pack("=III", 1, 1, p.MAX_PAYLOAD + 1))
    with pytest.raises(p.ProtocolError, match="header says 8 payload bytes, got 2"):
        p.decode(struct.pack("=III", 2, 1, 8) + b"ab")


@given(u32, u32)
def test_vring_state_roundtrip(index: int, num: int) -> None:
    state = p.VringState(index, num)
    assert p.decode_vring_state(p.encode_vring_state(state)) == state


@given(u32, u32, u64, u64, u64, u64)
def test_vring_addr_roundtrip(
    index: int, flags: int, desc: int, used: int, avail: int, log: int
) -> None:
    addr = p.VringAddr(index, flags, desc, used, avail, log)
    raw = p.encode_vring_addr(addr)
    assert len(raw) == 40
    assert p.decode_vring_addr(raw) == addr


def test_vring_addr_log_flag() -> None:
    assert p.VringAddr(0, p.VRING_F_LOG, 0, 0, 0, 0).logging
    assert not p.VringAddr(0, 0, 0, 0, 0, 0).logging


def test_vring_file_index_and_nofd_bit() -> None:
    assert p.encode_vring_file(p.VringFile(3, no_fd=True)) == p.encode_u64(0x103)
    assert p.decode_vring_file(p.encode_u64(0x101)) == p.VringFile(1, no_fd=True)
    assert p.decode_vring_file(p.encode_u64(2)) == p.VringFile(2, no_fd=False)


@given(st.lists(st.tuples(u64, u64, u64, u64), max_size=p.MAX_REGIONS))
def test_memory_table_roundtrip(raw_regions: list[tuple[int, int, int, int]]) -> None:
    regions = tuple(p.MemoryRegion(*r) for r in raw_regions)
    payload = p.encode_memory_table(regions)
    assert len(payload) == 8 + 32 * len(regions)
    assert p.decode_memory_table(payload) == regions


def test_memory_table_refuses_too_many_or_truncated_regions() -> None:
    with pytest.raises(p.ProtocolError, match="9 regions"):
        p.decode_memory_table(struct.pack("=II", 9, 0))
    with pytest.raises(p.ProtocolError, match="needs 40 bytes"):
        p.decode_memory_table(struct.pack("=II", 1, 0))
    with pytest.raises(p.ProtocolError, match="at most 8"):
        p.encode_memory_table(tuple(p.MemoryRegion(0, 0, 0, 0) for _ in range(9)))


def test_single_region_has_64_bits_of_padding_first() -> None:
    region = p.MemoryRegion(1, 2, 3, 4)
    raw = p.encode_single_region(region)
    assert raw == struct.pack("=QQQQQ", 0, 1, 2, 3, 4)
    assert p.decode_single_region(raw) == region


def test_log_and_inflight_roundtrip() -> None:
    log = p.LogArea(size=4096, offset=0)
    assert p.decode_log(p.encode_log(log)) == log
    inflight = p.Inflight(8192, 0, 2, 256)
    assert len(p.encode_inflight(inflight)) == 20
    assert p.decode_inflight(p.encode_inflight(inflight)) == inflight


def test_config_space_roundtrip_and_limit() -> None:
    config = p.ConfigSpace(offset=0, size=6, flags=0, data=b"\x52\x54\0\x12\x34\x56")
    assert p.decode_config(p.encode_config(config)) == config
    with pytest.raises(p.ProtocolError, match="at most 256"):
        p.decode_config(struct.pack("=III", 0, 257, 0))


def test_mac_is_the_first_six_bytes_of_the_u64() -> None:
    payload = p.encode_mac("52:54:00:12:34:56")
    assert payload == bytes([0x52, 0x54, 0, 0x12, 0x34, 0x56, 0, 0])
    assert p.decode_mac(payload) == "52:54:00:12:34:56"
    with pytest.raises(p.ProtocolError):
        p.encode_mac("52:54:00")


def test_short_payloads_are_protocol_errors() -> None:
    with pytest.raises(p.ProtocolError, match="u64 payload needs 8 bytes, got 4"):
        p.decode_u64(b"\0" * 4)
    with pytest.raises(p.ProtocolError):
        p.decode_vring_state(b"\0" * 7)
    with pytest.raises(p.ProtocolError):
        p.decode_vring_addr(b"\0" * 39)


def test_describe_renders_requests_for_logs() -> None:
    set_features = p.Message(
        p.Request.SET_FEATURES, p.VERSION | p.FLAG_NEED_REPLY, p.encode_u64(0x170008000)
    )
    assert p.describe(set_features) == "SET_FEATURES 0x170008000 [need_reply]"
    kick = p.Message(p.Request.SET_VRING_KICK, p.VERSION, p.encode_u64(1))
    assert p.describe(kick, fds=1) == "SET_VRING_KICK ring=1 +1fd"
    rarp = p.Message(p.Request.SEND_RARP, p.VERSION, p.encode_mac("52:54:00:00:00:01"))
    assert p.describe(rarp) == "SEND_RARP 52:54:00:00:00:01"
    assert p.describe(p.Message(77, p.VERSION, b"xyz")) == "REQUEST_77 3B"
    bad = p.Message(p.Request.SET_VRING_NUM, p.VERSION, b"\0")
    assert "malformed" in p.describe(bad)
