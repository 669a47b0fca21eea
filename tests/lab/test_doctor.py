"""`liveport doctor` against a real lab: consistent after set-up, names the chassis and the
flow when a switch is tampered with, names the port when the SB is, and is consistent again
once the daemons have repaired it and after a completed migration."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from liveport.lab import faults, hypervisor, lab, vms
from liveport.ovsdb import schema

from tests.conftest import LabFactory
from tests.lab.helpers import nbctl, run_cli

pytestmark = pytest.mark.lab

SETTLE = "30"  # seconds a converging lab may take; a consistent one answers at once


def build(directory: Path) -> None:
    """ls0 with vm1 on hv1 and vm2 on hv2."""
    nbctl(
        directory,
        "ls-add",
        "ls0",
        "--",
        "lsp-add",
        "ls0",
        "vm1",
        "--",
        "lsp-set-addresses",
        "vm1",
        "00:00:00:00:00:01 10.0.0.1",
        "--",
        "lsp-add",
        "ls0",
        "vm2",
        "--",
        "lsp-set-addresses",
        "vm2",
        "00:00:00:00:00:02 10.0.0.2",
    )
    vms.add(directory, "vm1", chassis="hv1", port="vm1", mac="00:00:00:00:00:01", ips=["10.0.0.1"])
    vms.add(directory, "vm2", chassis="hv2", port="vm2", mac="00:00:00:00:00:02", ips=["10.0.0.2"])
    for port in ("vm1", "vm2"):
        nbctl(directory, "wait-until", "Logical_Switch_Port", port, "up=true")
    nbctl(directory, "--wait=hv", "sync")


def doctor(directory: Path, settle: str = SETTLE) -> tuple[int, dict[str, Any]]:
    result = run_cli("lab", "doctor", "--dir", str(directory), "--settle", settle, "--json")
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def status(directory: Path) -> dict[str, Any]:
    result = run_cli("status", "--dir", str(directory), "--json")
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def lines(doc: dict[str, Any]) -> list[str]:
    return [f"{f['where']}: {f['what']}" for f in doc["findings"]]


def test_doctor_through_tampering_and_a_migration(lab_factory: LabFactory) -> None:
    d = lab_factory(chassis=2)
    build(d)
    code, doc = doctor(d)
    assert (code, doc["findings"]) == (0, [])
    assert doc["checked"] == ["hv1", "hv2"] and doc["flows"] > 0
    assert (doc["switches"], doc["ports"], doc["chassis"]) == (1, 2, ["hv1", "hv2"])

    # The plain command, for one switch (its management socket found next to its database).
    env = lab.client_env(d)
    hv1 = lab.Layout.of(d).chassis("hv1")
    result = run_cli(
        "doctor",
        "--nb-db",
        env["LIVEPORT_NB_DB"],
        "--sb-db",
        env["LIVEPORT_SB_DB"],
        "--switch",
        f"hv1={hv1.db_remote}",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].startswith("consistent: 1 switch, 2 ports, 2 chassis, ")
    assert result.stdout.splitlines()[-1].endswith(" flows (flows not compared on hv2)")

    # A switch loses a flow while its agent is down: the chassis, the port and the flow.
    ports = {p["name"]: p for p in status(d)["ports"]}
    dp_key = status(d)["switches"][0]["tunnel_key"]
    faults.stop(d, "hv2/agent")
    subprocess.run(
        [
            "ovs-ofctl",
            "-O",
            "OpenFlow13",
            "--strict",
            "del-flows",
            f"unix:{lab.Layout.of(d).chassis('hv2').mgmt_socket()}",
            f"table=40,priority=100,metadata={dp_key},reg15={ports['vm2']['tunnel_key']}",
        ],
        check=True,
        timeout=30,
    )
    code, doc = doctor(d, settle="0")
    assert code == 1
    assert lines(doc) == ["chassis hv2: port vm2: flow missing"]
    assert doc["findings"][0]["expected"].startswith(
        f"cookie=0x4c5003{dp_key:06x}{ports['vm2']['tunnel_key']:04x},table=40,priority=100,"
    )
    assert doc["summary"] == "1 difference"
    faults.start(d, "hv2/agent")  # it finds the hole when it dumps the flows at start
    code, doc = doctor(d)
    assert (code, doc["findings"]) == (0, [])

    # The SB is changed behind northd's back.
    faults.stop(d, "northd")
    sb_socket = lab.status(d)["sb"]["socket"]
    tampered = "00:00:00:00:00:01 10.0.0.9"
    update = {
        "op": "update",
        "table": "Port_Binding",
        "where": [["logical_port", "==", "vm1"]],
        "row": {"addresses": tampered},
    }
    subprocess.run(
        ["ovsdb-client", "transact", f"unix:{sb_socket}", json.dumps([schema.SB_NAME, update])],
        check=True,
        capture_output=True,
        timeout=30,
    )
    code, doc = doctor(d, settle="0")
    assert code == 1
    assert "port vm1: Port_Binding addresses" in lines(doc)
    found = next(f for f in doc["findings"] if f["what"] == "Port_Binding addresses")
    assert (found["expected"], found["actual"]) == ("[00:00:00:00:00:01 10.0.0.1]", f"[{tampered}]")
    faults.start(d, "northd")
    code, doc = doctor(d)
    assert (code, doc["findings"]) == (0, [])

    # A migration: consistent while the destination waits, and after completion.
    with lab.cms(d) as cms:
        cms.start("vm1", "hv2")
        hypervisor.migrate(d, "vm1", "hv2", announce="none", pause_ms=10, remove_source=False)
        code, doc = doctor(d)
        assert (code, doc["findings"]) == (0, [])
        vms.send(d, "vm1", vms.SendSpec(kind="rarp"), chassis="hv2")
        cms.sb.wait_until(
            lambda s: (
                (r := s.one("Port_Binding", logical_port="vm1")) is not None
                and r["chassis"] == "hv2"
            ),
            timeout=30,
            what="vm1 activated on hv2",
        )
        hypervisor.finish(d, "vm1")
        cms.complete("vm1", timeout=30)
    nbctl(d, "--wait=hv", "sync")
    code, doc = doctor(d)
    assert (code, doc["findings"]) == (0, [])
    assert doc["checked"] == ["hv1", "hv2"]


def test_doctor_in_a_secure_lab(lab_factory: LabFactory) -> None:
    d = lab_factory(chassis=2, secure=True)
    build(d)
    result = run_cli("lab", "doctor", "--dir", str(d), "--settle", SETTLE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].startswith("consistent: 1 switch, 2 ports, 2 chassis, ")


def test_doctor_on_something_that_is_not_a_lab(short_tmp: Path) -> None:
    result = run_cli("lab", "doctor", "--dir", str(short_tmp))
    assert result.returncode == 4  # not found
    assert result.stderr.count("\n") == 1 and "not a liveport lab" in result.stderr
