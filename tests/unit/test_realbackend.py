"""The check of a chassis' published modes against its real back-end (OVS-DPDK)."""

from __future__ import annotations

import uuid

from liveport.agent import southbound
from liveport.agent.localswitch import Identity
from liveport.model import realbackend, virtio
from liveport.model.frozen import FrozenMap
from liveport.model.realbackend import DpdkSwitch
from liveport.ovsdb.rows import Row, Snapshot, Update
from liveport.vhostuser.catalogue import load_catalogue

CATALOGUE = load_catalogue(config_dir=None, environ={})
DEBIAN_12 = DpdkSwitch(True, "DPDK 22.11.11", "3.1.0", False)


def test_the_release_names_its_mode() -> None:
    def name(switch: DpdkSwitch) -> str | None:
        mode = realbackend.identify(CATALOGUE, switch)
        return mode.name if mode is not None else None

    assert name(DEBIAN_12) == "upstream.ovs-dpdk.v2.17"
    assert name(DpdkSwitch(True, "DPDK 23.11.2", "3.3.1", False)) == "upstream.ovs-dpdk.v3.2"
    assert name(DpdkSwitch(True, "DPDK 23.11.2", "3.3.1", True)) == "upstream.ovs-dpdk-tso.v3.0"
    assert name(DpdkSwitch(True, "DPDK 19.11.14", "2.13.8", False)) == "upstream.ovs-dpdk.v2.13"
    # OVS 3.1 was never built on DPDK 19.11; a release no mode follows; not DPDK at all.
    assert name(DpdkSwitch(True, "DPDK 19.11.14", "3.1.0", False)) is None
    assert name(DpdkSwitch(True, "DPDK 26.11", "4.0.0", False)) is None
    assert name(DpdkSwitch(False, "", "3.1.0", False)) is None


def test_what_a_back_end_honours_is_not_every_older_mode() -> None:
    backend = CATALOGUE.get("upstream.ovs-dpdk.v2.17")
    honoured = realbackend.honoured(CATALOGUE, backend)
    assert honoured[0] == backend.name
    # OVS 2.13 dropped HOST_UFO: v2.11 promised it.
    assert "upstream.ovs-dpdk.v2.11" not in honoured
    assert "upstream.ovs-dpdk.v2.9" in honoured and "upstream.ovs-dpdk.v2.6" in honoured
    (problem,) = realbackend.published_problems(backend, [CATALOGUE.get("upstream.ovs-dpdk.v2.11")])
    assert problem.endswith("it lacks VIRTIO_NET_F_HOST_UFO")


def test_a_chassis_publishing_too_much_is_reported_and_one_publishing_right_is_ok() -> None:
    right = realbackend.check(
        CATALOGUE,
        DEBIAN_12,
        realbackend.honoured(CATALOGUE, CATALOGUE.get("upstream.ovs-dpdk.v2.17")),
        {},
        {},
    )
    assert right.backend == "upstream.ovs-dpdk.v2.17" and right.problems == ()
    assert right.summary == ""
    wrong = realbackend.check(CATALOGUE, DEBIAN_12, ["upstream.ovs-dpdk.v3.2"], {}, {})
    (problem,) = wrong.problems
    assert "publishes upstream.ovs-dpdk.v3.2" in problem and "VIRTIO_NET_F_CSUM" in problem
    assert wrong.summary == problem
    # Not an OVS-DPDK chassis: nothing to say.
    assert (
        realbackend.check(CATALOGUE, DpdkSwitch(False, "", "", False), ["x"], {}, {}).summary == ""
    )
    unknown = realbackend.check(CATALOGUE, DpdkSwitch(True, "DPDK 22.11.1", "", False), [], {}, {})
    assert unknown.backend is None and "ovs_version is not set" in unknown.summary


def test_a_guest_negotiating_outside_its_mode_is_reported() -> None:
    old = CATALOGUE.get("upstream.ovs-dpdk.v2.6")
    indirect = 1 << virtio.Feature.VIRTIO_RING_F_INDIRECT_DESC
    emulated = 1 << virtio.Feature.VIRTIO_NET_F_CTRL_MAC_ADDR  # QEMU's own: not counted
    inside = old.features & ~virtio.QEMU_EMULATED
    modes = {"vm1": old.name, "vm2": old.name}
    found = realbackend.vif_problems(
        CATALOGUE, modes, {"vm1": inside | indirect, "vm2": inside | emulated}
    )
    assert found == (
        "VIF vm1: its guest negotiated VIRTIO_RING_F_INDIRECT_DESC with the back-end, outside "
        "its mode upstream.ovs-dpdk.v2.6 (the front-end does not hold it to the mode)",
    )


def test_the_check_goes_into_the_chassis_other_config_beside_what_is_there() -> None:
    identity = Identity("hv1", "hv1.example", None, "geneve", "198.18.0.1", "br-int")
    row_uuid = uuid.UUID(int=1)

    def chassis(other_config: dict[str, str]) -> Snapshot:
        values = {
            "name": "hv1",
            "hostname": "hv1.example",
            "encap_type": "geneve",
            "encap_ip": "198.18.0.1",
            "vhost_modes": FrozenMap(),
            "other_config": FrozenMap(other_config),
        }
        row = Row(row_uuid, "Chassis", FrozenMap(values))
        private = Row(uuid.UUID(int=2), "Chassis_Private", FrozenMap({"name": "hv1"}))
        return Snapshot(
            1,
            {"Chassis": {row_uuid: row}, "Chassis_Private": {private.uuid: private}},
            connected=True,
        )

    def written(snap: Snapshot, check: str | None) -> dict[str, str] | None:
        ops = southbound.registration_ops(snap, identity, 0, (), backend_check=check)
        updates = [op for op in ops if isinstance(op, Update)]
        return dict(updates[0].values["other_config"]) if updates else None

    assert written(chassis({"x": "1"}), "ok: m") == {"x": "1", realbackend.CHECK_KEY: "ok: m"}
    assert written(chassis({"x": "1", realbackend.CHECK_KEY: "ok: m"}), "ok: m") is None
    assert written(chassis({"x": "1", realbackend.CHECK_KEY: "ok: m"}), None) == {"x": "1"}
