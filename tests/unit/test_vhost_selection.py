"""Which mode a port's device is held to (liveport.cms.vhost): its own, or with --to the
newest mode common to its chassis and the named ones, read from SB rows built in memory.
The same against a live SB is left to the lab tests."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import pytest

from liveport.cms import vhost
from liveport.model.errors import InvalidInput, NotFound
from liveport.model.frozen import FrozenMap
from liveport.ovsdb.rows import Row, Snapshot
from liveport.vhostuser.catalogue import load_catalogue

CATALOGUE = load_catalogue(environ={}, config_dir=None)
OVS = [name for name in CATALOGUE.names() if CATALOGUE.family(name) == ""]


def older_from(name: str) -> list[str]:
    """What a chassis whose back-end implements mode `name` offers."""
    return OVS[OVS.index(name) :]


CHASSIS = {
    "hv1": older_from("upstream.ovs-dpdk.v3.2"),
    "hv2": older_from("upstream.ovs-dpdk.v2.11"),
    "hv3": older_from("upstream.ovs-dpdk.v2.8"),
    "hv4": ["upstream.ovs-dpdk-tso.v3.0"],
}


def rows(table: str, *records: Mapping[str, Any]) -> dict[uuid.UUID, Row]:
    out = {}
    for record in records:
        key = uuid.uuid4()
        out[key] = Row(key, table, FrozenMap(record))
    return out


def sb(owner: str | None = "hv1", mode: str | None = "upstream.ovs-dpdk.v2.13") -> Snapshot:
    chassis = [
        {"name": name, "vhost_modes": FrozenMap({m: rank for rank, m in enumerate(modes)})}
        for name, modes in CHASSIS.items()
    ]
    vifs = [{"iface_id": "vm1", "chassis": owner, "vhost_mode": mode}] if owner else []
    return Snapshot(
        1,
        {
            "Chassis": rows("Chassis", *chassis),
            "Port_Binding": rows("Port_Binding", {"logical_port": "vm1", "chassis": owner}),
            "Chassis_VIF": rows("Chassis_VIF", *vifs),
            "Port_Claim": {},
        },
        connected=True,
    )


@pytest.mark.parametrize(
    ("to", "expected", "why"),
    [
        ((), "upstream.ovs-dpdk.v2.13", "the mode vm1 runs in"),
        (("hv2",), "upstream.ovs-dpdk.v2.11", "the newest mode common to hv1, hv2"),
        (("hv2", "hv3"), "upstream.ovs-dpdk.v2.8", "the newest mode common to hv1, hv2, hv3"),
        (("hv1",), "upstream.ovs-dpdk.v3.2", "the newest mode common to hv1"),
        (
            ("hv3", "hv2", "hv3"),
            "upstream.ovs-dpdk.v2.8",
            "the newest mode common to hv1, hv3, hv2",
        ),
    ],
)
def test_to_picks_the_newest_mode_common_to_the_ports_chassis_and_the_named_ones(
    to: tuple[str, ...], expected: str, why: str
) -> None:
    selection = vhost.mode_for_port(sb(), CATALOGUE, "vm1", to)
    assert selection == vhost.Selection("vm1", CATALOGUE.get(expected), why)


@pytest.mark.parametrize(
    ("snapshot", "port", "to", "error", "message"),
    [
        (sb(), "vm9", (), NotFound, "unknown port 'vm9'"),
        (sb(), "vm1", ("hv9",), NotFound, "unknown chassis hv9"),
        (sb(), "vm1", ("hv4",), InvalidInput, "no vhost-user mode is common to hv1, hv4"),
        (
            sb(mode=None),
            "vm1",
            (),
            InvalidInput,
            "port vm1 reports no vhost-user mode; name a mode",
        ),
        (sb(owner=None), "vm1", ("hv2",), InvalidInput, "port vm1 is bound to no chassis"),
    ],
)
def test_selection_errors_are_one_line_naming_what_is_wrong(
    snapshot: Snapshot, port: str, to: tuple[str, ...], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        vhost.mode_for_port(snapshot, CATALOGUE, port, to)


def test_the_pure_selection_needs_no_database() -> None:
    current = vhost.PortMode("vm1", "hv2", "upstream.ovs-dpdk.v2.9", None)
    chosen = vhost.select_for_port(current, CATALOGUE, CHASSIS, ["hv3"])
    assert chosen.mode.name == "upstream.ovs-dpdk.v2.8"
    assert vhost.common_mode(CATALOGUE, {"a": CHASSIS["hv1"], "b": CHASSIS["hv2"]}).name == (
        "upstream.ovs-dpdk.v2.11"
    )
    with pytest.raises(InvalidInput, match="no vhost-user mode is common to no chassis"):
        vhost.common_mode(CATALOGUE, {})
