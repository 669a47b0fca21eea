"""The device-side state machine, message by message, without sockets."""

from __future__ import annotations

import os

import pytest

from liveport.model import virtio
from liveport.vhostuser import protocol as p
from liveport.vhostuser.protocol import Request
from liveport.vhostuser.session import Session, offered_features

FEATURES = virtio.mask(
    "VERSION_1 MRG_RXBUF EVENT_IDX INDIRECT_DESC VHOST_F_LOG_ALL VHOST_USER_F_PROTOCOL_FEATURES"
)
ALL_PROTOCOL = virtio.protocol_mask(
    "MQ LOG_SHMFD RARP REPLY_ACK NET_MTU BACKEND_REQ CONFIG CONFIGURE_MEM_SLOTS STATUS "
    "RESET_DEVICE CROSS_ENDIAN"
)
MODE = virtio.Mode("test.full", FEATURES, ALL_PROTOCOL, max_queue_pairs=2, max_ring_size=1024)
REPLY_ACK = virtio.protocol_mask("REPLY_ACK")
LOG_ALL = 1 << virtio.Feature.VHOST_F_LOG_ALL


def msg(request: int, payload: bytes = b"", *, need_reply: bool = False) -> p.Message:
    return p.Message(request, p.VERSION | (p.FLAG_NEED_REPLY if need_reply else 0), payload)


def state(index: int, num: int) -> bytes:
    return p.encode_vring_state(p.VringState(index, num))


def u64(value: int) -> bytes:
    return p.encode_u64(value)


def session(protocol_features: int = ALL_PROTOCOL) -> Session:
    s = Session(MODE)
    outcome = s.handle(msg(Request.SET_PROTOCOL_FEATURES, u64(protocol_features)), [])
    assert outcome.replies == ()
    return s


def only_reply(s: Session, message: p.Message, fds: list[int] | None = None) -> p.Message:
    outcome = s.handle(message, fds or [])
    assert len(outcome.replies) == 1, outcome
    (answer,) = outcome.replies
    assert answer.request == message.request and answer.flags == p.VERSION | p.FLAG_REPLY
    return answer


def test_offers_exactly_the_mode() -> None:
    s = Session(MODE)
    features = only_reply(s, msg(Request.GET_FEATURES))
    assert p.decode_u64(features.payload) == FEATURES == offered_features(MODE)
    protocol = only_reply(s, msg(Request.GET_PROTOCOL_FEATURES))
    assert p.decode_u64(protocol.payload) == ALL_PROTOCOL
    queues = only_reply(s, msg(Request.GET_QUEUE_NUM))
    assert p.decode_u64(queues.payload) == 2


def test_protocol_features_bit_is_always_offered() -> None:
    bare = virtio.Mode("bare", virtio.mask("VERSION_1"), 0, 1, 256)
    assert offered_features(bare) == virtio.mask("VERSION_1 VHOST_USER_F_PROTOCOL_FEATURES")


def test_records_negotiation_without_the_logging_bit() -> None:
    s = session()
    assert s.negotiated() is None
    acked = virtio.mask("VERSION_1 EVENT_IDX VHOST_USER_F_PROTOCOL_FEATURES")
    s.handle(msg(Request.SET_FEATURES, u64(acked | LOG_ALL)), [])
    assert s.log_all
    for index in (0, 1, 2, 3):
        s.handle(msg(Request.SET_VRING_NUM, state(index, 256 if index < 2 else 512)), [])
    assert s.negotiated() == virtio.Negotiated(acked, ALL_PROTOCOL, 2, (256, 256, 512, 512))
    s.handle(msg(Request.SET_FEATURES, u64(acked)), [])
    assert not s.log_all


def test_queue_pairs_count_one_before_rings_are_sized() -> None:
    s = session()
    s.handle(msg(Request.SET_FEATURES, u64(virtio.mask("VERSION_1"))), [])
    negotiated = s.negotiated()
    assert negotiated is not None
    assert (negotiated.queue_pairs, negotiated.ring_sizes) == (1, ())


def test_refuses_a_feature_it_did_not_offer() -> None:
    s = session()
    outcome = s.handle(
        msg(Request.SET_FEATURES, u64(virtio.mask("VERSION_1 RING_PACKED")), need_reply=True), []
    )
    assert outcome.close
    assert [p.decode_u64(r.payload) for r in outcome.replies] == [1]
    assert s.broken is not None and "VIRTIO_F_RING_PACKED (bit 34)" in s.broken
    assert s.negotiated() is None
    # Nothing more is processed on a refused connection.
    assert s.handle(msg(Request.GET_FEATURES), []).close


def test_refuses_a_protocol_feature_it_did_not_offer() -> None:
    s = Session(virtio.Mode("small", FEATURES, REPLY_ACK, 1, 256))
    outcome = s.handle(msg(Request.SET_PROTOCOL_FEATURES, u64(REPLY_ACK | 1)), [])
    assert outcome.close
    assert s.broken is not None and "VHOST_USER_PROTOCOL_F_MQ (protocol bit 0)" in s.broken


def test_refuses_rings_beyond_the_mode_limits() -> None:
    too_big = session()
    assert too_big.handle(msg(Request.SET_VRING_NUM, state(0, 2048)), []).close
    assert "size 2048 exceeds the maximum 1024" in str(too_big.broken)
    too_many = session()
    assert too_many.handle(msg(Request.SET_VRING_ENABLE, state(4, 1)), []).close
    assert "ring 4 is beyond the 2 queue pair(s)" in str(too_many.broken)


def test_get_vring_base_returns_the_base_it_was_given_and_stops_the_ring() -> None:
    s = session()
    s.handle(msg(Request.SET_VRING_BASE, state(1, 4242)), [])
    s.handle(msg(Request.SET_VRING_KICK, u64(1 | p.VRING_NOFD)), [])
    assert s.rings[1].started
    answer = only_reply(s, msg(Request.GET_VRING_BASE, state(1, 0)))
    assert p.decode_vring_state(answer.payload) == p.VringState(1, 4242)
    assert not s.rings[1].started


def test_need_reply_is_acknowledged_only_with_reply_ack() -> None:
    with_ack = session()
    answer = only_reply(with_ack, msg(Request.SET_OWNER, need_reply=True))
    assert p.decode_u64(answer.payload) == 0
    without = session(ALL_PROTOCOL & ~REPLY_ACK)
    assert without.handle(msg(Request.SET_OWNER, need_reply=True), []).replies == ()
    assert any("REPLY_ACK is not negotiated" in u for u in without.unexpected)


def test_explicit_replies_are_not_doubled_by_need_reply() -> None:
    s = session()
    outcome = s.handle(msg(Request.GET_FEATURES, need_reply=True), [])
    assert len(outcome.replies) == 1 and p.decode_u64(outcome.replies[0].payload) == FEATURES


def test_set_log_base_is_answered_with_log_shmfd() -> None:
    s = session()
    read, write = os.pipe()
    os.close(write)
    log = p.encode_log(p.LogArea(4096, 0))
    answer = only_reply(s, msg(Request.SET_LOG_BASE, log), [read])
    assert p.decode_u64(answer.payload) == 0
    assert s.log_area == p.LogArea(4096, 0)
    with pytest.raises(OSError):
        os.fstat(read)  # the session closed the fd it does not need
    without = session(virtio.protocol_mask("REPLY_ACK"))
    assert without.handle(msg(Request.SET_LOG_BASE, log), []).replies == ()


def test_unknown_request_is_logged_and_acked_with_an_error_when_asked() -> None:
    s = session()
    assert s.handle(msg(99, b"junk"), []).replies == ()
    answer = only_reply(s, msg(99, b"junk", need_reply=True))
    assert p.decode_u64(answer.payload) == 1
    assert any("REQUEST_99" in u for u in s.unexpected)


def test_unsupported_request_that_expects_a_reply_gets_an_error_not_silence() -> None:
    s = session()
    answer = only_reply(s, msg(Request.POSTCOPY_ADVISE))
    assert p.decode_u64(answer.payload) == 1


def test_malformed_payload_is_refused_without_breaking_the_session() -> None:
    s = session()
    answer = only_reply(s, msg(Request.SET_VRING_NUM, b"\0\0", need_reply=True))
    assert p.decode_u64(answer.payload) == 1
    assert s.broken is None
    assert any("malformed SET_VRING_NUM" in u for u in s.unexpected)


def test_request_outside_the_negotiated_protocol_features_is_flagged() -> None:
    s = session(virtio.protocol_mask("LOG_SHMFD REPLY_ACK"))
    answer = only_reply(s, msg(Request.GET_QUEUE_NUM))
    assert p.decode_u64(answer.payload) == 2
    assert any("VHOST_USER_PROTOCOL_F_MQ" in u for u in s.unexpected)


def test_send_rarp_reports_the_mac() -> None:
    s = session()
    outcome = s.handle(msg(Request.SEND_RARP, p.encode_mac("52:54:00:aa:bb:cc")), [])
    assert outcome.rarp == "52:54:00:aa:bb:cc" and outcome.replies == ()


def test_memory_table_fds_are_closed_and_regions_kept() -> None:
    s = session()
    fd = os.memfd_create("guest-ram")
    region = p.MemoryRegion(0, 4096, 0x7F0000000000, 0)
    answer = only_reply(
        s, msg(Request.SET_MEM_TABLE, p.encode_memory_table((region,)), need_reply=True), [fd]
    )
    assert p.decode_u64(answer.payload) == 0
    assert s.regions == [region]
    with pytest.raises(OSError):
        os.fstat(fd)
    mismatched = only_reply(
        s, msg(Request.SET_MEM_TABLE, p.encode_memory_table((region,)), need_reply=True), []
    )
    assert p.decode_u64(mismatched.payload) == 1


def test_memory_slots() -> None:
    s = session()
    assert p.decode_u64(only_reply(s, msg(Request.GET_MAX_MEM_SLOTS)).payload) == 8
    region = p.MemoryRegion(0x100000, 4096, 0x7F0000000000, 0)
    fd = os.memfd_create("slot")
    add = msg(Request.ADD_MEM_REG, p.encode_single_region(region), need_reply=True)
    assert p.decode_u64(only_reply(s, add, [fd]).payload) == 0
    assert s.regions == [region]
    remove = msg(Request.REM_MEM_REG, p.encode_single_region(region), need_reply=True)
    assert p.decode_u64(only_reply(s, remove).payload) == 0
    assert p.decode_u64(only_reply(s, remove).payload) == 1  # already gone
    assert s.regions == []


def test_config_space_is_stored() -> None:
    s = session()
    mac = b"\x52\x54\0\x12\x34\x56"
    write = msg(Request.SET_CONFIG, p.encode_config(p.ConfigSpace(0, 6, 0, mac)), need_reply=True)
    assert p.decode_u64(only_reply(s, write).payload) == 0
    read = only_reply(s, msg(Request.GET_CONFIG, p.encode_config(p.ConfigSpace(0, 8, 0, b""))))
    assert p.decode_config(read.payload) == p.ConfigSpace(0, 8, 0, mac + b"\0\0")
    beyond = only_reply(s, msg(Request.GET_CONFIG, p.encode_config(p.ConfigSpace(250, 8, 0, b""))))
    assert beyond.payload == b""


def test_status_mtu_endian_and_resets() -> None:
    s = session()
    s.handle(msg(Request.SET_STATUS, u64(0x0F)), [])
    assert p.decode_u64(only_reply(s, msg(Request.GET_STATUS)).payload) == 0x0F
    assert (
        p.decode_u64(only_reply(s, msg(Request.NET_SET_MTU, u64(9000), need_reply=True)).payload)
        == 0
    )
    assert s.mtu == 9000
    assert (
        p.decode_u64(only_reply(s, msg(Request.NET_SET_MTU, u64(10), need_reply=True)).payload) == 1
    )
    endian = msg(Request.SET_VRING_ENDIAN, state(0, 2), need_reply=True)
    assert p.decode_u64(only_reply(s, endian).payload) == 1
    s.handle(msg(Request.SET_FEATURES, u64(virtio.mask("VERSION_1"))), [])
    s.handle(msg(Request.SET_VRING_ENABLE, state(0, 1)), [])
    s.handle(msg(Request.RESET_OWNER), [])
    assert not s.rings[0].enabled and s.negotiated() is not None
    s.handle(msg(Request.RESET_DEVICE), [])
    assert s.rings == {} and s.negotiated() is None and s.status == 0


def test_backend_channel_is_kept_until_close() -> None:
    s = session()
    ours, theirs = os.pipe()
    s.handle(msg(Request.SET_BACKEND_REQ_FD, need_reply=True), [theirs])
    assert s.backend_channel == theirs
    os.fstat(theirs)  # still open
    s.close()
    with pytest.raises(OSError):
        os.fstat(theirs)
    os.close(ours)


def test_iotlb_is_acknowledged() -> None:
    s = session()
    answer = only_reply(s, msg(Request.IOTLB_MSG, b"\0" * 40, need_reply=True))
    assert p.decode_u64(answer.payload) == 0
