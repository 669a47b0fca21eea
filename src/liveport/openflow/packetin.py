"""NXT_PACKET_IN2 messages decoded into frozen PacketIn values. Pure: bytes in, values out.

Decoded here rather than by os-ken, whose NXTPacketIn2 reads the cookie from the 4 padding
bytes OVS puts before it (so every cookie decodes as 0) and takes the packet's length for
total_len. Properties OVS leaves out carry their defaults: table 0, reason OFPR_ACTION,
cookie all-ones, full length = the packet's length.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass

from os_ken.ofproto import ofproto_common
from os_ken.ofproto import ofproto_v1_3 as ofp

from liveport.model.frozen import FrozenMap
from liveport.openflow.encode import CodecError, model_name

NXT_PACKET_IN2 = 30
# NXT_SET_PACKET_IN_FORMAT value selecting NXT_PACKET_IN2 (os-ken has no name for it).
NXPIF_NXT_PACKET_IN2 = 2

NXPINT_PACKET = 0
NXPINT_FULL_LEN = 1
NXPINT_TABLE_ID = 3
NXPINT_COOKIE = 4
NXPINT_REASON = 5
NXPINT_METADATA = 6
NXPINT_USERDATA = 7

_HEADER = struct.Struct("!BBHIII")  # version, type, length, xid, experimenter, subtype
_PROP = struct.Struct("!HH")
ALL_ONES_COOKIE = 0xFFFFFFFFFFFFFFFF


@dataclass(frozen=True)
class PacketIn:
    """One packet sent to the controller.

    metadata holds the pipeline fields OVS reports with it (registers, metadata, tunnel_id
    ...), by our field names where liveport models the field, else by os-ken's name.
    received_at is the monotonic time the message was read from the socket.
    """

    table_id: int
    cookie: int
    reason: int
    userdata: bytes
    data: bytes
    in_port: int
    metadata: Mapping[str, int]
    total_len: int
    received_at: float


def is_packet_in2(message: bytes) -> bool:
    if len(message) < _HEADER.size:
        return False
    _, msg_type, _, _, experimenter, subtype = _HEADER.unpack_from(message)
    return bool(
        msg_type == ofp.OFPT_EXPERIMENTER
        and experimenter == ofproto_common.NX_EXPERIMENTER_ID
        and subtype == NXT_PACKET_IN2
    )


def _properties(body: bytes) -> dict[int, bytes]:
    props: dict[int, bytes] = {}
    offset = 0
    while offset + _PROP.size <= len(body):
        prop_type, length = _PROP.unpack_from(body, offset)
        if length < _PROP.size or offset + length > len(body):
            raise CodecError(f"packet-in property {prop_type} has bad length {length}")
        props[prop_type] = body[offset + _PROP.size : offset + length]
        offset += (length + 7) // 8 * 8  # properties are padded to 8 bytes
    return props


def _u(raw: bytes, default: int) -> int:
    return int.from_bytes(raw, "big") if raw else default


def _cookie(raw: bytes | None) -> int:
    if raw is None:
        return ALL_ONES_COOKIE
    # OVS aligns 64-bit property values: 4 bytes of padding, then the cookie.
    return int.from_bytes(raw[-8:], "big")


def _metadata(raw: bytes) -> dict[str, int]:
    fields: dict[str, int] = {}
    offset = 0
    while offset < len(raw):
        num, value, _mask, length = ofp.oxm_parse(raw, offset)
        offset += length
        try:
            oskens_name = ofp.oxm_to_user_header(num)
        except KeyError:
            continue  # an experimenter field os-ken does not know: not ours either
        try:
            name = model_name(oskens_name)
        except CodecError:
            name = oskens_name
        fields[name] = int.from_bytes(value, "big")
    return fields


def decode_packet_in2(message: bytes, received_at: float) -> PacketIn:
    """Decodes one whole NXT_PACKET_IN2 message (header included)."""
    if not is_packet_in2(message):
        raise CodecError("not an NXT_PACKET_IN2 message")
    props = _properties(message[_HEADER.size :])
    data = props.get(NXPINT_PACKET, b"")
    try:
        metadata = _metadata(props.get(NXPINT_METADATA, b""))
    except (AssertionError, struct.error) as exc:  # os-ken asserts on malformed OXMs
        raise CodecError(f"malformed packet-in metadata: {exc}") from None
    in_port = metadata.pop("in_port", ofp.OFPP_ANY)
    return PacketIn(
        table_id=_u(props.get(NXPINT_TABLE_ID, b""), 0),
        cookie=_cookie(props.get(NXPINT_COOKIE)),
        reason=_u(props.get(NXPINT_REASON, b""), ofp.OFPR_ACTION),
        userdata=props.get(NXPINT_USERDATA, b""),
        data=data,
        in_port=in_port,
        metadata=FrozenMap(metadata),
        total_len=_u(props.get(NXPINT_FULL_LEN, b""), len(data)),
        received_at=received_at,
    )
