"""A real QEMU VM in the lab, migrated between chassis through liveport end to end (V4, V6).

The agents run liveport's vhost-user back-end for the VM's VIFs; QEMU connects to them.
The guest's negotiation reaches the SB (the owner's claim), so northd expects a RARP (the
mode lacks GUEST_ANNOUNCE); after the live migration the destination QEMU asks hv2's
back-end to announce the guest (SEND_RARP), hv2's agent sends that RARP through the
pipeline from the VIF, and it activates the port: peer traffic reaches hv2's VIF and the
binding moves once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from liveport.cms.migrate import Cms
from liveport.lab import hypervisor, lab, vms
from liveport.lab.state import editing
from liveport.lab.traffic import Traffic
from liveport.lab.watch import BindingWatch
from liveport.model import virtio
from liveport.vhostuser.catalogue import CATALOGUE_ENV

from .conftest import NO_ANNOUNCE
from .harness import Rig
from tests.conftest import LabFactory
from tests.lab.helpers import nbctl

pytestmark = [pytest.mark.qemu, pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(180)]

MAC = "52:54:00:12:34:56"


@pytest.fixture
def qemu_lab(
    lab_factory: LabFactory, catalogue_file: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    # Agents (started by lab.up) and the CMS in this process load the test-only mode too.
    monkeypatch.setenv(CATALOGUE_ENV, str(catalogue_file))
    d = lab_factory(chassis=3)
    nbctl(
        d,
        "ls-add",
        "ls0",
        "--",
        "lsp-add",
        "ls0",
        "vm1",
        "--",
        "lsp-set-addresses",
        "vm1",
        f"{MAC} 10.0.0.1",
        "--",
        "lsp-add",
        "ls0",
        "peer",
        "--",
        "lsp-set-addresses",
        "peer",
        "00:00:00:00:00:03 10.0.0.3",
    )
    vms.add(d, "peer", chassis="hv3", port="peer", mac="00:00:00:00:00:03", ips=["10.0.0.3"])
    yield d


def vhost_ids(rig: Rig, chassis: str) -> dict[str, str]:
    return {
        "liveport-vhost-socket": str(rig.directory / f"{chassis}-vm1.sock"),
        "vhost-compat": NO_ANNOUNCE,
    }


def test_a_real_vm_migrates_and_its_sendrarp_activates_the_destination(
    qemu_lab: Path, rig: Rig
) -> None:
    d = qemu_lab
    vms.add(
        d,
        "vm1",
        chassis="hv1",
        port="vm1",
        mac=MAC,
        ips=["10.0.0.1"],
        external_ids=vhost_ids(rig, "hv1"),
    )
    source = rig.qemu("src", "hv1-vm1", mac=MAC)
    source.guest_features()  # the guest driver is up
    layout = lab.Layout(d)
    with Cms(layout.nb.remote, layout.sb.remote) as cms, BindingWatch(d, ["vm1"]) as watch:
        # V4: what the guest negotiated with hv1's back-end is in the SB; V6: so the
        # destination will expect a RARP, not GARP/NA.
        claim = cms.sb.wait_until(
            lambda s: next(
                (
                    r
                    for r in s.rows("Port_Claim")
                    if r["logical_port"] == "vm1"
                    and r["chassis"] == "hv1"
                    and "features" in r["vhost"]
                ),
                None,
            ),
            timeout=30,
            what="hv1's claim with the negotiation",
        )
        negotiated = int(claim["vhost"]["features"], 16)
        assert claim["vhost"]["mode"] == NO_ANNOUNCE
        assert not negotiated >> virtio.Feature.VIRTIO_NET_F_GUEST_ANNOUNCE & 1
        cms.sb.wait_until(
            lambda s: (
                (r := s.one("Port_Binding", logical_port="vm1")) is not None
                and set(r["activation_strategy"]) == {"rarp"}
            ),
            timeout=10,
            what="the RARP strategy",
        )
        since = watch.seen("vm1")[-1].at

        cms.start("vm1", "hv2")
        with editing(d) as state:
            vm = state.get_vm("vm1")
            vm.vifs.append(vms.plug_vif(state, vm, "hv2", external_ids=vhost_ids(rig, "hv2")))
        hypervisor.wait_destination_ready(d, "vm1", "hv2", timeout=30)
        destination = rig.qemu("dst", "hv2-vm1", mac=MAC, incoming=True)
        with Traffic(d, "peer", "vm1", rate=200) as traffic:
            result = rig.migrate(source, destination)
            assert result.status == "completed", result.query
            cms.sb.wait_until(
                lambda s: (
                    (r := s.one("Port_Binding", logical_port="vm1")) is not None
                    and r["chassis"] == "hv2"
                ),
                timeout=30,
                what="hv2 activated by QEMU's SEND_RARP",
            )
            vms.wait_capture(
                d, "vm1", lambda f: len([x for x in f if x.info.seq]) > 5, chassis="hv2", timeout=10
            )
        assert traffic.sent
        who, _, how = watch.activations["vm1"]
        assert who == "hv2" and how["kind"] == "rarp"
        hypervisor.finish(d, "vm1")
        cms.complete("vm1")
        assert watch.owner_changes("vm1", since=since) == 1
    assert (d / "hv2" / "agent.log").read_text().count("on QEMU's request") >= 1
