"""Live migration in the lab: real northd, agents, OVS; traffic and pcaps as evidence.

Each test builds switch ls0 with vm1 on hv1 (the migrating VM), vm2 on hv2 (another VM on
the destination) and peer on hv3 (sending vm1 traffic), then drives the CMS
(liveport.cms.migrate) and the emulated hypervisor (liveport.lab.hypervisor). Three input
forms: OVN's requested-chassis=S,D, the seed's migration-destination=D, and the
hypervisor-driven migration-status=incoming/outgoing (M6).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from liveport.cms.migrate import Cms, MigrationError
from liveport.lab import analysis, faults, hypervisor, lab, vms
from liveport.lab.state import editing
from liveport.lab.traffic import Sent, Traffic
from liveport.lab.watch import BindingWatch
from liveport.model import packets
from liveport.model.errors import Conflict, NotFound, Timeout
from liveport.ovsdb import schema
from liveport.ovsdb.rows import Snapshot

from tests.conftest import LabFactory
from tests.lab.helpers import dump_flows, nbctl

pytestmark = pytest.mark.lab

RATE = 500.0  # peer -> vm1 datagrams per second during migrations
# OVS keeps forwarding with cached datapath flows for a moment after a table change (its
# revalidators run asynchronously); DESIGN.md measured a few ms.
REVALIDATION_GRACE = 0.1
FORMS = ["ovn", "seed", "hypervisor"]
VM1 = ("00:00:00:00:00:01", ["10.0.0.1", "fd00::1"])


@dataclass
class Network:
    directory: Path
    form: str
    cms: Cms
    watch: BindingWatch

    @property
    def hypervisor_status(self) -> bool:
        return self.form == "hypervisor"

    def start(self) -> None:
        """The CMS side of starting (the hypervisor-driven form has none)."""
        if self.form != "hypervisor":
            self.cms.start("vm1", "hv2", form=self.form)  # type: ignore[arg-type]

    def migrate(self, announce: str = "rarp", **kwargs: Any) -> hypervisor.HypervisorMigration:
        """The hypervisor moves vm1 to hv2 but keeps the source VIF (see finish)."""
        return hypervisor.migrate(
            self.directory,
            "vm1",
            "hv2",
            announce=announce,
            pause_ms=20,
            hypervisor_status=self.hypervisor_status,
            remove_source=False,
            **kwargs,
        )

    def finish(self) -> None:
        hypervisor.finish(self.directory, "vm1", hypervisor_status=self.hypervisor_status)

    def complete(self) -> None:
        if self.form != "hypervisor":
            self.cms.complete("vm1")

    def abort(self) -> None:
        hypervisor.abort(self.directory, "vm1", hypervisor_status=self.hypervisor_status)
        if self.form != "hypervisor":
            self.cms.abort("vm1")

    def pb(self, snap: Snapshot | None = None) -> dict[str, object]:
        row = (snap or self.cms.sb.snapshot()).one("Port_Binding", logical_port="vm1")
        assert row is not None
        return dict(row.data)

    def wait_settled(self, owner: str, timeout: float = 10.0) -> None:
        self.cms.sb.wait_until(
            lambda s: (
                (r := s.one("Port_Binding", logical_port="vm1")) is not None
                and r["chassis"] == owner
                and r["migration_destination"] is None
            ),
            timeout=timeout,
            what=f"vm1 settled on {owner}",
        )
        nbctl(self.directory, "--wait=hv", "sync")


def build(directory: Path, form: str) -> None:
    options = ["--", "lsp-set-options", "vm1", "requested-chassis=hv1"] if form == "ovn" else []
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
        f"{VM1[0]} {' '.join(VM1[1])}",
        *options,
        "--",
        "lsp-add",
        "ls0",
        "vm2",
        "--",
        "lsp-set-addresses",
        "vm2",
        "00:00:00:00:00:02 10.0.0.2",
        "--",
        "lsp-add",
        "ls0",
        "peer",
        "--",
        "lsp-set-addresses",
        "peer",
        "00:00:00:00:00:03 10.0.0.3",
    )
    vms.add(directory, "vm1", chassis="hv1", port="vm1", mac=VM1[0], ips=VM1[1])
    vms.add(directory, "vm2", chassis="hv2", port="vm2", mac="00:00:00:00:00:02", ips=["10.0.0.2"])
    vms.add(
        directory, "peer", chassis="hv3", port="peer", mac="00:00:00:00:00:03", ips=["10.0.0.3"]
    )
    for port in ("vm1", "vm2", "peer"):
        nbctl(directory, "wait-until", "Logical_Switch_Port", port, "up=true")
    nbctl(directory, "--wait=hv", "sync")


@pytest.fixture(params=["plain", "secure"])
def secure(request: pytest.FixtureRequest) -> bool:
    """Every migration test runs in a plain lab and in a secure one (TLS everywhere, the SB's
    RBAC; the CMS and ovn-nbctl connect with the CMS certificate): M8 must cost no behaviour."""
    return bool(request.param == "secure")


@pytest.fixture
def network_factory(lab_factory: LabFactory, secure: bool) -> Iterator[object]:
    opened: list[Network] = []

    def make(form: str, **lab_options: object) -> Network:
        directory = lab_factory(chassis=3, name=f"lab{len(opened)}", secure=secure, **lab_options)
        build(directory, form)
        network = Network(directory, form, lab.cms(directory), BindingWatch(directory, ["vm1"]))
        opened.append(network)
        return network

    yield make
    for network in opened:
        network.watch.close()
        network.cms.close()


@pytest.fixture(params=FORMS)
def net(request: pytest.FixtureRequest, network_factory: object) -> Network:
    return network_factory(request.param)  # type: ignore[operator, no-any-return]


def all_flows(directory: Path) -> dict[str, list[str]]:
    return {c: dump_flows(directory, c) for c in ("hv1", "hv2", "hv3")}


def wait_delivered(directory: Path, sent: list[Sent], chassis: str | None = None) -> None:
    last = sent[-1].seq
    vms.wait_capture(
        directory,
        "vm1",
        lambda f: any(x.info.seq == last for x in f),
        timeout=10,
        chassis=chassis,
        what=f"datagram {last}",
    )


def udp_seqs(directory: Path, chassis: str) -> set[int]:
    return {d.seq for d in analysis.deliveries(directory, "vm1") if d.chassis == chassis}


# ----- success (M2, M3, M4) -------------------------------------------------------------------


@pytest.mark.parametrize("announce", ["rarp", "garp", "na"])
def test_migration_succeeds_with_each_announcement_and_form(net: Network, announce: str) -> None:
    d = net.directory
    traffic = Traffic(d, "peer", "vm1", rate=RATE).start()
    try:
        vms.wait_capture(d, "vm1", lambda f: len(f) > 20)
        since = net.watch.seen("vm1")[-1].at
        net.start()
        record = net.migrate(announce)
        # S sees the port bound to D and stops delivering (M3), before its VIF goes away.
        net.watch.wait(
            lambda s: net.watch.installed_at("vm1", "hv1", "standby"),
            timeout=10,
            what="hv1 to stand by",
        )
        net.finish()
        net.complete()
        net.wait_settled("hv2")
        vms.wait_capture(d, "vm1", lambda f: len(f) > 0, chassis="hv2")
    finally:
        sent = traffic.stop()
    wait_delivered(d, sent, "hv2")
    report = analysis.analyse(
        sent, analysis.deliveries(d, "vm1"), analysis.announcements(d, "vm1", "hv2"), record
    )
    assert report.leaked == 0, "datagrams reached the destination before the announcement"
    assert report.first_at_destination is not None
    standby_at = net.watch.installed_at("vm1", "hv1", "standby")
    assert standby_at is not None
    # After its barrier S forwards nothing more -- except what OVS's datapath cache still
    # forwards until the revalidators catch up with the new table (a few ms).
    late = [
        g
        for g in analysis.deliveries(d, "vm1")
        if g.chassis == "hv1" and g.at > standby_at + REVALIDATION_GRACE
    ]
    assert late == [], "the source kept delivering after it stood by"
    assert net.watch.owners("vm1")[-2:] == ["hv1", "hv2"]
    assert net.watch.owner_changes("vm1", since=since) == 1
    who, _, how = net.watch.activations["vm1"]
    assert who == "hv2" and how["kind"] == announce


# ----- lost announcements (M4) and abort (M5) -------------------------------------------------


def test_lost_announcements_keep_the_port_on_the_source_until_completion(net: Network) -> None:
    d = net.directory
    since = net.watch.seen("vm1")[-1].at
    net.start()
    net.migrate("none")
    # Meanwhile a broadcast from D reaches vm1 at S once, not at its blocked VIF on D (the
    # flood's copy to S and vm1's own copy to D must not add up to two).
    vms.send(d, "vm2", vms.SendSpec(kind="garp"))
    vms.send(d, "vm2", vms.SendSpec(kind="udp", to="vm1", seq=4242))  # a marker after it
    frames = vms.wait_capture(d, "vm1", lambda f: any(x.info.seq == 4242 for x in f), chassis="hv1")
    vm2_mac = lab.load_state(d).get_vm("vm2").mac
    garps = [f for f in frames if f.info.kind is packets.Kind.GARP and str(f.info.src) == vm2_mac]
    assert len(garps) == 1
    assert vms.capture(d, "vm1", chassis="hv2") == []
    net.finish()  # the source VIF is gone, yet nobody announced
    nbctl(d, "--wait=hv", "sync")
    pb = net.pb()
    if net.form != "hypervisor":
        assert pb["chassis"] == "hv1" and pb["migration_state"] == "pending"
        assert udp_seqs(d, "hv2") == set()  # still blocked
    net.complete()
    net.wait_settled("hv2")
    assert net.watch.owner_changes("vm1", since=since) == 1  # hv1 -> hv2, no empty binding
    with Traffic(d, "peer", "vm1", rate=RATE) as traffic:
        vms.wait_capture(d, "vm1", lambda f: len(f) > 10, chassis="hv2")
    assert traffic.sent


@pytest.mark.parametrize("after_activation", [False, True], ids=["before", "after"])
def test_abort_returns_the_port_to_the_source_with_nothing_left(
    net: Network, after_activation: bool
) -> None:
    d = net.directory
    before = all_flows(d)
    since = net.watch.seen("vm1")[-1].at
    net.start()
    net.migrate("rarp" if after_activation else "none")
    if after_activation:
        net.cms.sb.wait_until(
            lambda s: net.pb(s)["chassis"] == "hv2", timeout=10, what="hv2 to own vm1"
        )
    net.abort()
    net.wait_settled("hv1")
    changes = net.watch.owner_changes("vm1", since=since)
    assert changes == (2 if after_activation else 0)
    assert all_flows(d) == before, "the abort left flows behind (or lost some)"
    pb = net.pb()
    assert pb["migration_state"] is None and pb["migration_source"] is None
    assert [
        c
        for c in net.cms.sb.snapshot().rows("Port_Claim")
        if c["logical_port"] == "vm1" and c["chassis"] == "hv2"
    ] == []
    with Traffic(d, "peer", "vm1", rate=RATE, first_seq=100000) as traffic:
        vms.wait_capture(
            d, "vm1", lambda f: any((x.info.seq or 0) >= 100010 for x in f), chassis="hv1"
        )
    assert traffic.sent


def test_completion_leaves_the_flows_of_a_never_migrated_port(network_factory: object) -> None:
    """After hv1 -> hv2, every chassis' table equals that of a lab where vm1 was plugged on
    hv2 without any migration (flows compared with port names, not numbers)."""
    net = network_factory("seed")  # type: ignore[operator]
    d = net.directory
    net.start()
    net.migrate("rarp")
    net.finish()
    net.complete()
    net.wait_settled("hv2")
    moved = all_flows(d)
    other = network_factory("seed")  # type: ignore[operator]
    od = other.directory
    vms.delete(od, "vm1")
    vms.add(od, "vm1", chassis="hv2", port="vm1", mac=VM1[0], ips=VM1[1])
    other.wait_settled("hv2")
    fresh = all_flows(od)
    assert moved == fresh


# ----- M7: what must not activate -------------------------------------------------------------


def test_announcements_that_must_not_activate(network_factory: object) -> None:
    net = network_factory("seed")  # type: ignore[operator]
    d = net.directory
    net.start()
    with editing(d) as state:
        vm = state.get_vm("vm1")
        vm.vifs.append(vms.plug_vif(state, vm, "hv2"))
    hypervisor.wait_destination_ready(d, "vm1", "hv2", timeout=10)
    traffic = Traffic(d, "peer", "vm1", rate=RATE).start()
    try:
        # Another VM on the destination announces itself (its own MAC).
        vms.send(d, "vm2", vms.SendSpec(kind="rarp"))
        vms.send(d, "vm2", vms.SendSpec(kind="garp"))
        # vm1's MAC announced on a chassis that is not the destination (hv3, peer's VIF).
        vms.send(d, "peer", vms.SendSpec(kind="rarp", src_mac=VM1[0]))
        vms.send(d, "peer", vms.SendSpec(kind="garp", src_mac=VM1[0], src_ip="10.0.0.1"))
        # On the destination VIF: a GARP with a wrong IP, an NA for an address not vm1's,
        # and frames with another MAC.
        vms.send(d, "vm1", vms.SendSpec(kind="garp", src_ip="10.0.0.99"), chassis="hv2")
        vms.send(d, "vm1", vms.SendSpec(kind="na", target_ip="fd00::99"), chassis="hv2")
        vms.send(d, "vm1", vms.SendSpec(kind="rarp", src_mac="00:00:00:00:00:77"), chassis="hv2")
        # A marker proving the frames above were processed: vm2 hears vm1's last GARP.
        vms.send(d, "vm1", vms.SendSpec(kind="udp", to="vm2", seq=424242), chassis="hv1")
        vms.wait_capture(d, "vm2", lambda f: any(x.info.seq == 424242 for x in f))
        nbctl(d, "--wait=hv", "sync")
        pb = net.pb()
        assert pb["chassis"] == "hv1" and pb["migration_state"] == "pending"
        assert "vm1" not in net.watch.activations
        assert udp_seqs(d, "hv2") == set(), "the destination VIF received traffic"
        # The real announcement still works afterwards.
        vms.send(d, "vm1", vms.SendSpec(kind="garp"), chassis="hv2")
        net.cms.sb.wait_until(
            lambda s: net.pb(s)["chassis"] == "hv2", timeout=10, what="activation by vm1's own GARP"
        )
        vms.wait_capture(d, "vm1", lambda f: len(f) > 5, chassis="hv2")
    finally:
        traffic.stop()


# ----- restarts in the middle (M10) ---------------------------------------------------------------


@pytest.mark.parametrize("role", ["hv1/agent", "hv2/agent", "hv3/agent", "northd", "sb"])
def test_restart_in_the_middle_of_a_migration(network_factory: object, role: str) -> None:
    net = network_factory("ovn")  # type: ignore[operator]
    d = net.directory
    since = net.watch.seen("vm1")[-1].at
    net.start()
    with editing(d) as state:
        vm = state.get_vm("vm1")
        vm.vifs.append(vms.plug_vif(state, vm, "hv2"))
    hypervisor.wait_destination_ready(d, "vm1", "hv2", timeout=10)
    traffic = Traffic(d, "peer", "vm1", rate=RATE).start()
    try:
        faults.restart(d, role)
        nbctl(d, "--wait=hv", "sync", timeout=60)
        vms.send(d, "vm1", vms.SendSpec(kind="rarp"), chassis="hv2")
        net.cms.sb.wait_until(
            lambda s: net.pb(s)["chassis"] == "hv2", timeout=30, what="activation after the restart"
        )
        net.finish()
        net.complete()
        net.wait_settled("hv2", timeout=30)
        vms.wait_capture(d, "vm1", lambda f: len(f) > 20, chassis="hv2")
    finally:
        sent = traffic.stop()
    wait_delivered(d, sent, "hv2")
    assert net.watch.owner_changes("vm1", since=since) == 1
    announced = analysis.announcements(d, "vm1", "hv2")
    early = [
        g for g in analysis.deliveries(d, "vm1") if g.chassis == "hv2" and g.at < min(announced)
    ]
    assert early == [], "the destination delivered before the announcement"


# ----- many at once -------------------------------------------------------------------------


def test_twenty_concurrent_migrations(lab_factory: LabFactory, secure: bool) -> None:
    d = lab_factory(chassis=3, secure=secure)
    nbctl(d, "ls-add", "ls0")
    names = [f"m{i:02d}" for i in range(20)]
    hosts = ["hv1", "hv2", "hv3"]
    for i, name in enumerate(names):
        mac = f"00:00:00:00:01:{i:02x}"
        nbctl(d, "lsp-add", "ls0", name, "--", "lsp-set-addresses", name, f"{mac} 10.0.1.{i + 1}")
        vms.add(d, name, chassis=hosts[i % 3], port=name, mac=mac, ips=[f"10.0.1.{i + 1}"])
    for name in names:
        nbctl(d, "wait-until", "Logical_Switch_Port", name, "up=true")
    errors: list[BaseException] = []
    with BindingWatch(d, names) as watch, lab.cms(d) as cms:
        since = max(s.at for s in watch.history)

        def one(i: int, name: str) -> None:
            try:
                dest = hosts[(i + 1) % 3]
                cms.start(name, dest)
                hypervisor.migrate(d, name, dest, announce="garp" if i % 2 else "rarp", pause_ms=10)
                cms.complete(name, timeout=60)
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(i, n)) for i, n in enumerate(names)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        for i, name in enumerate(names):
            assert watch.owners(name)[-1] == hosts[(i + 1) % 3], name
            assert watch.owner_changes(name, since=since) == 1, (name, watch.owners(name))


# ----- CMS errors ---------------------------------------------------------------------------------


def test_cms_errors_are_clear(network_factory: object) -> None:
    net = network_factory("seed", heartbeat=0.3, dead_after=2.0)  # type: ignore[operator]
    d = net.directory
    cms = net.cms
    with pytest.raises(NotFound, match="unknown port 'nope'"):
        cms.start("nope", "hv2")
    with pytest.raises(NotFound, match="unknown destination chassis 'hv7'"):
        cms.start("vm1", "hv7")
    with pytest.raises(MigrationError, match="port vm1 is already on hv1"):
        cms.start("vm1", "hv1")
    with pytest.raises(MigrationError, match="no migration of vm1 is in progress"):
        cms.complete("vm1")
    cms.start("vm1", "hv2")
    with pytest.raises(Conflict, match="a migration of vm1 to hv2 is already in progress"):
        cms.start("vm1", "hv3")
    with pytest.raises(Timeout, match=r"ready on hv2 .*hv2 has no VIF for it yet"):
        cms.wait_ready("vm1", "hv2", timeout=0.5)
    cms.abort("vm1")
    faults.pause(d, "hv3/agent")
    try:
        cms.sb.wait_until(
            lambda s: "hv3" not in schema.live_chassis(s),
            timeout=30,
            what="hv3 declared dead",
        )
        with pytest.raises(MigrationError, match="destination chassis hv3 is not alive"):
            cms.start("vm1", "hv3")
    finally:
        faults.resume(d, "hv3/agent")
