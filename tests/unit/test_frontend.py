"""Enforcing a mode at the front-end (liveport.model.frontend): the exact virtio-net-pci
properties per mode and QEMU release, and how every feature a mode lacks is kept from the
guest.

The expected property lists are worked out by hand from the modes' feature lists and the
properties each QEMU release defines (hw/net/virtio-net.c virtio_net_properties,
include/hw/virtio/virtio.h DEFINE_VIRTIO_COMMON_FEATURES, read for 8.1, 8.2, 9.0, 9.2
and 10.2; 7.2, 9.1, 10.0 and 10.1 from hw/core/machine.c's compat tables and the pull
requests that added properties).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liveport.model import frontend, virtio
from liveport.model.catalogue import Catalogue
from liveport.model.errors import InvalidInput
from liveport.model.frontend import (
    CANNOT,
    EMULATED,
    KNOWN_QEMU,
    NEVER_OFFERED,
    NOT_IN_VERSION,
    OFF_BY_DEFAULT,
    PROPERTIES,
    SWITCHED_OFF,
    VALUE_GATED_OFF,
    QemuVersion,
    device_plan,
)
from liveport.model.virtio import QEMU_EMULATED, Mode, mask, protocol_mask
from liveport.vhostuser.catalogue import load_catalogue

CATALOGUE: Catalogue = load_catalogue(environ={}, config_dir=None)
V = QemuVersion.parse

# What the shipped OVS-DPDK modes lack of QEMU's default-on features.
V2_17_OFF = "csum=off,host_tso4=off,host_tso6=off,host_ufo=off"
USO_OFF = "guest_uso4=off,guest_uso6=off,host_uso=off"
TUNNEL_OFF = "host_tunnel=off,host_tunnel_csum=off,guest_tunnel=off,guest_tunnel_csum=off"

GOLDEN = [
    # QEMU 7.2 has neither USO nor tunnel properties, and never offers those bits.
    ("upstream.ovs-dpdk.v2.17", "7.2", {}, f"{V2_17_OFF},notify_on_empty=off,queue_reset=off"),
    ("upstream.ovs-dpdk.v2.17", "8.1", {}, f"{V2_17_OFF},notify_on_empty=off,queue_reset=off"),
    (
        "upstream.ovs-dpdk.v2.17",
        "8.2",
        {},
        f"{V2_17_OFF},{USO_OFF},notify_on_empty=off,queue_reset=off",
    ),
    (
        "upstream.ovs-dpdk.v2.17",
        "9.2.4",
        {},
        f"{V2_17_OFF},{USO_OFF},notify_on_empty=off,queue_reset=off",
    ),
    (
        "upstream.ovs-dpdk.v2.17",
        "10.2",
        {},
        f"{V2_17_OFF},{USO_OFF},{TUNNEL_OFF},notify_on_empty=off,queue_reset=off",
    ),
    # OVS 2.6 offered none of the offloads but guest TSO and checksum, nor the ring
    # features INDIRECT_DESC, EVENT_IDX and ANY_LAYOUT.
    (
        "upstream.ovs-dpdk.v2.6",
        "9.2",
        {},
        "csum=off,gso=off,guest_ecn=off,guest_ufo=off,host_tso4=off,host_tso6=off,host_ecn=off,"
        f"host_ufo=off,{USO_OFF},indirect_desc=off,event_idx=off,notify_on_empty=off,"
        "any_layout=off,queue_reset=off",
    ),
    (
        "upstream.ovs-dpdk.v2.9",
        "9.1",
        {},
        "csum=off,gso=off,guest_ecn=off,guest_ufo=off,host_tso4=off,host_tso6=off,host_ecn=off,"
        f"host_ufo=off,{USO_OFF},event_idx=off,notify_on_empty=off,any_layout=off,"
        "queue_reset=off",
    ),
    # OVS 3.2 offers CSUM; four queue pairs and 1024-entry rings (vhost-user may have both).
    (
        "upstream.ovs-dpdk.v3.2",
        "9.2",
        {"queue_pairs": 4, "ring_size": 1024},
        f"host_tso4=off,host_tso6=off,host_ufo=off,mq=on,{USO_OFF},notify_on_empty=off,"
        "queue_reset=off,vectors=10,rx_queue_size=1024,tx_queue_size=1024",
    ),
    (
        "upstream.ovs-dpdk-tso.v3.0",
        "8.2",
        {},
        f"host_ecn=off,host_ufo=off,{USO_OFF},notify_on_empty=off,queue_reset=off",
    ),
    # The workaround found for the QEMU 9.2.4 -> 8.2.10 failure, exactly.
    ("qemu-7.2.vhost-net", "9.2", {}, f"{USO_OFF},queue_reset=off"),
    ("qemu-7.2.vhost-net", "7.2", {}, "queue_reset=off"),
    ("qemu-7.2.vhost-net.linux-6.3", "8.2", {}, USO_OFF),
    ("qemu-8.2.vhost-net.linux-6.3", "10.2", {}, TUNNEL_OFF),
    ("qemu-8.2.vhost-net.linux-6.3", "9.2", {}, ""),
    ("qemu-10.2.vhost-net.linux-6.17", "10.2", {}, ""),
    # A tap peer keeps tx rings at 256 whatever rx_queue_size says.
    (
        "qemu-7.2.vhost-net",
        "9.2",
        {"queue_pairs": 2, "ring_size": 1024},
        f"mq=on,{USO_OFF},queue_reset=off,vectors=6,rx_queue_size=1024",
    ),
]


@pytest.mark.parametrize(("mode", "qemu", "options", "args"), GOLDEN)
def test_the_properties_for_a_mode_on_a_qemu_release_are_exactly_these(
    mode: str, qemu: str, options: dict[str, int], args: str
) -> None:
    plan = device_plan(CATALOGUE.get(mode), V(qemu), **options)
    assert plan.device_args() == args
    assert plan.exact


# The feature properties of each release, in QEMU's order.
NET_PROPERTIES = [
    "csum",
    "guest_csum",
    "gso",
    "guest_tso4",
    "guest_tso6",
    "guest_ecn",
    "guest_ufo",
    "guest_announce",
    "host_tso4",
    "host_tso6",
    "host_ecn",
    "host_ufo",
    "mrg_rxbuf",
    "status",
    "ctrl_vq",
    "ctrl_rx",
    "ctrl_vlan",
    "ctrl_rx_extra",
    "ctrl_mac_addr",
    "ctrl_guest_offloads",
    "mq",
    "rss",
    "hash",
    "guest_rsc_ext",
]
USO = ["guest_uso4", "guest_uso6", "host_uso"]
TUNNEL = ["host_tunnel", "host_tunnel_csum", "guest_tunnel", "guest_tunnel_csum"]
COMMON = [
    "indirect_desc",
    "event_idx",
    "notify_on_empty",
    "any_layout",
    "iommu_platform",
    "packed",
    "queue_reset",
]


@pytest.mark.parametrize(
    ("qemu", "names"),
    [
        ("7.2", NET_PROPERTIES + COMMON),
        ("8.0", NET_PROPERTIES + COMMON),
        ("8.1", NET_PROPERTIES + COMMON),
        ("8.2", NET_PROPERTIES + USO + COMMON),
        ("9.0", NET_PROPERTIES + USO + COMMON),
        ("9.1", NET_PROPERTIES + USO + [*COMMON, "in_order"]),
        ("9.2", NET_PROPERTIES + USO + [*COMMON, "in_order"]),
        ("10.1", NET_PROPERTIES + USO + [*COMMON, "in_order"]),
        ("10.2", NET_PROPERTIES + USO + TUNNEL + [*COMMON, "in_order"]),
    ],
)
def test_each_release_has_the_feature_properties_its_sources_define(
    qemu: str, names: list[str]
) -> None:
    assert [p.name for p in PROPERTIES if p.exists_in(V(qemu))] == names


def test_no_release_has_a_notification_data_property() -> None:
    # QEMU 9.1 taught the transport VIRTIO_F_NOTIFICATION_DATA but no property offers it.
    assert all(p.bit != virtio.bit("NOTIFICATION_DATA") for p in PROPERTIES)
    plan = device_plan(CATALOGUE.get("upstream.ovs-dpdk.v3.2"), V("10.2"))
    treatment = plan.treatment(virtio.bit("NOTIFICATION_DATA"))
    assert treatment is not None and treatment.kind == NEVER_OFFERED


ALLOWED_NAMES = {"vectors", "rx_queue_size", "tx_queue_size"}


@pytest.mark.parametrize("qemu", KNOWN_QEMU, ids=str)
@pytest.mark.parametrize("name", CATALOGUE.names())
def test_every_feature_a_mode_lacks_is_kept_from_the_guest_by_a_named_means(
    name: str, qemu: QemuVersion
) -> None:
    mode = CATALOGUE.get(name)
    plan = device_plan(mode, qemu)
    existing = {p.name: p for p in PROPERTIES if p.exists_in(qemu)}
    # Only properties of this release, each about a bit the mode lacks.
    for prop in plan.properties:
        assert prop.name in existing or prop.name in ALLOWED_NAMES, prop
        if prop.name in existing:
            assert prop.value == "off" and prop.bit == existing[prop.name].bit
            assert not mode.features >> existing[prop.name].bit & 1
    switched = {prop.bit for prop in plan.properties}
    lacking = {t.bit: t for t in plan.lacking}
    for bit, t in lacking.items():
        assert not mode.features >> bit & 1
        known = next((p for p in existing.values() if p.bit == bit), None)
        if t.kind == SWITCHED_OFF:
            assert known is not None and known.default and bit in switched
        elif t.kind == OFF_BY_DEFAULT:
            assert known is not None and not known.default and bit not in switched
        elif t.kind == NOT_IN_VERSION:
            assert known is None and any(p.bit == bit for p in PROPERTIES)
            assert f"QEMU {qemu} has no" in t.detail
        elif t.kind == EMULATED:
            assert QEMU_EMULATED >> bit & 1
        else:
            assert t.kind in (NEVER_OFFERED, VALUE_GATED_OFF), t
    # Every named bit the mode lacks is accounted for, and nothing else.
    expected = {
        m.value
        for m in virtio.Feature
        if not mode.features >> m.value & 1 and m.value not in frontend.VHOST_BITS
    }
    assert set(lacking) == expected
    assert plan.exact and plan.cannot == ()


@pytest.mark.parametrize("bit", [54, 55, 56])
def test_qemu_7_2_has_no_uso_property_and_a_mode_without_uso_is_still_exact_there(
    bit: int,
) -> None:
    plan = device_plan(CATALOGUE.get("qemu-7.2.vhost-net"), V("7.2"))
    treatment = plan.treatment(bit)
    assert treatment is not None and treatment.kind == NOT_IN_VERSION
    assert "(since 8.2) and never offers it" in treatment.detail
    assert plan.exact
    later = device_plan(CATALOGUE.get("qemu-7.2.vhost-net"), V("8.2")).treatment(bit)
    assert later is not None and later.kind == SWITCHED_OFF


def test_bits_the_mode_has_but_qemu_does_not_offer_are_listed() -> None:
    plan = device_plan(CATALOGUE.get("upstream.ovs-dpdk.v2.17"), V("9.0"))
    kinds = {virtio.describe(t.bit): t.kind for t in plan.unavailable}
    assert kinds == {
        "VIRTIO_NET_F_MTU (bit 3)": VALUE_GATED_OFF,  # needs host_mtu
        "VIRTIO_NET_F_MQ (bit 22)": OFF_BY_DEFAULT,  # one queue pair asked
        "VIRTIO_F_RING_PACKED (bit 34)": OFF_BY_DEFAULT,
        "VIRTIO_F_IN_ORDER (bit 35)": NOT_IN_VERSION,  # in_order came with 9.1
    }
    assert (
        device_plan(CATALOGUE.get("upstream.ovs-dpdk.v2.17"), V("9.0"), queue_pairs=2).treatment(22)
        is None
    )


def test_a_mode_without_version_1_cannot_be_enforced() -> None:
    legacy = Mode(
        "legacy", mask("MRG_RXBUF LOG_ALL PROTOCOL_FEATURES"), protocol_mask("LOG_SHMFD"), 1, 256
    )
    plan = device_plan(legacy, V("9.2"))
    assert not plan.exact
    assert [(t.bit, t.kind) for t in plan.cannot] == [(32, CANNOT)]
    assert "disable-modern" in plan.cannot[0].detail


# A small QEMU: the features virtio-net-pci offers a guest, from the release's property
# table with the plan's properties applied, filtered by what the back-end offers for the
# bits it controls. QEMU's own (emulated) bits are left out, as the checks do.
def qemu_offers(plan: frontend.DevicePlan, backend: int) -> int:
    values = {p.name: p.default for p in PROPERTIES if p.exists_in(plan.qemu)}
    values.update({p.name: p.value == "on" for p in plan.properties if p.name in values})
    host = sum(1 << p.bit for p in PROPERTIES if values.get(p.name))
    host |= 1 << virtio.bit("VERSION_1")
    return host & backend & ~QEMU_EMULATED


@given(
    st.sampled_from(CATALOGUE.names()),
    st.sampled_from(KNOWN_QEMU),
    st.integers(min_value=0, max_value=2**72 - 1),
)
def test_whatever_the_back_end_offers_beyond_the_mode_the_guest_sees_none_of_it(
    name: str, qemu: QemuVersion, extra: int
) -> None:
    mode = CATALOGUE.get(name)
    plan = device_plan(mode, qemu)
    assert qemu_offers(plan, mode.features | extra) & ~mode.features == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"queue_pairs": 0}, "queue pairs must be a positive integer, not 0"),
        ({"queue_pairs": 129}, "mode upstream.ovs-dpdk.v3.2 allows at most 128 queue pairs"),
        ({"ring_size": 300}, "rings are a power of two from 256 to 1024 entries, not 300"),
        ({"ring_size": 2048}, "not 2048"),
        ({"ring_size": 128}, "not 128"),
    ],
)
def test_limits_outside_the_mode_or_qemu_are_refused(options: dict[str, int], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        device_plan(CATALOGUE.get("upstream.ovs-dpdk.v3.2"), V("9.2"), **options)


def test_a_mode_without_mq_or_with_small_rings_says_so() -> None:
    single = Mode(
        "single",
        mask("MRG_RXBUF VERSION_1 LOG_ALL PROTOCOL_FEATURES"),
        protocol_mask("LOG_SHMFD"),
        4,
        512,
    )
    with pytest.raises(InvalidInput, match=r"mode single has no VIRTIO_NET_F_MQ \(bit 22\)"):
        device_plan(single, V("9.2"), queue_pairs=2)
    with pytest.raises(InvalidInput, match="mode single allows rings of at most 512 entries"):
        device_plan(single, V("9.2"), ring_size=1024)
    tiny = Mode("tiny", single.features, single.protocol_features, 1, 128)
    with pytest.raises(InvalidInput, match="QEMU's virtio-net rings have at least 256"):
        device_plan(tiny, V("9.2"))


@pytest.mark.parametrize(
    ("text", "version"),
    [("9.2", (9, 2)), ("9.2.4", (9, 2)), ("v10.2.0", (10, 2)), (" 7.2 ", (7, 2))],
)
def test_qemu_versions_are_read_as_major_minor(text: str, version: tuple[int, int]) -> None:
    assert V(text) == QemuVersion(*version)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nine", "a QEMU version looks like 9.2 or 9.2.4, not 'nine'"),
        ("9", "looks like 9.2"),
        ("7.1", "QEMU 7.1 is older than 7.2, the oldest release"),
        ("8.3", "QEMU 8.3 is no release liveport knows"),
    ],
)
def test_unknown_qemu_versions_are_refused(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        V(text)


def test_a_release_newer_than_the_newest_known_gets_its_properties_and_a_note() -> None:
    plan = device_plan(CATALOGUE.get("upstream.ovs-dpdk.v2.17"), V("11.0"))
    assert (
        plan.device_args()
        == device_plan(CATALOGUE.get("upstream.ovs-dpdk.v2.17"), V("10.2")).device_args()
    )
    assert plan.notes == (
        "QEMU 11.0 is newer than 10.2, the newest release liveport read; the properties are 10.2's",
    )


def test_the_plan_as_json() -> None:
    plan = device_plan(CATALOGUE.get("qemu-7.2.vhost-net"), V("9.2"))
    doc = plan.to_json()
    assert doc["properties"] == {
        "guest_uso4": "off",
        "guest_uso6": "off",
        "host_uso": "off",
        "queue_reset": "off",
    }
    assert doc["args"] == "guest_uso4=off,guest_uso6=off,host_uso=off,queue_reset=off"
    assert doc["backend"] == "vhost-net" and doc["exact"] is True
    assert doc["netdev"] == {"queues": 1}
    lacking = {entry["bit"]: entry["how"] for entry in doc["lacking"]}  # type: ignore[attr-defined]
    assert lacking[40] == SWITCHED_OFF and lacking[65] == NOT_IN_VERSION
