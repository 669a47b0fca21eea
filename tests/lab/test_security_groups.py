"""Security groups end to end: the NB written by ovsdbapp as Neutron writes it, real
northd and agents, OVS userspace conntrack in the lab's switches.

vm1 (hv1) and vm2 (hv2) are in the default security group plus "TCP 22 from anywhere";
vm3 (hv3) has port security off and no group (Neutron leaves such a port out of every
port group): it stands for the rest of the world.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from liveport.lab import lab, vms
from liveport.lab.tcp import TcpSession
from liveport.model import packets
from liveport.model.errors import Timeout
from liveport.model.tcp import Side

from tests import neutron
from tests.conftest import LabFactory
from tests.lab.helpers import nbctl, run_cli

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
    doctor = run_cli("doctor", "--dir", str(d))
    assert "broken-rule" in doctor.stdout


def _seqs(frames: list[vms.Captured]) -> set[int]:
    return {f.info.seq for f in frames if f.info.seq is not None}
