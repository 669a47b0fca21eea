"""OVS-DPDK chassis in the lab (`lab up --dpdk`): the DPDK build runs beside the dummy
datapath, huge pages are reserved and given back, and each agent checks the modes its
chassis publishes against the real back-end (liveport.model.realbackend)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from liveport.cms import status as cms_status
from liveport.lab import hugepages, lab, sim
from liveport.model import virtio
from liveport.model.realbackend import CHECK_KEY
from liveport.vhostuser.catalogue import load_catalogue

pytestmark = [pytest.mark.lab, pytest.mark.slow]

TOO_NEW = "upstream.ovs-dpdk.v3.2"  # OVS 3.2 turned checksum offload on


@pytest.fixture
def dpdk_binary() -> None:
    if not os.access(sim.DPDK_VSWITCHD, os.X_OK):
        pytest.skip(f"{sim.DPDK_VSWITCHD} is missing (scripts/setup.sh installs it)")


def status_doc(d: Path) -> dict[str, Any]:
    layout = lab.Layout(d)
    with cms_status.snapshots(layout.nb_remote, layout.sb_remote) as (nb, sb):
        return cms_status.collect(nb, sb)


def checks(d: Path, wanted: tuple[str, ...], timeout: float = 20.0) -> dict[str, str | None]:
    """Each chassis' back-end check as `liveport status` shows it, once wanted have one."""
    deadline = time.monotonic() + timeout
    while True:
        found = {c["name"]: c["vhost_backend_check"] for c in status_doc(d)["chassis"]}
        if all(found.get(name) for name in wanted):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no back-end check from {wanted}: {found}")
        time.sleep(0.1)


def test_dpdk_chassis_publish_their_back_end_and_a_wrong_promise_is_reported(
    dpdk_binary: None, short_tmp: Path
) -> None:
    d = short_tmp / "lab"
    before = int(hugepages.NR_HUGEPAGES.read_text())
    # hv1 and hv2 run OVS-DPDK; hv2 is told its back-end implements a newer mode than the
    # OVS-DPDK it runs; hv3 is a plain dummy-datapath chassis.
    lab.up(d, 3, dpdk=["hv1", "hv2"], vhost_backends={"hv2": TOO_NEW})
    try:
        state = lab.load_state(d)
        assert lab.dpdk_chassis(state) == ["hv1", "hv2"]
        record = state.options["dpdk"]["hugepages"]
        assert record["previous"] == before
        assert hugepages.pool().total >= before
        hv1 = lab.Layout(d).chassis("hv1")
        assert hv1.vsctl("get", "Open_vSwitch", ".", "dpdk_initialized").strip() == "true"
        assert "dpdkvhostuserclient" in hv1.vsctl("get", "Open_vSwitch", ".", "iface_types")

        found = checks(d, ("hv1", "hv2"))
        # hv1: the lab published exactly what its OVS-DPDK release offers.
        assert (found["hv1"] or "").startswith("ok: upstream.ovs-dpdk.")
        backend = load_catalogue().get((found["hv1"] or "")[len("ok: ") :])
        assert found["hv3"] is None  # not OVS-DPDK: nothing to check
        # hv2 promises TOO_NEW, whose features its OVS-DPDK lacks: reported, by name.
        missing = load_catalogue().get(TOO_NEW).features & ~backend.features
        assert missing
        problem = found["hv2"] or ""
        assert f"publishes {TOO_NEW}, which its back-end ({backend.name}) cannot honour" in (
            problem
        )
        for name in virtio.names(missing):
            assert name in problem
        # Recorded in the chassis' own database too, and logged.
        assert (
            hv1.vsctl("get", "Open_vSwitch", ".", f"external_ids:{CHECK_KEY}").strip('"\n')
            == found["hv1"]
        )
        log = (d / "hv2" / "agent.log").read_text()
        assert f"vhost-user back-end check: chassis publishes {TOO_NEW}" in log
        lines = cms_status.render(status_doc(d))
        assert any(line.startswith("  vhost-user back-end: publishes") for line in lines)
    finally:
        lab.down(d)
    # The pages the lab added are given back (and only those).
    assert int(hugepages.NR_HUGEPAGES.read_text()) == before
