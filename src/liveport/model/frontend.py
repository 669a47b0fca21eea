"""Enforcing a mode at the front-end: the QEMU virtio-net-pci properties for a mode.

A mode can be enforced in two places. The back-end enforces it by what it offers: a
vhost-user back-end answers GET_FEATURES with the mode's bits (liveport's own back-end
does exactly that). The front-end enforces it by what QEMU lets through: virtio-net-pci
has a property for most feature bits, and a bit switched off there is never offered to
the guest, whatever the back-end offers. Front-end enforcement is what makes a mode usable
with a real back-end that offers more than the mode (OVS-DPDK 3.4 serving an older mode,
a newer kernel's vhost-net): the guest sees the mode's features and no more, so it can
later move to a host that offers only the mode.

`device_plan` works out, for a mode and a QEMU version, the properties that switch off
every feature the mode lacks (only properties that exist in that version, by their real
names), the queue and ring properties that keep the device inside the mode's limits, and,
bit by bit, how each feature the mode lacks is kept from the guest -- or that it cannot be.
Everything here is data read from QEMU's sources, cited per entry:

- hw/net/virtio-net.c, `virtio_net_properties`: the virtio-net feature properties. The
  USO properties (guest_uso4, guest_uso6, host_uso) appeared in 8.2 (hw_compat_8_1 in
  hw/core/machine.c turns them off for older machine types); the UDP tunnel properties
  (host_tunnel, host_tunnel_csum, guest_tunnel, guest_tunnel_csum, on the 128-bit
  `host_features_ex`) in 10.2 (hw_compat_10_1).
- include/hw/virtio/virtio.h, `DEFINE_VIRTIO_COMMON_FEATURES`: indirect_desc, event_idx,
  notify_on_empty, any_layout, iommu_platform, packed, queue_reset (7.2; hw_compat_7_1)
  and in_order (9.1, default off). No version has a notification_data property, so
  QEMU's virtio-net never offers VIRTIO_F_NOTIFICATION_DATA.
- hw/virtio/virtio-net-pci.c: vectors; hw/net/virtio-net.c: rx_queue_size and
  tx_queue_size (powers of two from 256 to 1024; tx above 256 only with vhost-user),
  host_mtu (offers VIRTIO_NET_F_MTU only when set), speed/duplex (SPEED_DUPLEX only when
  set) and failover (STANDBY).

QEMU emulates the control-queue bits (QEMU_EMULATED) itself and offers them the same way
in every version covered; the plan leaves them alone, as the checks of model.virtio do.
The releases covered are 7.2 to 10.2: the sources of 8.1, 8.2, 9.0, 9.2 and 10.2 were read;
7.2, 8.0, 9.1, 10.0 and 10.1 follow from the compat tables of hw/core/machine.c and the
pull requests that added properties (in_order: July 2024, before 9.1's freeze). A newer
release is taken to have 10.2's properties, and the plan says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from liveport.model.errors import InvalidInput
from liveport.model.virtio import (
    QEMU_EMULATED,
    VHOST_USER,
    Feature,
    Mode,
    bits_of,
    describe,
)


@dataclass(frozen=True, order=True)
class QemuVersion:
    """A QEMU release, major.minor (the patch level never changes device properties)."""

    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    @classmethod
    def parse(cls, text: str) -> QemuVersion:
        """ "9.2", "9.2.4" or "v9.2.0" -> 9.2; InvalidInput for anything else, or for a
        release older than the oldest liveport knows the properties of."""
        match = _VERSION_RE.match(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise InvalidInput(f"a QEMU version looks like 9.2 or 9.2.4, not {text!r}")
        version = cls(int(match.group(1)), int(match.group(2)))
        if version < OLDEST_QEMU:
            raise InvalidInput(
                f"QEMU {version} is older than {OLDEST_QEMU}, the oldest release whose "
                "virtio-net properties liveport knows"
            )
        if version not in KNOWN_QEMU and version < NEWEST_QEMU:
            known = ", ".join(str(v) for v in KNOWN_QEMU)
            raise InvalidInput(f"QEMU {version} is no release liveport knows (known: {known})")
        return version

    @property
    def known(self) -> bool:
        """Whether liveport read this release's sources (newer releases are assumed to
        keep 10.2's properties, and the plan says so)."""
        return self in KNOWN_QEMU


_VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)(?:\.\d+)?$")

_RELEASES = ((7, 2), (8, 0), (8, 1), (8, 2), (9, 0), (9, 1), (9, 2), (10, 0), (10, 1), (10, 2))
KNOWN_QEMU = tuple(QemuVersion(major, minor) for major, minor in _RELEASES)
OLDEST_QEMU = KNOWN_QEMU[0]
NEWEST_QEMU = KNOWN_QEMU[-1]

# QEMU's virtio-net rings: 256 entries by default and at least, 1024 at most
# (VIRTQUEUE_MAX_SIZE); tx rings above 256 only with vhost-user (virtio_net_max_tx_queue_size).
QEMU_DEFAULT_RING = 256
QEMU_MAX_RING = 1024
# 2 * pairs + 1 virtqueues must fit VIRTIO_QUEUE_MAX (1024).
QEMU_MAX_QUEUE_PAIRS = 511


@dataclass(frozen=True)
class FeatureProperty:
    """A virtio-net-pci property that offers one feature bit, as QEMU defines it."""

    name: str
    bit: int
    default: bool  # on or off on the release's own machine type
    since: QemuVersion = OLDEST_QEMU

    def exists_in(self, qemu: QemuVersion) -> bool:
        return qemu >= self.since


_F = Feature
_V8_2 = QemuVersion(8, 2)
_V9_1 = QemuVersion(9, 1)
_V10_2 = QemuVersion(10, 2)

# In the order QEMU lists them: virtio_net_properties, then DEFINE_VIRTIO_COMMON_FEATURES.
PROPERTIES = (
    FeatureProperty("csum", _F.VIRTIO_NET_F_CSUM, True),
    FeatureProperty("guest_csum", _F.VIRTIO_NET_F_GUEST_CSUM, True),
    FeatureProperty("gso", _F.VIRTIO_NET_F_GSO, True),
    FeatureProperty("guest_tso4", _F.VIRTIO_NET_F_GUEST_TSO4, True),
    FeatureProperty("guest_tso6", _F.VIRTIO_NET_F_GUEST_TSO6, True),
    FeatureProperty("guest_ecn", _F.VIRTIO_NET_F_GUEST_ECN, True),
    FeatureProperty("guest_ufo", _F.VIRTIO_NET_F_GUEST_UFO, True),
    FeatureProperty("guest_announce", _F.VIRTIO_NET_F_GUEST_ANNOUNCE, True),
    FeatureProperty("host_tso4", _F.VIRTIO_NET_F_HOST_TSO4, True),
    FeatureProperty("host_tso6", _F.VIRTIO_NET_F_HOST_TSO6, True),
    FeatureProperty("host_ecn", _F.VIRTIO_NET_F_HOST_ECN, True),
    FeatureProperty("host_ufo", _F.VIRTIO_NET_F_HOST_UFO, True),
    FeatureProperty("mrg_rxbuf", _F.VIRTIO_NET_F_MRG_RXBUF, True),
    FeatureProperty("status", _F.VIRTIO_NET_F_STATUS, True),
    FeatureProperty("ctrl_vq", _F.VIRTIO_NET_F_CTRL_VQ, True),
    FeatureProperty("ctrl_rx", _F.VIRTIO_NET_F_CTRL_RX, True),
    FeatureProperty("ctrl_vlan", _F.VIRTIO_NET_F_CTRL_VLAN, True),
    FeatureProperty("ctrl_rx_extra", _F.VIRTIO_NET_F_CTRL_RX_EXTRA, True),
    FeatureProperty("ctrl_mac_addr", _F.VIRTIO_NET_F_CTRL_MAC_ADDR, True),
    FeatureProperty("ctrl_guest_offloads", _F.VIRTIO_NET_F_CTRL_GUEST_OFFLOADS, True),
    FeatureProperty("mq", _F.VIRTIO_NET_F_MQ, False),
    FeatureProperty("rss", _F.VIRTIO_NET_F_RSS, False),
    FeatureProperty("hash", _F.VIRTIO_NET_F_HASH_REPORT, False),
    FeatureProperty("guest_rsc_ext", _F.VIRTIO_NET_F_RSC_EXT, False),
    FeatureProperty("guest_uso4", _F.VIRTIO_NET_F_GUEST_USO4, True, _V8_2),
    FeatureProperty("guest_uso6", _F.VIRTIO_NET_F_GUEST_USO6, True, _V8_2),
    FeatureProperty("host_uso", _F.VIRTIO_NET_F_HOST_USO, True, _V8_2),
    FeatureProperty("host_tunnel", _F.VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO, True, _V10_2),
    FeatureProperty("host_tunnel_csum", _F.VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO_CSUM, True, _V10_2),
    FeatureProperty("guest_tunnel", _F.VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO, True, _V10_2),
    FeatureProperty("guest_tunnel_csum", _F.VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO_CSUM, True, _V10_2),
    FeatureProperty("indirect_desc", _F.VIRTIO_RING_F_INDIRECT_DESC, True),
    FeatureProperty("event_idx", _F.VIRTIO_RING_F_EVENT_IDX, True),
    FeatureProperty("notify_on_empty", _F.VIRTIO_F_NOTIFY_ON_EMPTY, True),
    FeatureProperty("any_layout", _F.VIRTIO_F_ANY_LAYOUT, True),
    FeatureProperty("iommu_platform", _F.VIRTIO_F_ACCESS_PLATFORM, False),
    FeatureProperty("packed", _F.VIRTIO_F_RING_PACKED, False),
    FeatureProperty("queue_reset", _F.VIRTIO_F_RING_RESET, True),
    FeatureProperty("in_order", _F.VIRTIO_F_IN_ORDER, False, _V9_1),
)
_BY_BIT = {prop.bit: prop for prop in PROPERTIES}

# Offered only when a value property is set, which the plan never does.
VALUE_GATED: dict[int, str] = {
    _F.VIRTIO_NET_F_MTU: "host_mtu",
    _F.VIRTIO_NET_F_SPEED_DUPLEX: "speed and duplex",
    _F.VIRTIO_NET_F_STANDBY: "failover",
}
# The vhost bits are no guest features (bit 30 is also QEMU's VIRTIO_F_BAD_FEATURE, which
# no driver acknowledges).
VHOST_BITS = frozenset((_F.VHOST_F_LOG_ALL, _F.VHOST_USER_F_PROTOCOL_FEATURES))

# How a bit is kept from the guest (or not).
SWITCHED_OFF = "switched-off"  # a property of this plan switches it off
OFF_BY_DEFAULT = "off-by-default"  # QEMU's property is off unless set
NOT_IN_VERSION = "not-in-version"  # this QEMU has no property for it and never offers it
NEVER_OFFERED = "never-offered"  # QEMU's virtio-net does not implement it
VALUE_GATED_OFF = "value-gated"  # offered only with a value property the plan leaves unset
EMULATED = "emulated"  # QEMU's own control-queue bits, left at QEMU's defaults
CANNOT = "cannot"  # QEMU offers it and no property takes it away


@dataclass(frozen=True)
class Treatment:
    """What the plan does about one feature bit, and why."""

    bit: int
    kind: str
    detail: str


@dataclass(frozen=True)
class Property:
    """One virtio-net-pci property of the plan: name=value, and the bit it is about."""

    name: str
    value: str
    bit: int | None = None

    def __str__(self) -> str:
        return f"{self.name}={self.value}"


@dataclass(frozen=True)
class DevicePlan:
    """The virtio-net-pci properties that hold a guest to a mode on one QEMU release.

    lacking says, for every feature bit the mode lacks (vhost bits aside), how the guest is
    kept from it; exact is False when some bit cannot be (then `cannot` lists them).
    unavailable lists the bits the mode has that this QEMU will not offer the guest (the
    guest then sees less than the mode, which never hinders a migration).
    """

    mode: str
    qemu: QemuVersion
    backend: str
    properties: tuple[Property, ...]
    lacking: tuple[Treatment, ...]
    unavailable: tuple[Treatment, ...]
    queue_pairs: int
    rx_queue_size: int
    tx_queue_size: int
    notes: tuple[str, ...] = field(default=())

    @property
    def cannot(self) -> tuple[Treatment, ...]:
        return tuple(t for t in self.lacking if t.kind == CANNOT)

    @property
    def exact(self) -> bool:
        """Whether the guest can see none of the features the mode lacks (QEMU's own
        control-queue features, which the plan leaves alone, aside)."""
        return not self.cannot

    def device_args(self) -> str:
        """The properties as QEMU's -device option takes them: "csum=off,host_tso4=off"."""
        return ",".join(str(prop) for prop in self.properties)

    def treatment(self, bit: int) -> Treatment | None:
        return next((t for t in self.lacking + self.unavailable if t.bit == bit), None)

    def to_json(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "qemu": str(self.qemu),
            "backend": self.backend,
            "device": "virtio-net-pci",
            "properties": {prop.name: prop.value for prop in self.properties},
            "args": self.device_args(),
            "netdev": {"queues": self.queue_pairs},
            "exact": self.exact,
            "lacking": [_treatment_json(t) for t in self.lacking],
            "unavailable": [_treatment_json(t) for t in self.unavailable],
            "notes": list(self.notes),
        }


def _treatment_json(t: Treatment) -> dict[str, object]:
    return {"bit": t.bit, "name": describe(t.bit), "how": t.kind, "detail": t.detail}


def device_plan(
    mode: Mode,
    qemu: QemuVersion,
    *,
    queue_pairs: int = 1,
    ring_size: int | None = None,
) -> DevicePlan:
    """The virtio-net-pci properties that keep a guest of QEMU `qemu` inside `mode`.

    queue_pairs (default 1) and ring_size (default QEMU's 256) must fit both the mode's
    limits and QEMU's; InvalidInput says which does not.
    """
    queue_props = _queue_properties(mode, qemu, queue_pairs)
    rx, tx, ring_props = _ring_properties(mode, ring_size)
    lacking = tuple(_lacking(bit, qemu) for bit in _guest_bits(~mode.features))
    unavailable = tuple(
        t for t in (_unavailable(bit, qemu, queue_pairs) for bit in _guest_bits(mode.features)) if t
    )
    switched = tuple(
        Property(_BY_BIT[t.bit].name, "off", t.bit) for t in lacking if t.kind == SWITCHED_OFF
    )
    ordered = _in_qemu_order(switched + queue_props) + ring_props
    notes = _notes(mode, qemu, queue_pairs, rx, tx)
    return DevicePlan(
        mode.name, qemu, mode.backend, ordered, lacking, unavailable, queue_pairs, rx, tx, notes
    )


_ALL_BITS = sum(1 << member.value for member in Feature)


def _guest_bits(features: int) -> tuple[int, ...]:
    """The named feature bits of a mask that could reach a guest (vhost bits aside)."""
    return tuple(bit for bit in bits_of(features & _ALL_BITS) if bit not in VHOST_BITS)


def _lacking(bit: int, qemu: QemuVersion) -> Treatment:
    """How the guest is kept from a bit the mode lacks."""
    if QEMU_EMULATED >> bit & 1:
        return Treatment(bit, EMULATED, "QEMU's own; left at its default, as in every release")
    prop = _BY_BIT.get(bit)
    if prop is not None and prop.exists_in(qemu):
        if prop.default:
            return Treatment(bit, SWITCHED_OFF, f"{prop.name}=off")
        return Treatment(bit, OFF_BY_DEFAULT, f"{prop.name} is off unless set")
    if prop is not None:
        return Treatment(
            bit,
            NOT_IN_VERSION,
            f"QEMU {qemu} has no {prop.name} (since {prop.since}) and never offers it",
        )
    if bit in VALUE_GATED:
        return Treatment(bit, VALUE_GATED_OFF, f"offered only with {VALUE_GATED[bit]}, left unset")
    if bit == _F.VIRTIO_F_VERSION_1:
        return Treatment(
            bit,
            CANNOT,
            "a modern virtio-net-pci always offers it; only disable-modern=on removes it",
        )
    return Treatment(bit, NEVER_OFFERED, "QEMU's virtio-net does not offer it")


def _unavailable(bit: int, qemu: QemuVersion, queue_pairs: int) -> Treatment | None:
    """Why this QEMU will not offer a bit the mode has, or None if it may."""
    if QEMU_EMULATED >> bit & 1:
        return None
    prop = _BY_BIT.get(bit)
    if prop is not None and prop.exists_in(qemu):
        if prop.default or (prop.name == "mq" and queue_pairs > 1):
            return None
        return Treatment(bit, OFF_BY_DEFAULT, f"{prop.name} is off unless set")
    if prop is not None:
        return Treatment(
            bit, NOT_IN_VERSION, f"QEMU {qemu} has no {prop.name} (since {prop.since})"
        )
    if bit in VALUE_GATED:
        return Treatment(bit, VALUE_GATED_OFF, f"offered only with {VALUE_GATED[bit]}")
    if bit == _F.VIRTIO_F_VERSION_1:
        return None
    return Treatment(bit, NEVER_OFFERED, "QEMU's virtio-net does not offer it")


def _queue_properties(mode: Mode, qemu: QemuVersion, queue_pairs: int) -> tuple[Property, ...]:
    """mq and vectors for more than one queue pair (the netdev needs queues=N as well)."""
    if isinstance(queue_pairs, bool) or not isinstance(queue_pairs, int) or queue_pairs < 1:
        raise InvalidInput(f"queue pairs must be a positive integer, not {queue_pairs!r}")
    if queue_pairs == 1:
        return ()
    if not mode.features >> _F.VIRTIO_NET_F_MQ & 1:
        raise InvalidInput(
            f"mode {mode.name} has no {describe(_F.VIRTIO_NET_F_MQ)}: one queue pair only"
        )
    if queue_pairs > mode.max_queue_pairs:
        raise InvalidInput(
            f"mode {mode.name} allows at most {mode.max_queue_pairs} queue pairs, not {queue_pairs}"
        )
    if queue_pairs > QEMU_MAX_QUEUE_PAIRS:
        raise InvalidInput(
            f"QEMU {qemu}'s virtio-net has at most {QEMU_MAX_QUEUE_PAIRS} queue pairs, "
            f"not {queue_pairs}"
        )
    # One vector per virtqueue, one for the control queue and one for configuration
    # changes, as libvirt sets it.
    return (
        Property("mq", "on", _F.VIRTIO_NET_F_MQ),
        Property("vectors", str(2 * queue_pairs + 2)),
    )


def _ring_properties(mode: Mode, ring_size: int | None) -> tuple[int, int, tuple[Property, ...]]:
    """rx/tx ring sizes: QEMU's 256 unless asked, within the mode and QEMU's 256-1024."""
    if mode.max_ring_size < QEMU_DEFAULT_RING:
        raise InvalidInput(
            f"mode {mode.name} allows rings of {mode.max_ring_size} entries; QEMU's "
            f"virtio-net rings have at least {QEMU_DEFAULT_RING}"
        )
    if ring_size is None:
        return QEMU_DEFAULT_RING, QEMU_DEFAULT_RING, ()
    if (
        isinstance(ring_size, bool)
        or not isinstance(ring_size, int)
        or ring_size < QEMU_DEFAULT_RING
        or ring_size > QEMU_MAX_RING
        or ring_size & (ring_size - 1)
    ):
        raise InvalidInput(
            f"QEMU's virtio-net rings are a power of two from {QEMU_DEFAULT_RING} to "
            f"{QEMU_MAX_RING} entries, not {ring_size!r}"
        )
    if ring_size > mode.max_ring_size:
        raise InvalidInput(
            f"mode {mode.name} allows rings of at most {mode.max_ring_size} entries, "
            f"not {ring_size}"
        )
    # Only a vhost-user (or vDPA) peer may have tx rings above 256.
    tx = ring_size if mode.backend == VHOST_USER else QEMU_DEFAULT_RING
    props = [Property("rx_queue_size", str(ring_size))]
    if tx != QEMU_DEFAULT_RING:
        props.append(Property("tx_queue_size", str(tx)))
    return ring_size, tx, tuple(props) if ring_size != QEMU_DEFAULT_RING else ()


_ORDER = {prop.name: index for index, prop in enumerate(PROPERTIES)}


def _in_qemu_order(props: tuple[Property, ...]) -> tuple[Property, ...]:
    return tuple(sorted(props, key=lambda p: _ORDER.get(p.name, len(_ORDER))))


def _notes(mode: Mode, qemu: QemuVersion, queue_pairs: int, rx: int, tx: int) -> tuple[str, ...]:
    notes = []
    if not qemu.known:
        notes.append(
            f"QEMU {qemu} is newer than {NEWEST_QEMU}, the newest release liveport read; "
            f"the properties are {NEWEST_QEMU}'s"
        )
    if tx < rx:
        notes.append(f"tx rings stay at {tx} entries: QEMU allows larger ones only with vhost-user")
    if mode.backend != VHOST_USER:
        notes.append(f"the netdev is tap with vhost=on ({mode.backend})")
    if queue_pairs > 1:
        notes.append(f"the netdev needs queues={queue_pairs} as well")
    return tuple(notes)
