"""A chassis that writes more than its share (issue 19, northd.limits), in a secure lab.

hv4, which the NB gave no port, is the attacker's: its agent is stopped and a raw
connection with hv4's genuine certificate inserts thousands of Chassis_VIF rows (among them
reports of the network's real ports) as fast as the SB takes them, then rewrites all of them
a few times over. Meanwhile vm1 migrates hv1 -> hv2 in OVN's form with peer (on hv3)
sending it traffic. The migration completes with exactly one owner change;
northd ignores hv4's reports beyond its share and acts on its changes beyond its rate only
once a second; status, doctor, the SB and northd's metrics name hv4. When hv4's agent
returns it removes the rows it does not have and hv4 is no longer limited.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from liveport.lab import control, faults, lab
from liveport.lab.traffic import Traffic
from liveport.lab.watch import BindingWatch
from liveport.northd import limits
from liveport.ovsdb import schema
from liveport.ovsdb.client import OvsdbClient

from tests.conftest import LabFactory
from tests.lab.helpers import run_cli
from tests.lab.test_cluster import active_northd
from tests.lab.test_migration import RATE, Network, build, wait_delivered
from tests.lab.test_ops import scrape
from tests.lab.test_security import Rpc, outcome

pytestmark = pytest.mark.lab

ROWS = 5000  # Chassis_VIF rows hv4 inserts
BATCH = 250  # rows per transaction
REWRITES = 4  # times hv4 then rewrites every one of its rows
REAL = ("vm1", "vm2", "peer")  # the network's ports
FORGED = REAL  # ports of other chassis hv4 also reports


class Flood(threading.Thread):
    """hv4 inserting ROWS rows, then rewriting them all REWRITES times, as fast as the SB
    answers; `changes` counts the row changes the SB accepted."""

    def __init__(self, directory: Path) -> None:
        super().__init__(daemon=True)
        tls = lab.Layout.of(directory).tls
        assert tls is not None
        port = tls.sb_chassis_ports[-1]  # the chassis relay, or the cluster's relay
        self.rpc = Rpc.tls(port, tls.credentials("hv4"), Path(tls.pki_dir) / "control-ca.pem")
        # A rewrite of thousands of rows, forwarded to the Raft leader on a loaded machine,
        # may take longer than Rpc's 5 s to answer.
        self.rpc.sock.settimeout(120)
        self.changes = 0
        self.inserted = 0
        self.failure: str | None = None

    def run(self) -> None:
        try:
            names = [*FORGED, *(f"junk{i:05d}" for i in range(ROWS - len(FORGED)))]
            for start in range(0, len(names), BATCH):
                ops = [
                    {
                        "op": "insert",
                        "table": "Chassis_VIF",
                        "row": {"chassis": "hv4", "iface_id": n},
                    }
                    for n in names[start : start + BATCH]
                ]
                self.check(self.rpc.transact(*ops))
                self.inserted += len(ops)
                self.changes += len(ops)
            for i in range(REWRITES):
                status = "incoming" if i % 2 == 0 else "outgoing"
                op = {
                    "op": "update",
                    "table": "Chassis_VIF",
                    "where": [["chassis", "==", "hv4"]],
                    "row": {"migration_status": status},
                }
                result = self.rpc.transact(op)
                self.check(result)
                self.changes += int(result[0]["count"])
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.failure = repr(exc)
        finally:
            self.rpc.close()

    def check(self, results: list[Any]) -> None:
        if outcome(results) != "ok":
            raise AssertionError(outcome(results))


def limited(net: Network) -> str:
    """SB_Global options:limited, read over TLS as the CMS (it names the flooders)."""
    with OvsdbClient(net.cms.sb.remote, schema.SB_NAME, {"SB_Global": ["options"]}) as client:
        row = client.wait_connected(timeout=30).one("SB_Global")
        return str(row["options"].get("limited", "")) if row is not None else ""


def active_northd_ctl(d: Path) -> Path:
    """The control socket of the northd that writes (the only one that limits)."""
    layout = lab.Layout.of(d)
    if layout.northds == 1:
        return control.northd_ctl(d)
    role = active_northd(d)
    return control.northd_ctl(d, 1 if role == "northd" else int(role.removeprefix("northd")))


def wait_for(what: str, predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        time.sleep(0.05)


@pytest.mark.parametrize("topology", ["standalone", "clustered"])
def test_a_flooding_chassis_harms_no_other(lab_factory: LabFactory, topology: str) -> None:
    """Standalone: the flood goes through the SB's chassis relay. Clustered (3 members, one
    relay of the whole cluster): through that relay, to whichever member it follows."""
    options: dict[str, Any] = {"members": 3, "relays": 1} if topology == "clustered" else {}
    d = lab_factory(chassis=4, name="flood", secure=True, metrics=True, dead_after=120.0, **options)
    build(d, "ovn")
    net = Network(d, "ovn", lab.cms(d, timeout=30), BindingWatch(d, ["vm1"]))
    try:
        traffic = Traffic(d, "peer", "vm1", rate=RATE).start()
        try:
            since = net.watch.seen("vm1")[-1].at
            faults.pause(d, "hv4/agent")  # the attacker owns hv4
            flood_started = time.monotonic()
            flood = Flood(d)
            flood.start()
            wait_for("hv4 inserted 1000 rows", lambda: flood.inserted >= 1000 or flood.failure)
            net.start()
            net.migrate("rarp")
            net.finish()
            net.complete()
            # Settled in the SB (`ovn-nbctl --wait=hv` would wait for hv4, which is stopped
            # yet alive: it may be a VM's host that is merely slow).
            net.cms.sb.wait_until(
                lambda s: (
                    (r := s.one("Port_Binding", logical_port="vm1")) is not None
                    and r["chassis"] == "hv2"
                    and r["migration_destination"] is None
                ),
                timeout=60,
                what="vm1 settled on hv2",
            )
            flood.join(timeout=300)
            assert not flood.is_alive() and flood.failure is None, flood.failure
        finally:
            sent = traffic.stop()
        wait_delivered(d, sent, "hv2")
        assert net.watch.owners("vm1")[-2:] == ["hv1", "hv2"]
        assert net.watch.owner_changes("vm1", since=since) == 1

        # northd names hv4 in the SB, over its share (hv4 has no port: its margin only).
        limit = limits.VIF_MARGIN
        wait_for("hv4 limited in SB_Global", lambda: f"hv4: share {limit}" in limited(net))
        status = run_cli("status", "--dir", str(d))
        assert status.returncode == 0, status.stderr
        line = next(x for x in status.stdout.splitlines() if x.startswith("chassis hv4"))
        shed = ROWS - limit
        assert f"LIMITED: over its share of VIF reports: {shed} of {ROWS} ignored" in line, line
        for other in ("hv1", "hv2", "hv3"):
            line = next(x for x in status.stdout.splitlines() if x.startswith(f"chassis {other}"))
            assert "LIMITED" not in line, line
        doctor = run_cli("lab", "doctor", "--dir", str(d), "--settle", "0")
        assert f"chassis hv4: writes more VIF reports than its share: northd ignores {shed}" in (
            doctor.stdout
        ), doctor.stdout[-2000:]

        northd_ctl = active_northd_ctl(d)
        # What northd did with the flood is bounded: the reports beyond hv4's share are
        # shed, and of its row changes at most a burst plus the rate over the time northd
        # could have spent on them were acted on at once; the rest waited for a catch-up.
        wait_for(
            "northd's metrics to show hv4's shed reports",
            lambda: (
                scrape(northd_ctl).get("liveport_northd_chassis_vif_reports_shed{chassis=hv4}")
                == shed
            ),
        )
        metrics = scrape(northd_ctl)
        window = time.monotonic() - flood_started
        deferred = metrics["liveport_northd_chassis_vif_changes_deferred_total{chassis=hv4}"]
        # (northd sees fewer changes than hv4 made when several reach it in one update)
        seen = metrics["liveport_northd_chassis_vif_changes_total{chassis=hv4}"]
        assert 0 < deferred < seen <= flood.changes
        acted = seen - deferred
        assert acted <= limits.VIF_BURST + limits.VIF_RATE * window, (acted, window)
        assert "liveport_northd_chassis_vif_reports_shed{chassis=hv1}" not in metrics
        # northd wrote nothing for the rows of no port: the SB holds the network's bindings.
        bindings = sorted(r["logical_port"] for r in net.cms.sb.snapshot().rows("Port_Binding"))
        assert bindings == sorted(REAL)
    finally:
        faults.resume(d, "hv4/agent")
        net.watch.close()
    # hv4's agent removes the VIFs it does not have; northd stops limiting it.
    wait_for("hv4 no longer limited", lambda: "hv4" not in limited(net))
    net.cms.close()
