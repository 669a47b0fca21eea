"""Virtio and vhost-user feature bits, compatibility modes, and the checks made before a migration.

A vhost-user *mode* (DESIGN.md V1) is what a backend offers a guest: a virtio feature mask
(the backend's reply to VHOST_USER_GET_FEATURES: virtio-net device and transport bits plus
the vhost bits VHOST_F_LOG_ALL and VHOST_USER_F_PROTOCOL_FEATURES), a vhost-user protocol
feature mask (its reply to GET_PROTOCOL_FEATURES), and limits. A mode may also be taken
from a front-end: what QEMU's virtio-net-pci offers over the kernel's vhost-net (its
`backend` says which); liveport.model.frontend turns any mode into the QEMU properties that
hold a guest to it. What a guest then *negotiated* is recorded as a `Negotiated` value.

How QEMU (7.2, the referee of V7) treats these bits decides what a check must look at:

- QEMU filters through the backend only the bits of its vhost-user feature list
  (`BACKEND_FILTERED`, from `user_feature_bits` in QEMU 7.2's hw/net/vhost_net.c). The
  bits it emulates itself (`QEMU_EMULATED`: MAC, STATUS, the control-queue bits, ...) are
  offered whatever the backend says; VHOST_F_LOG_ALL is never shown to the guest, and the
  guest never acks VHOST_USER_F_PROTOCOL_FEATURES.
- On an incoming migration QEMU checks only that the features the guest acked are a
  subset of the destination's host features (`Features 0x... unsupported`). A guest that
  never acked a bit can move to a backend without it; one that acked it cannot.
- QEMU refuses to migrate at all when the backend lacks VHOST_F_LOG_ALL, or lacks
  VHOST_USER_PROTOCOL_F_LOG_SHMFD (which needs VHOST_USER_F_PROTOCOL_FEATURES), so every
  mode must keep those (`migration_blockers`).

So `check_negotiated` compares every negotiated bit that QEMU does not emulate with the
destination mode (for QEMU 7.2 these are the filtered bits; newer QEMU filters more, such
as IN_ORDER, and the check is right for them too). `check_modes` is the conservative
comparison of two modes before anything was negotiated, and `check_migration` is V5's
verdict: the destination must offer the port's mode by name, and what was negotiated
must fit it.

Bit numbers follow the virtio 1.4 specification (content.tex, device-types/net), Linux's
include/uapi/linux/virtio_net.h, virtio_config.h and virtio_ring.h (as copied into QEMU
10.2's include/standard-headers) and QEMU's docs/interop/vhost-user.rst. Names are the
canonical C names; input also accepts short forms ("MTU", "INDIRECT_DESC",
"RING_INDIRECT_DESC"), legacy names ("VIRTIO_F_IOMMU_PLATFORM",
"VHOST_USER_PROTOCOL_F_SLAVE_REQ") and "BIT_<n>" for a bit liveport has no name for.

Virtio feature masks are 128-bit: virtio 1.4 numbers net features past bit 63 (the UDP
tunnel GSO bits 65-68 that Linux 6.17 and QEMU 10.2 implement), and QEMU 10.2 keeps its
device features in 128 bits. The vhost-user protocol does not: GET_FEATURES and
SET_FEATURES carry 64 bits, so a vhost-user back-end can offer only bits 0-63
(`backend_offer`); bits 64 and up can only come from the front-end itself (QEMU with a
tap/vhost-net back-end). Protocol feature masks stay 64-bit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from liveport.model.errors import InvalidInput
from liveport.model.frozen import FrozenMap

FEATURE_BITS = 128  # virtio feature masks (virtio 1.4 numbers features past bit 63)
PROTOCOL_FEATURE_BITS = 64  # vhost-user protocol feature masks
VHOST_USER_FEATURE_BITS = 64  # what GET_FEATURES/SET_FEATURES carry
VHOST_USER_FEATURES = (1 << VHOST_USER_FEATURE_BITS) - 1
MAX_QUEUE_PAIRS = 0x8000  # virtio-net: max_virtqueue_pairs is at most 0x8000
MAX_RING_SIZE = 32768  # virtio: a virtqueue has at most 32768 entries


class Feature(IntEnum):
    """The bit number of every virtio-net, virtio transport and vhost feature liveport names."""

    VIRTIO_NET_F_CSUM = 0
    VIRTIO_NET_F_GUEST_CSUM = 1
    VIRTIO_NET_F_CTRL_GUEST_OFFLOADS = 2
    VIRTIO_NET_F_MTU = 3
    VIRTIO_NET_F_MAC = 5
    VIRTIO_NET_F_GSO = 6  # legacy devices only
    VIRTIO_NET_F_GUEST_TSO4 = 7
    VIRTIO_NET_F_GUEST_TSO6 = 8
    VIRTIO_NET_F_GUEST_ECN = 9
    VIRTIO_NET_F_GUEST_UFO = 10
    VIRTIO_NET_F_HOST_TSO4 = 11
    VIRTIO_NET_F_HOST_TSO6 = 12
    VIRTIO_NET_F_HOST_ECN = 13
    VIRTIO_NET_F_HOST_UFO = 14
    VIRTIO_NET_F_MRG_RXBUF = 15
    VIRTIO_NET_F_STATUS = 16
    VIRTIO_NET_F_CTRL_VQ = 17
    VIRTIO_NET_F_CTRL_RX = 18
    VIRTIO_NET_F_CTRL_VLAN = 19
    VIRTIO_NET_F_CTRL_RX_EXTRA = 20
    VIRTIO_NET_F_GUEST_ANNOUNCE = 21
    VIRTIO_NET_F_MQ = 22
    VIRTIO_NET_F_CTRL_MAC_ADDR = 23
    VIRTIO_F_NOTIFY_ON_EMPTY = 24  # legacy
    VHOST_F_LOG_ALL = 26  # vhost: the backend can log dirty pages (migration)
    VIRTIO_F_ANY_LAYOUT = 27  # legacy
    VIRTIO_RING_F_INDIRECT_DESC = 28
    VIRTIO_RING_F_EVENT_IDX = 29
    VHOST_USER_F_PROTOCOL_FEATURES = 30  # vhost-user: protocol features may be negotiated
    VIRTIO_F_VERSION_1 = 32
    VIRTIO_F_ACCESS_PLATFORM = 33
    VIRTIO_F_RING_PACKED = 34
    VIRTIO_F_IN_ORDER = 35
    VIRTIO_F_ORDER_PLATFORM = 36
    VIRTIO_F_SR_IOV = 37
    VIRTIO_F_NOTIFICATION_DATA = 38
    VIRTIO_F_NOTIF_CONFIG_DATA = 39
    VIRTIO_F_RING_RESET = 40
    VIRTIO_F_ADMIN_VQ = 41
    VIRTIO_F_SUSPEND = 43
    VIRTIO_NET_F_DEVICE_STATS = 50
    VIRTIO_NET_F_HASH_TUNNEL = 51
    VIRTIO_NET_F_VQ_NOTF_COAL = 52
    VIRTIO_NET_F_NOTF_COAL = 53
    VIRTIO_NET_F_GUEST_USO4 = 54
    VIRTIO_NET_F_GUEST_USO6 = 55
    VIRTIO_NET_F_HOST_USO = 56
    VIRTIO_NET_F_HASH_REPORT = 57
    VIRTIO_NET_F_GUEST_HDRLEN = 59
    VIRTIO_NET_F_RSS = 60
    VIRTIO_NET_F_RSC_EXT = 61
    VIRTIO_NET_F_STANDBY = 62
    VIRTIO_NET_F_SPEED_DUPLEX = 63
    # Past bit 63: only the virtio transport carries these, never vhost-user.
    VIRTIO_NET_F_RSS_CONTEXT = 64
    VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO = 65
    VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO_CSUM = 66
    VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO = 67
    VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO_CSUM = 68
    VIRTIO_NET_F_OUT_NET_HEADER = 69
    VIRTIO_NET_F_IPSEC = 70
    # Legacy names (enum aliases): accepted on input, never printed.
    VIRTIO_F_IOMMU_PLATFORM = 33


class ProtocolFeature(IntEnum):
    """The bit number of every vhost-user protocol feature (docs/interop/vhost-user.rst)."""

    VHOST_USER_PROTOCOL_F_MQ = 0
    VHOST_USER_PROTOCOL_F_LOG_SHMFD = 1
    VHOST_USER_PROTOCOL_F_RARP = 2
    VHOST_USER_PROTOCOL_F_REPLY_ACK = 3
    VHOST_USER_PROTOCOL_F_NET_MTU = 4
    VHOST_USER_PROTOCOL_F_BACKEND_REQ = 5
    VHOST_USER_PROTOCOL_F_CROSS_ENDIAN = 6
    VHOST_USER_PROTOCOL_F_CRYPTO_SESSION = 7
    VHOST_USER_PROTOCOL_F_PAGEFAULT = 8
    VHOST_USER_PROTOCOL_F_CONFIG = 9
    VHOST_USER_PROTOCOL_F_BACKEND_SEND_FD = 10
    VHOST_USER_PROTOCOL_F_HOST_NOTIFIER = 11
    VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD = 12
    VHOST_USER_PROTOCOL_F_RESET_DEVICE = 13
    VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS = 14
    VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS = 15
    VHOST_USER_PROTOCOL_F_STATUS = 16
    VHOST_USER_PROTOCOL_F_XEN_MMAP = 17
    VHOST_USER_PROTOCOL_F_SHARED_OBJECT = 18
    VHOST_USER_PROTOCOL_F_DEVICE_STATE = 19
    # Legacy names: the spec called the backend the "slave" until 2023 and the MTU
    # feature VHOST_USER_PROTOCOL_F_MTU; QEMU and DPDK say NET_MTU.
    VHOST_USER_PROTOCOL_F_SLAVE_REQ = 5
    VHOST_USER_PROTOCOL_F_SLAVE_SEND_FD = 10
    VHOST_USER_PROTOCOL_F_MTU = 4


_BIT_RE = re.compile(r"^BIT_(\d+)$")
_MODE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass(frozen=True)
class _BitSpace:
    """Names, masks and descriptions for one feature space (128 or 64 bits wide)."""

    what: str  # "virtio feature" | "vhost-user protocol feature"
    unit: str  # how describe() calls a bit: "bit" | "protocol bit"
    width: int
    canonical: Mapping[int, str]
    by_name: Mapping[str, int]

    def name(self, bit: int) -> str:
        return self.canonical.get(bit, f"BIT_{bit}")

    def names(self, mask: int) -> tuple[str, ...]:
        _check_mask(mask, self.what, self.width)
        return tuple(self.name(bit) for bit in bits_of(mask))

    def bit(self, name: str) -> int:
        if not isinstance(name, str):
            raise InvalidInput(f"a {self.what} is given by name, not {name!r}")
        key = name.strip().upper()
        if key in self.by_name:
            return self.by_name[key]
        numbered = _BIT_RE.match(key)
        if numbered and int(numbered.group(1)) < self.width:
            return int(numbered.group(1))
        raise InvalidInput(
            f"unknown {self.what} {name!r} (use a name such as {self.example}, "
            f"or BIT_<n> for bit n)"
        )

    def mask(self, names: Iterable[str] | str) -> int:
        if isinstance(names, str):
            names = [part for part in re.split(r"[\s,]+", names) if part]
        result = 0
        for name in names:
            result |= 1 << self.bit(name)
        return result

    def describe(self, bit: int) -> str:
        return f"{self.name(bit)} ({self.unit} {bit})"

    @property
    def example(self) -> str:
        return next(iter(self.canonical.values()))


def _space(
    enum: type[IntEnum], prefixes: Sequence[str], what: str, unit: str, width: int
) -> _BitSpace:
    """Build a bit space from an enum: canonical names, legacy aliases and short forms."""
    canonical = {member.value: member.name for member in enum}
    by_name: dict[str, int] = {}

    def add(alias: str, bit: int) -> None:
        if by_name.setdefault(alias, bit) != bit:
            raise AssertionError(f"{what} alias {alias} names two bits")

    for name, member in enum.__members__.items():
        add(name, member.value)
        for prefix in prefixes:
            if name.startswith(prefix):
                short = name.removeprefix(prefix)
                add(short, member.value)
                if prefix == "VIRTIO_RING_F_":
                    # Spellings seen in DPDK and in the compatibility-mode proposal.
                    add("RING_" + short, member.value)
                    add("VIRTIO_F_" + short, member.value)
                    add("VIRTIO_F_RING_" + short, member.value)
    return _BitSpace(what, unit, width, FrozenMap(canonical), FrozenMap(by_name))


_FEATURES = _space(
    Feature,
    ("VIRTIO_NET_F_", "VIRTIO_RING_F_", "VIRTIO_F_", "VHOST_USER_F_", "VHOST_F_"),
    "virtio feature",
    "bit",
    FEATURE_BITS,
)
_PROTOCOL = _space(
    ProtocolFeature,
    ("VHOST_USER_PROTOCOL_F_",),
    "vhost-user protocol feature",
    "protocol bit",
    PROTOCOL_FEATURE_BITS,
)


def bits_of(mask: int) -> tuple[int, ...]:
    """The numbers of the bits set in mask (a non-negative integer), lowest first."""
    if mask < 0:
        raise InvalidInput(f"a feature mask cannot be negative: {mask}")
    return tuple(bit for bit in range(mask.bit_length()) if mask >> bit & 1)


def _check_mask(mask: int, what: str, width: int) -> None:
    if not 0 <= mask < 1 << width:
        raise InvalidInput(f"a {what} mask is a {width}-bit unsigned value, not {mask:#x}")


def _check_features(mask: int) -> None:
    _check_mask(mask, "virtio feature", FEATURE_BITS)


def _check_protocol(mask: int) -> None:
    _check_mask(mask, "vhost-user protocol feature", PROTOCOL_FEATURE_BITS)


def names(mask: int) -> tuple[str, ...]:
    """The canonical names of the virtio feature bits set in mask, lowest bit first."""
    return _FEATURES.names(mask)


def mask(names: Iterable[str] | str) -> int:
    """The virtio feature mask of names (canonical, short or legacy names, or BIT_<n>).

    A string is split at commas and spaces. An unknown name is refused with InvalidInput
    naming it.
    """
    return _FEATURES.mask(names)


def bit(name: str) -> int:
    """The bit number of one virtio feature name."""
    return _FEATURES.bit(name)


def describe(bit: int) -> str:
    """A virtio feature bit as error messages show it: "VIRTIO_RING_F_INDIRECT_DESC (bit 28)"."""
    return _FEATURES.describe(bit)


def protocol_names(mask: int) -> tuple[str, ...]:
    """The canonical names of the vhost-user protocol feature bits set in mask."""
    return _PROTOCOL.names(mask)


def protocol_mask(names: Iterable[str] | str) -> int:
    """The vhost-user protocol feature mask of names; unknown names are refused."""
    return _PROTOCOL.mask(names)


def protocol_bit(name: str) -> int:
    """The bit number of one vhost-user protocol feature name."""
    return _PROTOCOL.bit(name)


def describe_protocol(bit: int) -> str:
    """A protocol feature bit: "VHOST_USER_PROTOCOL_F_LOG_SHMFD (protocol bit 1)"."""
    return _PROTOCOL.describe(bit)


def _flags(*bits: int) -> int:
    result = 0
    for one in bits:
        result |= 1 << one
    return result


_F = Feature

# QEMU 7.2's user_feature_bits (hw/net/vhost_net.c): the bits a vhost-user backend
# controls. QEMU offers one of these to the guest only if its device properties allow it
# and the backend offers it. (Newer QEMU adds NOTIFICATION_DATA, IN_ORDER, RSC_EXT and
# the USO bits.)
BACKEND_FILTERED = _flags(
    _F.VIRTIO_F_NOTIFY_ON_EMPTY,
    _F.VIRTIO_RING_F_INDIRECT_DESC,
    _F.VIRTIO_RING_F_EVENT_IDX,
    _F.VIRTIO_F_ANY_LAYOUT,
    _F.VIRTIO_F_VERSION_1,
    _F.VIRTIO_NET_F_CSUM,
    _F.VIRTIO_NET_F_GUEST_CSUM,
    _F.VIRTIO_NET_F_GSO,
    _F.VIRTIO_NET_F_GUEST_TSO4,
    _F.VIRTIO_NET_F_GUEST_TSO6,
    _F.VIRTIO_NET_F_GUEST_ECN,
    _F.VIRTIO_NET_F_GUEST_UFO,
    _F.VIRTIO_NET_F_HOST_TSO4,
    _F.VIRTIO_NET_F_HOST_TSO6,
    _F.VIRTIO_NET_F_HOST_ECN,
    _F.VIRTIO_NET_F_HOST_UFO,
    _F.VIRTIO_NET_F_MRG_RXBUF,
    _F.VIRTIO_NET_F_MTU,
    _F.VIRTIO_F_ACCESS_PLATFORM,
    _F.VIRTIO_F_RING_PACKED,
    _F.VIRTIO_F_RING_RESET,
    _F.VIRTIO_NET_F_RSS,
    _F.VIRTIO_NET_F_HASH_REPORT,
    _F.VIRTIO_NET_F_GUEST_ANNOUNCE,
    _F.VIRTIO_NET_F_MQ,
)

# Bits QEMU provides itself whatever the backend offers: the control queue is handled
# by QEMU, not the backend; STANDBY and SPEED_DUPLEX are QEMU device properties.
QEMU_EMULATED = _flags(
    _F.VIRTIO_NET_F_CTRL_GUEST_OFFLOADS,
    _F.VIRTIO_NET_F_MAC,
    _F.VIRTIO_NET_F_STATUS,
    _F.VIRTIO_NET_F_CTRL_VQ,
    _F.VIRTIO_NET_F_CTRL_RX,
    _F.VIRTIO_NET_F_CTRL_VLAN,
    _F.VIRTIO_NET_F_CTRL_RX_EXTRA,
    _F.VIRTIO_NET_F_CTRL_MAC_ADDR,
    _F.VIRTIO_NET_F_STANDBY,
    _F.VIRTIO_NET_F_SPEED_DUPLEX,
)

# What every mode needs so that QEMU allows a migration at all (V1).
MIGRATION_FEATURES = _flags(_F.VHOST_F_LOG_ALL, _F.VHOST_USER_F_PROTOCOL_FEATURES)
MIGRATION_PROTOCOL_FEATURES = _flags(ProtocolFeature.VHOST_USER_PROTOCOL_F_LOG_SHMFD)


def guest_visible(mode_features: int) -> int:
    """The bits of a backend's feature mask that a guest behind QEMU 7.2 can be offered.

    That is mode_features ∩ BACKEND_FILTERED; QEMU's device properties may take more away,
    and QEMU adds QEMU_EMULATED on its own.
    """
    _check_features(mode_features)
    return mode_features & BACKEND_FILTERED


def backend_relevant(features: int) -> int:
    """The bits of a feature mask that depend on the backend: all but QEMU_EMULATED."""
    return features & ~QEMU_EMULATED


def backend_offer(mode: Mode) -> int:
    """What a vhost-user back-end serving mode answers to GET_FEATURES: the mode's bits 0-63.

    Bits 64 and up do not fit the protocol's 64-bit feature word; a mode that lists them
    describes what a front-end (QEMU with a tap/vhost-net back-end) offers, not a vhost-user
    back-end.
    """
    return mode.features & VHOST_USER_FEATURES


def extended(features: int) -> int:
    """The bits of a feature mask past bit 63, which only the virtio transport carries."""
    _check_features(features)
    return features & ~VHOST_USER_FEATURES


VHOST_USER = "vhost-user"
VHOST_NET = "vhost-net"  # QEMU's tap netdev with the kernel's vhost-net
BACKENDS = (VHOST_USER, VHOST_NET)


@dataclass(frozen=True)
class Mode:
    """A named vhost-user compatibility mode: the features a guest may be offered, and limits.

    features is the mode's virtio feature mask. For a mode taken from a vhost-user
    back-end it is the back-end's GET_FEATURES reply (including the vhost bits 26 and 30);
    a mode taken from a front-end may also hold bits 64 and up, which a vhost-user back-end
    can never offer (`backend_offer`). protocol_features is the vhost-user protocol feature
    mask. extra holds free key/values; liveport reads one of them: "backend" ("vhost-user",
    the default, or "vhost-net"), the kind of back-end the mode was taken from.
    """

    name: str
    features: int
    protocol_features: int
    max_queue_pairs: int
    max_ring_size: int
    extra: FrozenMap[str, str] = field(default_factory=FrozenMap[str, str])

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _MODE_NAME_RE.match(self.name):
            raise InvalidInput(
                f"malformed vhost-user mode name {self.name!r} (letters, digits and . _ + - "
                "only, e.g. upstream.ovs-dpdk.v2.6)"
            )
        _check_features(self.features)
        _check_protocol(self.protocol_features)
        _check_limit("max_queue_pairs", self.max_queue_pairs, MAX_QUEUE_PAIRS)
        _check_limit("max_ring_size", self.max_ring_size, MAX_RING_SIZE)
        kind = self.extra.get("backend", VHOST_USER)
        if kind not in BACKENDS:
            raise InvalidInput(
                f"mode {self.name}: extra 'backend' must be {' or '.join(BACKENDS)}, not {kind!r}"
            )

    @property
    def backend(self) -> str:
        """The kind of back-end the mode was taken from: "vhost-user" or "vhost-net"."""
        return self.extra.get("backend", VHOST_USER)


@dataclass(frozen=True)
class Negotiated:
    """What a guest negotiated with the backend: features, protocol features, queues, rings."""

    features: int
    protocol_features: int
    queue_pairs: int
    ring_sizes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _check_features(self.features)
        _check_protocol(self.protocol_features)
        _check_limit("queue_pairs", self.queue_pairs, MAX_QUEUE_PAIRS)
        for size in self.ring_sizes:
            _check_limit("a ring size", size, MAX_RING_SIZE)


def _check_limit(what: str, value: int, maximum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise InvalidInput(f"{what} must be an integer from 1 to {maximum}, not {value!r}")


FEATURE = "feature"
PROTOCOL_FEATURE = "protocol_feature"
QUEUE_PAIRS = "queue_pairs"
RING_SIZE = "ring_size"
MODE = "mode"


@dataclass(frozen=True)
class Problem:
    """One reason a port cannot run in a mode; bit is set for feature problems."""

    kind: str  # feature | protocol_feature | queue_pairs | ring_size | mode
    text: str
    bit: int | None = None


@dataclass(frozen=True)
class Verdict:
    """The answer to "can the destination run this port?": ok, the problems, one line."""

    ok: bool
    problems: tuple[Problem, ...]
    text: str


def can_migrate(mode: Mode) -> bool:
    """Whether QEMU would let a guest using this mode migrate at all."""
    return not migration_blockers(mode)


def migration_blockers(mode: Mode) -> list[str]:
    """Why QEMU would refuse every migration of a guest using this mode (empty if none)."""
    blockers = [
        f"{describe(missing)} is not offered"
        for missing in bits_of(MIGRATION_FEATURES & ~mode.features)
    ]
    blockers += [
        f"{describe_protocol(missing)} is not offered"
        for missing in bits_of(MIGRATION_PROTOCOL_FEATURES & ~mode.protocol_features)
    ]
    return blockers


_LOG_SHMFD = 1 << ProtocolFeature.VHOST_USER_PROTOCOL_F_LOG_SHMFD
_MQ = 1 << ProtocolFeature.VHOST_USER_PROTOCOL_F_MQ
_NET_MTU = 1 << ProtocolFeature.VHOST_USER_PROTOCOL_F_NET_MTU
# Protocol features the running device can depend on across a migration.
_DEVICE_PROTOCOL = _LOG_SHMFD | _MQ | _NET_MTU


def protocol_needs(negotiated: Negotiated) -> int:
    """The negotiated protocol features the device depends on after a migration: dirty-page
    logging (LOG_SHMFD), MQ when the guest uses more than one queue pair, NET_MTU when it
    negotiated VIRTIO_NET_F_MTU. The others (REPLY_ACK, BACKEND_REQ, STATUS, ...) are
    just renegotiated with the destination's back-end."""
    needs = _LOG_SHMFD
    if negotiated.queue_pairs > 1:
        needs |= _MQ
    if negotiated.features >> Feature.VIRTIO_NET_F_MTU & 1:
        needs |= _NET_MTU
    return negotiated.protocol_features & needs


def check_negotiated(negotiated: Negotiated, dest_mode: Mode) -> list[Problem]:
    """What the guest negotiated (features, queue pairs, ring sizes) that dest_mode lacks.

    Bits QEMU emulates itself are never a problem. Protocol features are negotiated afresh
    between the destination QEMU and its back-end (QEMU 7.2 migrates v2.9 -> v2.6 although
    NET_MTU and BACKEND_REQ go away); only those the running device depends on count
    (protocol_needs).
    """
    problems = [
        Problem(
            FEATURE,
            f"{describe(missing)} was negotiated but mode {dest_mode.name} does not offer it",
            missing,
        )
        for missing in bits_of(backend_relevant(negotiated.features) & ~dest_mode.features)
    ]
    problems += [
        Problem(
            PROTOCOL_FEATURE,
            f"{describe_protocol(missing)} was negotiated but mode {dest_mode.name} "
            "does not offer it",
            missing,
        )
        for missing in bits_of(protocol_needs(negotiated) & ~dest_mode.protocol_features)
    ]
    if negotiated.queue_pairs > dest_mode.max_queue_pairs:
        problems.append(
            Problem(
                QUEUE_PAIRS,
                f"the guest uses {negotiated.queue_pairs} queue pairs; mode {dest_mode.name} "
                f"allows at most {dest_mode.max_queue_pairs}",
            )
        )
    largest = max(negotiated.ring_sizes, default=0)
    if largest > dest_mode.max_ring_size:
        problems.append(
            Problem(
                RING_SIZE,
                f"the guest uses rings of {largest} entries; mode {dest_mode.name} "
                f"allows at most {dest_mode.max_ring_size}",
            )
        )
    return problems


def check_modes(source_mode: Mode, dest_mode: Mode) -> list[Problem]:
    """The conservative check before anything is negotiated: all source_mode could hand a
    guest that dest_mode could not (features, protocol features, limits)."""
    problems = [
        Problem(
            FEATURE,
            f"{describe(missing)} offered by mode {source_mode.name} is missing from mode "
            f"{dest_mode.name}",
            missing,
        )
        for missing in bits_of(backend_relevant(source_mode.features) & ~dest_mode.features)
    ]
    problems += [
        Problem(
            PROTOCOL_FEATURE,
            f"{describe_protocol(missing)} offered by mode {source_mode.name} is missing "
            f"from mode {dest_mode.name}",
            missing,
        )
        for missing in bits_of(
            source_mode.protocol_features & _DEVICE_PROTOCOL & ~dest_mode.protocol_features
        )
    ]
    if source_mode.max_queue_pairs > dest_mode.max_queue_pairs:
        problems.append(
            Problem(
                QUEUE_PAIRS,
                f"mode {source_mode.name} allows {source_mode.max_queue_pairs} queue pairs, "
                f"mode {dest_mode.name} at most {dest_mode.max_queue_pairs}",
            )
        )
    if source_mode.max_ring_size > dest_mode.max_ring_size:
        problems.append(
            Problem(
                RING_SIZE,
                f"mode {source_mode.name} allows rings of {source_mode.max_ring_size} "
                f"entries, mode {dest_mode.name} at most {dest_mode.max_ring_size}",
            )
        )
    return problems


def check_migration(
    source_mode: Mode,
    negotiated: Negotiated | None,
    dest_modes: Sequence[Mode],
    *,
    port: str = "the port",
    destination: str = "the destination",
) -> Verdict:
    """V5: can the destination, offering dest_modes (newest first), run the port?

    The destination must offer the port's mode by name and, if the negotiation is known,
    what was negotiated must fit the destination's definition of that mode (without it,
    the two definitions are compared). When the name is missing, the verdict also says
    what would be missing in the destination's closest mode.
    """

    def fit(dest: Mode) -> list[Problem]:
        if negotiated is not None:
            return check_negotiated(negotiated, dest)
        return check_modes(source_mode, dest)

    same = next((m for m in dest_modes if m.name == source_mode.name), None)
    if same is not None:
        problems = fit(same)
        if not problems:
            return Verdict(True, (), f"{destination} can run {port} in mode {same.name}")
        return Verdict(False, tuple(problems), _refusal(destination, port, problems))

    problems = [Problem(MODE, f"mode {source_mode.name} is not offered there")]
    if not dest_modes:
        problems[0] = Problem(MODE, f"mode {source_mode.name} is not offered there (no modes are)")
        return Verdict(False, tuple(problems), _refusal(destination, port, problems))
    closest = min(dest_modes, key=lambda m: len(fit(m)))  # first (newest) wins ties
    differences = fit(closest)
    problems += differences
    text = _refusal(destination, port, problems)
    if not differences:
        what = "what was negotiated" if negotiated is not None else "it"
        text += f" (mode {closest.name} there would fit {what})"
    return Verdict(False, tuple(problems), text)


def _refusal(destination: str, port: str, problems: Sequence[Problem]) -> str:
    """One line: "<dest> cannot run <port>: mode X is not offered there; A (bit n) would be
    missing; ..."."""
    parts = [p.text for p in problems if p.kind == MODE]
    features = [describe(p.bit) for p in problems if p.kind == FEATURE and p.bit is not None]
    if features:
        parts.append(", ".join(features) + " would be missing")
    protocol = [
        describe_protocol(p.bit)
        for p in problems
        if p.kind == PROTOCOL_FEATURE and p.bit is not None
    ]
    if protocol:
        parts.append(", ".join(protocol) + " would be missing")
    parts += [p.text for p in problems if p.kind in (QUEUE_PAIRS, RING_SIZE)]
    return f"{destination} cannot run {port}: " + "; ".join(parts)
