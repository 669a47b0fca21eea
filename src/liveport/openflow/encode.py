"""liveport's flow model <-> os-ken OpenFlow 1.3 objects, both ways. Pure: no I/O, no state.

The switch must hand back exactly what we installed, or the agent would see a difference on
every pass and rewrite its flows forever. So each encoding here has exactly one decoding, and
forms that OVS would silently rewrite are refused up front (CodecError) instead of being
installed and then "differing" from what was asked:

- Match values are our integers, converted to os-ken's user formats ("aa:bb:..", "10.0.0.1")
  by os-ken's own type descriptors; a mask travels as (value, mask). A zero mask is refused
  (OVS drops the field), so is a mask on a field OVS cannot mask. Fields are encoded after
  their prerequisites (OVS checks them in order while it reads a match).
- Nicira actions and learn specs name fields by their NXM header where one exists
  (eth_src -> eth_src_nxm), because that is how OVS re-encodes them in flow dumps; decoding
  accepts either spelling. in_port keeps its 32-bit OXM header (NXM_OF_IN_PORT has 16 bits).
- Load is NXAST_REG_LOAD (OVS dumps it back as such); nbits=None is the whole field and the
  only spelling of it.
- Controller(userdata) is NXAST_CONTROLLER2 with only the properties OVS itself would emit.
- Conjunction(id, k, n) is NXAST_CONJUNCTION, whose clause counts from 0 on the wire.
- Ct is NXAST_CT and CtClear NXAST_CT_CLEAR. The zone is an immediate number or bits
  [0..15] of a register (OVS takes exactly 16 bits); no table is NX_CT_RECIRC_NONE (255).
  exec holds Loads into ct_mark and ct_label only, and only with commit (OVS refuses
  others). A Load of at most 64 bits is NXAST_REG_LOAD, as outside ct; the whole 128-bit
  ct_label is OFPAT_SET_FIELD, which OVS dumps back as such. A Load of 65..127 bits of
  ct_label is refused: OVS would split it into 64-bit reg_loads. force, alg and nat are not
  modelled. OVS refuses ct on a flow that does not match IPv4 or IPv6, and ct_mark or
  ct_label set outside ct: so does flow_mod / encode_action.
- All actions go in one APPLY_ACTIONS instruction; a flow without actions has none (drop).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from os_ken.ofproto import nicira_ext
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as ofpp

from liveport.model.flows import (
    CT_EXEC_FIELDS,
    CT_ZONE_FIELDS,
    FIELD_BITS,
    OFPP_CONTROLLER,
    Action,
    Conjunction,
    Controller,
    Ct,
    CtClear,
    Flow,
    FlowError,
    Learn,
    LearnLoadValue,
    LearnMatchField,
    LearnMatchValue,
    LearnOutputField,
    LearnSpec,
    Load,
    Match,
    Output,
    OutputReg,
    PopVlan,
    PushVlan,
    Resubmit,
    SetField,
    check_ct_flow,
    match,
    prerequisites,
)

# os-ken objects carry no type information; these aliases say what a value is.
OFPMatch = Any
OFPAction = Any
OFPFlowMod = Any
OFPFlowStats = Any

OFP_NO_BUFFER = 0xFFFFFFFF
ETH_VLAN = 0x8100  # the 802.1Q TPID push_vlan adds
ALL_ONES = (1 << 64) - 1  # a cookie mask that compares every bit
# NXAST_RESUBMIT_TABLE's 16-bit in_port meaning "keep the packet's in_port".
NX_IN_PORT = 0xFFF8
# Highest table a flow or resubmit may name (255 means "all"/"this table" on the wire).
MAX_TABLE = 254
PORT_BITS = 32
# NXAST_REG_LOAD carries its value in 64 bits.
REG_LOAD_BITS = 64
# NXAST_CT: the commit flag, "no table", the zone's width and where it may come from.
NX_CT_F_COMMIT = 1
NX_CT_RECIRC_NONE = 255
CT_ZONE_BITS = 16
# Fields only ct(commit, exec(...)) may set; OVS refuses them anywhere else.
CT_FIELDS = CT_EXEC_FIELDS


class _Codec:
    """os-ken messages want a "datapath" only to find their protocol modules."""

    ofproto = ofp
    ofproto_parser = ofpp


DATAPATH = _Codec()

# Our (OXM) name -> the NXM name OVS uses for that field in Nicira actions and learn specs.
_NXM_NAME: Mapping[str, str] = {
    "eth_dst": "eth_dst_nxm",
    "eth_src": "eth_src_nxm",
    "eth_type": "eth_type_nxm",
    "ip_proto": "ip_proto_nxm",
    "ipv4_src": "ipv4_src_nxm",
    "ipv4_dst": "ipv4_dst_nxm",
    "ipv6_src": "ipv6_src_nxm",
    "ipv6_dst": "ipv6_dst_nxm",
    "arp_op": "arp_op_nxm",
    "arp_spa": "arp_spa_nxm",
    "arp_tpa": "arp_tpa_nxm",
    "arp_sha": "arp_sha_nxm",
    "arp_tha": "arp_tha_nxm",
    "icmpv6_type": "icmpv6_type_nxm",
    "icmpv6_code": "icmpv6_code_nxm",
    "ipv6_nd_target": "nd_target",
    "ipv6_nd_sll": "nd_sll",
    "ipv6_nd_tll": "nd_tll",
    "ipv6_flabel": "ipv6_label",
    "ip_ecn": "ip_ecn_nxm",
    "tcp_src": "tcp_src_nxm",
    "tcp_dst": "tcp_dst_nxm",
    "tcp_flags": "tcp_flags_nxm",
    "udp_src": "udp_src_nxm",
    "udp_dst": "udp_dst_nxm",
    "icmpv4_type": "icmpv4_type_nxm",
    "icmpv4_code": "icmpv4_code_nxm",
    "tunnel_id": "tunnel_id_nxm",
}
_MODEL_NAME: Mapping[str, str] = {nxm: oxm for oxm, nxm in _NXM_NAME.items()}


def _prerequisite_depth(field: str) -> int:
    """How many links of prerequisites lead from field down to one without any."""
    return max(
        (1 + _prerequisite_depth(name) for alt in prerequisites(field) for name in alt),
        default=0,
    )


def _oxm_number(field: str) -> int:
    # An experimenter OXM (tcp_flags) is numbered by (experimenter, type); os-ken's own
    # keyword constructor orders it by the experimenter id.
    number = ofp.oxm_get_field_info_by_name(field)[0]
    return int(number[0]) if isinstance(number, tuple) else int(number)


# The order of fields in an encoded match. OVS checks each field's prerequisites as it
# reads the match, so a field must come after the fields it depends on -- which OXM numbers
# alone do not ensure (nw_ttl and ip_frag are Nicira fields, numbered below eth_type).
_OXM_ORDER: Mapping[str, tuple[int, int]] = {
    name: (_prerequisite_depth(name), _oxm_number(name)) for name in FIELD_BITS
}

# Fields OVS matches only exactly (a mask on them is a BAD_MASK error on the wire).
UNMASKABLE = frozenset(
    {
        "in_port",
        "eth_type",
        "ip_proto",
        "arp_op",
        "icmpv6_type",
        "icmpv6_code",
        "icmpv4_type",
        "icmpv4_code",
        "vlan_pcp",
        "ip_dscp",
        "ip_ecn",
        "nw_ttl",
        "conj_id",
    }
)
# Conjunctive flows have 2..64 dimensions (OVS refuses others).
MAX_CLAUSES = 64


class CodecError(FlowError):
    """A flow cannot be expressed in OpenFlow 1.3 as liveport models it, or a switch handed
    back something liveport does not model."""


# ----- field names and values ------------------------------------------------------------------


def nx_name(field: str) -> str:
    """The os-ken name of field's header in Nicira actions (NXM where OVS has one)."""
    _check_field(field)
    return _NXM_NAME.get(field, field)


def model_name(oskens_name: str) -> str:
    """Our name for a field os-ken decoded under its OXM or NXM name."""
    name = _MODEL_NAME.get(oskens_name, oskens_name)
    if name not in FIELD_BITS:
        raise CodecError(f"field {oskens_name!r} is not one liveport models")
    return name


def _check_field(field: str) -> int:
    try:
        return FIELD_BITS[field]
    except KeyError:
        raise CodecError(f"unknown field {field!r}") from None


def to_user(field: str, value: int) -> object:
    """Our integer -> os-ken's user format for field ("aa:bb:..", "10.0.0.1", or an int)."""
    _, desc = ofp.oxm_get_field_info_by_name(field)
    return desc.to_user(value.to_bytes(desc.size, "big"))


def from_user(field: str, value: object) -> int:
    """os-ken's user format for field -> our integer."""
    _, desc = ofp.oxm_get_field_info_by_name(field)
    return int.from_bytes(desc.from_user(value), "big")


# ----- match ------------------------------------------------------------------------------------


def checked_fields(m: Match) -> list[tuple[str, int, int | None]]:
    """m's fields as (name, value, mask), checked, in OXM order (as os-ken's keyword
    constructor would put them)."""
    fields: list[tuple[str, int, int | None]] = []
    for f in m.fields:
        _check_field(f.name)
        if f.mask is not None:
            if f.mask == 0:
                raise CodecError(f"{f.name} has a zero mask (OVS would drop it): leave it out")
            if f.name in UNMASKABLE:
                raise CodecError(f"{f.name} cannot be masked")
        fields.append((f.name, f.value, f.mask))
    fields.sort(key=lambda item: _OXM_ORDER[item[0]])
    return fields


def encode_match(m: Match) -> OFPMatch:
    # Passing the fields ready-made skips os-ken's normalisation (values are already exact
    # and masked), a third of the cost of encoding a flow.
    fields = [
        (
            name,
            to_user(name, value) if mask is None else (to_user(name, value), to_user(name, mask)),
        )
        for name, value, mask in checked_fields(m)
    ]
    return ofpp.OFPMatch(_ordered_fields=fields)


def decode_match(om: OFPMatch) -> Match:
    fields: dict[str, int | tuple[int, int]] = {}
    for oskens_name, user in om.items():
        name = model_name(oskens_name)
        if isinstance(user, tuple):
            fields[name] = (from_user(name, user[0]), from_user(name, user[1]))
        else:
            fields[name] = from_user(name, user)
    return match(**fields)


# ----- actions ----------------------------------------------------------------------------------


def _ofs_nbits(start: int, nbits: int) -> int:
    return int(nicira_ext.ofs_nbits(start, start + nbits - 1))


def _split_ofs_nbits(ofs_nbits: int) -> tuple[int, int]:
    return ofs_nbits >> 6, (ofs_nbits & 0x3F) + 1


def _load_range(load: Load) -> tuple[int, int]:
    """(start, nbits) of a Load, checking it is in its one canonical spelling."""
    width = _check_field(load.field)
    if load.nbits is None:
        if load.start:
            raise CodecError(f"load into {load.field}[{load.start}..]: give nbits")
        start, nbits = 0, width
    else:
        start, nbits = load.start, load.nbits
        if start == 0 and nbits == width:
            raise CodecError(f"load into all of {load.field}: leave nbits None")
    if nbits < 1 or start < 0 or start + nbits > width:
        raise CodecError(f"load into {load.field}: bits {start}+{nbits} outside {width}")
    if nbits > REG_LOAD_BITS:
        raise CodecError(f"load into {load.field}: {nbits} bits > 64, use SetField")
    if not 0 <= load.value < 1 << nbits:
        raise CodecError(f"load into {load.field}: {load.value:#x} exceeds {nbits} bits")
    return start, nbits


def _port_field(field: str) -> int:
    width = _check_field(field)
    if width > PORT_BITS:
        raise CodecError(f"output to {field}: a port number has at most {PORT_BITS} bits")
    return width


def _check_value(field: str, value: int) -> None:
    width = _check_field(field)
    if not 0 <= value < 1 << width:
        raise CodecError(f"value {value:#x} does not fit {field} ({width} bits)")


def encode_action(action: Action) -> OFPAction:
    if isinstance(action, SetField | Load) and action.field in CT_FIELDS:
        raise CodecError(f"{action.field} can only be set inside ct(commit, exec(...))")
    return _encode_action(action)


def _encode_action(action: Action) -> OFPAction:
    if isinstance(action, Output):
        _check_value("in_port", action.port)
        # Packet-ins from output:CONTROLLER carry the whole packet, as Controller does.
        max_len = ofp.OFPCML_NO_BUFFER if action.port == OFPP_CONTROLLER else 0
        return ofpp.OFPActionOutput(action.port, max_len)
    if isinstance(action, OutputReg):
        width = _port_field(action.field)
        return ofpp.NXActionOutputReg(
            ofs_nbits=_ofs_nbits(0, width), src=nx_name(action.field), max_len=0
        )
    if isinstance(action, SetField):
        _check_value(action.field, action.value)
        return ofpp.OFPActionSetField(**{action.field: to_user(action.field, action.value)})
    if isinstance(action, Load):
        start, nbits = _load_range(action)
        return ofpp.NXActionRegLoad(
            ofs_nbits=_ofs_nbits(start, nbits), dst=nx_name(action.field), value=action.value
        )
    if isinstance(action, Resubmit):
        _check_table(action.table)
        return ofpp.NXActionResubmitTable(in_port=NX_IN_PORT, table_id=action.table)
    if isinstance(action, Controller):
        return _encode_controller(action)
    if isinstance(action, Conjunction):
        return _encode_conjunction(action)
    if isinstance(action, Ct):
        return _encode_ct(action)
    if isinstance(action, CtClear):
        return ofpp.NXActionCTClear()
    if isinstance(action, PushVlan):
        return ofpp.OFPActionPushVlan(ETH_VLAN)
    if isinstance(action, PopVlan):
        return ofpp.OFPActionPopVlan()
    return _encode_learn(action)


def _encode_ct(action: Ct) -> OFPAction:
    if action.zone_field is not None:
        if action.zone_field not in CT_ZONE_FIELDS:
            raise CodecError(f"ct zone from {action.zone_field}: only a register (reg0..reg15)")
        if action.zone:
            raise CodecError("ct with both a zone and a zone_field: give one")
        zone_src, zone = action.zone_field, _ofs_nbits(0, CT_ZONE_BITS)
    else:
        if not 0 <= action.zone < 1 << CT_ZONE_BITS:
            raise CodecError(f"ct zone {action.zone} does not fit {CT_ZONE_BITS} bits")
        zone_src, zone = "", action.zone
    if action.table is not None:
        _check_table(action.table)
    if action.exec and not action.commit:
        raise CodecError("ct with exec but without commit (OVS refuses it)")
    return ofpp.NXActionCT(
        flags=NX_CT_F_COMMIT if action.commit else 0,
        zone_src=zone_src,
        zone_ofs_nbits=zone,
        recirc_table=NX_CT_RECIRC_NONE if action.table is None else action.table,
        alg=0,
        actions=[_encode_ct_load(load) for load in action.exec],
    )


def _encode_ct_load(load: Load) -> OFPAction:
    if load.field not in CT_FIELDS:
        raise CodecError(f"ct exec may load only ct_mark or ct_label, not {load.field}")
    if load.nbits is None and FIELD_BITS[load.field] > REG_LOAD_BITS:
        _check_value(load.field, load.value)
        return ofpp.OFPActionSetField(**{load.field: load.value})
    if load.nbits is not None and load.nbits > REG_LOAD_BITS:
        raise CodecError(
            f"load of {load.nbits} bits into {load.field}: OVS would split it into loads "
            f"of {REG_LOAD_BITS} bits; give those"
        )
    return _encode_action(load)


def _encode_conjunction(action: Conjunction) -> OFPAction:
    if not 2 <= action.n_clauses <= MAX_CLAUSES:
        raise CodecError(f"conjunction with {action.n_clauses} clauses: 2..{MAX_CLAUSES} allowed")
    if not 1 <= action.clause <= action.n_clauses:
        raise CodecError(f"conjunction clause {action.clause} is outside 1..{action.n_clauses}")
    _check_value("conj_id", action.id)
    # The wire counts clauses from 0; ovs-ofctl (and Conjunction) from 1.
    return ofpp.NXActionConjunction(
        clause=action.clause - 1, n_clauses=action.n_clauses, id_=action.id
    )


def _check_table(table: int) -> None:
    if not 0 <= table <= MAX_TABLE:
        raise CodecError(f"table {table} is outside 0..{MAX_TABLE}")


def _encode_controller(action: Controller) -> OFPAction:
    # Only the properties OVS emits when it re-encodes the action, so dumps compare equal.
    props: dict[str, object] = {}
    if not 0 <= action.max_len <= 0xFFFF:
        raise CodecError(f"controller max_len {action.max_len} does not fit 16 bits")
    if action.max_len != ofp.OFPCML_NO_BUFFER:
        props["max_len"] = action.max_len
    if action.userdata:
        props["userdata"] = list(action.userdata)
    return ofpp.NXActionController2(**props)


def _encode_learn(action: Learn) -> OFPAction:
    _check_table(action.table)
    for name, value, bits in (
        ("priority", action.priority, 16),
        ("idle_timeout", action.idle_timeout, 16),
        ("hard_timeout", action.hard_timeout, 16),
        ("cookie", action.cookie, 64),
    ):
        if not 0 <= value < 1 << bits:
            raise CodecError(f"learn {name} {value} does not fit {bits} bits")
    return ofpp.NXActionLearn(
        table_id=action.table,
        specs=[_encode_learn_spec(spec) for spec in action.specs],
        idle_timeout=action.idle_timeout,
        hard_timeout=action.hard_timeout,
        priority=action.priority,
        cookie=action.cookie,
    )


def _encode_learn_spec(spec: LearnSpec) -> Any:
    if isinstance(spec, LearnMatchValue):
        _check_value(spec.field, spec.value)
        return ofpp.NXFlowSpecMatch(
            src=spec.value, dst=(nx_name(spec.field), 0), n_bits=FIELD_BITS[spec.field]
        )
    if isinstance(spec, LearnMatchField):
        width = _check_field(spec.field)
        if _check_field(spec.src_field) != width:
            raise CodecError(f"learn {spec.field}={spec.src_field}: the widths differ")
        return ofpp.NXFlowSpecMatch(
            src=(nx_name(spec.src_field), 0), dst=(nx_name(spec.field), 0), n_bits=width
        )
    if isinstance(spec, LearnLoadValue):
        _check_value(spec.field, spec.value)
        return ofpp.NXFlowSpecLoad(
            src=spec.value, dst=(nx_name(spec.field), 0), n_bits=FIELD_BITS[spec.field]
        )
    width = _port_field(spec.src_field)
    return ofpp.NXFlowSpecOutput(src=(nx_name(spec.src_field), 0), n_bits=width)


def decode_action(act: OFPAction) -> Action:
    if isinstance(act, ofpp.OFPActionOutput):
        return Output(act.port)
    if isinstance(act, ofpp.NXActionOutputReg):
        field = model_name(act.src)
        if _split_ofs_nbits(act.ofs_nbits) != (0, FIELD_BITS[field]):
            raise CodecError(f"output from part of {field} is not modelled")
        return OutputReg(field)
    if isinstance(act, ofpp.OFPActionSetField):
        field = model_name(act.key)
        return SetField(field, from_user(field, act.value))
    if isinstance(act, ofpp.NXActionRegLoad):
        field = model_name(act.dst)
        start, nbits = _split_ofs_nbits(act.ofs_nbits)
        return _canonical_load(field, act.value, start, nbits)
    if isinstance(act, ofpp.NXActionRegLoad2):
        return _decode_reg_load2(act)
    if isinstance(act, ofpp.NXActionResubmitTable):
        if act.in_port != NX_IN_PORT:
            raise CodecError(f"resubmit with in_port {act.in_port} is not modelled")
        return Resubmit(act.table_id)
    if isinstance(act, ofpp.NXActionController2):
        return _decode_controller(act)
    if isinstance(act, ofpp.NXActionLearn):
        return _decode_learn(act)
    if isinstance(act, ofpp.NXActionConjunction):
        return Conjunction(act.id, act.clause + 1, act.n_clauses)
    if isinstance(act, ofpp.NXActionCT):
        return _decode_ct(act)
    if isinstance(act, ofpp.NXActionCTClear):
        return CtClear()
    if isinstance(act, ofpp.OFPActionPushVlan):
        if act.ethertype != ETH_VLAN:
            raise CodecError(f"push_vlan of TPID {act.ethertype:#x} is not modelled")
        return PushVlan()
    if isinstance(act, ofpp.OFPActionPopVlan):
        return PopVlan()
    raise CodecError(f"action {type(act).__name__} is not modelled")


def _decode_ct(act: OFPAction) -> Ct:
    if act.flags & ~NX_CT_F_COMMIT or act.alg:
        raise CodecError("ct with force or alg is not modelled")
    zone_field: str | None = None
    zone = act.zone_ofs_nbits
    if act.zone_src:
        zone_field, zone = model_name(act.zone_src), 0
        start, nbits = _split_ofs_nbits(act.zone_ofs_nbits)
        if zone_field not in CT_ZONE_FIELDS or (start, nbits) != (0, CT_ZONE_BITS):
            raise CodecError(
                f"ct zone from {zone_field}[{start}..{start + nbits - 1}] is not modelled"
            )
    loads = []
    for inner in act.actions:
        load = _decode_ct_load(inner)
        if load.field not in CT_FIELDS:
            raise CodecError(f"ct exec loading {load.field} is not modelled")
        loads.append(load)
    return Ct(
        commit=bool(act.flags & NX_CT_F_COMMIT),
        zone_field=zone_field,
        zone=zone,
        table=None if act.recirc_table == NX_CT_RECIRC_NONE else act.recirc_table,
        exec=tuple(loads),
    )


def _decode_ct_load(act: OFPAction) -> Load:
    """A Load of ct exec: OVS dumps set_field of a whole field as such."""
    if isinstance(act, ofpp.OFPActionSetField):
        field = model_name(act.key)
        return Load(field, from_user(field, act.value))
    decoded = decode_action(act)
    if not isinstance(decoded, Load):
        raise CodecError(f"ct exec with {type(act).__name__} is not modelled")
    return decoded


def _canonical_load(field: str, value: int, start: int, nbits: int) -> Load:
    if start == 0 and nbits == FIELD_BITS[field]:
        return Load(field, value)
    return Load(field, value, start, nbits)


def _decode_reg_load2(act: OFPAction) -> Load:
    field = model_name(act.dst)
    value = from_user(field, act.value)
    if act.mask is None:
        return Load(field, value)
    mask = from_user(field, act.mask)
    start = (mask & -mask).bit_length() - 1
    nbits = (mask >> start).bit_length()
    if mask == 0 or mask >> start != (1 << nbits) - 1:
        raise CodecError(f"load into {field} with mask {mask:#x} (not contiguous)")
    return _canonical_load(field, value >> start, start, nbits)


def _decode_controller(act: OFPAction) -> Controller:
    if (
        hasattr(act, "pause")
        or getattr(act, "controller_id", 0) != 0
        or getattr(act, "reason", ofp.OFPR_ACTION) != ofp.OFPR_ACTION
    ):
        raise CodecError("controller action with pause, controller_id or reason is not modelled")
    return Controller(
        userdata=bytes(getattr(act, "userdata", b"")),
        max_len=getattr(act, "max_len", ofp.OFPCML_NO_BUFFER),
    )


def _decode_learn(act: OFPAction) -> Learn:
    if act.flags or act.fin_idle_timeout or act.fin_hard_timeout:
        raise CodecError("learn with flags or FIN timeouts is not modelled")
    return Learn(
        table=act.table_id,
        priority=act.priority,
        cookie=act.cookie,
        specs=tuple(_decode_learn_spec(spec) for spec in act.specs),
        idle_timeout=act.idle_timeout,
        hard_timeout=act.hard_timeout,
    )


def _subfield(sub: tuple[str, int], n_bits: int) -> str:
    """The field a learn spec's (name, offset) names, which must be used whole."""
    name, ofs = sub
    field = model_name(name)
    if ofs != 0 or n_bits != FIELD_BITS[field]:
        raise CodecError(f"learn on part of {field} ({ofs}+{n_bits} bits) is not modelled")
    return field


def _decode_learn_spec(spec: Any) -> LearnSpec:
    immediate = not isinstance(spec.src, tuple)
    if isinstance(spec, ofpp.NXFlowSpecMatch):
        field = _subfield(spec.dst, spec.n_bits)
        if immediate:
            return LearnMatchValue(field, spec.src)
        return LearnMatchField(field, _subfield(spec.src, spec.n_bits))
    if isinstance(spec, ofpp.NXFlowSpecLoad) and immediate:
        return LearnLoadValue(_subfield(spec.dst, spec.n_bits), spec.src)
    if isinstance(spec, ofpp.NXFlowSpecOutput) and not immediate:
        return LearnOutputField(_subfield(spec.src, spec.n_bits))
    raise CodecError(f"learn spec {spec} is not modelled")


# ----- flows ------------------------------------------------------------------------------------


def check_conjunctions(actions: tuple[Action, ...]) -> None:
    conjunctions = sum(isinstance(a, Conjunction) for a in actions)
    if conjunctions and conjunctions != len(actions):
        raise CodecError("a flow with conjunction actions may have no other actions")


def encode_instructions(actions: Iterable[Action]) -> list[Any]:
    actions = tuple(actions)
    check_conjunctions(actions)
    encoded = [encode_action(a) for a in actions]
    if not encoded:
        return []
    return [ofpp.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, encoded)]


def decode_instructions(instructions: Iterable[Any]) -> tuple[Action, ...]:
    actions: list[Action] = []
    for inst in instructions:
        if not (
            isinstance(inst, ofpp.OFPInstructionActions) and inst.type == ofp.OFPIT_APPLY_ACTIONS
        ):
            raise CodecError(f"instruction {type(inst).__name__} is not modelled")
        actions.extend(decode_action(a) for a in inst.actions)
    return tuple(actions)


def check_flow(flow: Flow, command: int) -> bool:
    """Checks what flow_mod needs of a flow; True if command deletes (no instructions)."""
    _check_table(flow.table)
    if not 0 <= flow.priority <= 0xFFFF:
        raise CodecError(f"priority {flow.priority} does not fit 16 bits")
    deleting = command in (ofp.OFPFC_DELETE, ofp.OFPFC_DELETE_STRICT)
    if not deleting:
        try:
            check_ct_flow(flow.match, flow.actions)
        except FlowError as exc:
            raise CodecError(str(exc)) from None
    return deleting


def flow_mod(flow: Flow, command: int = ofp.OFPFC_ADD, cookie_mask: int = 0) -> OFPFlowMod:
    """An OFPFlowMod for flow. Deletes carry no instructions, and only touch a flow whose
    cookie equals flow.cookie under cookie_mask."""
    deleting = check_flow(flow, command)
    return ofpp.OFPFlowMod(
        DATAPATH,
        cookie=flow.cookie,
        cookie_mask=cookie_mask if deleting else 0,
        table_id=flow.table,
        command=command,
        priority=flow.priority,
        buffer_id=OFP_NO_BUFFER,
        out_port=ofp.OFPP_ANY,
        out_group=ofp.OFPG_ANY,
        match=encode_match(flow.match),
        instructions=[] if deleting else encode_instructions(flow.actions),
    )


def decode_flow(table: int, priority: int, cookie: int, om: OFPMatch, instructions: Any) -> Flow:
    return Flow(
        table=table,
        priority=priority,
        match=decode_match(om),
        actions=decode_instructions(instructions),
        cookie=cookie,
    )


def flow_from_mod(mod: OFPFlowMod) -> Flow:
    return decode_flow(mod.table_id, mod.priority, mod.cookie, mod.match, mod.instructions)


def flow_from_stats(stats: OFPFlowStats) -> Flow:
    try:
        return decode_flow(
            stats.table_id, stats.priority, stats.cookie, stats.match, stats.instructions
        )
    except FlowError as exc:
        raise CodecError(
            f"flow in table {stats.table_id} priority {stats.priority} cookie "
            f"{stats.cookie:#x}: {exc}"
        ) from None


def delete_by_cookie(cookie: int, cookie_mask: int) -> OFPFlowMod:
    """An OFPFC_DELETE of every flow, in every table, whose cookie matches under the mask."""
    if not 0 < cookie_mask <= ALL_ONES:
        # A zero mask matches every flow: liveport never wipes a table.
        raise CodecError(f"cookie mask {cookie_mask:#x} would not restrict the delete")
    return ofpp.OFPFlowMod(
        DATAPATH,
        cookie=cookie & cookie_mask,
        cookie_mask=cookie_mask,
        table_id=ofp.OFPTT_ALL,
        command=ofp.OFPFC_DELETE,
        buffer_id=OFP_NO_BUFFER,
        out_port=ofp.OFPP_ANY,
        out_group=ofp.OFPG_ANY,
        match=ofpp.OFPMatch(),
        instructions=[],
    )
