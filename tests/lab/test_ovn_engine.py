"""The lab with upstream OVN as its engine (issue 8): the same chassis, underlay, VMs and
traffic, with ovn-northd and ovn-controller instead of liveport's daemons. A few tests keep
the comparison harness honest: OVN binds and forwards here, migrates in its own form, and
`lab down` leaves nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from liveport.lab import analysis, demo, hypervisor, lab, vms
from liveport.lab.traffic import Traffic
from liveport.model.errors import InvalidInput

from tests.conftest import LabFactory
from tests.lab.helpers import kernel_links, nbctl, processes_mentioning, run_cli

pytestmark = pytest.mark.lab


def build(directory: Path) -> None:
    demo.build_network(directory, requested_chassis="hv1")


def test_an_ovn_lab_binds_forwards_and_leaves_nothing(lab_factory: LabFactory) -> None:
    links = kernel_links()
    d = lab_factory(chassis=3, engine="ovn")
    doc = json.loads(run_cli("lab", "status", "--dir", str(d), "--json").stdout)
    assert doc["engine"] == "ovn"
    assert doc["northd"]["running"] and all(ch["agent"]["running"] for ch in doc["chassis"])
    build(d)
    with lab.ovn_cms(d) as cms:
        assert cms.owner("vm1") == "hv1" and cms.owner("peer") == "hv3"
    vms.send(d, "peer", vms.SendSpec(kind="udp", to="vm1"), count=3)
    vms.wait_capture(d, "vm1", lambda f: len(f) == 3, chassis="hv1", what="3 datagrams at hv1")
    assert kernel_links() == links, "the OVN lab created kernel interfaces"
    marker = str(d) + "/"
    assert processes_mentioning(marker)
    lab.down(d)
    assert processes_mentioning(marker) == []
    assert not d.exists()


def test_liveport_migrate_drives_ovn_in_its_own_form(lab_factory: LabFactory) -> None:
    d = lab_factory(chassis=3, engine="ovn")
    build(d)
    with lab.ovn_cms(d) as cms:
        traffic = Traffic(d, "peer", "vm1", rate=500).start()
        try:
            vms.wait_capture(d, "vm1", lambda f: len(f) > 10)
            started = run_cli("migrate", "vm1", "--to", "hv2", "--dir", str(d))
            assert started.returncode == 0, started.stderr
            assert "hv2 is additional" in started.stdout
            lsp = nbctl(d, "get", "Logical_Switch_Port", "vm1", "options")
            assert 'requested-chassis="hv1,hv2"' in lsp and "activation-strategy=rarp" in lsp
            record = hypervisor.migrate(d, "vm1", "hv2", announce="rarp", pause_ms=20)
            done = run_cli("migrate", "vm1", "--complete", "--dir", str(d))
            assert done.returncode == 0, done.stderr
            assert "vm1 is on hv2" in done.stdout
            vms.wait_capture(d, "vm1", lambda f: len(f) > 10, chassis="hv2")
        finally:
            sent = traffic.stop()
        assert cms.owner("vm1") == "hv2" and cms.additional("vm1") == set()
    report = analysis.analyse(
        sent, analysis.deliveries(d, "vm1"), analysis.announcements(d, "vm1", "hv2"), record
    )
    assert report.first_at_destination is not None


def test_the_ovn_lab_is_plain(short_tmp: Path) -> None:
    for options in ({"secure": True}, {"members": 3}, {"northds": 2}):
        with pytest.raises(InvalidInput, match="OVN engine lab is plain"):
            lab.up(short_tmp / "x", 1, engine="ovn", **options)
    with pytest.raises(InvalidInput, match="--engine must be one of"):
        lab.up(short_tmp / "x", 1, engine="other")
    assert not (short_tmp / "x").exists()
    result = run_cli("migrate", "vm1", "--to", "hv2", "--dir", str(short_tmp / "x"))
    assert result.returncode != 0
