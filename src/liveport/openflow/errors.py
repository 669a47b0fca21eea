"""Errors of the OpenFlow layer, and readable names for the switch's OFPT_ERROR codes.

OpenFlowError is the switch refusing a request (it names the flow at fault when there is
one); ConnectionLost is the transport going away. Both are LiveportErrors: one line, no
traceback for the user.
"""

from __future__ import annotations

from collections.abc import Mapping

from os_ken.ofproto import ofproto_common
from os_ken.ofproto import ofproto_v1_3 as ofp

from liveport.model.errors import LiveportError
from liveport.model.flows import Flow

# The ONF bundle extension for OpenFlow 1.3 reports OF1.4's OFPBFC_* codes as experimenter
# errors with exp_type 2300 + code.
_ONF_BUNDLE_BASE = 2300
_BUNDLE_CODES = (
    "UNKNOWN", "EPERM", "BAD_ID", "BUNDLE_EXIST", "BUNDLE_CLOSED", "OUT_OF_BUNDLES", "BAD_TYPE",
    "BAD_FLAGS", "MSG_BAD_LEN", "MSG_BAD_XID", "MSG_UNSUP", "MSG_CONFLICT", "MSG_TOO_MANY",
    "MSG_FAILED", "TIMEOUT", "BUNDLE_IN_PROGRESS",
)  # fmt: skip

# OFPET_* type -> the prefix of its OFP*C_* code names in os-ken's ofproto_v1_3.
_CODE_PREFIXES: Mapping[int, str] = {
    ofp.OFPET_HELLO_FAILED: "OFPHFC_",
    ofp.OFPET_BAD_REQUEST: "OFPBRC_",
    ofp.OFPET_BAD_ACTION: "OFPBAC_",
    ofp.OFPET_BAD_INSTRUCTION: "OFPBIC_",
    ofp.OFPET_BAD_MATCH: "OFPBMC_",
    ofp.OFPET_FLOW_MOD_FAILED: "OFPFMFC_",
    ofp.OFPET_GROUP_MOD_FAILED: "OFPGMFC_",
    ofp.OFPET_PORT_MOD_FAILED: "OFPPMFC_",
    ofp.OFPET_TABLE_MOD_FAILED: "OFPTMFC_",
    ofp.OFPET_QUEUE_OP_FAILED: "OFPQOFC_",
    ofp.OFPET_SWITCH_CONFIG_FAILED: "OFPSCFC_",
    ofp.OFPET_ROLE_REQUEST_FAILED: "OFPRRFC_",
    ofp.OFPET_METER_MOD_FAILED: "OFPMMFC_",
    ofp.OFPET_TABLE_FEATURES_FAILED: "OFPTFFC_",
}


def _names(prefix: str) -> dict[int, str]:
    return {
        value: name[len(prefix) :]
        for name, value in vars(ofp).items()
        if name.startswith(prefix) and isinstance(value, int)
    }


_TYPE_NAMES = _names("OFPET_")
_CODE_NAMES = {type_: _names(prefix) for type_, prefix in _CODE_PREFIXES.items()}


def describe(type_: int, code: int, experimenter: int | None = None) -> str:
    """'BAD_MATCH/BAD_PREREQ (type 4, code 9)' and the like."""
    if type_ == ofp.OFPET_EXPERIMENTER:
        if (
            experimenter == ofproto_common.ONF_EXPERIMENTER_ID
            and 0 <= code - _ONF_BUNDLE_BASE < len(_BUNDLE_CODES)
        ):
            name = f"BUNDLE_FAILED/{_BUNDLE_CODES[code - _ONF_BUNDLE_BASE]}"
        else:
            name = f"experimenter {experimenter or 0:#x} error"
        return f"{name} (exp_type {code})"
    type_name = _TYPE_NAMES.get(type_, "UNKNOWN")
    code_name = _CODE_NAMES.get(type_, {}).get(code, "UNKNOWN")
    return f"{type_name}/{code_name} (type {type_}, code {code})"


class OpenFlowError(LiveportError):
    """The switch answered a request with OFPT_ERROR.

    For experimenter errors (type 0xffff) code is the exp_type and experimenter is set.
    """

    def __init__(
        self,
        type_: int,
        code: int,
        what: str,
        *,
        experimenter: int | None = None,
        flow: Flow | None = None,
    ) -> None:
        self.type = type_
        self.code = code
        self.experimenter = experimenter
        self.flow = flow
        self.what = what
        self.text = describe(type_, code, experimenter)
        subject = f"flow {flow}" if flow is not None else what
        super().__init__(f"switch refused {subject}: {self.text}")


class ConnectionLost(LiveportError):
    """The OpenFlow connection closed or failed; nothing more will be answered on it."""


class ProtocolError(ConnectionLost):
    """The switch sent something this client cannot speak (the connection is dropped)."""
