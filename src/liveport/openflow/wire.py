"""Flow mods and bundle adds straight to bytes, without building os-ken messages.

The agent sends every flow of a binding or a migration as a flow mod inside an ONF bundle.
Building an os-ken OFPFlowMod, then its OFPMatch and actions, then serializing it costs
about 0.1 ms a flow, which was a third of the agent's time from a port's binding to its
flows: 100 ports are about 1100 flows. Here a flow becomes bytes in one pass:

- the match's OXM fields are written from our integers, with each field's header (class,
  field, mask bit, length, and an experimenter id where the field has one) taken once
  from os-ken's own serializer;
- each distinct action is encoded by encode.encode_action and serialized by os-ken once,
  then reused: a table holds few distinct actions (resubmits, outputs, loads of a port's
  key) and many flows;
- the rest is OpenFlow 1.3's fixed layout (ofp_flow_mod, ofp_match, OFPIT_APPLY_ACTIONS,
  and ONF's bundle add message, OF 1.3 extension 230).

The checks are encode.flow_mod's (the same functions), and tests/unit/test_openflow_wire.py
holds the bytes equal to os-ken's serialization of encode.flow_mod for every flow the
pipeline compiles in its tests' views.
"""

from __future__ import annotations

import struct
from functools import cache, lru_cache
from typing import Any

from os_ken.ofproto import ofproto_common
from os_ken.ofproto import ofproto_v1_3 as ofp

from liveport.model.flows import Action, Flow, Match
from liveport.openflow import encode

_HEADER = struct.Struct("!BBHI")  # version, type, length, xid
_FLOW_MOD = struct.Struct("!QQBBHHHIIIH2x")  # after the header, up to the match
_MATCH_HEADER = struct.Struct("!HH")
_INSTRUCTION = struct.Struct("!HH4x")
_BUNDLE_ADD = struct.Struct("!IIIxxH")  # experimenter, exp_type, bundle_id, pad, flags
_BUNDLE_ADD_SIZE = _HEADER.size + _BUNDLE_ADD.size
_XID = struct.Struct("!I")


def _pad8(n: int) -> int:
    return -n % 8


@cache
def _oxm_prefix(name: str, masked: bool) -> tuple[bytes, int]:
    """The OXM header of field name (with its experimenter id, if any) and its value size,
    as os-ken writes them."""
    zero = encode.to_user(name, 0)
    one = encode.to_user(name, 1)
    n, value, mask = ofp.oxm_from_user(name, (zero, one) if masked else zero)
    buf = bytearray()
    length = ofp.oxm_serialize(n, value, mask, buf, 0)
    size = len(value)
    return bytes(buf[: length - size * (2 if masked else 1)]), size


def match_bytes(m: Match) -> bytes:
    """ofp_match with m's OXM fields, padded to 8 bytes."""
    parts = []
    for name, value, mask in encode.checked_fields(m):
        prefix, size = _oxm_prefix(name, mask is not None)
        parts.append(prefix)
        parts.append(value.to_bytes(size, "big"))
        if mask is not None:
            parts.append(mask.to_bytes(size, "big"))
    fields = b"".join(parts)
    length = _MATCH_HEADER.size + len(fields)
    return _MATCH_HEADER.pack(ofp.OFPMT_OXM, length) + fields + bytes(_pad8(length))


def _serialize_action(action: Action) -> bytes:
    buf = bytearray()
    encoded = encode.encode_action(action)
    encoded.serialize(buf, 0)
    # os-ken may leave an action's trailing padding unwritten (the next action's offset
    # then extends the buffer with zeros): the padding is zeros.
    return bytes(buf[: encoded.len]).ljust(encoded.len, b"\0")


_cached_action = lru_cache(maxsize=4096)(_serialize_action)


def action_bytes(action: Action) -> bytes:
    try:
        return _cached_action(action)
    except TypeError:  # an action that cannot be hashed is serialized every time
        return _serialize_action(action)


def instructions_bytes(actions: tuple[Action, ...]) -> bytes:
    encode.check_conjunctions(actions)
    if not actions:
        return b""
    body = b"".join(action_bytes(a) for a in actions)
    length = _INSTRUCTION.size + len(body)
    return (
        _INSTRUCTION.pack(ofp.OFPIT_APPLY_ACTIONS, length + _pad8(length))
        + body
        + bytes(_pad8(length))
    )


def flow_mod_bytes(flow: Flow, command: int = ofp.OFPFC_ADD, cookie_mask: int = 0) -> bytes:
    """encode.flow_mod(flow, command, cookie_mask), serialized with xid 0."""
    deleting = encode.check_flow(flow, command)
    body = _FLOW_MOD.pack(
        flow.cookie,
        cookie_mask if deleting else 0,
        flow.table,
        command,
        0,  # idle_timeout
        0,  # hard_timeout
        flow.priority,
        encode.OFP_NO_BUFFER,
        ofp.OFPP_ANY,
        ofp.OFPG_ANY,
        0,  # flags
    )
    tail = match_bytes(flow.match) + (b"" if deleting else instructions_bytes(flow.actions))
    length = _HEADER.size + len(body) + len(tail)
    return _HEADER.pack(ofp.OFP_VERSION, ofp.OFPT_FLOW_MOD, length, 0) + body + tail


def message_bytes(message: Any) -> bytes:
    """An os-ken message serialized with xid 0 (to be carried by bundle_add)."""
    message.set_xid(0)
    message.serialize()
    return bytes(message.buf)


def bundle_add(bundle_id: int, flags: int, inner: bytes, xid: int) -> bytes:
    """ONF's bundle add message carrying inner (a serialized message), both with xid: the
    inner message's xid must be the bundle add's."""
    length = _BUNDLE_ADD_SIZE + len(inner)
    return b"".join(
        (
            _HEADER.pack(ofp.OFP_VERSION, ofp.OFPT_EXPERIMENTER, length, xid),
            _BUNDLE_ADD.pack(
                ofproto_common.ONF_EXPERIMENTER_ID, ofp.ONF_ET_BUNDLE_ADD_MESSAGE, bundle_id, flags
            ),
            inner[:4],
            _XID.pack(xid),
            inner[8:],
        )
    )
