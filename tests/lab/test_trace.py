"""liveport trace and liveport migration show in a lab, through a migration of vm1 from hv1
to hv2 (OVN's requested-chassis=hv1,hv2), with peer on hv3.

trace's verdicts are held against OVS's own ofproto/trace of the same packet on the same
bridge: the same final verdict (drop, or output to the same ports)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from liveport.cms import trace as tracing
from liveport.cms.doctor import SwitchAccess
from liveport.lab import hypervisor, lab, vms
from liveport.lab.state import editing

from tests.conftest import LabFactory
from tests.lab.helpers import nbctl, run_cli

pytestmark = pytest.mark.lab

VM1_MAC, VM1_IP = "00:00:00:00:00:01", "10.0.0.1"
# A datagram from peer (hv3) to vm1, as it arrives at hv2 through hv3's tunnel: every other
# chassis sends a migrating port's traffic to both its source and its destination (M2).
TO_VM1 = "eth.src=00:00:00:00:00:03, ip4.src=10.0.0.3, ip4.dst=10.0.0.1, udp, udp.dst=7002"


def build(directory: Path) -> None:
    nbctl(
        directory,
        *("ls-add", "ls0", "--", "lsp-add", "ls0", "vm1"),
        *("--", "lsp-set-addresses", "vm1", f"{VM1_MAC} {VM1_IP}"),
        *("--", "lsp-set-options", "vm1", "requested-chassis=hv1"),
        *("--", "lsp-add", "ls0", "peer", "--", "lsp-set-addresses", "peer"),
        "00:00:00:00:00:03 10.0.0.3",
    )
    vms.add(directory, "vm1", chassis="hv1", port="vm1", mac=VM1_MAC, ips=[VM1_IP])
    vms.add(
        directory, "peer", chassis="hv3", port="peer", mac="00:00:00:00:00:03", ips=["10.0.0.3"]
    )
    for port in ("vm1", "peer"):
        nbctl(directory, "wait-until", "Logical_Switch_Port", port, "up=true")
    nbctl(directory, "--wait=hv", "sync")


def plug_destination(directory: Path) -> None:
    """The hypervisor's first step (lab.hypervisor.migrate): vm1's VIF on hv2, then wait
    until hv2 reports its blocking flows installed."""
    with editing(directory) as state:
        vm = state.get_vm("vm1")
        vm.vifs.append(vms.plug_vif(state, vm, "hv2"))
    hypervisor.wait_destination_ready(directory, "vm1", "hv2", 20)


def ovs_verdict(directory: Path, chassis: str, trace: tracing.Trace) -> tuple[str, set[int]]:
    """OVS's ofproto/trace of the same packet on the same bridge: ("drop", {}) or
    ("output", the OpenFlow ports of the datapath actions)."""
    ctl = str(directory / chassis / "vswitchd.ctl")

    def appctl(*args: str) -> str:
        return subprocess.run(
            ["ovs-appctl", "-t", ctl, *args], capture_output=True, text=True, check=True
        ).stdout

    out = appctl("ofproto/trace", trace.bridge, trace.ovs_flow, trace.frame.hex())
    actions = re.findall(r"^Datapath actions: (.*)$", out, re.M)
    assert actions, out
    if actions[-1].strip() == "drop":
        return "drop", set()
    # dpif/show: "    NAME OFPORT/ODP_PORT: (type...)" per port of each bridge.
    section = appctl("dpif/show").split(f"  {trace.bridge}:")[1].split("\n  br")[0]
    ofport = {int(odp): int(of) for of, odp in re.findall(r"\s(\d+)/(\d+):", section)}
    # Datapath actions: odp ports, possibly after set(...) / tnl_push(...) actions.
    outputs = re.findall(r"(?:^|,)(\d+)(?=,|$)", re.sub(r"\([^()]*\)", "", actions[-1]))
    return "output", {ofport[int(p)] for p in outputs}


def liveport_verdict(trace: tracing.Trace) -> tuple[str, set[int]]:
    verdict = trace.explanation.verdict
    return verdict.kind, {d.ofport for d in verdict.outputs}


def trace_at_hv2(directory: Path) -> tracing.Trace:
    layout = lab.Layout.of(directory)
    host = layout.chassis("hv2")
    access = SwitchAccess("hv2", host.db_remote, str(host.mgmt_socket()))
    return tracing.trace(layout.sb_remote, access, TO_VM1, from_chassis="hv3")


def test_trace_says_why_a_pending_port_drops_and_where_it_delivers_after_activation(
    lab_factory: LabFactory,
) -> None:
    d = lab_factory(chassis=3)
    build(d)
    with lab.cms(d) as cms:
        cms.start("vm1", "hv2", form="ovn")
        plug_destination(d)
        nbctl(d, "--wait=hv", "sync")

        # Before the announcement: hv2 holds vm1's blocking flows.
        before = trace_at_hv2(d)
        verdict = before.explanation.verdict
        assert (verdict.kind, verdict.reason, verdict.port) == ("drop", "migration-blocked", "vm1")
        assert before.explanation.steps[-1].owner is not None
        assert before.explanation.steps[-1].owner.kind == "activation"
        assert ovs_verdict(d, "hv2", before) == liveport_verdict(before) == ("drop", set())
        # The command says the same, as text and as JSON.
        args = ["trace", "--dir", str(d), "--chassis", "hv2", "--from-chassis", "hv3", TO_VM1]
        text = run_cli(*args)
        assert text.returncode == 0, text.stderr
        assert "verdict: DROP (migration-blocked)" in text.stdout
        assert "ovs-appctl ofproto/trace br-int in_port=" in text.stdout
        doc = json.loads(run_cli(*args, "--json").stdout)
        assert doc["verdict"]["reason"] == "migration-blocked" and doc["verdict"]["port"] == "vm1"
        assert doc["steps"][-1]["table_name"] == "DELIVER"

        # The VM announces itself on hv2 (QEMU's RARP): hv2 delivers from then on.
        vms.send(d, "vm1", vms.SendSpec(kind="rarp"), chassis="hv2")
        cms.wait_owner("vm1", "hv2", timeout=20)
        nbctl(d, "--wait=hv", "sync")
        after = trace_at_hv2(d)
        verdict = after.explanation.verdict
        vif = lab.load_state(d).get_vm("vm1").vif_on("hv2")
        assert vif is not None
        assert (verdict.kind, [(o.kind, o.name) for o in verdict.outputs]) == (
            "output",
            [("vif", "vm1")],
        )
        assert ovs_verdict(d, "hv2", after) == liveport_verdict(after)
        assert liveport_verdict(after) == ("output", {verdict.outputs[0].ofport})


def show(directory: Path) -> dict[str, Any]:
    result = run_cli("migration", "show", "vm1", "--dir", str(directory), "--json")
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def test_migration_show_follows_the_phases_of_a_migration(lab_factory: LabFactory) -> None:
    d = lab_factory(chassis=3)
    build(d)
    assert show(d)["phase"] == "complete"
    with lab.cms(d) as cms:
        cms.start("vm1", "hv2", form="ovn")
        doc = show(d)
        assert (doc["phase"], doc["form"], doc["destination"]) == ("configured", "ovn", "hv2")
        assert doc["waiting"] == "waiting for the hypervisor to plug vm1's VIF on hv2"
        assert doc["requested"] == {"requested-chassis": "hv1,hv2"}

        plug_destination(d)
        doc = show(d)
        assert doc["phase"] == "ready", doc
        assert "announcement at hv2" in doc["waiting"]
        hv2 = next(c for c in doc["chassis"] if c["chassis"] == "hv2")
        assert hv2["claim"]["installed"] == "pending" and hv2["vif"] is not None

        vms.send(d, "vm1", vms.SendSpec(kind="rarp"), chassis="hv2")
        cms.wait_owner("vm1", "hv2", timeout=20)
        nbctl(d, "--wait=hv", "sync")
        doc = show(d)
        assert doc["phase"] == "activated" and doc["owner"] == "hv2"
        assert [o["chassis"] for o in doc["owners"]] == ["hv1", "hv2"]
        hv2 = next(c for c in doc["chassis"] if c["chassis"] == "hv2")
        assert hv2["claim"]["activation"]["kind"] == "rarp"
        assert doc["owners"][1]["since"] == hv2["claim"]["activated"]

        hypervisor.finish(d, "vm1")
        cms.complete("vm1")
        doc = show(d)
        assert (doc["phase"], doc["owner"]) == ("complete", "hv2")
        text = run_cli("migration", "show", "vm1", "--dir", str(d))
        assert text.stdout.startswith("port vm1: complete: no migration in progress; hv2 owns")
