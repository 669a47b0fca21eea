"""vhost-user compatibility modes across chassis running different backend versions (V2,
V3, V5), in the lab with real northd and agents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from liveport.cms.migrate import Cms
from liveport.lab import hypervisor, lab, vms
from liveport.lab.sim import SimHost

from tests.conftest import LabFactory
from tests.lab.helpers import nbctl, run_cli

pytestmark = pytest.mark.lab

OLD = "upstream.ovs-dpdk.v2.9"


def cli_json(*args: str) -> object:
    result = run_cli(*args, "--json")
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def mixed(lab_factory: LabFactory) -> Path:
    d = lab_factory(chassis=3, vhost_backends={"hv3": OLD})
    nbctl(d, "ls-add", "ls0")
    for name, mac in (
        ("new", "00:00:00:00:00:01"),
        ("old", "00:00:00:00:00:02"),
        ("bad", "00:00:00:00:00:05"),
    ):
        nbctl(d, "lsp-add", "ls0", name, "--", "lsp-set-addresses", name, mac)
    return d


def test_modes_per_chassis_and_the_newest_common_one(mixed: Path) -> None:
    d = str(mixed)
    doc = cli_json("vhost", "modes", "--dir", d)
    assert doc["chassis"]["hv3"][0] == OLD  # type: ignore[index]
    assert doc["chassis"]["hv1"] == doc["chassis"]["hv2"]  # type: ignore[index]
    assert doc["chassis"]["hv1"][0] != OLD  # type: ignore[index]
    assert doc["newest_common"] == OLD  # type: ignore[index]
    pair = cli_json("vhost", "modes", "--dir", d, "--chassis", "hv1,hv2")
    assert pair["newest_common"] == doc["chassis"]["hv1"][0]  # type: ignore[index]
    # The chassis also records what it offers in its own Open_vSwitch database.
    offered = SimHost("hv3", mixed / "hv3").vsctl(
        "get", "Open_vSwitch", ".", "external_ids:liveport-vhost-modes-offered"
    )
    assert offered.strip().strip('"').split(",")[0] == OLD
    result = run_cli("vhost", "modes", "--dir", d, "--chassis", "hv9")
    assert result.returncode != 0 and "unknown chassis hv9" in result.stderr


def test_a_ports_mode_decides_where_it_may_migrate(mixed: Path) -> None:
    d = mixed
    vms.add(d, "new", chassis="hv1", port="new", mac="00:00:00:00:00:01")
    vms.add(
        d,
        "old",
        chassis="hv1",
        port="old",
        mac="00:00:00:00:00:02",
        vhost_mode="upstream.ovs-dpdk.v2.8",
    )
    for port in ("new", "old"):
        nbctl(d, "wait-until", "Logical_Switch_Port", port, "up=true")
    nbctl(d, "--wait=hv", "sync")
    newest = cli_json("vhost", "modes", "--dir", str(d))["chassis"]["hv1"][0]  # type: ignore[index]
    assert vms.vif_external_id(d, "new", "hv1", "liveport-vhost-mode") == newest  # V3 default

    # The newest-mode port is refused up front, naming what hv3 lacks; nothing changes.
    before = nbctl(d, "get", "Logical_Switch_Port", "new", "options")
    result = run_cli("migrate", "new", "--to", "hv3", "--dir", str(d))
    assert result.returncode != 0
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1
    assert f"hv3 cannot run new: mode {newest} is not offered there" in err
    assert "VIRTIO_F_RING_PACKED (bit 34)" in err and "VIRTIO_RING_F_EVENT_IDX (bit 29)" in err
    assert nbctl(d, "get", "Logical_Switch_Port", "new", "options") == before
    check = cli_json("vhost", "check", "new", "--to", "hv3", "--dir", str(d))
    assert check["ok"] is False and check["mode"] == newest  # type: ignore[index]

    # The older-mode port migrates to the older chassis and keeps its mode there.
    assert cli_json("vhost", "check", "old", "--to", "hv3", "--dir", str(d))["ok"] is True  # type: ignore[index]
    layout = lab.Layout(d)
    with Cms(layout.nb.remote, layout.sb.remote) as cms:
        cms.start("old", "hv3")
        hypervisor.migrate(d, "old", "hv3", announce="rarp", pause_ms=10)
        cms.complete("old")
    assert vms.vif_external_id(d, "old", "hv3", "liveport-vhost-mode") == "upstream.ovs-dpdk.v2.8"
    status = cli_json("status", "--dir", str(d))
    assert next(p for p in status["ports"] if p["name"] == "old")["chassis"] == "hv3"  # type: ignore[index]


def test_an_unsupported_mode_leaves_the_port_unplugged(mixed: Path) -> None:
    d = mixed
    vms.add(
        d,
        "bad",
        chassis="hv3",
        port="bad",
        mac="00:00:00:00:00:05",
        vhost_mode="upstream.ovs-dpdk.v2.11",
    )
    vms.add(d, "old", chassis="hv2", port="old", mac="00:00:00:00:00:02", vhost_mode="no.such.mode")
    nbctl(d, "--wait=hv", "sync")
    ports = {p["name"]: p for p in cli_json("status", "--dir", str(d))["ports"]}  # type: ignore[index]
    assert ports["bad"]["chassis"] is None
    assert (
        "VIF on hv3 refused: vhost-user mode 'upstream.ovs-dpdk.v2.11' is not supported here"
        in ports["bad"]["status"]["error"]
    )
    assert ports["old"]["chassis"] is None
    assert "unknown vhost-user mode 'no.such.mode'" in ports["old"]["status"]["error"]
    assert "not supported here" in (
        vms.vif_external_id(d, "bad", "hv3", "liveport-vhost-error") or ""
    )
