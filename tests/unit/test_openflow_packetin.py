"""NXT_PACKET_IN2 decoding, on messages laid out the way OVS 3.1 writes them."""

from __future__ import annotations

import struct

import pytest

from liveport.openflow.encode import CodecError
from liveport.openflow.errors import describe
from liveport.openflow.packetin import (
    ALL_ONES_COOKIE,
    NXPINT_COOKIE,
    NXPINT_FULL_LEN,
    NXPINT_METADATA,
    NXPINT_PACKET,
    NXPINT_REASON,
    NXPINT_TABLE_ID,
    NXPINT_USERDATA,
    decode_packet_in2,
    is_packet_in2,
)

FRAME = bytes(range(60))


def prop(kind: int, value: bytes) -> bytes:
    body = struct.pack("!HH", kind, 4 + len(value)) + value
    return body + b"\x00" * (-len(body) % 8)


def oxm(oxm_class: int, field: int, value: bytes) -> bytes:
    return struct.pack("!I", oxm_class << 16 | field << 9 | len(value)) + value


def message(*props: bytes, xid: int = 0) -> bytes:
    body = b"".join(props)
    return struct.pack("!BBHIII", 4, 4, 16 + len(body), xid, 0x2320, 30) + body


def metadata(in_port: int, **regs: int) -> bytes:
    fields = oxm(0x8000, 0, struct.pack("!I", in_port))  # OXM_OF_IN_PORT
    fields += oxm(0x8000, 2, struct.pack("!Q", 0xABC))  # OXM_OF_METADATA
    for name, value in regs.items():
        fields += oxm(0x0001, int(name[3:]), struct.pack("!I", value))  # NXM_NX_REGn
    return prop(NXPINT_METADATA, fields)


def test_every_property_is_decoded() -> None:
    raw = message(
        prop(NXPINT_PACKET, FRAME[:40]),
        prop(NXPINT_FULL_LEN, struct.pack("!I", 60)),
        prop(NXPINT_TABLE_ID, b"\x07"),
        # OVS pads before a 64-bit property value (os-ken reads the padding as the cookie).
        prop(NXPINT_COOKIE, b"\x00" * 4 + struct.pack("!Q", 0x1122334455667788)),
        prop(NXPINT_REASON, b"\x00"),
        metadata(3, reg0=5, reg14=0xFFFFFFFF),
        prop(NXPINT_USERDATA, b"announce"),
    )
    pin = decode_packet_in2(raw, received_at=12.5)
    assert pin.data == FRAME[:40]
    assert pin.total_len == 60
    assert pin.table_id == 7
    assert pin.cookie == 0x1122334455667788
    assert pin.reason == 0
    assert pin.in_port == 3
    assert dict(pin.metadata) == {"metadata": 0xABC, "reg0": 5, "reg14": 0xFFFFFFFF}
    assert pin.userdata == b"announce"
    assert pin.received_at == 12.5


def test_properties_ovs_leaves_out_take_their_defaults() -> None:
    pin = decode_packet_in2(message(prop(NXPINT_PACKET, FRAME), metadata(1)), 0.0)
    assert (pin.table_id, pin.reason, pin.cookie, pin.total_len) == (0, 1, ALL_ONES_COOKIE, 60)
    assert pin.userdata == b""


def test_other_messages_are_not_packet_ins() -> None:
    assert is_packet_in2(message(prop(NXPINT_PACKET, FRAME)))
    assert not is_packet_in2(struct.pack("!BBHI", 4, 21, 8, 1))  # barrier reply
    with pytest.raises(CodecError):
        decode_packet_in2(struct.pack("!BBHIII", 4, 4, 16, 0, 0x2320, 17), 0.0)


def test_a_truncated_property_is_a_codec_error() -> None:
    raw = message(prop(NXPINT_PACKET, FRAME))[:-8]
    with pytest.raises(CodecError, match="bad length"):
        decode_packet_in2(raw, 0.0)


def test_error_codes_have_readable_names() -> None:
    assert describe(4, 9) == "BAD_MATCH/BAD_PREREQ (type 4, code 9)"
    assert describe(2, 10) == "BAD_ACTION/MATCH_INCONSISTENT (type 2, code 10)"
    assert describe(0xFFFF, 2313, 0x4F4E4600) == "BUNDLE_FAILED/MSG_FAILED (exp_type 2313)"
    assert describe(0xFFFF, 7, 0x2320) == "experimenter 0x2320 error (exp_type 7)"
    assert describe(99, 1) == "UNKNOWN/UNKNOWN (type 99, code 1)"
