"""The OpenFlow cookie of every flow liveport installs: its layout, both directions.

    bits 63..48  0x4C50 ("LP"): the flow is liveport's
    bits 47..40  the kind of flow (Kind)
    bits 39..16  the datapath's tunnel key (0 for the pipeline's own flows)
    bits 15..0   the port's tunnel key (0 for a datapath's flows)

Flows are deleted and dumped by cookie: a port's flows of one kind with `owned_by`, every
flow of a kind with `of_kind`, everything of liveport's with `ALL`. Learned flows (kind
LEARNED) are installed by the switch itself at activation, with the cookie the learn
action names, so they can be deleted per port like the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

MAGIC = 0x4C50 << 48
MAGIC_MASK = 0xFFFF << 48
KIND_MASK = 0xFFFFFF << 40  # magic + kind
OBJECT_MASK = (1 << 40) - 1  # datapath + port
EXACT = (1 << 64) - 1
MAX_DATAPATH = (1 << 24) - 1
MAX_PORT = (1 << 16) - 1


class Kind(IntEnum):
    PIPELINE = 1
    DATAPATH = 2
    PORT = 3
    ACTIVATION = 4  # a pending destination's blocking and activation flows
    LEARNED = 5  # installed by the switch itself at activation
    ACL = 6  # a datapath's ACL stage (port key 1: from-lport, 2: to-lport)
    CARRIED = 7  # a migrating port's connections admitted on its destination


@dataclass(frozen=True)
class Cookie:
    """A decoded cookie: what kind of flow, for which datapath and port."""

    kind: Kind
    dp_key: int = 0
    port_key: int = 0

    @property
    def port(self) -> tuple[int, int]:
        return self.dp_key, self.port_key


def cookie(kind: Kind, dp_key: int = 0, port_key: int = 0) -> int:
    if not 0 <= dp_key <= MAX_DATAPATH or not 0 <= port_key <= MAX_PORT:
        raise ValueError(f"no cookie for datapath {dp_key}, port {port_key}")
    return MAGIC | (int(kind) << 40) | (dp_key << 16) | port_key


def decode(value: int) -> Cookie | None:
    """The cookie's meaning, or None if it is not one of liveport's."""
    if value & MAGIC_MASK != MAGIC:
        return None
    try:
        kind = Kind((value >> 40) & 0xFF)
    except ValueError:
        return None
    return Cookie(kind, (value >> 16) & MAX_DATAPATH, value & MAX_PORT)


def kind_of(value: int) -> Kind | None:
    found = decode(value)
    return found.kind if found is not None else None


def port_of(value: int) -> tuple[int, int]:
    """(datapath key, port key) a cookie names (whatever its kind)."""
    return (value >> 16) & MAX_DATAPATH, value & MAX_PORT


# (cookie, mask) pairs for deleting and dumping by cookie.
ALL = (MAGIC, MAGIC_MASK)


def of_kind(kind: Kind) -> tuple[int, int]:
    """Every flow of one kind."""
    return cookie(kind), KIND_MASK


def owned_by(kind: Kind, dp_key: int, port_key: int = 0) -> tuple[int, int]:
    """The flows of one kind of one port (or datapath)."""
    return cookie(kind, dp_key, port_key), EXACT
