"""Logical switching across chassis with real northd, agents and OVS (issue: switching)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from liveport.lab import faults, vms
from liveport.model import packets
from liveport.ovsdb import schema
from liveport.ovsdb.client import OvsdbClient
from liveport.ovsdb.rows import Change

from tests.conftest import LabFactory
from tests.lab.helpers import dump_flows, nbctl, processes_mentioning, run_cli

pytestmark = pytest.mark.lab

VMS = {  # name: (switch, chassis, mac, ip)
    "vm1": ("ls0", "hv1", "00:00:00:00:00:01", "10.0.0.1"),
    "vm2": ("ls0", "hv2", "00:00:00:00:00:02", "10.0.0.2"),
    "vm3": ("ls0", "hv3", "00:00:00:00:00:03", "10.0.0.3"),
    "vmx": ("ls1", "hv1", "00:00:00:00:00:09", "10.0.0.9"),
}


def add_port(directory: Path, name: str, switch: str, mac: str, ip: str, *options: str) -> None:
    args = ["lsp-add", switch, name, "--", "lsp-set-addresses", name, f"{mac} {ip}"]
    if options:
        args += ["--", "lsp-set-options", name, *options]
    nbctl(directory, *args)


def status(directory: Path) -> dict:  # type: ignore[type-arg]
    result = run_cli("status", "--dir", str(directory), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def port_status(directory: Path, name: str) -> dict:  # type: ignore[type-arg]
    return next(p for p in status(directory)["ports"] if p["name"] == name)


@pytest.fixture
def network(lab_factory: LabFactory) -> Iterator[Path]:
    directory = lab_factory(chassis=3)
    nbctl(directory, "ls-add", "ls0", "--", "ls-add", "ls1")
    for name, (switch, chassis, mac, ip) in VMS.items():
        add_port(directory, name, switch, mac, ip)
        vms.add(directory, name, chassis=chassis, port=name, mac=mac, ips=[ip])
    for name in VMS:
        nbctl(directory, "wait-until", "Logical_Switch_Port", name, "up=true")
    nbctl(directory, "--wait=hv", "sync")
    yield directory


def udp_seqs(directory: Path, vm: str) -> list[int]:
    return [
        f.info.seq
        for f in vms.capture(directory, vm)
        if f.info.kind is packets.Kind.UDP and f.info.seq is not None
    ]


def test_unicast_broadcast_and_port_security(network: Path) -> None:
    d = network
    names = ["vm1", "vm2", "vm3"]
    expected: dict[str, set[int]] = {n: set() for n in VMS}
    for i, src in enumerate(names):
        for j, dst in enumerate(names):
            if src != dst:
                seq = 10 * (i + 1) + (j + 1)
                vms.send(d, src, vms.SendSpec(kind="udp", to=dst, seq=seq))
                expected[dst].add(seq)
    for vm, seqs in expected.items():
        if seqs:
            vms.wait_capture(d, vm, _has_seqs(seqs), what=f"seqs {sorted(seqs)}")
    # Unicast went only to the right VIF: nothing else anywhere (vmx is on another switch).
    for vm in VMS:
        assert sorted(udp_seqs(d, vm)) == sorted(expected[vm]), vm

    # Broadcast: every other port of the switch, no port of another switch, not the sender.
    vms.send(d, "vm1", vms.SendSpec(kind="garp"))
    for vm in ("vm2", "vm3"):
        vms.wait_capture(d, vm, lambda f: any(x.info.kind is packets.Kind.GARP for x in f))
    # A spoofed source MAC is dropped; a marker sent after it proves the path was open.
    vms.send(d, "vm1", vms.SendSpec(kind="udp", to="vm2", seq=900, src_mac="00:00:00:00:00:77"))
    vms.send(d, "vm1", vms.SendSpec(kind="udp", to="vm2", seq=901))
    vms.wait_capture(d, "vm2", lambda f: 901 in _seqs(f))
    assert 900 not in udp_seqs(d, "vm2")
    # So is a spoofed source IP.
    vms.send(d, "vm1", vms.SendSpec(kind="udp", to="vm3", seq=902, src_ip="10.0.0.77"))
    vms.send(d, "vm1", vms.SendSpec(kind="udp", to="vm3", seq=903))
    vms.wait_capture(d, "vm3", lambda f: 903 in _seqs(f))
    assert 902 not in udp_seqs(d, "vm3")
    for vm in ("vm1", "vmx"):
        assert not [f for f in vms.capture(d, vm) if f.info.kind is packets.Kind.GARP], vm


def _seqs(frames: list[vms.Captured]) -> list[int]:
    return [f.info.seq for f in frames if f.info.seq is not None]


def _has_seqs(seqs: set[int]) -> Callable[[list[vms.Captured]], bool]:
    return lambda frames: seqs <= set(_seqs(frames))


def test_requested_chassis_is_honoured_and_says_why(network: Path) -> None:
    d = network
    add_port(d, "vm4", "ls0", "00:00:00:00:00:04", "10.0.0.4", "requested-chassis=hv1")
    vms.add(d, "vm4", chassis="hv2", port="vm4", mac="00:00:00:00:00:04", ips=["10.0.0.4"])
    nbctl(d, "--wait=hv", "sync")
    p = port_status(d, "vm4")
    assert p["chassis"] is None and not p["up"]
    assert "requested chassis hv1 has no VIF" in p["status"]["binding"]
    assert "VIF on hv2 ignored: not the requested chassis hv1" in p["status"]["binding"]
    # Its VIF on hv2 neither sends nor receives.
    vms.send(d, "vm4", vms.SendSpec(kind="udp", to="vm2", seq=40))
    vms.send(d, "vm1", vms.SendSpec(kind="udp", to="vm4", seq=41))
    vms.send(d, "vm3", vms.SendSpec(kind="udp", to="vm2", seq=42))
    vms.wait_capture(d, "vm2", lambda f: 42 in _seqs(f))
    assert 40 not in udp_seqs(d, "vm2") and udp_seqs(d, "vm4") == []
    # Once the VIF exists on the requested chassis, the port binds there.
    vms.delete(d, "vm4")
    vms.add(d, "vm4", chassis="hv1", port="vm4", mac="00:00:00:00:00:04", ips=["10.0.0.4"])
    nbctl(d, "wait-until", "Logical_Switch_Port", "vm4", "up=true")
    assert port_status(d, "vm4")["chassis"] == "hv1"


class OwnerWatch:
    """Counts owner changes of one Port_Binding, as the SB server reports them."""

    def __init__(self, directory: Path, port: str) -> None:
        self.port = port
        self.owners: list[str | None] = []
        self._lock = threading.Lock()
        self.client = OvsdbClient(
            f"unix:{directory}/sb/sb.sock",
            schema.SB_NAME,
            {"Port_Binding": ["logical_port", "chassis"]},
            name="watch",
        )
        self.client.wait_connected(10)
        self.client.add_listener(self._on_change).result(10)

    def _on_change(self, change: Change) -> None:
        if not change.snapshot.connected:
            return  # the empty snapshot before the first fetch says nothing
        row = change.snapshot.one("Port_Binding", logical_port=self.port)
        owner = row["chassis"] if row is not None else None
        with self._lock:
            if not self.owners or self.owners[-1] != owner:
                self.owners.append(owner)

    def history(self) -> list[str | None]:
        with self._lock:
            return list(self.owners)

    def close(self) -> None:
        self.client.close()


def test_same_iface_id_on_two_chassis_never_flaps(network: Path) -> None:
    d = network
    add_port(d, "vm5", "ls0", "00:00:00:00:00:05", "10.0.0.5")
    watch = OwnerWatch(d, "vm5")
    try:
        vms.add(d, "vm5", chassis="hv1", port="vm5", mac="00:00:00:00:00:05", ips=["10.0.0.5"])
        nbctl(d, "wait-until", "Logical_Switch_Port", "vm5", "up=true")
        vms.add(d, "vm5b", chassis="hv2", port="vm5", mac="00:00:00:00:00:05", ips=["10.0.0.5"])
        nbctl(d, "--wait=hv", "sync")
        assert port_status(d, "vm5")["conflicts"] == ["hv2"]
        first = watch.history()
        assert first[-1] == "hv1"
        deadline = time.monotonic() + 5.0  # the issue asks for a 5 s watch
        while time.monotonic() < deadline:
            vms.send(d, "vm5b", vms.SendSpec(kind="garp"))  # the other VM even announces itself
            time.sleep(0.1)
        assert watch.history() == first, "owner changed while both chassis had the VIF"
        # The second takes over once the first VIF is gone (how fast is a benchmark's
        # figure: `bench compare`, "the same iface-id on two chassis").
        vms.delete(d, "vm5")
        watch.client.wait_until(
            lambda s: (r := s.one("Port_Binding", logical_port="vm5")) and r["chassis"] == "hv2",
            timeout=30,
            what="hv2 to take vm5 over",
        )
        assert watch.history()[len(first) :] == ["hv2"]  # exactly one change, no blip
        nbctl(d, "wait-until", "Logical_Switch_Port", "vm5", "up=true")
    finally:
        watch.close()


def test_agent_restart_keeps_traffic_and_the_flow_table(network: Path) -> None:
    d = network
    before = dump_flows(d, "hv1")
    assert before, "hv1 should have flows"
    sent: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        with vms.Injector(d, "vm3") as inject:
            seq = 1000
            while not stop.is_set():
                inject.send(
                    vms.build_frame(
                        inject.state, inject.vm, vms.SendSpec(kind="udp", to="vm1"), seq
                    )
                )
                sent.append(seq)
                seq += 1
                time.sleep(0.005)

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        vms.wait_capture(d, "vm1", lambda f: len(_seqs(f)) > 20)
        old, new = faults.restart(d, "hv1/agent")
        assert old != new
        # Resynchronised: the restarted agent has reported this nb_cfg after a barrier.
        nbctl(d, "--wait=hv", "sync")
        after_restart = len(sent)
        vms.wait_capture(
            d, "vm1", lambda f: len([s for s in _seqs(f) if s >= 1000]) > after_restart - 1000 + 20
        )
    finally:
        stop.set()
        sender.join()
    last = sent[-1]
    got = vms.wait_capture(d, "vm1", lambda f: last in _seqs(f))
    received = set(_seqs(got))
    missing = [s for s in sent if s not in received]
    assert missing == [], f"{len(missing)} packets lost during the agent restart"
    assert dump_flows(d, "hv1") == before


def test_northd_restart_changes_no_tunnel_key(network: Path) -> None:
    d = network
    keys = {p["name"]: p["tunnel_key"] for p in status(d)["ports"]}
    switch_keys = {s["name"]: s["tunnel_key"] for s in status(d)["switches"]}
    faults.restart(d, "northd")
    add_port(d, "vm6", "ls1", "00:00:00:00:00:06", "10.0.0.6")
    nbctl(d, "--wait=sb", "sync")
    doc = status(d)
    assert {p["name"]: p["tunnel_key"] for p in doc["ports"] if p["name"] in keys} == keys
    assert {s["name"]: s["tunnel_key"] for s in doc["switches"]} == switch_keys
    assert {p["name"] for p in doc["ports"]} == set(keys) | {"vm6"}


def test_bad_nb_input_is_reported_by_port_and_crashes_nothing(network: Path) -> None:
    d = network
    nbctl(
        d, "lsp-add", "ls0", "bad1", "--", "lsp-set-addresses", "bad1", "00:00:00:00:0:1z 10.0.0.50"
    )
    add_port(d, "bad2", "ls0", "00:00:00:00:00:51", "10.0.0.51", "requested-chassis=hv9")
    add_port(d, "bad3", "ls0", "00:00:00:00:00:02", "10.0.0.52")  # vm2's MAC
    add_port(
        d, "bad4", "ls0", "00:00:00:00:00:54", "10.0.0.54", "activation-strategy=rarp,teleport"
    )
    nbctl(d, "lr-add", "router0")
    vms.add(d, "bad1", chassis="hv2", port="bad1", mac="00:00:00:00:00:50", ips=["10.0.0.50"])
    vms.add(d, "bad3", chassis="hv3", port="bad3", mac="00:00:00:00:00:02", ips=["10.0.0.52"])
    nbctl(d, "--wait=hv", "sync")
    doc = status(d)
    by_name = {p["name"]: p for p in doc["ports"]}
    assert "addresses" in by_name["bad1"]["status"]["error"]
    assert "requested chassis hv9 is not registered" in by_name["bad2"]["status"]["binding"]
    assert "already used by port vm2" in by_name["bad3"]["status"]["error"]
    assert "unknown activation strategy 'teleport'" in by_name["bad4"]["status"]["error"]
    assert "Logical_Router: 1" in doc["unsupported"]
    # Everything still runs, and still switches: vm2 keeps its MAC.
    running = status(d)["chassis"]
    assert all(c["alive"] for c in running)
    lab = json.loads(run_cli("lab", "status", "--dir", str(d), "--json").stdout)
    assert len(processes_mentioning(f"{d}/")) == lab["processes"]["registered"]
    assert lab["processes"]["running"] == lab["processes"]["registered"]
    vms.send(d, "vm1", vms.SendSpec(kind="udp", to="vm2", seq=777))
    vms.wait_capture(d, "vm2", lambda f: 777 in _seqs(f))
    assert 777 not in udp_seqs(d, "bad3")
    northd_log = (d / "northd" / "northd.log").read_text()
    assert "Traceback" not in northd_log
    assert any(
        "does not implement" in line and "Logical_Router: 1" in line
        for line in northd_log.splitlines()
    ), "northd's log should name the unsupported NB content"
    for chassis in ("hv1", "hv2", "hv3"):
        assert "Traceback" not in (d / chassis / "agent.log").read_text()


def _arp_requests_for(frames: list[vms.Captured], target: str) -> int:
    return sum(
        1 for f in frames if f.info.kind is packets.Kind.ARP and str(f.info.target) == target
    )


def test_a_port_claiming_the_broadcast_address_is_refused_and_broadcast_keeps_working(
    network: Path,
) -> None:
    """A port whose addresses name ff:ff:ff:ff:ff:ff (or any multicast or the all-zero MAC)
    does not get the switch's broadcasts: the entry is refused and reported on the port,
    and an ARP request between two other VMs of the switch still reaches them."""
    d = network
    nbctl(d, "set", "Logical_Switch_Port", "vm3", 'addresses="ff:ff:ff:ff:ff:ff 10.0.0.77"')
    nbctl(d, "--wait=hv", "sync")
    error = port_status(d, "vm3")["status"].get("error", "")
    assert "ff:ff:ff:ff:ff:ff is the broadcast address, not a unicast MAC" in error, error
    vms.send(d, "vm1", vms.SendSpec(kind="arp", to="vm2"))
    vms.wait_capture(
        d, "vm2", lambda f: _arp_requests_for(f, "10.0.0.2") > 0, what="vm1's ARP request"
    )
    nbctl(d, "set", "Logical_Switch_Port", "vm3", 'addresses="01:00:5e:00:00:01 10.0.0.77"')
    nbctl(d, "--wait=hv", "sync")
    assert "is a multicast address" in port_status(d, "vm3")["status"].get("error", "")
    before = _arp_requests_for(vms.capture(d, "vm1"), "10.0.0.1")
    vms.send(d, "vm2", vms.SendSpec(kind="arp", to="vm1"))
    vms.wait_capture(
        d,
        "vm1",
        lambda f: _arp_requests_for(f, "10.0.0.1") > before,
        what="vm2's ARP request",
    )


def test_a_port_in_two_switches_is_reported_and_stays_in_the_first(network: Path) -> None:
    d = network
    vm2 = nbctl(d, "--bare", "--columns=_uuid", "find", "Logical_Switch_Port", "name=vm2")
    nbctl(d, "add", "Logical_Switch", "ls1", "ports", vm2)
    nbctl(d, "--wait=hv", "sync")
    port = port_status(d, "vm2")
    assert port["switch"] == "ls0" and port["chassis"] == "hv2" and port["up"]
    error = port["status"].get("error", "")
    assert (
        "the port is in 2 logical switches; liveport binds it in ls0 only and ignores it "
        "in ls1" in error
    ), error
    text = run_cli("status", "--dir", str(d))
    assert "the port is in 2 logical switches" in text.stdout
    # It keeps working where it is bound.
    vms.send(d, "vm1", vms.SendSpec(kind="udp", to="vm2", seq=4242))
    vms.wait_capture(d, "vm2", lambda f: 4242 in _seqs(f))


def test_a_dead_owner_hands_over_only_to_another_holder(lab_factory: LabFactory) -> None:
    d = lab_factory(chassis=3, heartbeat=0.2, dead_after=1.5)
    nbctl(d, "ls-add", "ls0")
    add_port(d, "vm7", "ls0", "00:00:00:00:00:07", "10.0.0.7")
    add_port(d, "vm8", "ls0", "00:00:00:00:00:08", "10.0.0.8")
    vms.add(d, "vm7", chassis="hv1", port="vm7", mac="00:00:00:00:00:07", ips=["10.0.0.7"])
    vms.add(d, "vm8", chassis="hv1", port="vm8", mac="00:00:00:00:00:08", ips=["10.0.0.8"])
    nbctl(d, "wait-until", "Logical_Switch_Port", "vm7", "up=true")
    nbctl(d, "wait-until", "Logical_Switch_Port", "vm8", "up=true")
    vms.add(d, "vm7b", chassis="hv2", port="vm7", mac="00:00:00:00:00:07", ips=["10.0.0.7"])
    watch = OwnerWatch(d, "vm7")
    try:
        faults.pause(d, "hv1/agent")  # the agent stops; hv1's datapath keeps forwarding
        watch.client.wait_until(
            lambda s: (r := s.one("Port_Binding", logical_port="vm7")) and r["chassis"] == "hv2",
            timeout=10,
            what="hv2 to take vm7 over from the dead hv1",
        )
        assert watch.history() == ["hv1", "hv2"]
        # vm8 has no other holder: a dead chassis keeps it (its datapath still works).
        assert port_status(d, "vm8")["chassis"] == "hv1"
        assert not next(c for c in status(d)["chassis"] if c["name"] == "hv1")["alive"]
    finally:
        faults.resume(d, "hv1/agent")
        watch.close()
