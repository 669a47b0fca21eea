"""The vhost-user mode catalogue (DESIGN.md V1-V3): the shipped data, distribution files,
validation, and choosing a mode."""

import itertools
import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liveport.model import virtio
from liveport.model.catalogue import Catalogue, parse_catalogue, supported_modes, validate
from liveport.model.errors import InvalidInput, NotFound
from liveport.model.virtio import check_modes, mask, protocol_mask
from liveport.vhostuser.catalogue import CATALOGUE_ENV, SHIPPED, load_catalogue, shipped_text

OVS_DPDK = (
    "upstream.ovs-dpdk.v3.2",
    "upstream.ovs-dpdk.v2.17",
    "upstream.ovs-dpdk.v2.15",
    "upstream.ovs-dpdk.v2.13",
    "upstream.ovs-dpdk.v2.11",
    "upstream.ovs-dpdk.v2.9",
    "upstream.ovs-dpdk.v2.8",
    "upstream.ovs-dpdk.v2.7",
    "upstream.ovs-dpdk.v2.6",
)
OVS_DPDK_TSO = ("upstream.ovs-dpdk-tso.v3.0",)
QEMU_VHOST_NET = (
    "qemu-10.2.vhost-net.linux-6.17",
    "qemu-8.2.vhost-net.linux-6.3",
    "qemu-7.2.vhost-net.linux-6.3",
    "qemu-7.2.vhost-net",
)
SHIPPED_NAMES = OVS_DPDK + OVS_DPDK_TSO + QEMU_VHOST_NET
FAMILIES = {"": OVS_DPDK, "ovs-dpdk-tso": OVS_DPDK_TSO, "qemu-vhost-net": QEMU_VHOST_NET}

# What each release changed against the one before (older, newer): virtio features
# added/removed, protocol features added. This is the history the catalogue encodes.
HISTORY = [
    ("v2.6", "v2.7", {"VIRTIO_RING_F_INDIRECT_DESC"}, set(), set()),
    ("v2.7", "v2.8", {"VIRTIO_NET_F_MTU"}, set(), {"VHOST_USER_PROTOCOL_F_NET_MTU"}),
    ("v2.8", "v2.9", set(), set(), {"VHOST_USER_PROTOCOL_F_BACKEND_REQ"}),
    (
        "v2.9",
        "v2.11",
        {
            "VIRTIO_F_ANY_LAYOUT",
            "VIRTIO_RING_F_EVENT_IDX",
            "VIRTIO_NET_F_GSO",
            "VIRTIO_NET_F_GUEST_ECN",
            "VIRTIO_NET_F_GUEST_UFO",
            "VIRTIO_NET_F_HOST_ECN",
            "VIRTIO_NET_F_HOST_UFO",
            "VIRTIO_F_IN_ORDER",
            "VIRTIO_F_RING_PACKED",
        },
        set(),
        {
            "VHOST_USER_PROTOCOL_F_CRYPTO_SESSION",
            "VHOST_USER_PROTOCOL_F_BACKEND_SEND_FD",
            "VHOST_USER_PROTOCOL_F_HOST_NOTIFIER",
        },
    ),
    # OVS 2.13 registers linear buffers without external ones: DPDK drops HOST_UFO.
    ("v2.11", "v2.13", set(), {"VIRTIO_NET_F_HOST_UFO"}, set()),
    ("v2.13", "v2.15", set(), set(), {"VHOST_USER_PROTOCOL_F_STATUS"}),
    ("v2.15", "v2.17", set(), set(), {"VHOST_USER_PROTOCOL_F_REPLY_ACK"}),
    # OVS 3.2 enabled checksum offload by default: the guest may hand over partial csums.
    ("v2.17", "v3.2", {"VIRTIO_NET_F_CSUM"}, set(), set()),
]

LOG = ["VHOST_F_LOG_ALL", "VHOST_USER_F_PROTOCOL_FEATURES"]


def shipped() -> Catalogue:
    return load_catalogue(environ={}, config_dir=None)


def spec(name: object, **fields: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "based_on": "test",
        "features": ["MRG_RXBUF", *LOG],
        "protocol_features": ["LOG_SHMFD"],
        "max_queue_pairs": 8,
        "max_ring_size": 1024,
    }
    entry.update(fields)
    return entry


def full(version: str) -> str:
    return f"upstream.ovs-dpdk.{version}"


def test_the_shipped_catalogue_is_newest_first() -> None:
    catalogue = shipped()
    assert catalogue.names() == SHIPPED_NAMES
    assert catalogue.newest().name == "upstream.ovs-dpdk.v3.2"
    assert all(catalogue.sources[name] == "liveport/vhostuser/modes.json" for name in SHIPPED_NAMES)


@pytest.mark.parametrize(("family", "names"), FAMILIES.items())
def test_each_family_is_a_line_of_modes(family: str, names: tuple[str, ...]) -> None:
    catalogue = shipped()
    assert tuple(n for n in catalogue.names() if catalogue.family(n) == family) == names
    # Within a family each mode offers at least what the older ones did, but for
    # HOST_UFO, which OVS 2.13 stopped offering.
    for newer, older in itertools.pairwise(names):
        lost = catalogue.get(older).features & ~catalogue.get(newer).features
        assert lost in (0, mask("HOST_UFO")), (newer, older)


@pytest.mark.parametrize("name", SHIPPED_NAMES)
def test_every_shipped_mode_can_migrate_and_says_what_it_follows(name: str) -> None:
    catalogue = shipped()
    mode = catalogue.get(name)
    assert virtio.migration_blockers(mode) == []
    note = catalogue.based_on(name)
    if mode.backend == "vhost-user":
        assert "DPDK" in note and "Open vSwitch" in note
        assert {"ovs", "dpdk"} <= set(mode.extra)
        assert virtio.extended(mode.features) == 0  # GET_FEATURES has 64 bits
    else:
        assert "QEMU" in note and "hw/net/virtio-net.c" in note and "Linux" in note
        assert set(mode.extra) == {"backend", "qemu", "linux"}
        assert (mode.max_queue_pairs, mode.max_ring_size) == (256, 1024)


def test_the_qemu_9_2_to_8_2_failure_is_a_kernel_difference_named_bit_by_bit() -> None:
    """qemu-devel, November 2025: QEMU 9.2.4 on a newer kernel -> QEMU 8.2.10 on an older
    one failed with 'Features 0x1c0010130afffa7 unsupported. Allowed features:
    0x179bfffe7'. Source and destination are the two modes below."""
    catalogue = shipped()
    source = catalogue.get("qemu-8.2.vhost-net.linux-6.3")  # QEMU 9.2.4 is 8.2 and later
    dest = catalogue.get("qemu-7.2.vhost-net")  # QEMU 8.2.10 on a kernel before 6.2
    assert [(p.kind, p.bit) for p in check_modes(source, dest)] == [
        ("feature", 40),
        ("feature", 54),
        ("feature", 55),
        ("feature", 56),
    ]
    acked = virtio.Negotiated(0x1C0010130AFFFA7, 0, 1)
    assert [p.bit for p in virtio.check_negotiated(acked, dest)] == [40, 54, 55, 56]
    # The destination QEMU allowed exactly the mode's features but for MQ and MTU (which
    # its guest had not been given: no mq=on, no host_mtu) and the vhost bit LOG_ALL.
    allowed = 0x179BFFFE7
    assert dest.features & ~allowed == mask("MQ MTU LOG_ALL")
    assert allowed & ~dest.features == 0
    verdict = virtio.check_migration(source, acked, [dest], port="vm1", destination="hv2")
    assert verdict.text.endswith(
        "VIRTIO_F_RING_RESET (bit 40), VIRTIO_NET_F_GUEST_USO4 (bit 54), "
        "VIRTIO_NET_F_GUEST_USO6 (bit 55), VIRTIO_NET_F_HOST_USO (bit 56) would be missing"
    )


def test_only_a_front_end_mode_holds_bits_past_63() -> None:
    catalogue = shipped()
    tunnel = catalogue.get("qemu-10.2.vhost-net.linux-6.17")
    assert virtio.names(virtio.extended(tunnel.features)) == (
        "VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO",
        "VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO_CSUM",
        "VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO",
        "VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO_CSUM",
    )
    assert [p.bit for p in check_modes(tunnel, catalogue.get("qemu-8.2.vhost-net.linux-6.3"))] == [
        65,
        66,
        67,
        68,
    ]


def test_ovs_tso_and_plain_ports_cannot_swap_guests_either_way() -> None:
    catalogue = shipped()
    plain, tso = catalogue.get(full("v3.2")), catalogue.get("upstream.ovs-dpdk-tso.v3.0")
    assert [p.bit for p in check_modes(plain, tso)] == [virtio.bit("HOST_ECN")]
    assert [p.bit for p in check_modes(tso, plain)] == [
        virtio.bit("HOST_TSO4"),
        virtio.bit("HOST_TSO6"),
    ]


def test_the_shipped_file_uses_names_not_numbers() -> None:
    text = resources.files("liveport").joinpath("vhostuser", "modes.json").read_text("utf-8")
    for entry in json.loads(text):
        for name in entry["features"]:
            assert name in virtio.Feature.__members__
        for name in entry["protocol_features"]:
            assert name in virtio.ProtocolFeature.__members__


@pytest.mark.parametrize(("older", "newer", "added", "removed", "protocol_added"), HISTORY)
def test_each_release_changed_what_it_did(
    older: str, newer: str, added: set[str], removed: set[str], protocol_added: set[str]
) -> None:
    catalogue = shipped()
    old, new = catalogue.get(full(older)), catalogue.get(full(newer))
    assert catalogue.names().index(new.name) < catalogue.names().index(old.name)
    assert set(virtio.names(new.features & ~old.features)) == added
    assert set(virtio.names(old.features & ~new.features)) == removed
    assert set(virtio.protocol_names(new.protocol_features & ~old.protocol_features)) == (
        protocol_added
    )
    assert old.protocol_features & ~new.protocol_features == 0
    # A guest of the older mode fits the newer one wherever the real release kept its
    # features (v2.13 offers strictly less than v2.11), and the other way round.
    assert (check_modes(old, new) == []) == (not removed)
    # Protocol features count only where the device depends on them (MQ, NET_MTU,
    # LOG_SHMFD); the others are renegotiated with the destination's back-end.
    device_protocol = protocol_added & {
        "VHOST_USER_PROTOCOL_F_MQ",
        "VHOST_USER_PROTOCOL_F_NET_MTU",
        "VHOST_USER_PROTOCOL_F_LOG_SHMFD",
    }
    assert (check_modes(new, old) == []) == (not added and not device_protocol)


def test_what_ovs_masks_is_never_offered() -> None:
    needed = mask("MRG_RXBUF GUEST_ANNOUNCE MQ VERSION_1 CTRL_VQ CTRL_RX") | mask(LOG)
    catalogue = shipped()
    for mode in (catalogue.get(name) for name in OVS_DPDK + OVS_DPDK_TSO):
        # Linear buffers without TSO: no host TSO; CSUM only since OVS 3.2; no vIOMMU.
        masked = mask("IOMMU_PLATFORM")
        if "tso" not in mode.name:
            masked |= mask("HOST_TSO4 HOST_TSO6")
        if mode.name not in (full("v3.2"), "upstream.ovs-dpdk-tso.v3.0"):
            masked |= mask("CSUM")
        assert mode.features & masked == 0, mode.name
        assert mode.features & needed == needed, mode.name
        assert mode.protocol_features & protocol_mask("MQ LOG_SHMFD RARP") == protocol_mask(
            "MQ LOG_SHMFD RARP"
        )
        assert mode.protocol_features & protocol_mask("PAGEFAULT") == 0
        assert (mode.max_queue_pairs, mode.max_ring_size) == (128, 32768)


def test_the_example_verdict() -> None:
    catalogue = shipped()
    verdict = virtio.check_migration(
        catalogue.get(full("v2.9")),
        None,
        [catalogue.get(full("v2.6"))],
        port="vm1",
        destination="hv3",
    )
    assert verdict.text == (
        "hv3 cannot run vm1: mode upstream.ovs-dpdk.v2.9 is not offered there; "
        "VIRTIO_NET_F_MTU (bit 3), VIRTIO_RING_F_INDIRECT_DESC (bit 28) would be missing; "
        "VHOST_USER_PROTOCOL_F_NET_MTU (protocol bit 4) would be missing"
    )


def test_distribution_modes_are_placed() -> None:
    shipped_doc = [spec("up.v3"), spec("up.v2"), spec("up.v1")]
    distro = [
        spec("fc26.v2", after="up.v2"),
        spec("fc26.v1b"),  # follows the mode before it in its file
        spec("new.v9", newest=True),
    ]
    appended = [spec("old.v0"), spec("old.v00")]
    catalogue = parse_catalogue([("shipped", shipped_doc), ("fc26.json", distro), ("x", appended)])
    assert catalogue.names() == (
        "new.v9",
        "up.v3",
        "up.v2",
        "fc26.v2",
        "fc26.v1b",
        "up.v1",
        "old.v0",
        "old.v00",
    )
    assert catalogue.sources["fc26.v2"] == "fc26.json"
    assert catalogue.based_on("fc26.v2") == "test"


def test_load_reads_env_then_directory_then_extra_paths(tmp_path: Path) -> None:
    etc = tmp_path / "vhost-modes.d"
    etc.mkdir()
    (etc / "20-b.json").write_text(json.dumps([spec("dir.b")]))
    (etc / "10-a.json").write_text(json.dumps([spec("dir.a")]))
    (etc / "notes.txt").write_text("not a catalogue")
    env_file = tmp_path / "env.json"
    env_file.write_text(json.dumps([spec("fc26.ovs-dpdk.v2.6", after=full("v2.6"))]))
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps([spec("extra.x", newest=True)]))
    catalogue = load_catalogue([extra], environ={CATALOGUE_ENV: f"{env_file}::"}, config_dir=etc)
    assert catalogue.names() == (
        "extra.x",
        *OVS_DPDK,
        "fc26.ovs-dpdk.v2.6",
        *OVS_DPDK_TSO,
        *QEMU_VHOST_NET,
        "dir.a",
        "dir.b",
    )
    assert catalogue.sources["dir.a"] == str(etc / "10-a.json")


def test_load_refuses_unreadable_and_malformed_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(InvalidInput, match=r"missing\.json: cannot read"):
        load_catalogue([missing], environ={}, config_dir=None)
    broken = tmp_path / "broken.json"
    broken.write_text('[{"name": "x",}]')
    with pytest.raises(InvalidInput, match=r"broken\.json: not valid JSON: .* \(line 1, column"):
        load_catalogue([broken], environ={}, config_dir=None)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"name": "x"}, "f.json: a vhost-user mode catalogue is a JSON list of modes"),
        (["x"], "f.json: entry 1: a mode is a JSON object"),
        (
            [spec("m", features=["MRG_RXBUF", "INDIRECT", *LOG])],
            "f.json: mode 'm': unknown virtio feature 'INDIRECT'",
        ),
        (
            [spec("m", protocol_features=["LOG_SHMFD", "SLAVE"])],
            "f.json: mode 'm': unknown vhost-user protocol feature 'SLAVE'",
        ),
        ([spec("m", features=[28, *LOG])], "f.json: mode 'm': 'features' must be a list of names"),
        ([spec("m"), spec("n"), spec("m")], "f.json: mode 'm': defined twice"),
        (
            [spec("m", features=["MRG_RXBUF", "VHOST_USER_F_PROTOCOL_FEATURES"])],
            r"f.json: mode 'm': cannot migrate: VHOST_F_LOG_ALL \(bit 26\) is not offered",
        ),
        (
            [spec("m", protocol_features=["MQ"])],
            r"f.json: mode 'm': cannot migrate: VHOST_USER_PROTOCOL_F_LOG_SHMFD \(protocol bit 1\)",
        ),
        (
            [spec("m", max_queue_pairs=0)],
            "f.json: mode 'm': max_queue_pairs must be an integer from 1 to 32768, not 0",
        ),
        (
            [spec("m", max_ring_size=-256)],
            "f.json: mode 'm': max_ring_size must be an integer from 1 to 32768, not -256",
        ),
        ([spec("m", max_ring_size="1024")], "f.json: mode 'm': max_ring_size must be an integer"),
        ([spec("m", max_queue_pairs=True)], "f.json: mode 'm': max_queue_pairs must be an integer"),
        ([spec("m", feature=["MTU"])], "f.json: mode 'm': unknown field 'feature'"),
        ([{"name": "m", "features": []}], "f.json: mode 'm': missing field 'protocol_features'"),
        ([spec("bad name")], "f.json: mode 'bad name': malformed vhost-user mode name"),
        ([spec(7)], "f.json: entry 1: malformed vhost-user mode name 7"),
        ([spec("m", extra={"k": 1})], "f.json: mode 'm': 'extra' must be an object of strings"),
        ([spec("m", after="x", newest=True)], "f.json: mode 'm': give either 'after' or 'newest'"),
        ([spec("m", newest="yes")], "f.json: mode 'm': 'newest' must be true or false"),
        ([spec("m", family=3)], "f.json: mode 'm': 'family' must be a string"),
        (
            [spec("m", extra={"backend": "tap"})],
            "f.json: mode 'm': mode m: extra 'backend' must be vhost-user or vhost-net, not 'tap'",
        ),
    ],
)
def test_validation_refuses_bad_catalogues(doc: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        validate(doc, "f.json")
    with pytest.raises(InvalidInput, match=message):
        parse_catalogue([("f.json", doc)])


def test_parse_refuses_cross_file_problems() -> None:
    with pytest.raises(InvalidInput, match=r"d.json: mode 'a': defined twice \(also in s.json\)"):
        parse_catalogue([("s.json", [spec("a")]), ("d.json", [spec("a")])])
    with pytest.raises(InvalidInput, match=r"d\.json: mode 'b': 'after' names 'zz', not defined"):
        parse_catalogue([("s.json", [spec("a")]), ("d.json", [spec("b", after="zz")])])
    with pytest.raises(InvalidInput, match="defines no modes"):
        parse_catalogue([("s.json", [])])


@pytest.mark.parametrize(
    ("backend", "offered"),
    [
        ("upstream.ovs-dpdk.v2.9", OVS_DPDK[OVS_DPDK.index(full("v2.9")) :]),
        ("upstream.ovs-dpdk.v3.2", OVS_DPDK),
        ("upstream.ovs-dpdk-tso.v3.0", OVS_DPDK_TSO),
        ("qemu-8.2.vhost-net.linux-6.3", QEMU_VHOST_NET[1:]),
    ],
)
def test_a_back_end_offers_its_mode_and_the_older_ones_of_its_family(
    backend: str, offered: tuple[str, ...]
) -> None:
    assert supported_modes(shipped(), backend) == offered


def test_a_distribution_mode_is_of_the_default_family_unless_it_names_one() -> None:
    distro = [
        spec("fc26.ovs-dpdk.v2.6", after=full("v2.6")),
        spec("fc26.vhost-net", family="qemu-vhost-net", after="qemu-7.2.vhost-net"),
        spec("fc26.unnamed", after="qemu-7.2.vhost-net"),
    ]
    catalogue = parse_catalogue([(SHIPPED, json.loads(shipped_text())), ("fc26.json", distro)])
    assert supported_modes(catalogue, full("v2.7")) == (
        full("v2.7"),
        full("v2.6"),
        "fc26.ovs-dpdk.v2.6",
        "fc26.unnamed",
    )
    assert supported_modes(catalogue, "qemu-7.2.vhost-net") == (
        "qemu-7.2.vhost-net",
        "fc26.vhost-net",
    )
    assert catalogue.family("fc26.vhost-net") == "qemu-vhost-net"
    assert catalogue.family("fc26.ovs-dpdk.v2.6") == catalogue.family("fc26.unnamed") == ""


def test_get_and_contains() -> None:
    catalogue = shipped()
    assert full("v2.6") in catalogue
    assert "nope" not in catalogue
    with pytest.raises(NotFound, match="unknown vhost-user mode 'nope'; known: upstream"):
        catalogue.get("nope")


def test_newest_common() -> None:
    catalogue = shipped()
    hv1 = {full(v) for v in ("v2.17", "v2.15", "v2.9", "v2.6")}
    hv2 = {full(v) for v in ("v2.9", "v2.8", "v2.7", "v2.6", "fc26.ovs-dpdk.v2.6")}
    hv3 = {full("v2.6")}
    assert catalogue.newest_common([hv1, hv2]) == catalogue.get(full("v2.9"))
    assert catalogue.newest_common([hv1, hv2, hv3]) == catalogue.get(full("v2.6"))
    assert catalogue.newest_common([hv1, set()]) is None
    assert catalogue.newest_common([]) == catalogue.newest()


def test_select() -> None:
    catalogue = shipped()
    here = {full("v2.9"), full("v2.6"), "something.unknown"}
    assert catalogue.select(None, here).name == full("v2.9")
    assert catalogue.select(full("v2.6"), here).name == full("v2.6")
    listing = "upstream.ovs-dpdk.v2.9, upstream.ovs-dpdk.v2.6"
    with pytest.raises(
        InvalidInput,
        match=f"vhost-user mode 'upstream.ovs-dpdk.v2.17' is not supported here "
        rf"\(supported: {listing}\)",
    ):
        catalogue.select(full("v2.17"), here)
    with pytest.raises(
        InvalidInput, match=rf"unknown vhost-user mode 'v9' \(supported here: {listing}\)"
    ):
        catalogue.select("v9", here)
    with pytest.raises(
        InvalidInput, match=r"no vhost-user mode is supported here \(supported: none\)"
    ):
        catalogue.select(None, {"something.unknown"})


name_sets = st.lists(st.sets(st.sampled_from(SHIPPED_NAMES)), max_size=4)


@given(name_sets)
def test_newest_common_is_the_first_mode_in_every_set(sets: list[set[str]]) -> None:
    catalogue = shipped()
    common = [n for n in SHIPPED_NAMES if all(n in s for s in sets)]
    found = catalogue.newest_common(sets)
    assert (found.name if found else None) == (common[0] if common else None)


@given(st.sets(st.sampled_from(SHIPPED_NAMES), min_size=1))
def test_default_selection_is_the_newest_supported(supported: set[str]) -> None:
    catalogue = shipped()
    chosen = catalogue.select(None, supported)
    assert chosen.name in supported
    newer = SHIPPED_NAMES[: SHIPPED_NAMES.index(chosen.name)]
    assert not supported.intersection(newer)
