"""Security groups end to end: the NB written by ovsdbapp as Neutron writes it, real
northd and agents, OVS userspace conntrack in the lab's switches.

vm1 (hv1) and vm2 (hv2) are in the default security group plus "TCP 22 from anywhere";
vm3 (hv3) has port security off and no group (Neutron leaves such a port out of every
port group): it stands for the rest of the world.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from liveport.lab import hypervisor, lab, neutron, vms
from liveport.lab.state import editing
from liveport.lab.tcp import TcpSession
from liveport.lab.traffic import Traffic
from liveport.model import cookies, packets
from liveport.model.errors import Timeout
from liveport.model.tcp import Side
from liveport.ovsdb import schema
from liveport.ovsdb.client import OvsdbClient
from liveport.ovsdb.rows import Snapshot

from tests.conftest import LabFactory
from tests.lab.helpers import dump_flows, nbctl, run_cli

pytestmark = pytest.mark.lab

NET = "neutron-5c3b0bba-1d1b-4a5e-8a6f-2a39f0b1c001"
SG_ID = "3b7b1ddf-2d4a-4b6b-9a37-d8a5b0a1c001"
VMS = {  # name: (chassis, mac, ip, in the group)
    "vm1": ("hv1", "fa:16:3e:00:00:01", "10.0.0.1", True),
    "vm2": ("hv2", "fa:16:3e:00:00:02", "10.0.0.2", True),
    "vm3": ("hv3", "fa:16:3e:00:00:03", "10.0.0.3", False),
}


@pytest.fixture
def cloud(lab_factory: LabFactory) -> Iterator[tuple[Path, str]]:
    d = lab_factory(chassis=3)
    remote = lab.client_env(d)["OVN_NB_DB"]
    with neutron.nb_api(remote) as api:
        api.ls_add(NET).execute(check_error=True)
        neutron.ensure_drop_group(api)
        group = neutron.default_security_group(api, SG_ID)
        neutron.add_rule(
            api,
            group,
            "ingress",
            protocol="tcp",
            port_min=22,
            port_max=22,
            remote_prefix="0.0.0.0/0",
        )
        for name, (chassis, mac, ip, member) in VMS.items():
            neutron.add_port(api, NET, name, mac, ip, [group] if member else [], chassis=chassis)
    for name, (chassis, mac, ip, _) in VMS.items():
        vms.add(d, name, chassis=chassis, port=name, mac=mac, ips=[ip])
    for name in VMS:
        nbctl(d, "wait-until", "Logical_Switch_Port", name, "up=true")
    nbctl(d, "--wait=hv", "sync")
    yield d, group


def udp_seqs(d: Path, vm: str) -> set[int]:
    return {
        f.info.seq
        for f in vms.capture(d, vm)
        if f.info.kind is packets.Kind.UDP and f.info.seq is not None
    }


def udp(d: Path, src: str, dst: str, seq: int) -> None:
    vms.send(d, src, vms.SendSpec(kind="udp", to=dst, seq=seq))


def handshake(d: Path, client: str, server: str, port: int, first_port: int) -> bool:
    """Whether a TCP handshake client -> server:port completes (each step is waited for:
    a SYN the ACLs drop times out)."""
    with TcpSession(
        d, client, server, server_port=port, first_port=first_port, timeout=2.0
    ) as session:
        try:
            session.open()
        except Timeout:
            return False
        session.send(Side.SERVER, wait=True)  # and the server's data comes back
        return True


def test_neutron_default_group_and_tcp_22(cloud: tuple[Path, str]) -> None:
    d, _ = cloud
    # Members reach each other, in both directions, on any port.
    udp(d, "vm1", "vm2", 1)
    udp(d, "vm2", "vm1", 2)
    vms.wait_capture(d, "vm2", lambda f: 1 in _seqs(f))
    vms.wait_capture(d, "vm1", lambda f: 2 in _seqs(f))
    assert handshake(d, "vm1", "vm2", 8080, 41000)
    # From outside the group: TCP 22 only, and its replies.
    assert handshake(d, "vm3", "vm1", 22, 42000)
    assert not handshake(d, "vm3", "vm1", 8080, 43000)
    udp(d, "vm3", "vm2", 3)
    # Egress is open: vm1 may call vm3, and vm3's answers come back as replies although
    # vm1 refuses new connections from vm3.
    assert handshake(d, "vm1", "vm3", 9000, 44000)
    # A marker sent last proves the earlier refused datagram had time to arrive.
    udp(d, "vm1", "vm2", 4)
    vms.wait_capture(d, "vm2", lambda f: 4 in _seqs(f))
    assert 3 not in udp_seqs(d, "vm2")


def test_a_disabled_port_gets_nothing(cloud: tuple[Path, str]) -> None:
    d, _ = cloud
    remote = lab.client_env(d)["OVN_NB_DB"]
    with neutron.nb_api(remote) as api:
        api.lsp_set_enabled("vm2", False).execute(check_error=True)
    nbctl(d, "--wait=hv", "sync")
    udp(d, "vm1", "vm2", 11)
    udp(d, "vm2", "vm1", 12)
    # Enabled again: what is sent now passes, and what was sent before never came.
    with neutron.nb_api(remote) as api:
        api.lsp_set_enabled("vm2", True).execute(check_error=True)
    nbctl(d, "--wait=hv", "sync")
    udp(d, "vm1", "vm2", 13)
    udp(d, "vm2", "vm1", 14)
    vms.wait_capture(d, "vm2", lambda f: 13 in _seqs(f))
    vms.wait_capture(d, "vm1", lambda f: 14 in _seqs(f))
    assert 11 not in udp_seqs(d, "vm2")
    assert 12 not in udp_seqs(d, "vm1")


def test_a_port_joining_the_group_counts_on_every_chassis_after_a_sync(
    cloud: tuple[Path, str],
) -> None:
    d, group = cloud
    assert not handshake(d, "vm3", "vm2", 8080, 45000)
    remote = lab.client_env(d)["OVN_NB_DB"]
    with neutron.nb_api(remote) as api:
        # vm3 joins (Neutron sets the port's port security and adds it to the groups).
        neutron.add_port(api, NET, "vm3", VMS["vm3"][1], VMS["vm3"][2], [group], chassis="hv3")
    nbctl(d, "--wait=hv", "sync")
    # Right after the sync, with no waiting: hv1 and hv2 both let vm3 in.
    udp(d, "vm3", "vm1", 21)
    udp(d, "vm3", "vm2", 22)
    vms.wait_capture(d, "vm1", lambda f: 21 in _seqs(f))
    vms.wait_capture(d, "vm2", lambda f: 22 in _seqs(f))


def test_an_acl_that_cannot_be_compiled_is_named_and_fails_closed(
    cloud: tuple[Path, str],
) -> None:
    d, group = cloud
    assert handshake(d, "vm3", "vm1", 22, 46000)
    remote = lab.client_env(d)["OVN_NB_DB"]
    broken = f"outport == @{group} && tcp.dst == 22 &&"
    with neutron.nb_api(remote) as api:
        api.pg_acl_add(group, "to-lport", 2000, broken, "drop", name="broken-rule").execute(
            check_error=True
        )
    nbctl(d, "--wait=hv", "sync")
    # It would drop TCP 22 to the group: with its match broken, it drops everything to
    # the group's ports above its priority's rivals, TCP 22 included.
    assert not handshake(d, "vm3", "vm1", 22, 47000)
    doc = json.loads(run_cli("status", "--dir", str(d), "--json").stdout)
    errors = [a for a in doc["acls"] if a.get("error")]
    assert [a["name"] for a in errors] == ["broken-rule"]
    assert "column" in errors[0]["error"]
    doctor = run_cli("lab", "doctor", "--dir", str(d))
    assert "broken-rule" in doctor.stdout


def test_reject_answers_with_a_reset_or_an_unreachable(cloud: tuple[Path, str]) -> None:
    d, group = cloud
    remote = lab.client_env(d)["OVN_NB_DB"]
    with neutron.nb_api(remote) as api:
        for rule in ("tcp.dst == 8080", "udp.dst == 7001"):
            api.pg_acl_add(
                group, "to-lport", 1003, f"outport == @{group} && {rule}", "reject"
            ).execute(check_error=True)
    nbctl(d, "--wait=hv", "sync")
    vms.send(d, "vm3", vms.SendSpec(kind="tcp", to="vm1", dst_port=8080, tcp_flags="S"))
    vms.send(d, "vm3", vms.SendSpec(kind="udp", to="vm1", seq=31))
    vm1_ip = ipaddress.ip_address(VMS["vm1"][2])

    def answered(frames: list[vms.Captured]) -> bool:
        reset = any(
            f.info.kind is packets.Kind.TCP
            and f.info.src_ip == vm1_ip
            and f.info.src_port == 8080
            and (f.info.tcp_flags or 0) & packets.TcpFlags.RST
            for f in frames
        )
        unreachable = any(
            f.info.src_ip == vm1_ip and (f.info.icmp_type, f.info.icmp_code) == (3, 3)
            for f in frames
        )
        return reset and unreachable

    vms.wait_capture(d, "vm3", answered, what="a TCP reset and a port unreachable from vm1")
    assert 31 not in udp_seqs(d, "vm1")


def _seqs(frames: list[vms.Captured]) -> set[int]:
    return {f.info.seq for f in frames if f.info.seq is not None}


# ----- a migration under security groups (M11, M12) ---------------------------------------

CONNECTIONS = 20


@pytest.fixture
def egress_only(lab_factory: LabFactory) -> Iterator[tuple[Path, str]]:
    """vm1 (hv1) may open connections to anywhere (allow-related from-lport) and accepts
    nothing new (Neutron's drop group, nothing to-lport); peer (hv3) is open."""
    d = lab_factory(chassis=3)
    yield d, neutron.egress_only(d)


def connections_db(d: Path) -> OvsdbClient:
    """A client of the SB's Port_Connections (what chassis publish for migrations)."""
    return OvsdbClient(lab.Layout.of(d).sb_remote, schema.SB_NAME, {"Port_Connections": None})


def published(snap: Snapshot, port: str, chassis: str) -> int:
    """How many connections chassis publishes for port (-1: no row)."""
    row = next(
        (
            r
            for r in snap.rows("Port_Connections")
            if r["logical_port"] == port and r["chassis"] == chassis
        ),
        None,
    )
    return len(row["connections"]) if row is not None else -1


def test_connections_survive_the_move_and_nothing_forbidden_reaches_the_destination(
    egress_only: tuple[Path, str],
) -> None:
    d, _ = egress_only
    with (
        lab.cms(d) as cms,
        connections_db(d) as sb,
        TcpSession(
            d, "vm1", "peer", connections=CONNECTIONS, server_port=5432, timeout=5.0
        ) as session,
    ):
        session.open()  # through vm1's allow-related from-lport rule
        session.send(Side.CLIENT, wait=True)
        session.send(Side.SERVER, wait=True)
        forbidden = Traffic(d, "peer", "vm1", rate=200).start()  # vm1 accepts nothing new
        try:
            cms.start("vm1", "hv2", form="ovn")
            sb.wait_until(
                lambda s: published(s, "vm1", "hv1") == CONNECTIONS,
                timeout=10,
                what="hv1 to publish vm1's connections",
            )
            # Data on the connections while the VM moves: the source delivers it until
            # the pause; the destination must deliver none of it before it activates.
            session.send(Side.SERVER, wait=True)
            record = hypervisor.migrate(
                d, "vm1", "hv2", announce="rarp", pause_ms=20, remove_source=False
            )
            hypervisor.finish(d, "vm1")
            cms.complete("vm1")
            cms.sb.wait_until(
                lambda s: (
                    (r := s.one("Port_Binding", logical_port="vm1")) is not None
                    and r["chassis"] == "hv2"
                    and r["migration_destination"] is None
                ),
                timeout=10,
                what="vm1 settled on hv2",
            )
            nbctl(d, "--wait=hv", "sync")
        finally:
            sent = forbidden.stop()
        # After the migration the remote side speaks first, on every connection: each
        # segment reaches vm1 on hv2 (a Timeout here names the first that did not).
        session.moved(Side.CLIENT, "hv2")
        session.send(Side.SERVER, wait=True)
        session.send(Side.CLIENT, wait=True)
        session.send(Side.SERVER, wait=True)
    resumed = record.at("resumed on destination")
    assert resumed is not None
    at_destination = [f for f in vms.capture(d, "vm1", chassis="hv2")]
    early = [f for f in at_destination if f.ts < resumed]
    assert early == [], "the destination delivered before the VM ran there"
    udp_there = [f for f in at_destination if f.info.kind is packets.Kind.UDP]
    assert sent and udp_there == [], "a datagram the ACLs forbid reached the destination"
    assert [f for f in vms.capture(d, "vm1") if f.info.kind is packets.Kind.UDP] == []


def test_an_aborted_migration_leaves_no_carried_state(egress_only: tuple[Path, str]) -> None:
    d, _ = egress_only
    with (
        lab.cms(d) as cms,
        connections_db(d) as sb,
        TcpSession(d, "vm1", "peer", connections=3, server_port=5432) as session,
    ):
        session.open()
        cms.start("vm1", "hv2", form="ovn")
        hypervisor_plug(d)
        sb.wait_until(lambda s: published(s, "vm1", "hv1") == 3, timeout=10, what="publication")
        # hv2 installs the flows that admit them (checked in the switch itself).
        nbctl(d, "--wait=hv", "sync")
        assert carried_flows(d, "hv2") == 2 * 3
        hypervisor.abort(d, "vm1")
        cms.abort("vm1")
        sb.wait_until(lambda s: published(s, "vm1", "hv1") == -1, timeout=10, what="the row to go")
        nbctl(d, "--wait=hv", "sync")
        assert carried_flows(d, "hv2") == 0
        # vm1 still talks on hv1 over its tracked connections.
        session.send(Side.SERVER, wait=True)


def hypervisor_plug(d: Path) -> None:
    """The destination VIF, as Nova's pre_live_migration plugs it (no switch-over)."""
    with editing(d) as current:
        vm = current.get_vm("vm1")
        vm.vifs.append(vms.plug_vif(current, vm, "hv2"))


def carried_flows(d: Path, chassis: str) -> int:
    """Flows of the kind that admits carried connections on chassis."""
    found = (re.search(r"cookie=(0x[0-9a-f]+)", line) for line in dump_flows(d, chassis))
    return sum(1 for m in found if m and cookies.kind_of(int(m[1], 16)) is cookies.Kind.CARRIED)
