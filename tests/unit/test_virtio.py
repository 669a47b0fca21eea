"""Feature bits, modes and the compatibility checks of liveport.model.virtio (DESIGN.md V1, V5).

The QEMU cases replay what real QEMU 7.2 did in shared/reference/qemu-notes.md: the
masks and verdicts there are the expected values here.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liveport.model import virtio
from liveport.model.errors import InvalidInput
from liveport.model.frozen import FrozenMap
from liveport.model.virtio import (
    BACKEND_FILTERED,
    QEMU_EMULATED,
    Feature,
    Mode,
    Negotiated,
    ProtocolFeature,
    check_migration,
    check_modes,
    check_negotiated,
    describe,
    describe_protocol,
    guest_visible,
    mask,
    migration_blockers,
    names,
    protocol_mask,
    protocol_names,
)

# Numbers from the virtio spec / Linux uapi headers / QEMU's vhost-user.rst.
SPEC_BITS = {
    "VIRTIO_NET_F_CSUM": 0,
    "VIRTIO_NET_F_GUEST_CSUM": 1,
    "VIRTIO_NET_F_CTRL_GUEST_OFFLOADS": 2,
    "VIRTIO_NET_F_MTU": 3,
    "VIRTIO_NET_F_MAC": 5,
    "VIRTIO_NET_F_GSO": 6,
    "VIRTIO_NET_F_GUEST_TSO4": 7,
    "VIRTIO_NET_F_GUEST_TSO6": 8,
    "VIRTIO_NET_F_GUEST_ECN": 9,
    "VIRTIO_NET_F_GUEST_UFO": 10,
    "VIRTIO_NET_F_HOST_TSO4": 11,
    "VIRTIO_NET_F_HOST_TSO6": 12,
    "VIRTIO_NET_F_HOST_ECN": 13,
    "VIRTIO_NET_F_HOST_UFO": 14,
    "VIRTIO_NET_F_MRG_RXBUF": 15,
    "VIRTIO_NET_F_STATUS": 16,
    "VIRTIO_NET_F_CTRL_VQ": 17,
    "VIRTIO_NET_F_CTRL_RX": 18,
    "VIRTIO_NET_F_CTRL_VLAN": 19,
    "VIRTIO_NET_F_CTRL_RX_EXTRA": 20,
    "VIRTIO_NET_F_GUEST_ANNOUNCE": 21,
    "VIRTIO_NET_F_MQ": 22,
    "VIRTIO_NET_F_CTRL_MAC_ADDR": 23,
    "VIRTIO_F_NOTIFY_ON_EMPTY": 24,
    "VHOST_F_LOG_ALL": 26,
    "VIRTIO_F_ANY_LAYOUT": 27,
    "VIRTIO_RING_F_INDIRECT_DESC": 28,
    "VIRTIO_RING_F_EVENT_IDX": 29,
    "VHOST_USER_F_PROTOCOL_FEATURES": 30,
    "VIRTIO_F_VERSION_1": 32,
    "VIRTIO_F_ACCESS_PLATFORM": 33,
    "VIRTIO_F_RING_PACKED": 34,
    "VIRTIO_F_IN_ORDER": 35,
    "VIRTIO_F_ORDER_PLATFORM": 36,
    "VIRTIO_F_SR_IOV": 37,
    "VIRTIO_F_NOTIFICATION_DATA": 38,
    "VIRTIO_F_NOTIF_CONFIG_DATA": 39,
    "VIRTIO_F_RING_RESET": 40,
    "VIRTIO_F_ADMIN_VQ": 41,
    "VIRTIO_F_SUSPEND": 43,
    "VIRTIO_NET_F_DEVICE_STATS": 50,
    "VIRTIO_NET_F_HASH_TUNNEL": 51,
    "VIRTIO_NET_F_VQ_NOTF_COAL": 52,
    "VIRTIO_NET_F_NOTF_COAL": 53,
    "VIRTIO_NET_F_GUEST_USO4": 54,
    "VIRTIO_NET_F_GUEST_USO6": 55,
    "VIRTIO_NET_F_HOST_USO": 56,
    "VIRTIO_NET_F_HASH_REPORT": 57,
    "VIRTIO_NET_F_GUEST_HDRLEN": 59,
    "VIRTIO_NET_F_RSS": 60,
    "VIRTIO_NET_F_RSC_EXT": 61,
    "VIRTIO_NET_F_STANDBY": 62,
    "VIRTIO_NET_F_SPEED_DUPLEX": 63,
    # virtio 1.4 numbers net features past bit 63; Linux 6.17 has 65-68.
    "VIRTIO_NET_F_RSS_CONTEXT": 64,
    "VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO": 65,
    "VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO_CSUM": 66,
    "VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO": 67,
    "VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO_CSUM": 68,
    "VIRTIO_NET_F_OUT_NET_HEADER": 69,
    "VIRTIO_NET_F_IPSEC": 70,
}
SPEC_PROTOCOL_BITS = {
    "MQ": 0,
    "LOG_SHMFD": 1,
    "RARP": 2,
    "REPLY_ACK": 3,
    "NET_MTU": 4,
    "BACKEND_REQ": 5,
    "CROSS_ENDIAN": 6,
    "CRYPTO_SESSION": 7,
    "PAGEFAULT": 8,
    "CONFIG": 9,
    "BACKEND_SEND_FD": 10,
    "HOST_NOTIFIER": 11,
    "INFLIGHT_SHMFD": 12,
    "RESET_DEVICE": 13,
    "INBAND_NOTIFICATIONS": 14,
    "CONFIGURE_MEM_SLOTS": 15,
    "STATUS": 16,
    "XEN_MMAP": 17,
    "SHARED_OBJECT": 18,
    "DEVICE_STATE": 19,
}

MIGRATABLE = mask(["VHOST_F_LOG_ALL", "VHOST_USER_F_PROTOCOL_FEATURES"])
LOG_SHMFD = protocol_mask(["LOG_SHMFD"])

# qemu-notes.md's illustrative modes: v2.6 = VERSION_1 | PROTOCOL_FEATURES | LOG_ALL |
# MRG_RXBUF | EVENT_IDX, v3.0 = v2.6 + INDIRECT_DESC; protocol LOG_SHMFD | RARP | REPLY_ACK.
NOTES_V26 = Mode("v2.6", 0x164008000, 0xE, 8, 1024)
NOTES_V30 = Mode("v3.0", 0x174008000, 0xE, 8, 1024)


def make_mode(name: str = "m", features: int = 0, protocol: int = 0, **limits: int) -> Mode:
    return Mode(
        name,
        features | MIGRATABLE,
        protocol | LOG_SHMFD,
        limits.get("max_queue_pairs", 8),
        limits.get("max_ring_size", 1024),
    )


def test_every_bit_has_its_spec_number() -> None:
    assert {member.name: member.value for member in Feature} == SPEC_BITS
    assert {m.name.removeprefix("VHOST_USER_PROTOCOL_F_"): m.value for m in ProtocolFeature} == (
        SPEC_PROTOCOL_BITS
    )


def test_names_are_canonical_and_in_bit_order() -> None:
    assert names(0x174008000) == (
        "VIRTIO_NET_F_MRG_RXBUF",
        "VHOST_F_LOG_ALL",
        "VIRTIO_RING_F_INDIRECT_DESC",
        "VIRTIO_RING_F_EVENT_IDX",
        "VHOST_USER_F_PROTOCOL_FEATURES",
        "VIRTIO_F_VERSION_1",
    )
    assert names(1 << 33) == ("VIRTIO_F_ACCESS_PLATFORM",)  # not the legacy IOMMU_PLATFORM
    assert names(1 << 4 | 1 << 58 | 1 << 100) == ("BIT_4", "BIT_58", "BIT_100")
    assert names(1 << 65 | 1 << 67) == (
        "VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO",
        "VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO",
    )
    assert protocol_names(1 << 5 | 1 << 10) == (
        "VHOST_USER_PROTOCOL_F_BACKEND_REQ",
        "VHOST_USER_PROTOCOL_F_BACKEND_SEND_FD",
    )


@pytest.mark.parametrize(
    ("spelling", "bit"),
    [
        ("VIRTIO_RING_F_INDIRECT_DESC", 28),
        ("INDIRECT_DESC", 28),
        ("RING_INDIRECT_DESC", 28),
        ("VIRTIO_F_RING_INDIRECT_DESC", 28),  # the proposal's spelling
        ("virtio_ring_f_event_idx", 29),
        ("MTU", 3),
        ("LOG_ALL", 26),
        ("PROTOCOL_FEATURES", 30),
        ("IOMMU_PLATFORM", 33),
        ("VIRTIO_F_IOMMU_PLATFORM", 33),
        ("RING_PACKED", 34),
        ("BIT_42", 42),
        ("HOST_UDP_TUNNEL_GSO", 67),
        ("BIT_127", 127),
    ],
)
def test_short_and_legacy_names_are_accepted(spelling: str, bit: int) -> None:
    assert mask([spelling]) == 1 << bit
    assert virtio.bit(spelling) == bit


@pytest.mark.parametrize(
    ("spelling", "bit"),
    [
        ("SLAVE_REQ", 5),
        ("VHOST_USER_PROTOCOL_F_SLAVE_REQ", 5),
        ("BACKEND_REQ", 5),
        ("SLAVE_SEND_FD", 10),
        ("MTU", 4),
        ("VHOST_USER_PROTOCOL_F_MTU", 4),
        ("LOG_SHMFD", 1),
    ],
)
def test_protocol_aliases(spelling: str, bit: int) -> None:
    assert protocol_mask([spelling]) == 1 << bit


def test_a_string_is_a_list_of_names() -> None:
    assert mask("MTU, INDIRECT_DESC MRG_RXBUF") == 1 << 3 | 1 << 28 | 1 << 15


@pytest.mark.parametrize("bad", ["INDIRECT", "VIRTIO_NET_F_FOO", "BIT_128", ""])
def test_unknown_names_are_refused_by_name(bad: str) -> None:
    with pytest.raises(InvalidInput, match=f"unknown virtio feature {bad!r}"):
        mask(["MTU", bad])


def test_numbers_are_not_names() -> None:
    with pytest.raises(InvalidInput, match="a virtio feature is given by name, not 28"):
        mask([28])  # type: ignore[list-item]


def test_unknown_protocol_name_is_refused() -> None:
    with pytest.raises(InvalidInput, match="unknown vhost-user protocol feature 'LOG_ALL'"):
        protocol_mask(["LOG_ALL"])


def test_feature_masks_are_128_bit_and_protocol_masks_64_bit() -> None:
    with pytest.raises(InvalidInput, match="a virtio feature mask is a 128-bit unsigned value"):
        names(1 << 128)
    with pytest.raises(InvalidInput, match="128-bit"):
        names(-1)
    with pytest.raises(InvalidInput, match="vhost-user protocol feature mask is a 64-bit"):
        protocol_names(1 << 64)
    with pytest.raises(InvalidInput, match="unknown vhost-user protocol feature 'BIT_64'"):
        protocol_mask(["BIT_64"])


@given(st.integers(min_value=0, max_value=2**128 - 1))
def test_names_and_mask_round_trip(value: int) -> None:
    assert mask(names(value)) == value
    protocol = value & (2**64 - 1)
    assert protocol_mask(protocol_names(protocol)) == protocol


def test_a_vhost_user_back_end_offers_only_the_first_64_bits() -> None:
    # A front-end mode may hold the UDP tunnel bits; GET_FEATURES has no room for them.
    tunnel = mask("GUEST_UDP_TUNNEL_GSO HOST_UDP_TUNNEL_GSO")
    mode = make_mode("front", mask("MRG_RXBUF") | tunnel)
    assert virtio.backend_offer(mode) == mode.features & ~tunnel
    assert virtio.extended(mode.features) == tunnel
    assert mode.backend == "vhost-user"
    assert Mode("k", MIGRATABLE, LOG_SHMFD, 1, 256, FrozenMap(backend="vhost-net")).backend == (
        "vhost-net"
    )
    with pytest.raises(
        InvalidInput, match="extra 'backend' must be vhost-user or vhost-net, not 'dpdk'"
    ):
        Mode("k", MIGRATABLE, LOG_SHMFD, 1, 256, FrozenMap(backend="dpdk"))


def test_checks_see_bits_past_63() -> None:
    tunnel = mask("HOST_UDP_TUNNEL_GSO")
    wide = make_mode("wide", mask("MRG_RXBUF") | tunnel)
    narrow = make_mode("narrow", mask("MRG_RXBUF"))
    assert [(p.kind, p.bit) for p in check_modes(wide, narrow)] == [("feature", 67)]
    negotiated = Negotiated(MIGRATABLE | tunnel, LOG_SHMFD, 1)
    assert [p.text for p in check_negotiated(negotiated, narrow)] == [
        "VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO (bit 67) was negotiated but mode narrow does not offer it"
    ]
    verdict = check_migration(wide, negotiated, [narrow], port="vm1", destination="hv2")
    assert "VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO (bit 67) would be missing" in verdict.text
    assert check_migration(narrow, None, [wide]).problems[0].kind == "mode"


@given(st.sets(st.sampled_from(sorted(SPEC_BITS))))
def test_mask_of_names_round_trips(chosen: set[str]) -> None:
    assert set(names(mask(chosen))) == chosen


def test_describe_is_the_error_message_form() -> None:
    assert describe(28) == "VIRTIO_RING_F_INDIRECT_DESC (bit 28)"
    assert describe(3) == "VIRTIO_NET_F_MTU (bit 3)"
    assert describe(42) == "BIT_42 (bit 42)"
    assert describe_protocol(1) == "VHOST_USER_PROTOCOL_F_LOG_SHMFD (protocol bit 1)"


def test_migration_needs_log_all_protocol_features_and_log_shmfd() -> None:
    assert migration_blockers(make_mode()) == []
    assert virtio.can_migrate(make_mode())
    no_log_all = Mode("a", MIGRATABLE & ~(1 << 26), LOG_SHMFD, 1, 256)
    assert migration_blockers(no_log_all) == ["VHOST_F_LOG_ALL (bit 26) is not offered"]
    bare = Mode("b", 0, 0, 1, 256)
    assert migration_blockers(bare) == [
        "VHOST_F_LOG_ALL (bit 26) is not offered",
        "VHOST_USER_F_PROTOCOL_FEATURES (bit 30) is not offered",
        "VHOST_USER_PROTOCOL_F_LOG_SHMFD (protocol bit 1) is not offered",
    ]
    assert not virtio.can_migrate(bare)


def test_backend_filtered_is_qemu_7_2s_user_feature_bits() -> None:
    assert set(names(BACKEND_FILTERED)) == {
        "VIRTIO_F_NOTIFY_ON_EMPTY",
        "VIRTIO_RING_F_INDIRECT_DESC",
        "VIRTIO_RING_F_EVENT_IDX",
        "VIRTIO_F_ANY_LAYOUT",
        "VIRTIO_F_VERSION_1",
        "VIRTIO_NET_F_CSUM",
        "VIRTIO_NET_F_GUEST_CSUM",
        "VIRTIO_NET_F_GSO",
        "VIRTIO_NET_F_GUEST_TSO4",
        "VIRTIO_NET_F_GUEST_TSO6",
        "VIRTIO_NET_F_GUEST_ECN",
        "VIRTIO_NET_F_GUEST_UFO",
        "VIRTIO_NET_F_HOST_TSO4",
        "VIRTIO_NET_F_HOST_TSO6",
        "VIRTIO_NET_F_HOST_ECN",
        "VIRTIO_NET_F_HOST_UFO",
        "VIRTIO_NET_F_MRG_RXBUF",
        "VIRTIO_NET_F_MTU",
        "VIRTIO_F_ACCESS_PLATFORM",
        "VIRTIO_F_RING_PACKED",
        "VIRTIO_F_RING_RESET",
        "VIRTIO_NET_F_RSS",
        "VIRTIO_NET_F_HASH_REPORT",
        "VIRTIO_NET_F_GUEST_ANNOUNCE",
        "VIRTIO_NET_F_MQ",
    }
    assert BACKEND_FILTERED & QEMU_EMULATED == 0
    assert BACKEND_FILTERED & MIGRATABLE == 0  # LOG_ALL hidden, PROTOCOL_FEATURES never acked


def test_guest_visible_matches_what_qemu_showed_the_guest() -> None:
    # qemu-notes (1): under v3.0 the guest saw bits 2,5,15,16,17,18,19,23,28,29,32, under
    # v2.6 the same without 28; scenario e (VERSION_1 | PROTOCOL | LOG_ALL) 2,5,16,...,32.
    guest_acked_ctrl = {2, 5, 16, 17, 18, 19, 23}  # what the Linux driver acks of QEMU's own
    for backend, seen in [
        (NOTES_V30.features, {15, 28, 29, 32}),
        (NOTES_V26.features, {15, 29, 32}),
        (mask(["VERSION_1", "PROTOCOL_FEATURES", "LOG_ALL"]), {32}),
    ]:
        assert set(virtio.bits_of(guest_visible(backend))) == seen
        assert set(virtio.bits_of(QEMU_EMULATED)) >= guest_acked_ctrl


def test_the_guest_negotiated_indirect_desc_and_the_destination_lacks_it() -> None:
    # qemu-notes scenario b: guest-acked 0x1308f8024 into a v2.6 destination fails with
    # "Features 0x1308f8024 unsupported. Allowed features: 0x1609f8024": only bit 28.
    negotiated = Negotiated(0x1308F8024, 0xE, 1, (256, 256))
    problems = check_negotiated(negotiated, NOTES_V26)
    assert [(p.kind, p.bit) for p in problems] == [("feature", 28)]
    assert problems[0].text == (
        "VIRTIO_RING_F_INDIRECT_DESC (bit 28) was negotiated but mode v2.6 does not offer it"
    )
    # Scenario c: the other way round migrates; scenario d: a guest that never acked 28
    # moves to v2.6 as well.
    assert check_negotiated(Negotiated(0x1208F8024, 0xE, 1, (256, 256)), NOTES_V30) == []
    assert check_negotiated(Negotiated(0x1208F8024, 0xE, 1, (256, 256)), NOTES_V26) == []


def test_emulated_bits_never_block() -> None:
    bare = make_mode("bare")
    assert check_negotiated(Negotiated(QEMU_EMULATED, LOG_SHMFD, 1), bare) == []
    assert check_modes(Mode("ctrl", QEMU_EMULATED | MIGRATABLE, LOG_SHMFD, 1, 256), bare) == []


def test_limits_are_named_with_numbers() -> None:
    small = make_mode("small", max_queue_pairs=2, max_ring_size=256)
    problems = check_negotiated(Negotiated(MIGRATABLE, LOG_SHMFD, 4, (256, 1024, 512)), small)
    assert [p.text for p in problems] == [
        "the guest uses 4 queue pairs; mode small allows at most 2",
        "the guest uses rings of 1024 entries; mode small allows at most 256",
    ]
    big = make_mode("big", max_queue_pairs=8, max_ring_size=1024)
    assert [p.text for p in check_modes(big, small)] == [
        "mode big allows 8 queue pairs, mode small at most 2",
        "mode big allows rings of 1024 entries, mode small at most 256",
    ]
    assert check_modes(small, big) == []


def test_only_the_protocol_features_a_device_depends_on_count() -> None:
    source = make_mode("src", protocol=protocol_mask(["MQ", "NET_MTU", "REPLY_ACK", "STATUS"]))
    dest = make_mode("dst", protocol=protocol_mask(["MQ"]))
    assert [p.text for p in check_modes(source, dest)] == [
        "VHOST_USER_PROTOCOL_F_NET_MTU (protocol bit 4) offered by mode src is missing from "
        "mode dst"
    ]
    # Renegotiated with the destination's back-end: REPLY_ACK and STATUS never block, nor
    # NET_MTU while the guest did not negotiate VIRTIO_NET_F_MTU.
    without_mtu = Negotiated(MIGRATABLE, source.protocol_features, 1)
    assert check_negotiated(without_mtu, dest) == []
    with_mtu = Negotiated(MIGRATABLE | 1 << 3, source.protocol_features, 1)
    dest_mtu = make_mode("dst2", features=1 << 3, protocol=protocol_mask(["MQ"]))
    assert [(p.kind, p.bit) for p in check_negotiated(with_mtu, dest_mtu)] == [
        ("protocol_feature", 4)
    ]
    # MQ matters only with more than one queue pair.
    single = make_mode("one", protocol=0, max_queue_pairs=8)
    assert check_negotiated(Negotiated(MIGRATABLE, protocol_mask(["MQ"]), 1), single) == []
    assert [
        (p.kind, p.bit)
        for p in check_negotiated(Negotiated(MIGRATABLE, protocol_mask(["MQ"]), 2), single)
    ] == [("protocol_feature", 0)]


def test_bad_values_are_refused() -> None:
    with pytest.raises(InvalidInput, match="max_queue_pairs must be an integer from 1"):
        Mode("m", MIGRATABLE, LOG_SHMFD, 0, 256)
    with pytest.raises(InvalidInput, match="max_ring_size"):
        Mode("m", MIGRATABLE, LOG_SHMFD, 1, 65536)
    with pytest.raises(InvalidInput, match="malformed vhost-user mode name"):
        Mode("two words", MIGRATABLE, LOG_SHMFD, 1, 256)
    with pytest.raises(InvalidInput, match="128-bit"):
        Mode("m", 1 << 128, LOG_SHMFD, 1, 256)
    with pytest.raises(InvalidInput, match="64-bit"):
        Mode("m", MIGRATABLE, 1 << 64, 1, 256)
    with pytest.raises(InvalidInput, match="queue_pairs"):
        Negotiated(MIGRATABLE, LOG_SHMFD, 0)
    with pytest.raises(InvalidInput, match="ring size"):
        Negotiated(MIGRATABLE, LOG_SHMFD, 1, (0,))


# Backend-controlled bits a guest can negotiate (everything but QEMU's own and the vhost
# bits), including the extended ones a front-end offers past bit 63.
GUEST_BITS = sorted(set(range(72)) - set(virtio.bits_of(QEMU_EMULATED | MIGRATABLE)))


@st.composite
def mode_and_negotiation(draw: st.DrawFn) -> tuple[Mode, Negotiated]:
    offered = draw(st.sets(st.sampled_from(GUEST_BITS)))
    features = sum(1 << b for b in offered) | MIGRATABLE
    protocol = draw(st.integers(min_value=0, max_value=2**20 - 1)) | LOG_SHMFD
    queues = draw(st.integers(min_value=1, max_value=64))
    ring = draw(st.sampled_from([64, 256, 1024, 4096, 32768]))
    mode = Mode("mode", features, protocol, queues, ring)
    acked = draw(st.sets(st.sampled_from(sorted(offered)))) if offered else set()
    emulated = draw(st.integers(min_value=0, max_value=2**64 - 1)) & QEMU_EMULATED
    negotiated = Negotiated(
        sum(1 << b for b in acked) | emulated | MIGRATABLE,
        draw(st.integers(min_value=0, max_value=2**20 - 1)) & protocol,
        draw(st.integers(min_value=1, max_value=queues)),
        tuple(draw(st.lists(st.sampled_from([s for s in (64, 256, 1024) if s <= ring])))),
    )
    return mode, negotiated


@given(mode_and_negotiation())
def test_a_mode_accepts_whatever_it_offered(case: tuple[Mode, Negotiated]) -> None:
    mode, negotiated = case
    assert check_negotiated(negotiated, mode) == []
    assert check_modes(mode, mode) == []
    assert check_migration(mode, negotiated, [mode]).ok


@given(mode_and_negotiation(), st.data())
def test_removing_a_negotiated_bit_names_exactly_that_bit(
    case: tuple[Mode, Negotiated], data: st.DataObject
) -> None:
    mode, negotiated = case
    removable = [b for b in virtio.bits_of(negotiated.features) if b in GUEST_BITS]
    if not removable:
        return
    gone = data.draw(st.sampled_from(removable))
    dest = Mode(mode.name, mode.features & ~(1 << gone), mode.protocol_features, 64, 32768)
    problems = check_negotiated(negotiated, dest)
    assert [(p.kind, p.bit) for p in problems] == [("feature", gone)]
    assert describe(gone) in problems[0].text
    verdict = check_migration(mode, negotiated, [dest], port="vm1", destination="hv3")
    assert not verdict.ok
    assert verdict.text == f"hv3 cannot run vm1: {describe(gone)} would be missing"


def test_check_migration_requires_the_mode_by_name() -> None:
    v26 = make_mode("upstream.ovs-dpdk.v2.6", mask("MRG_RXBUF"))
    v29 = make_mode("upstream.ovs-dpdk.v2.9", mask("MRG_RXBUF INDIRECT_DESC MTU"))
    verdict = check_migration(v29, None, [v26], port="vm1", destination="hv3")
    assert not verdict.ok
    assert verdict.text == (
        "hv3 cannot run vm1: mode upstream.ovs-dpdk.v2.9 is not offered there; "
        "VIRTIO_NET_F_MTU (bit 3), VIRTIO_RING_F_INDIRECT_DESC (bit 28) would be missing"
    )
    assert [p.kind for p in verdict.problems] == ["mode", "feature", "feature"]
    # Even when what the guest negotiated would fit, the mode itself must be offered (V5).
    fits = Negotiated(mask("MRG_RXBUF") | MIGRATABLE, LOG_SHMFD, 1)
    verdict = check_migration(v29, fits, [v26], port="vm1", destination="hv3")
    assert not verdict.ok
    assert verdict.text == (
        "hv3 cannot run vm1: mode upstream.ovs-dpdk.v2.9 is not offered there "
        "(mode upstream.ovs-dpdk.v2.6 there would fit what was negotiated)"
    )
    assert check_migration(v29, None, [], destination="hv3").text == (
        "hv3 cannot run the port: mode upstream.ovs-dpdk.v2.9 is not offered there (no modes are)"
    )


def test_check_migration_accepts_the_same_mode() -> None:
    v29 = make_mode("upstream.ovs-dpdk.v2.9", mask("MRG_RXBUF INDIRECT_DESC MTU"))
    other = make_mode("x")
    verdict = check_migration(v29, None, [other, v29], port="vm1", destination="hv3")
    assert verdict == virtio.Verdict(True, (), "hv3 can run vm1 in mode upstream.ovs-dpdk.v2.9")


def test_same_name_different_definition_is_compared() -> None:
    here = make_mode("dist.v1", mask("MRG_RXBUF INDIRECT_DESC"))
    there = make_mode("dist.v1", mask("MRG_RXBUF"))
    verdict = check_migration(here, None, [there], destination="hv2")
    assert verdict.text == (
        "hv2 cannot run the port: VIRTIO_RING_F_INDIRECT_DESC (bit 28) would be missing"
    )
    negotiated = Negotiated(mask("MRG_RXBUF") | MIGRATABLE, LOG_SHMFD, 1)
    assert check_migration(here, negotiated, [there]).ok
