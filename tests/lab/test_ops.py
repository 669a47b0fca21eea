"""Running liveport's daemons as an operator does, in a lab: their control sockets (through
ovs-appctl and liveport ctl), a recompute that changes nothing, the metrics after one live
migration (scraped and parsed with prometheus_client's parser), the migration's id in both
daemons' logs, and --json from the lab commands."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from liveport.cli.main import main
from liveport.lab import control, hypervisor, lab, vms
from liveport.runtime import unixctl
from liveport.runtime.process import is_alive

from tests.conftest import LabFactory
from tests.lab.helpers import dump_flows, nbctl

pytestmark = pytest.mark.lab


def scrape(ctl: Path) -> dict[str, float]:
    address = unixctl.call(ctl, "metrics/address").strip()
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return out


def appctl(ctl: Path, *args: str) -> str:
    result = subprocess.run(
        ["ovs-appctl", "-t", str(ctl), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def coverage(ctl: Path, name: str) -> int:
    doc = json.loads(unixctl.call(ctl, "coverage/show", "--json"))
    return next((int(d["total"]) for d in doc if d["name"] == name), 0)


def wait_until(what: str, predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout}s")
        time.sleep(0.02)


def build(d: Path) -> None:
    nbctl(d, "ls-add", "ls0", "--", "lsp-add", "ls0", "vm1", "--", "lsp-set-addresses", "vm1",
          "00:00:00:00:00:01 10.0.0.1", "--", "lsp-add", "ls0", "vm2", "--",
          "lsp-set-addresses", "vm2", "00:00:00:00:00:02 10.0.0.2")  # fmt: skip
    vms.add(d, "vm1", chassis="hv1", port="vm1", mac="00:00:00:00:00:01", ips=["10.0.0.1"])
    vms.add(d, "vm2", chassis="hv2", port="vm2", mac="00:00:00:00:00:02", ips=["10.0.0.2"])
    for port in ("vm1", "vm2"):
        nbctl(d, "wait-until", "Logical_Switch_Port", port, "up=true")


@pytest.mark.skipif(shutil.which("ovs-appctl") is None, reason="needs ovs-appctl")
def test_operating_a_lab(lab_factory: LabFactory, capsys: pytest.CaptureFixture[str]) -> None:
    d = lab_factory(chassis=2, heartbeat=0.5, dead_after=3, metrics=True)
    layout = lab.Layout.of(d)
    northd = control.northd_ctl(d)
    hv1, hv2 = (control.agent_ctl(layout.chassis(c)) for c in ("hv1", "hv2"))

    # ovs-appctl speaks to liveport's daemons as to OVS's.
    status = appctl(northd, "connection-status")
    nb_line = r"^nb: connected to unix:\S+nb\.sock \(standalone\); lock liveport_northd: held$"
    assert re.search(nb_line, status, re.M), status
    assert re.search(r"^sb: connected to ", status, re.M)
    assert appctl(northd, "status").strip() == "Status: active"
    assert appctl(hv1, "version").strip() == "liveport-agent (liveport) 0.1.0"
    agent_status = appctl(hv1, "connection-status")
    assert "ovs: connected" in agent_status and "openflow: connected" in agent_status

    build(d)
    # A recompute finds nothing to change: same flows, the next pass looked at everything.
    before = dump_flows(d, "hv1")
    passes = coverage(hv1, "agent_pass")
    assert main(["ctl", "--target", str(hv1), "recompute"]) == 0
    wait_until("a pass after the recompute", lambda: coverage(hv1, "agent_pass") > passes)
    assert dump_flows(d, "hv1") == before
    recomputes = coverage(northd, "northd_recompute")
    assert main(["ctl", "--target", str(northd), "recompute"]) == 0
    wait_until("northd's recompute", lambda: coverage(northd, "northd_recompute") > recomputes)

    # One live migration (the hypervisor-driven form: no CMS step).
    hypervisor.migrate(d, "vm1", "hv2", hypervisor_status=True, remove_source=False, pause_ms=10)
    hypervisor.finish(d, "vm1", hypervisor_status=True)
    wait_until(
        "the migration to end in northd's metrics",
        lambda: (
            scrape(northd).get("liveport_northd_migrations_finished_total{outcome=completed}") == 1
        ),
    )
    north = scrape(northd)
    assert north["liveport_northd_announcement_to_binding_seconds_count"] == 1
    assert north["liveport_northd_migrations{phase=pending}"] == 0
    assert north["liveport_northd_migrations_finished_total{outcome=aborted}"] == 0
    assert north["liveport_db_connected{db=sb}"] == 1 and north["liveport_northd_active"] == 1
    dest = scrape(hv2)
    assert dest["liveport_agent_announcement_to_flows_seconds_count"] == 1
    assert dest["liveport_agent_packet_ins_total"] >= 1
    assert dest["liveport_agent_flows"] > 0 and dest["liveport_agent_ports{role=owner}"] == 2
    assert dest["liveport_agent_pass_cpu_seconds_count"] >= 1
    assert dest["liveport_agent_packet_ins_dropped_total"] == 0
    assert scrape(hv1)["liveport_agent_announcement_to_flows_seconds_count"] == 0

    # The destination's view of the port, as text and as JSON.
    shown = appctl(hv2, "port/show", "vm1")
    assert shown.startswith("port vm1: role owner, VIF here") and "flows installed: " in shown
    doc = json.loads(unixctl.call(hv2, "port/show", "--json", "vm1"))
    assert doc["role"] == "owner" and sum(doc["flows"].values()) > 0 and doc["learned"] == []
    with pytest.raises(unixctl.UnixctlError, match="not known on this chassis"):
        unixctl.call(hv2, "port/show", "nope")

    # Both daemons name the migration with the same id (the destination's claim).
    ids = set(
        re.findall(r"\[migration (vm1@hv2/[0-9a-f]{8})\]", (d / "hv2" / "agent.log").read_text())
    )
    assert len(ids) == 1, ids
    assert f"[migration {ids.pop()}]" in (d / "northd" / "northd.log").read_text()

    # Log levels at run time, through liveport ctl.
    assert main(["ctl", "-t", str(hv2), "vlog/set", "agent:file:dbg"]) == 0
    capsys.readouterr()
    assert main(["ctl", "-t", str(hv2), "--json", "vlog/list"]) == 0
    assert json.loads(capsys.readouterr().out)["agent"]["file"] == "dbg"

    # --json from the lab commands that print.
    for argv in (["lab", "env"], ["lab", "status"], ["lab", "vm", "list"], ["lab", "host", "list"]):
        assert main([*argv, "--dir", str(d), "--json"]) == 0, argv
        json.loads(capsys.readouterr().out)
    assert main(["status", "--dir", str(d), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)
    vm3 = ["vm3", "--dir", str(d), "--json"]
    assert main(["lab", "vm", "add", *vm3, "--chassis", "hv1", "--port", "vm3",
                 "--mac", "00:00:00:00:00:03"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["chassis"] == ["hv1"]
    assert main(["lab", "vm", "del", *vm3]) == 0
    assert json.loads(capsys.readouterr().out)["deleted"] is True

    # `exit` stops a daemon as SIGTERM does: its pidfile and control socket go with it.
    for ctl, pidfile in ((hv1, d / "hv1" / "agent.pid"), (northd, d / "northd" / "northd.pid")):
        pid = int(pidfile.read_text())
        assert appctl(ctl, "exit") == ""
        wait_until(f"{ctl} gone", lambda p=pid: not is_alive(p))
        assert not ctl.exists()
    assert main(["lab", "down", "--dir", str(d), "--json"]) == 0
    down = json.loads(capsys.readouterr().out)
    assert any(s["role"] == "hv2/agent" for s in down["stopped"]) and not d.exists()
