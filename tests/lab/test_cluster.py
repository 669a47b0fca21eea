"""Scale-out and survival (issue 7): Raft-clustered NB and SB, SB relays, an active/standby
northd pair, and faults in the middle of migrations -- the Raft leader of either database
killed, the active northd killed, an agent cut off from the SB -- with M1 (one owner change)
and traffic as the evidence.

The network is the migration tests' (tests/lab/test_migration.py): ls0 with vm1 on hv1,
vm2 on hv2 and peer on hv3 sending vm1 traffic; vm1 migrates hv1 -> hv2 in OVN's form.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from liveport.lab import analysis, faults, hypervisor, lab, vms
from liveport.lab.state import editing
from liveport.lab.traffic import Traffic
from liveport.lab.watch import BindingWatch
from liveport.model.errors import InvalidInput, NotFound
from liveport.ovsdb import schema
from liveport.ovsdb.client import OvsdbClient
from liveport.ovsdb.rows import Row, Snapshot
from liveport.ovsdb.server import ServerSpec
from liveport.runtime.process import cmdline

from tests.conftest import LabFactory
from tests.lab.helpers import nbctl, run_cli
from tests.lab.test_migration import RATE, Network, build, wait_delivered

pytestmark = pytest.mark.lab
PARTITION = 10.0  # seconds an agent is cut off from the SB


@pytest.fixture
def cluster_factory(lab_factory: LabFactory) -> Iterator[object]:
    opened: list[Network] = []

    def make(**options: object) -> Network:
        options.setdefault("members", 3)
        options.setdefault("relays", 2)
        directory = lab_factory(chassis=3, name=f"c{len(opened)}", **options)
        build(directory, "ovn")
        network = Network(directory, "ovn", lab.cms(directory), BindingWatch(directory, ["vm1"]))
        opened.append(network)
        return network

    yield make
    for network in opened:
        network.watch.close()
        network.cms.close()


def sb_global(directory: Path) -> OvsdbClient:
    return OvsdbClient(
        lab.Layout.of(directory).sb_remote, schema.SB_NAME, {"SB_Global": ["options"]}
    )


def active_northd(directory: Path, timeout: float = 10.0, not_pid: int | None = None) -> str:
    """The lab role of the northd that holds the NB lock (it names itself in SB_Global)."""

    def named(s: Snapshot) -> int | None:
        row = s.one("SB_Global")
        name = row["options"].get("northd", "") if row is not None else ""
        pid = int(name.rpartition(":")[2]) if name else None
        return pid if pid != not_pid else None

    with sb_global(directory) as client:
        pid = client.wait_until(named, timeout=timeout, what="an active northd")
    for role in ("northd", "northd2"):
        try:
            if faults.pid(directory, role) == pid:
                return role
        except NotFound:  # the one that was killed
            continue
    raise AssertionError(f"the active northd (pid {pid}) is not one of the lab's")


def start_migration(net: Network) -> None:
    """CMS starts vm1 hv1 -> hv2; the hypervisor plugs the destination VIF; D is ready."""
    net.start()
    with editing(net.directory) as state:
        vm = state.get_vm("vm1")
        vm.vifs.append(vms.plug_vif(state, vm, "hv2"))
    hypervisor.wait_destination_ready(net.directory, "vm1", "hv2", timeout=20)


def end_migration(net: Network, *, announce: bool = True) -> None:
    """Announce on D (unless the VM already has), wait for the binding to D, complete."""
    d = net.directory
    if announce:
        vms.send(d, "vm1", vms.SendSpec(kind="rarp"), chassis="hv2")
    net.cms.sb.wait_until(
        lambda s: net.pb(s)["chassis"] == "hv2", timeout=30, what="vm1 bound to hv2"
    )
    net.finish()
    net.complete()
    net.wait_settled("hv2", timeout=30)


def test_clustered_lab_serves_ovn_nbctl_through_any_member(cluster_factory: object) -> None:
    net = cluster_factory()  # type: ignore[operator]
    d = net.directory
    doc = json.loads(run_cli("lab", "status", "--dir", str(d), "--json").stdout)
    for db in ("nb", "sb"):
        roles = sorted(m["role"] for m in doc[db]["members"])
        assert roles == ["follower", "follower", "leader"], doc[db]
        assert all(m["running"] for m in doc[db]["members"])
    assert [r["running"] for r in doc["sb_relays"]] == [True, True]
    assert [n["running"] for n in doc["northds"]] == [True, True]
    assert all(ch["sb_link"]["running"] for ch in doc["chassis"])
    # The agents reach the SB through their links to the relays, never the members.
    layout = lab.Layout.of(d)
    for entry in doc["chassis"]:
        remote = lab.Layout.of(d).chassis_sb_remote(entry["name"])
        assert all("sb-link" in r for r in remote.split(","))
    relay_sockets = {str(s.socket) for s in layout.sb_relays}
    assert all(r.removeprefix("unix:") in relay_sockets for r in layout.agent_sb_remotes)
    # Ports bound and up (build waited for that); exactly one northd is active.
    assert active_northd(d) in ("northd", "northd2")
    assert nbctl(d, "get", "Logical_Switch_Port", "vm1", "up") == "true"


def test_clustered_options_are_checked_before_anything_starts(short_tmp: Path) -> None:
    with pytest.raises(InvalidInput, match="--relays needs --clustered"):
        lab.up(short_tmp / "x", 1, relays=1)
    with pytest.raises(InvalidInput, match="the OVN engine lab is plain"):
        lab.up(short_tmp / "x", 1, members=3, secure=True, engine="ovn")
    with pytest.raises(InvalidInput, match="--members must be between"):
        lab.up(short_tmp / "x", 1, members=9)
    assert not (short_tmp / "x").exists()


@pytest.mark.parametrize("fault", ["sb-leader", "nb-leader", "active-northd"])
def test_fault_in_the_middle_of_a_migration(cluster_factory: object, fault: str) -> None:
    fault_in_the_middle_of_a_migration(cluster_factory(), fault)  # type: ignore[operator]


def test_the_sb_leader_dies_in_a_secure_cluster(cluster_factory: object) -> None:
    """TLS and RBAC on every member and relay: the agents on the chassis relays (each
    beside a member, relaying it first and the others once it is gone) and northd on the
    members' control listeners ride out the SB leader's death in a migration."""
    net = cluster_factory(secure=True, relays=1)  # type: ignore[operator]
    fault_in_the_middle_of_a_migration(net, "sb-leader")


def fault_in_the_middle_of_a_migration(net: Network, fault: str) -> None:
    d = net.directory
    since = net.watch.seen("vm1")[-1].at
    start_migration(net)
    traffic = Traffic(d, "peer", "vm1", rate=RATE).start()
    try:
        vms.wait_capture(d, "vm1", lambda f: len(f) > 10)
        if fault == "active-northd":
            victim = active_northd(d)
            killed = faults.kill(d, victim)
            survivor = "northd2" if victim == "northd" else "northd"
            assert active_northd(d, timeout=20, not_pid=killed) == survivor
        else:
            database = fault.removesuffix("-leader")
            gone = faults.kill_leader(d, database)
            servers = (
                lab.Layout.of(d).nb_servers if database == "nb" else lab.Layout.of(d).sb_servers
            )
            name = schema.NB_NAME if database == "nb" else schema.SB_NAME
            others = [s for s in servers if s.name != gone]
            new = _wait_for(lambda: lab.cluster_leader(others, name), f"a new {database} leader")
            assert new.name != gone
        nbctl(d, "--wait=hv", "sync", timeout=60)
        end_migration(net)
        vms.wait_capture(d, "vm1", lambda f: len(f) > 20, chassis="hv2")
    finally:
        sent = traffic.stop()
    wait_delivered(d, sent, "hv2")
    net.watch.wait(lambda s: net.pb(s)["chassis"] == "hv2", timeout=10, what="the watch at hv2")
    assert net.watch.owner_changes("vm1", since=since) == 1
    assert_consistent(d)
    announced = analysis.announcements(d, "vm1", "hv2")
    early = [
        g for g in analysis.deliveries(d, "vm1") if g.chassis == "hv2" and g.at < min(announced)
    ]
    assert early == [], "the destination delivered before the announcement"


@pytest.mark.parametrize("cut", ["hv1", "hv2"])
def test_an_agent_cut_off_from_the_sb_keeps_forwarding_and_converges(
    cluster_factory: object, cut: str
) -> None:
    """10 s without the SB during a migration (the chassis is not declared dead: 30 s)."""
    net = cluster_factory(dead_after=30.0)  # type: ignore[operator]
    d = net.directory
    since = net.watch.seen("vm1")[-1].at
    start_migration(net)
    agent_pid = faults.pid(d, f"{cut}/agent")
    traffic = Traffic(d, "peer", "vm1", rate=RATE).start()
    try:
        vms.wait_capture(d, "vm1", lambda f: len(f) > 10, chassis="hv1")
        faults.cut_sb(d, cut)
        cut_at = time.time()
        if cut == "hv2":
            # D, cut off, still activates in its datapath on the announcement and delivers
            # with the flows it has; it records the activation only once it is back.
            vms.send(d, "vm1", vms.SendSpec(kind="rarp"), chassis="hv2")
        # The partition lasts 10 s, and the delivering chassis delivers all along: wait
        # until it delivered a datagram sent 10 s after the cut.
        delivering = cut
        vms.wait_capture(
            d,
            "vm1",
            lambda f: any(x.ts >= cut_at + PARTITION for x in f),
            chassis=delivering,
            timeout=PARTITION + 10,
            what=f"{delivering} delivering {PARTITION:g}s into the partition",
        )
        # Every datagram sent in the partition (from 1 s in: what was already in flight
        # at the cut may take either way) reached the delivering chassis' VM: no stall.
        window = [x.seq for x in list(traffic.sent) if cut_at + 1.0 <= x.at <= cut_at + PARTITION]
        got = {g.seq for g in udp_deliveries(d, delivering)}
        assert window and not [q for q in window if q not in got], (
            "delivery stalled during the partition"
        )
        assert faults.pid(d, f"{cut}/agent") == agent_pid, "the agent itself kept running"
        assert net.pb()["chassis"] == ("hv1"), "nothing moved while the agent was cut off"
        faults.heal_sb(d, cut)
        end_migration(net, announce=cut == "hv1")
        vms.wait_capture(d, "vm1", lambda f: len(f) > 20, chassis="hv2")
    finally:
        sent = traffic.stop()
    wait_delivered(d, sent, "hv2")
    net.watch.wait(lambda s: net.pb(s)["chassis"] == "hv2", timeout=10, what="the watch at hv2")
    assert net.watch.owner_changes("vm1", since=since) == 1
    assert_consistent(d)


def test_a_chassis_declared_dead_loses_its_ports_only_as_design_says(
    cluster_factory: object,
) -> None:
    """M1: a port moves off a dead owner only to a chassis that has its VIF; a port no one
    else holds stays where it is; nothing moves back when the chassis returns."""
    net = cluster_factory(dead_after=3.0, heartbeat=0.5)  # type: ignore[operator]
    d = net.directory
    sb = OvsdbClient(
        lab.Layout.of(d).sb_remote,
        schema.SB_NAME,
        {"Port_Binding": ["logical_port", "chassis", "conflicts"], "SB_Global": ["live_chassis"]},
    )

    def pb(s: Snapshot, port: str) -> Row:
        row = s.one("Port_Binding", logical_port=port)
        assert row is not None
        return row

    nbctl(d, "lsp-add", "ls0", "solo", "--", "lsp-set-addresses", "solo", "00:00:00:00:00:09")
    vms.add(d, "solo", chassis="hv2", port="solo", mac="00:00:00:00:00:09", ips=[])
    nbctl(d, "wait-until", "Logical_Switch_Port", "solo", "up=true")
    with sb, BindingWatch(d, ["vm2", "peer", "solo"]) as watch:
        since = watch.seen("vm2")[-1].at
        # vm2's VIF also on hv1 (same iface-id, no options): a conflict, hv2 keeps it.
        with editing(d) as state:
            vm = state.get_vm("vm2")
            vm.vifs.append(vms.plug_vif(state, vm, "hv1"))
        sb.wait_until(
            lambda s: pb(s, "vm2")["conflicts"] == {"hv1"},
            timeout=10,
            what="the conflict on vm2 to be recorded",
        )
        assert watch.owner_changes("vm2", since=since) == 0
        faults.cut_sb(d, "hv2")
        sb.wait_until(
            lambda s: "hv2" not in schema.live_chassis(s), timeout=20, what="hv2 declared dead"
        )
        sb.wait_until(
            lambda s: pb(s, "vm2")["chassis"] == "hv1",
            timeout=20,
            what="vm2 to move to hv1, the other holder",
        )
        # solo's only VIF is on the dead chassis: it stays bound there (nobody else may
        # take it, and its traffic still flows if the chassis is only cut off).
        assert pb(sb.snapshot(), "solo")["chassis"] == "hv2"
        faults.heal_sb(d, "hv2")
        sb.wait_until(lambda s: "hv2" in schema.live_chassis(s), timeout=30, what="hv2 alive")
        nbctl(d, "--wait=hv", "sync", timeout=60)
        assert pb(sb.snapshot(), "vm2")["chassis"] == "hv1", "the port went back: a flap"
        assert watch.owner_changes("vm2", since=since) == 1
        assert watch.owner_changes("peer", since=since) == 0
        assert watch.owner_changes("solo", since=since) == 0


# ----- helpers -------------------------------------------------------------------------------


def assert_consistent(directory: Path) -> None:
    """liveport doctor finds NB, SB and every chassis' flows in agreement."""
    result = run_cli("lab", "doctor", "--dir", str(directory), "--settle", "15")
    assert result.returncode == 0, result.stdout + result.stderr


def udp_deliveries(directory: Path, chassis: str) -> list[analysis.Delivery]:
    return [g for g in analysis.deliveries(directory, "vm1") if g.chassis == chassis]


def _gaps(times: list[float]) -> list[float]:
    ordered = sorted(times)
    return [b - a for a, b in itertools.pairwise(ordered)]


def _wait_for(probe: object, what: str, timeout: float = 20.0) -> ServerSpec:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()  # type: ignore[operator]
        if found is not None:
            return found  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise AssertionError(f"no {what} within {timeout:g}s")


def test_the_link_is_the_only_path(cluster_factory: object) -> None:
    """The agents' SB remote names only their link sockets, and their processes say so."""
    net = cluster_factory(relays=0)  # type: ignore[operator]
    d = net.directory
    layout = lab.Layout.of(d)
    assert len(layout.agent_sb_remotes) == 3  # no relays: every member
    pid = faults.pid(d, "hv1/sb-link")
    assert str(d) in cmdline(pid)
